//! Resolve a reference and pull an image into a [`BlobStore`].

use std::collections::HashSet;
use std::sync::Arc;

use futures_util::StreamExt;
use oci_spec::image::{Descriptor, MediaType};
use reqwest::header::{ACCEPT, CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::StatusCode;
use tokio::sync::RwLock;
use tokio::task::JoinSet;

use crate::client::{
    error_chain, no_notify, read_limited, scope, status_error, BlobQueue, Client, Endpoint, Result,
};
use crate::error::RegistryError;
use crate::events::{EventSink, PullEvent, RetryNotice};
use crate::manifest::{
    self, detect_media_type, is_index, is_manifest, ACCEPT_MANIFESTS, MAX_MANIFEST_SIZE,
};
use crate::platform::Platform;
use crate::reference::Reference;
use crate::store::{sha256_digest, write_blob, BlobStore, StoreError};

/// Progress events are sent at most once per this many bytes per blob.
const PROGRESS_STEP: u64 = 256 << 10;

/// A manifest or index as the registry served it.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// The reference asked, pinned to the digest that was served.
    pub reference: Reference,
    /// Media type, digest and size of the document.
    pub descriptor: Descriptor,
    /// The document's exact bytes (their sha256 is the digest).
    pub bytes: Vec<u8>,
    pub(crate) endpoint: Endpoint,
}

impl Resolved {
    /// Whether the document is an index (OCI index or Docker list).
    pub fn is_index(&self) -> bool {
        is_index(self.descriptor.media_type().as_ref())
    }

    /// The base URL that served it (a mirror or the origin).
    pub fn endpoint(&self) -> &str {
        self.endpoint.base.as_str()
    }
}

/// A reference resolved down to one image manifest.
#[derive(Clone, Debug)]
pub struct ResolvedImage {
    /// What the reference names (an index, or the manifest itself).
    pub root: Resolved,
    /// The image manifest for the platform (its descriptor carries the
    /// platform when it came from an index).
    pub manifest: Resolved,
    /// The chosen platform, when an index said.
    pub platform: Option<Platform>,
}

/// What [`Client::pull`] should do besides the defaults.
#[derive(Clone, Default)]
pub struct PullOptions {
    /// The platform to pick from an index (default: the host's).
    pub platform: Option<Platform>,
    /// Where progress goes.
    pub events: Option<EventSink<PullEvent>>,
}

/// The result of a pull: everything is in the store.
#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The reference asked, pinned to `root`'s digest.
    pub reference: Reference,
    /// What the reference resolved to (an index or the manifest itself).
    pub root: Descriptor,
    /// The image manifest chosen (with its platform when it came from an
    /// index).
    pub manifest: Descriptor,
    /// The image config blob.
    pub config: Descriptor,
    /// The layers, in order.
    pub layers: Vec<Descriptor>,
    /// The platform of the chosen manifest, when the index said.
    pub platform: Option<Platform>,
}

impl PulledImage {
    /// What a name for the pulled image should point at: the index when the
    /// reference named one (the store then holds the manifests of the
    /// platforms pulled so far), else the manifest.
    pub fn ref_target(&self) -> &Descriptor {
        if is_index(self.root.media_type().as_ref()) {
            &self.root
        } else {
            &self.manifest
        }
    }
}

impl Client {
    /// Resolve a tag or digest to a manifest or index, trying docker.io's
    /// mirrors first, then the origin.
    pub async fn resolve(&self, reference: &Reference) -> Result<Resolved> {
        self.resolve_with(reference, None).await
    }

    async fn resolve_with(
        &self,
        reference: &Reference,
        events: Option<&EventSink<PullEvent>>,
    ) -> Result<Resolved> {
        let mirrors = self.inner.options.config.mirrors_for(reference.registry());
        for mirror in mirrors {
            let attempt = async {
                let endpoint = self.mirror(&mirror).await?;
                self.fetch_manifest(&endpoint, reference, None).await
            };
            match attempt.await {
                Ok(resolved) => return Ok(resolved),
                Err(e) => {
                    tracing::debug!(%mirror, error = %e, "mirror failed");
                    if let Some(sink) = events {
                        sink(PullEvent::MirrorFailed {
                            mirror: mirror.clone(),
                            error: error_chain(&e),
                        });
                    }
                }
            }
        }
        let endpoint = self
            .origin(reference.registry(), reference.api_host())
            .await?;
        self.fetch_manifest(&endpoint, reference, None).await
    }

    /// GET a manifest by tag or digest, checking its digest.
    async fn fetch_manifest(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        digest: Option<&str>,
    ) -> Result<Resolved> {
        let tag_or_digest = digest
            .or(reference.digest())
            .or(reference.tag())
            .unwrap_or("latest")
            .to_string();
        let expected = digest.or(reference.digest()).map(str::to_string);
        let url = endpoint.url(&format!(
            "v2/{}/manifests/{tag_or_digest}",
            reference.repository()
        ))?;
        let what = format!("manifest {}:{tag_or_digest}", reference.name());
        let action = format!("fetch {what}");
        let scopes = [scope(reference.repository(), false)];
        let policy = self.inner.options.retry.clone();
        let mut attempt = 0;
        let (content_type, header_digest, body) = loop {
            attempt += 1;
            let resp = self
                .execute(
                    endpoint,
                    &scopes,
                    &action,
                    policy.max_attempts,
                    &no_notify,
                    |http| Ok(http.get(url.clone()).header(ACCEPT, ACCEPT_MANIFESTS)),
                )
                .await?;
            if !resp.status().is_success() {
                return Err(status_error(resp, &action).await);
            }
            if resp
                .content_length()
                .is_some_and(|l| l > MAX_MANIFEST_SIZE as u64)
            {
                return Err(RegistryError::SizeMismatch {
                    what,
                    expected: MAX_MANIFEST_SIZE as u64,
                    actual: resp.content_length().unwrap_or_default(),
                });
            }
            let content_type = header_str(&resp, CONTENT_TYPE.as_str());
            let header_digest = header_str(&resp, "docker-content-digest");
            match read_limited(resp, MAX_MANIFEST_SIZE).await {
                Ok(Some(body)) => break (content_type, header_digest, body),
                Ok(None) => {
                    return Err(RegistryError::SizeMismatch {
                        what,
                        expected: MAX_MANIFEST_SIZE as u64,
                        actual: MAX_MANIFEST_SIZE as u64 + 1,
                    })
                }
                Err(source) if attempt < policy.max_attempts => {
                    let delay = policy.delay(attempt, None);
                    tracing::debug!(error = %source, "manifest body cut short; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(source) => {
                    return Err(RegistryError::Transport {
                        action,
                        url: url.to_string(),
                        source,
                    })
                }
            }
        };
        let actual = sha256_digest(&body);
        let mismatch = |expected: String| RegistryError::DigestMismatch {
            what: what.clone(),
            expected,
            actual: actual.to_string(),
        };
        if let Some(expected) = expected {
            if expected != actual.to_string() {
                return Err(mismatch(expected));
            }
        } else if let Some(h) = header_digest.filter(|h| h.starts_with("sha256:")) {
            if h != actual.to_string() {
                return Err(mismatch(h));
            }
        }
        let media_type = detect_media_type(content_type.as_deref(), &body);
        if !is_index(&media_type) && !is_manifest(&media_type) {
            return Err(RegistryError::UnsupportedMediaType {
                media_type: hoist_untrusted::escape(&media_type).into_owned(),
                what,
            });
        }
        let descriptor = Descriptor::new(
            MediaType::from(media_type.as_str()),
            body.len() as u64,
            actual.clone(),
        );
        let reference = reference.with_digest(actual.as_ref())?;
        Ok(Resolved {
            reference,
            descriptor,
            bytes: body,
            endpoint: endpoint.clone(),
        })
    }

    /// Resolve a reference to the image manifest for `platform` (default:
    /// the host's), going through the index when there is one. Nothing is
    /// stored. The manifest's digest is what a build's cache key should
    /// use for `FROM`.
    pub async fn resolve_image(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
    ) -> Result<ResolvedImage> {
        self.resolve_image_with(reference, platform, None).await
    }

    async fn resolve_image_with(
        &self,
        reference: &Reference,
        platform: Option<&Platform>,
        events: Option<&EventSink<PullEvent>>,
    ) -> Result<ResolvedImage> {
        let emit = |e: PullEvent| {
            if let Some(sink) = events {
                sink(e);
            }
        };
        let root = self.resolve_with(reference, events).await?;
        emit(PullEvent::Resolved {
            reference: reference.to_string(),
            descriptor: root.descriptor.clone(),
            endpoint: root.endpoint().to_string(),
        });
        let (manifest, platform) = if root.is_index() {
            let index = manifest::parse_index(&root.bytes, &format!("index {}", root.reference))?;
            let wanted = platform.cloned().unwrap_or_else(Platform::host);
            let chosen = select_platform(index.manifests(), &wanted).ok_or_else(|| {
                RegistryError::PlatformNotFound {
                    platform: wanted.to_string(),
                    reference: reference.to_string(),
                    available: index
                        .manifests()
                        .iter()
                        .filter_map(|m| {
                            m.platform().as_ref().map(|p| Platform::from(p).to_string())
                        })
                        .map(|p| hoist_untrusted::escape(&p).into_owned())
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let platform = chosen.platform().as_ref().map(Platform::from);
            if let Some(p) = &platform {
                emit(PullEvent::PlatformSelected {
                    platform: p.clone(),
                    descriptor: chosen.clone(),
                });
            }
            let digest = chosen.digest().to_string();
            let m = self
                .fetch_manifest(&root.endpoint, reference, Some(&digest))
                .await?;
            let mut descriptor = m.descriptor.clone();
            descriptor.set_platform(chosen.platform().clone());
            (Resolved { descriptor, ..m }, platform)
        } else {
            (root.clone(), None)
        };
        if !is_manifest(manifest.descriptor.media_type().as_ref()) {
            return Err(RegistryError::UnsupportedMediaType {
                media_type: manifest.descriptor.media_type().to_string(),
                what: format!("manifest {}", manifest.reference),
            });
        }
        Ok(ResolvedImage {
            root,
            manifest,
            platform,
        })
    }

    /// Pull an image: resolve, pick the platform from an index, download
    /// the config and layers in parallel (skipping blobs the store has),
    /// then store the manifest and the index. Every blob is streamed into
    /// the store and checked against its digest; nothing is held in memory
    /// but manifests.
    pub async fn pull(
        &self,
        reference: &Reference,
        store: Arc<dyn BlobStore>,
        options: &PullOptions,
    ) -> Result<PulledImage> {
        let events = options.events.clone();
        let ResolvedImage {
            root,
            manifest,
            platform,
        } = self
            .resolve_image_with(reference, options.platform.as_ref(), events.as_ref())
            .await?;
        let parsed =
            manifest::parse_manifest(&manifest.bytes, &format!("manifest {}", manifest.reference))?;
        let blobs = manifest::manifest_blobs(&parsed);
        self.fetch_blobs(&root.endpoint, reference, &blobs, &store, events.clone())
            .await?;

        // Children before parents: a manifest is only visible once all its
        // blobs are, the index once its manifest is.
        let store_doc = |d: &Descriptor, bytes: &[u8]| {
            write_blob(store.as_ref(), d, bytes).map_err(|source| RegistryError::Store {
                action: "store",
                digest: d.digest().to_string(),
                source,
            })
        };
        store_doc(&manifest.descriptor, &manifest.bytes)?;
        if root.is_index() {
            store_doc(&root.descriptor, &root.bytes)?;
        }
        Ok(PulledImage {
            reference: root.reference.clone(),
            root: root.descriptor.clone(),
            manifest: manifest.descriptor.clone(),
            config: parsed.config().clone(),
            layers: parsed.layers().clone(),
            platform,
        })
    }

    /// Download blobs of `reference`'s repository in parallel (bounded by
    /// the client's concurrency), biggest first, skipping those the store
    /// has.
    pub(crate) async fn fetch_blobs(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        blobs: &[Descriptor],
        store: &Arc<dyn BlobStore>,
        events: Option<EventSink<PullEvent>>,
    ) -> Result<()> {
        let commits = Arc::new(RwLock::new(()));
        let mut seen = HashSet::new();
        let mut queued = Vec::new();
        for blob in blobs {
            if !seen.insert(blob.digest().to_string()) {
                continue;
            }
            if store.has(blob.digest()) {
                if let Some(sink) = &events {
                    sink(PullEvent::BlobSkipped {
                        descriptor: blob.clone(),
                    });
                }
                continue;
            }
            queued.push((blob.clone(), ()));
        }
        let queue = Arc::new(BlobQueue::new(queued));
        let workers = self.inner.options.concurrency.max(1).min(queue.len());
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let client = self.clone();
            let endpoint = endpoint.clone();
            let repository = reference.repository().to_string();
            let store = store.clone();
            let events = events.clone();
            let commits = commits.clone();
            let queue = queue.clone();
            tasks.spawn(async move {
                while let Some((blob, ())) = queue.next() {
                    client
                        .fetch_blob(
                            &endpoint,
                            &repository,
                            &blob,
                            store.as_ref(),
                            events.clone(),
                            commits.clone(),
                        )
                        .await?;
                }
                Ok(())
            });
        }
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            let error = match joined {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => e,
                Err(source) => RegistryError::Task {
                    what: format!("pull of {reference}"),
                    source,
                },
            };
            // Abort the other downloads and wait until they are gone: their
            // writers are dropped, no ingest remains.
            tasks.abort_all();
            failure.get_or_insert(error);
        }
        // A commit runs on a blocking thread that an abort cannot stop; wait
        // for those in flight so nothing changes in the store after we return.
        let _quiet = commits.write().await;
        match failure {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Stream one blob into the store, resuming with `Range` after a body
    /// is cut short, checking size and digest before committing.
    async fn fetch_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        descriptor: &Descriptor,
        store: &dyn BlobStore,
        events: Option<EventSink<PullEvent>>,
        commits: Arc<RwLock<()>>,
    ) -> Result<()> {
        let digest = descriptor.digest().to_string();
        let total = descriptor.size();
        let emit = |e: PullEvent| {
            if let Some(sink) = &events {
                sink(e);
            }
        };
        let notify = |n: RetryNotice| emit(PullEvent::Retrying(n));
        let store_err = |action: &'static str, source| RegistryError::Store {
            action,
            digest: digest.clone(),
            source,
        };
        let url = endpoint.url(&format!("v2/{repository}/blobs/{digest}"))?;
        let action = format!("fetch blob {digest}");
        let scopes = [scope(repository, false)];
        let policy = self.inner.options.retry.clone();
        emit(PullEvent::BlobStarted {
            descriptor: descriptor.clone(),
        });
        let mut writer = store
            .writer(descriptor)
            .map_err(|e| store_err("open an ingest for", e))?;
        // A resumed ingest (an earlier pull killed or cut off) already has
        // the first bytes: ask only for the rest.
        let mut done: u64 = writer.written();
        if done > 0 {
            tracing::info!("resuming blob {digest} at byte {done} of {total}");
            emit(PullEvent::BlobProgress {
                descriptor: descriptor.clone(),
                done,
                total,
            });
        }
        let mut last_progress = done;
        let mut attempt = 0;
        let mut total_failures = 0;
        while done < total {
            // Attempts count failures without progress: a body cut after
            // some bytes resumes without using up the budget.
            attempt += 1;
            let offset = done;
            let resp = self
                .execute(
                    endpoint,
                    &scopes,
                    &action,
                    policy.max_attempts,
                    &notify,
                    |http| {
                        let r = http.get(url.clone());
                        Ok(if offset > 0 {
                            r.header(RANGE, format!("bytes={offset}-"))
                        } else {
                            r
                        })
                    },
                )
                .await;
            let resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    // The registry is gone or refuses now: what we have
                    // stays for the next pull (the digest check at its
                    // commit covers these bytes too).
                    writer.suspend();
                    return Err(e);
                }
            };
            // Bytes at the start of this body that we already have.
            let mut skip = match resp.status() {
                StatusCode::OK => offset,
                StatusCode::PARTIAL_CONTENT => {
                    let start = header_str(&resp, CONTENT_RANGE.as_str())
                        .and_then(|v| parse_content_range_start(&v))
                        .unwrap_or(0);
                    if start > offset {
                        return Err(RegistryError::SizeMismatch {
                            what: format!("blob {digest} (resumed at {start}, have {offset})"),
                            expected: offset,
                            actual: start,
                        });
                    }
                    offset - start
                }
                _ => return Err(status_error(resp, &action).await),
            };
            let mut stream = resp.bytes_stream();
            let mut failure = None;
            while let Some(item) = stream.next().await {
                let mut chunk = match item {
                    Ok(c) => c,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                };
                if skip > 0 {
                    let n = skip.min(chunk.len() as u64) as usize;
                    let _ = chunk.split_to(n);
                    skip -= n as u64;
                }
                if chunk.is_empty() {
                    continue;
                }
                if done + chunk.len() as u64 > total {
                    return Err(RegistryError::SizeMismatch {
                        what: format!("blob {digest}"),
                        expected: total,
                        actual: done + chunk.len() as u64,
                    });
                }
                writer.write_all(&chunk).map_err(|e| {
                    store_err("write", crate::store::StoreError::Backend(Box::new(e)))
                })?;
                done += chunk.len() as u64;
                if done - last_progress >= PROGRESS_STEP || done == total {
                    last_progress = done;
                    emit(PullEvent::BlobProgress {
                        descriptor: descriptor.clone(),
                        done,
                        total,
                    });
                }
            }
            if done == total && failure.is_none() {
                break;
            }
            total_failures += 1;
            if done > offset && total_failures < policy.max_attempts * 4 {
                attempt = 1;
            }
            // Cut short (error, or a clean close before the end): resume.
            let error = match &failure {
                Some(e) => error_chain(e),
                None => format!("body ended after {done} of {total} bytes"),
            };
            if attempt >= policy.max_attempts {
                // The network gave up, not the store: keep the bytes for
                // the next pull to continue after.
                writer.suspend();
                return Err(match failure {
                    Some(source) => RegistryError::Transport {
                        action,
                        url: url.to_string(),
                        source,
                    },
                    None => RegistryError::SizeMismatch {
                        what: format!("blob {digest}"),
                        expected: total,
                        actual: done,
                    },
                });
            }
            let delay = policy.delay(attempt, None);
            notify(RetryNotice {
                action: action.clone(),
                attempt,
                delay,
                error,
            });
            tokio::time::sleep(delay).await;
        }
        // The writer checks size and digest at commit (the BlobWriter
        // contract), having hashed the bytes as they were written; hashing
        // them here as well would cost a second SHA-256 pass per byte. A
        // mismatch discards the ingest and is not retried.
        let in_flight = commits.read_owned().await;
        tokio::task::spawn_blocking(move || {
            let result = writer.commit();
            drop(in_flight);
            result
        })
        .await
        .map_err(|source| RegistryError::Task {
            what: format!("commit of {digest}"),
            source,
        })?
        .map_err(|e| match e {
            StoreError::DigestMismatch { expected, actual } => RegistryError::DigestMismatch {
                what: format!("blob from {url}"),
                expected,
                actual,
            },
            StoreError::SizeMismatch {
                expected, actual, ..
            } => RegistryError::SizeMismatch {
                what: format!("blob from {url}"),
                expected,
                actual,
            },
            e => store_err("commit", e),
        })?;
        emit(PullEvent::BlobDone {
            descriptor: descriptor.clone(),
        });
        Ok(())
    }
}

/// The index entry that best suits `wanted` (containerd's ordering), or
/// `None`. Entries without a platform are not candidates.
pub fn select_platform<'a>(entries: &'a [Descriptor], wanted: &Platform) -> Option<&'a Descriptor> {
    entries
        .iter()
        .filter(|d| is_manifest(d.media_type().as_ref()) || is_index(d.media_type().as_ref()))
        .filter_map(|d| {
            let p = Platform::from(d.platform().as_ref()?);
            Some((wanted.rank(&p)?, d))
        })
        .min_by_key(|(rank, _)| *rank)
        .map(|(_, d)| d)
}

fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `bytes 100-199/200` → 100.
fn parse_content_range_start(v: &str) -> Option<u64> {
    let v = v.trim().strip_prefix("bytes")?.trim_start();
    v.split('-').next()?.trim().parse().ok()
}

use std::io::Write as _;

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(platform: &str, n: u8) -> Descriptor {
        let p = Platform::parse(platform).unwrap();
        let mut d = crate::store::descriptor_for(manifest::OCI_MANIFEST, &[n]);
        let mut builder = oci_spec::image::PlatformBuilder::default()
            .os(p.os.as_str())
            .architecture(p.architecture.as_str());
        if !p.variant.is_empty() {
            builder = builder.variant(p.variant.clone());
        }
        d.set_platform(Some(builder.build().unwrap()));
        d
    }

    #[test]
    fn picks_the_best_platform() {
        let entries = vec![
            entry("linux/amd64", 1),
            entry("linux/arm/v5", 2),
            entry("linux/arm/v6", 3),
            entry("linux/arm64/v8", 4),
        ];
        let pick = |p: &str| {
            select_platform(&entries, &Platform::parse(p).unwrap()).map(|d| d.digest().to_string())
        };
        assert_eq!(pick("linux/amd64"), Some(entries[0].digest().to_string()));
        assert_eq!(pick("linux/arm/v7"), Some(entries[2].digest().to_string()));
        assert_eq!(pick("linux/arm/v6"), Some(entries[2].digest().to_string()));
        assert_eq!(pick("linux/arm/v5"), Some(entries[1].digest().to_string()));
        assert_eq!(pick("linux/arm64"), Some(entries[3].digest().to_string()));
        assert_eq!(pick("linux/s390x"), None);
        assert_eq!(parse_content_range_start("bytes 100-199/200"), Some(100));
    }
}
