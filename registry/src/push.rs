//! Push an image (manifest or index, with everything it references) from a
//! [`BlobStore`].

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use oci_spec::image::Descriptor;
use reqwest::header::{CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION, RANGE};
use reqwest::{StatusCode, Url};
use tokio::task::JoinSet;

use crate::client::{
    error_chain, retryable_status, scope, status_error, BlobQueue, Client, Endpoint, Result,
    RetryPolicy,
};
use crate::error::RegistryError;
use crate::events::{EventSink, PushEvent, RetryNotice};
use crate::manifest::{self, is_index, is_manifest};
use crate::reference::Reference;
use crate::store::BlobStore;

/// What [`Client::push`] should do besides the defaults.
#[derive(Clone, Default)]
pub struct PushOptions {
    /// Where progress goes.
    pub events: Option<EventSink<PushEvent>>,
    /// Where blobs came from (digest → references they were pulled from).
    /// A source in the same registry but another repository is mounted
    /// instead of uploaded.
    pub mount_sources: HashMap<String, Vec<Reference>>,
}

/// What a push did.
#[derive(Clone, Debug)]
pub struct PushedImage {
    /// The target, pinned to the pushed root's digest.
    pub reference: Reference,
    /// The pushed root (manifest or index).
    pub descriptor: Descriptor,
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs mounted from another repository.
    pub mounted: usize,
    /// Blobs the registry already had.
    pub existing: usize,
}

enum BlobOutcome {
    Existing,
    Mounted,
    Uploaded,
}

impl Client {
    /// Push the manifest or index `root` (its bytes and everything it
    /// references must be in `store`) to `reference`: blobs first, in
    /// parallel and biggest first (existing ones skipped, mounted when `options` knows a
    /// source in the same registry, small ones in one PUT, big ones in
    /// resumable chunks), then child manifests by digest, then the root
    /// under the reference's tag (or digest).
    pub async fn push(
        &self,
        reference: &Reference,
        root: &Descriptor,
        store: Arc<dyn BlobStore>,
        options: &PushOptions,
    ) -> Result<PushedImage> {
        let endpoint = self
            .origin(reference.registry(), reference.api_host())
            .await?;
        let mut manifests = Vec::new();
        let mut blobs = Vec::new();
        collect(store.as_ref(), root, &mut manifests, &mut blobs, 0)?;

        let mut seen = HashSet::new();
        let mut queued = Vec::new();
        for blob in blobs {
            if !seen.insert(blob.digest().to_string()) {
                continue;
            }
            let sources: Vec<String> = options
                .mount_sources
                .get(&blob.digest().to_string())
                .into_iter()
                .flatten()
                .filter(|r| {
                    r.registry() == reference.registry() && r.repository() != reference.repository()
                })
                .map(|r| r.repository().to_string())
                .collect();
            queued.push((blob, sources));
        }
        let queue = Arc::new(BlobQueue::new(queued));
        let workers = self.inner.options.concurrency.max(1).min(queue.len());
        let mut tasks = JoinSet::new();
        for _ in 0..workers {
            let client = self.clone();
            let endpoint = endpoint.clone();
            let repository = reference.repository().to_string();
            let store = store.clone();
            let events = options.events.clone();
            let queue = queue.clone();
            tasks.spawn(async move {
                let mut outcomes = Vec::new();
                while let Some((blob, sources)) = queue.next() {
                    let outcome = client
                        .push_blob(
                            &endpoint,
                            &repository,
                            &blob,
                            &sources,
                            store.clone(),
                            events.clone(),
                        )
                        .await?;
                    outcomes.push(outcome);
                }
                Ok::<_, RegistryError>(outcomes)
            });
        }
        let (mut uploaded, mut mounted, mut existing) = (0, 0, 0);
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(outcomes)) => {
                    for outcome in outcomes {
                        match outcome {
                            BlobOutcome::Uploaded => uploaded += 1,
                            BlobOutcome::Mounted => mounted += 1,
                            BlobOutcome::Existing => existing += 1,
                        }
                    }
                }
                Ok(Err(e)) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(e);
                }
                Err(source) => {
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    return Err(RegistryError::Task {
                        what: format!("push to {reference}"),
                        source,
                    });
                }
            }
        }
        // Children first, by digest; the root last, under its tag.
        for (descriptor, bytes) in manifests.iter().rev().skip(1).rev() {
            let target = descriptor.digest().to_string();
            self.put_manifest(&endpoint, reference, &target, descriptor, bytes, options)
                .await?;
        }
        let (root_descriptor, root_bytes) = manifests
            .last()
            .cloned()
            .unwrap_or_else(|| unreachable!("collect always records the root"));
        let target = reference
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| root_descriptor.digest().to_string());
        self.put_manifest(
            &endpoint,
            reference,
            &target,
            &root_descriptor,
            &root_bytes,
            options,
        )
        .await?;
        Ok(PushedImage {
            reference: reference.with_digest(root_descriptor.digest().as_ref())?,
            descriptor: root.clone(),
            uploaded,
            mounted,
            existing,
        })
    }

    async fn put_manifest(
        &self,
        endpoint: &Endpoint,
        reference: &Reference,
        target: &str,
        descriptor: &Descriptor,
        bytes: &[u8],
        options: &PushOptions,
    ) -> Result<()> {
        let url = endpoint.url(&format!("v2/{}/manifests/{target}", reference.repository()))?;
        let action = format!("push manifest {}:{target}", reference.name());
        let scopes = [scope(reference.repository(), true)];
        let notify = notifier(&options.events);
        let body = Bytes::copy_from_slice(bytes);
        let media_type = descriptor.media_type().to_string();
        let resp = self
            .execute(
                endpoint,
                &scopes,
                &action,
                self.inner.options.retry.max_attempts,
                &notify,
                |http| {
                    Ok(http
                        .put(url.clone())
                        .header(CONTENT_TYPE, media_type.clone())
                        .body(body.clone()))
                },
            )
            .await?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &action).await);
        }
        if let Some(sink) = &options.events {
            sink(PushEvent::ManifestPushed {
                descriptor: descriptor.clone(),
                reference: format!("{}:{target}", reference.name()).replace(":sha256:", "@sha256:"),
            });
        }
        Ok(())
    }

    async fn push_blob(
        &self,
        endpoint: &Endpoint,
        repository: &str,
        descriptor: &Descriptor,
        mount_from: &[String],
        store: Arc<dyn BlobStore>,
        events: Option<EventSink<PushEvent>>,
    ) -> Result<BlobOutcome> {
        let digest = descriptor.digest().to_string();
        let emit = |e: PushEvent| {
            if let Some(sink) = &events {
                sink(e);
            }
        };
        let notify = notifier(&events);
        let policy = self.inner.options.retry.clone();
        let scopes = vec![scope(repository, true)];

        let head_url = endpoint.url(&format!("v2/{repository}/blobs/{digest}"))?;
        let action = format!("check blob {digest}");
        let resp = self
            .execute(
                endpoint,
                &scopes,
                &action,
                policy.max_attempts,
                &notify,
                |http| Ok(http.head(head_url.clone())),
            )
            .await?;
        match resp.status() {
            s if s.is_success() => {
                emit(PushEvent::BlobExists {
                    descriptor: descriptor.clone(),
                });
                return Ok(BlobOutcome::Existing);
            }
            StatusCode::NOT_FOUND => {}
            _ => return Err(status_error(resp, &action).await),
        }

        // Try a mount; a 202 means the registry opened an upload instead.
        let mut location = None;
        for from in mount_from {
            let url = endpoint.url(&format!("v2/{repository}/blobs/uploads/"))?;
            let mut url = url;
            url.query_pairs_mut()
                .append_pair("mount", &digest)
                .append_pair("from", from);
            let mount_scopes = vec![scope(repository, true), scope(from, false)];
            let action = format!("mount blob {digest} from {from}");
            let resp = self
                .execute(
                    endpoint,
                    &mount_scopes,
                    &action,
                    policy.max_attempts,
                    &notify,
                    |http| Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0)),
                )
                .await?;
            match resp.status() {
                StatusCode::CREATED => {
                    emit(PushEvent::BlobMounted {
                        descriptor: descriptor.clone(),
                        from: from.clone(),
                    });
                    return Ok(BlobOutcome::Mounted);
                }
                StatusCode::ACCEPTED => {
                    location = Some(upload_location(endpoint, &resp)?);
                    break;
                }
                _ => {
                    let err = status_error(resp, &action).await;
                    tracing::debug!(error = %err, "mount refused; uploading instead");
                }
            }
        }

        emit(PushEvent::BlobStarted {
            descriptor: descriptor.clone(),
        });
        let upload = Upload {
            client: self,
            endpoint,
            repository,
            descriptor,
            scopes: &scopes,
            store,
            events: &events,
        };
        if descriptor.size() <= self.inner.options.monolithic_limit {
            upload.monolithic(location).await?;
        } else {
            upload.chunked(location).await?;
        }
        emit(PushEvent::BlobDone {
            descriptor: descriptor.clone(),
        });
        Ok(BlobOutcome::Uploaded)
    }
}

struct Upload<'a> {
    client: &'a Client,
    endpoint: &'a Endpoint,
    repository: &'a str,
    descriptor: &'a Descriptor,
    scopes: &'a [String],
    store: Arc<dyn BlobStore>,
    events: &'a Option<EventSink<PushEvent>>,
}

impl Upload<'_> {
    fn digest(&self) -> String {
        self.descriptor.digest().to_string()
    }

    fn notify(&self, notice: RetryNotice) {
        if let Some(sink) = self.events {
            sink(PushEvent::Retrying(notice));
        }
    }

    /// The error once the retry policy is exhausted; status 0 because the
    /// last failure may have been a transport error, not an HTTP answer.
    fn gave_up(&self, action: String, attempts: u32, error: &str) -> RegistryError {
        RegistryError::Status {
            action,
            url: self.endpoint.base.to_string(),
            status: 0,
            message: format!("gave up after {attempts} attempts: {error}"),
            code: None,
        }
    }

    /// Reports a failed attempt, then waits out the policy's delay.
    async fn back_off(&self, policy: &RetryPolicy, action: &str, attempt: u32, error: String) {
        let delay = policy.delay(attempt, None);
        self.notify(RetryNotice {
            action: action.to_string(),
            attempt,
            delay,
            error,
        });
        tokio::time::sleep(delay).await;
    }

    /// POST a new upload session; returns its location.
    async fn start(&self) -> Result<Url> {
        let url = self
            .endpoint
            .url(&format!("v2/{}/blobs/uploads/", self.repository))?;
        let action = format!("start upload of {}", self.digest());
        let notify = notifier(self.events);
        let resp = self
            .client
            .execute(
                self.endpoint,
                self.scopes,
                &action,
                self.client.inner.options.retry.max_attempts,
                &notify,
                |http| Ok(http.post(url.clone()).header(CONTENT_LENGTH, 0)),
            )
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(resp, &action).await);
        }
        upload_location(self.endpoint, &resp)
    }

    /// One PUT with the whole blob; on failure, a new session and again.
    async fn monolithic(&self, mut location: Option<Url>) -> Result<()> {
        let policy = self.client.inner.options.retry.clone();
        let digest = self.digest();
        let size = self.descriptor.size();
        let action = format!("upload blob {digest}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let session = match location.take() {
                Some(l) => l,
                None => self.start().await?,
            };
            let mut url = session.clone();
            url.query_pairs_mut().append_pair("digest", &digest);
            let result = self
                .client
                .execute(
                    self.endpoint,
                    self.scopes,
                    &action,
                    1,
                    &no_retry_notify,
                    |http| {
                        // A transient failure makes a new session and a new
                        // body (outer loop): the old session may hold a
                        // partial write.
                        let body = self.body(0, size)?;
                        Ok(http
                            .put(url.clone())
                            .header(CONTENT_TYPE, "application/octet-stream")
                            .header(CONTENT_LENGTH, size)
                            .body(body))
                    },
                )
                .await;
            let error = match result {
                Ok(resp) if resp.status() == StatusCode::CREATED => return Ok(()),
                Ok(resp) if retryable_status(resp.status()) => {
                    let status = resp.status();
                    let (message, _) = crate::client::read_error(resp).await;
                    format!("{} {message}", status.as_u16())
                }
                Ok(resp) => {
                    let err = status_error(resp, &action).await;
                    if !session_lost(&err) {
                        return Err(err);
                    }
                    error_chain(&err)
                }
                Err(e) if attempt < policy.max_attempts => error_chain(&e),
                Err(e) => return Err(e),
            };
            if attempt >= policy.max_attempts {
                return Err(self.gave_up(action, attempt, &error));
            }
            self.back_off(&policy, &action, attempt, error).await;
        }
    }

    /// PATCH chunks; after an interruption, ask the registry how much it
    /// has (`GET` on the session, `Range: 0-N`) and continue from there, or
    /// start a new session when it lost the old one.
    async fn chunked(&self, location: Option<Url>) -> Result<()> {
        let policy = self.client.inner.options.retry.clone();
        let chunk_size = self.client.inner.options.chunk_size.max(1);
        let digest = self.digest();
        let size = self.descriptor.size();
        let action = format!("upload blob {digest}");
        let mut session = match location {
            Some(l) => l,
            None => self.start().await?,
        };
        let mut offset = 0u64;
        // Consecutive failures without progress, and all failures (a
        // registry that loses the session on every interruption could
        // otherwise keep us going round).
        let mut failures = 0;
        let mut total_failures = 0;
        loop {
            while offset < size {
                let len = chunk_size.min(size - offset);
                let url = session.clone();
                let result = self
                    .client
                    .execute(
                        self.endpoint,
                        self.scopes,
                        &action,
                        1,
                        &no_retry_notify,
                        |http| {
                            let body = self.body(offset, len)?;
                            Ok(http
                                .patch(url.clone())
                                .header(CONTENT_TYPE, "application/octet-stream")
                                .header(CONTENT_RANGE, format!("{}-{}", offset, offset + len - 1))
                                .header(CONTENT_LENGTH, len)
                                .body(body))
                        },
                    )
                    .await;
                let error = match result {
                    Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                        session = upload_location(self.endpoint, &resp)?;
                        offset += len;
                        // Failures are counted without progress.
                        failures = 0;
                        continue;
                    }
                    Ok(resp)
                        if retryable_status(resp.status())
                            || resp.status() == StatusCode::RANGE_NOT_SATISFIABLE =>
                    {
                        let status = resp.status();
                        let (message, _) = crate::client::read_error(resp).await;
                        format!("{} {message}", status.as_u16())
                    }
                    Ok(resp) => {
                        let err = status_error(resp, &action).await;
                        if !session_lost(&err) {
                            return Err(err);
                        }
                        error_chain(&err)
                    }
                    Err(e) => error_chain(&e),
                };
                failures += 1;
                total_failures += 1;
                if failures >= policy.max_attempts || total_failures >= policy.max_attempts * 4 {
                    return Err(self.gave_up(action, failures, &error));
                }
                self.back_off(&policy, &action, failures, error).await;
                match self.status(&session).await {
                    Ok((next, have)) => {
                        tracing::debug!(offset = have, "resuming chunked upload");
                        session = next;
                        offset = have;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "upload session lost; starting over");
                        session = self.start().await?;
                        offset = 0;
                    }
                }
            }
            let mut url = session.clone();
            url.query_pairs_mut().append_pair("digest", &digest);
            let action = format!("finish upload of {digest}");
            let notify = notifier(self.events);
            let resp = self
                .client
                .execute(
                    self.endpoint,
                    self.scopes,
                    &action,
                    policy.max_attempts,
                    &notify,
                    |http| Ok(http.put(url.clone()).header(CONTENT_LENGTH, 0)),
                )
                .await?;
            if resp.status() == StatusCode::CREATED {
                return Ok(());
            }
            let err = status_error(resp, &action).await;
            // A retried PUT whose first try was committed but whose answer
            // was lost finds its session gone: the blob is there.
            if err.is_not_found() && self.exists().await? {
                return Ok(());
            }
            // The session's data is not our blob (a cut PATCH raced the
            // status query): upload it again in a new session.
            if digest_invalid(&err) && total_failures < policy.max_attempts * 4 {
                total_failures += 1;
                tracing::debug!(error = %err, "registry refused the digest; uploading again");
                session = self.start().await?;
                offset = 0;
                continue;
            }
            return Err(err);
        }
    }

    /// Whether the registry has the blob (HEAD).
    async fn exists(&self) -> Result<bool> {
        let url = self
            .endpoint
            .url(&format!("v2/{}/blobs/{}", self.repository, self.digest()))?;
        let action = format!("check blob {}", self.digest());
        let notify = notifier(self.events);
        let resp = self
            .client
            .execute(
                self.endpoint,
                self.scopes,
                &action,
                self.client.inner.options.retry.max_attempts,
                &notify,
                |http| Ok(http.head(url.clone())),
            )
            .await?;
        Ok(resp.status().is_success())
    }

    /// Ask an upload session how many bytes the registry holds.
    async fn status(&self, session: &Url) -> Result<(Url, u64)> {
        let action = format!("check upload of {}", self.digest());
        let notify = notifier(self.events);
        let url = session.clone();
        let resp = self
            .client
            .execute(
                self.endpoint,
                self.scopes,
                &action,
                self.client.inner.options.retry.max_attempts,
                &notify,
                |http| Ok(http.get(url.clone())),
            )
            .await?;
        if resp.status() != StatusCode::NO_CONTENT {
            return Err(status_error(resp, &action).await);
        }
        let have = resp
            .headers()
            .get(RANGE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().trim_start_matches("bytes=").split_once('-'))
            .and_then(|(_, end)| end.parse::<i64>().ok())
            .map_or(0, |end| (end + 1).max(0) as u64);
        let next = upload_location(self.endpoint, &resp).unwrap_or_else(|_| session.clone());
        Ok((next, have))
    }

    /// A streaming body of `len` bytes of the blob from `offset`, read on
    /// a blocking thread; progress is reported as hyper consumes it.
    fn body(&self, offset: u64, len: u64) -> Result<reqwest::Body> {
        let digest = self.descriptor.digest().clone();
        let reader =
            self.store
                .reader_at(&digest, offset)
                .map_err(|source| RegistryError::Store {
                    action: "read",
                    digest: digest.to_string(),
                    source,
                })?;
        let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
        tokio::task::spawn_blocking(move || {
            let mut reader = reader.take(len);
            loop {
                let mut buf = vec![0u8; 256 << 10];
                match reader.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        buf.truncate(n);
                        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                            break;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        break;
                    }
                }
            }
        });
        let events = self.events.clone();
        let descriptor = self.descriptor.clone();
        let total = descriptor.size();
        let stream = futures_util::stream::unfold(
            (rx, offset, offset),
            move |(mut rx, mut done, mut last)| {
                let events = events.clone();
                let descriptor = descriptor.clone();
                async move {
                    let item = rx.recv().await?;
                    if let Ok(b) = &item {
                        done += b.len() as u64;
                        if done - last >= 256 << 10 || done == total {
                            last = done;
                            if let Some(sink) = &events {
                                sink(PushEvent::BlobProgress {
                                    descriptor,
                                    done,
                                    total,
                                });
                            }
                        }
                    }
                    Some((item, (rx, done, last)))
                }
            },
        );
        Ok(reqwest::Body::wrap_stream(stream))
    }
}

fn no_retry_notify(_: RetryNotice) {}

/// The registry computed another digest for the session's data.
fn digest_invalid(err: &RegistryError) -> bool {
    matches!(err, RegistryError::Status { status: 400, code: Some(code), .. } if code == "DIGEST_INVALID")
}

/// The registry dropped or invalidated an upload session (distribution
/// cancels a session whose data file grew past the offset it recorded, as
/// happens when a PATCH is cut mid-body): start a new one.
fn session_lost(err: &RegistryError) -> bool {
    matches!(
        err,
        RegistryError::Status { status: 400 | 404, code: Some(code), .. }
            if code == "BLOB_UPLOAD_INVALID" || code == "BLOB_UPLOAD_UNKNOWN"
    )
}

fn notifier(events: &Option<EventSink<PushEvent>>) -> impl Fn(RetryNotice) + Send + Sync {
    let events = events.clone();
    move |n| {
        if let Some(sink) = &events {
            sink(PushEvent::Retrying(n));
        }
    }
}

fn upload_location(endpoint: &Endpoint, resp: &reqwest::Response) -> Result<Url> {
    let value = resp
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| RegistryError::Url {
            url: resp.url().to_string(),
            reason: "upload response has no Location header".into(),
        })?;
    // Relative locations are resolved against the request's URL.
    resp.url()
        .join(value)
        .or_else(|_| endpoint.base.join(value))
        .map_err(|e| RegistryError::Url {
            url: value.to_string(),
            reason: e.to_string(),
        })
}

/// Walk `descriptor` (manifest or index) in the store: manifests go to
/// `manifests` children first (root last), blobs to `blobs`.
fn collect(
    store: &dyn BlobStore,
    descriptor: &Descriptor,
    manifests: &mut Vec<(Descriptor, Vec<u8>)>,
    blobs: &mut Vec<Descriptor>,
    depth: usize,
) -> Result<()> {
    let media_type = descriptor.media_type().to_string();
    let what = format!("{media_type} {}", descriptor.digest());
    if depth > 4 {
        return Err(RegistryError::UnsupportedMediaType {
            media_type,
            what: format!("{what} (indexes nested too deep)"),
        });
    }
    let bytes = store
        .read_all(descriptor.digest())
        .map_err(|source| RegistryError::Store {
            action: "read",
            digest: descriptor.digest().to_string(),
            source,
        })?;
    if is_index(&media_type) {
        let index = manifest::parse_index(&bytes, &what)?;
        for child in index.manifests() {
            collect(store, child, manifests, blobs, depth + 1)?;
        }
    } else if is_manifest(&media_type) {
        let m = manifest::parse_manifest(&bytes, &what)?;
        blobs.extend(manifest::manifest_blobs(&m));
    } else {
        return Err(RegistryError::UnsupportedMediaType { media_type, what });
    }
    manifests.push((descriptor.clone(), bytes));
    Ok(())
}
