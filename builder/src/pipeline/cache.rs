//! Cache import and export of a build, in BuildKit's `--cache-to` /
//! `--cache-from` syntax. `type=local` is an OCI layout directory;
//! `type=registry` is the same artifact (a manifest whose config is the
//! records document and whose layers are the records' blobs) under a
//! registry tag; `type=inline` puts the records document in the image config
//! under [`INLINE_CACHE_KEY`], and `--cache-from type=registry` of such an
//! image reads it back.

use std::collections::BTreeSet;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use hoist_cache::exchange::{CACHE_ARTIFACT_TYPE, CACHE_RECORDS_MEDIA_TYPE};
use hoist_cache::Store;
use hoist_cache::{Descriptor, Digest, MediaType};
use hoist_registry::{block_on, CacheBlobStore, ErrorKind, PullEvent, PullOptions, Reference};

use super::{PipelineError, RegistryClient};
use crate::engine::build::Built;

/// Where a cache goes or comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=local`: an OCI layout directory.
    Local(PathBuf),
    /// `type=registry`: a registry tag.
    Registry(Reference),
    /// `type=inline` (`--cache-to` only): in the image config.
    Inline,
}

impl fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CacheLocation::Local(dir) => write!(f, "{}", dir.display()),
            CacheLocation::Registry(reference) => write!(f, "{reference}"),
            CacheLocation::Inline => f.write_str("the image config"),
        }
    }
}

/// The image config key `type=inline` writes the records document under
/// (BuildKit's is `moby.buildkit.cache.v0`).
pub const INLINE_CACHE_KEY: &str = "hoist.cache.v1";

/// A parsed `--cache-to` / `--cache-from`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// Where the cache is.
    pub location: CacheLocation,
    /// `mode=max`: every record the build used; `min` (default): only those
    /// of the final image's layers.
    pub max: bool,
}

/// Which of the two a spec is for: the messages name the flag, and
/// `type=inline` is an export only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// `--cache-from`.
    From,
    /// `--cache-to`.
    To,
}

impl Direction {
    fn flag(self) -> &'static str {
        match self {
            Direction::From => "--cache-from",
            Direction::To => "--cache-to",
        }
    }
}

impl CacheSpec {
    /// Parses `type=local,dest=DIR[,mode=min|max]` (`src=DIR` for
    /// `--cache-from`), `type=registry,ref=REF[,mode=min|max]` and
    /// `type=inline`.
    pub fn parse(spec: &str, direction: Direction) -> Result<CacheSpec, PipelineError> {
        let flag = direction.flag();
        let shown = hoist_untrusted::escape(spec);
        let invalid = |text: String| PipelineError::Invalid(text);
        let (mut kind, mut dir, mut max, mut reference) = (None, None, false, None);
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                invalid(format!(
                    "invalid {flag} `{shown}`: expected KEY=VALUE pairs"
                ))
            })?;
            match k {
                "type" => kind = Some(v.to_owned()),
                "dest" | "src" => dir = Some(PathBuf::from(v)),
                "mode" => {
                    max = match v {
                        "max" => true,
                        "min" => false,
                        _ => {
                            return Err(invalid(format!(
                                "invalid {flag} mode `{}`: expected min or max",
                                hoist_untrusted::escape(v)
                            )))
                        }
                    }
                }
                "ref" => reference = Some(v.to_owned()),
                "compression" | "oci-mediatypes" | "ignore-error" => {}
                _ => {
                    return Err(invalid(format!(
                        "invalid {flag} key `{}`",
                        hoist_untrusted::escape(k)
                    )))
                }
            }
        }
        let location = match kind.as_deref() {
            Some("local") => CacheLocation::Local(dir.ok_or_else(|| {
                invalid(format!(
                    "{flag} `{shown}` needs dest=DIR (src=DIR for --cache-from)"
                ))
            })?),
            Some("registry") => {
                let r = reference.ok_or_else(|| {
                    invalid(format!("{flag} `{shown}` needs ref=REGISTRY/NAME[:TAG]"))
                })?;
                let parsed = Reference::parse(&r).map_err(|e| {
                    invalid(format!(
                        "invalid {flag} ref `{}`: {e}",
                        hoist_untrusted::escape(&r)
                    ))
                })?;
                CacheLocation::Registry(parsed)
            }
            Some("inline") if direction == Direction::To => CacheLocation::Inline,
            Some("inline") => {
                return Err(invalid(format!(
                    "{flag} type=inline: import an inline cache with type=registry,ref=IMAGE"
                )))
            }
            Some(other @ ("gha" | "s3")) => {
                return Err(invalid(format!(
                    "{flag} type={other} is not supported (type=local, registry and inline are)"
                )))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "invalid {flag} type `{}`",
                    hoist_untrusted::escape(other)
                )))
            }
            None => {
                return Err(invalid(format!(
                    "invalid {flag} `{shown}`: type= is required"
                )))
            }
        };
        Ok(CacheSpec { location, max })
    }
}

/// What an import or export moved, for the build's summary line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Moved {
    /// Cache records imported or exported.
    pub records: usize,
    /// Blobs downloaded (import) or uploaded and mounted (export).
    pub blobs_transferred: usize,
    /// Blobs already at the other end.
    pub blobs_present: usize,
}

impl From<hoist_cache::exchange::ExchangeReport> for Moved {
    fn from(report: hoist_cache::exchange::ExchangeReport) -> Moved {
        Moved {
            records: report.records,
            blobs_transferred: report.blobs_copied,
            blobs_present: report.blobs_present,
        }
    }
}

fn cache_error(action: String) -> impl FnOnce(hoist_cache::Error) -> PipelineError {
    move |source| PipelineError::Store { action, source }
}

fn registry_error(action: String) -> impl FnOnce(hoist_registry::RegistryError) -> PipelineError {
    move |source| PipelineError::Registry {
        action,
        source: Box::new(source),
    }
}

/// Imports one `--cache-from`. `None`: a registry tag that does not exist
/// yet, an empty cache (as BuildKit treats it).
pub(super) fn import(
    store: &Arc<Store>,
    client: &RegistryClient,
    spec: &CacheSpec,
) -> Result<Option<Moved>, PipelineError> {
    match &spec.location {
        CacheLocation::Local(dir) => {
            let report = store.import_cache(dir).map_err(cache_error(format!(
                "import the cache at `{}`",
                dir.display()
            )))?;
            Ok(Some(report.into()))
        }
        CacheLocation::Registry(reference) => import_registry(store, client.get()?, reference),
        // Refused by `parse`; the image's config is the inline cache.
        CacheLocation::Inline => Ok(None),
    }
}

/// The keys `--cache-to` exports: with `mode=min` only records whose blobs
/// the final image holds.
fn exported_keys(store: &Store, max: bool, built: &Built) -> Result<Vec<String>, PipelineError> {
    if max {
        return Ok(built.cache_records.clone());
    }
    let image: BTreeSet<&str> = built
        .layers
        .iter()
        .chain(built.platforms.iter().flat_map(|p| &p.layers))
        .map(|l| l.digest.as_str())
        .collect();
    let wanted: BTreeSet<&String> = built.cache_records.iter().collect();
    Ok(store
        .list_cache_records()
        .map_err(cache_error("list the cache records".into()))?
        .into_iter()
        .filter(|r| wanted.contains(&r.key) && r.blobs.iter().all(|b| image.contains(b.as_str())))
        .map(|r| r.key)
        .collect())
}

/// `--cache-to type=inline`: the image is rewritten with the records
/// document in its config (a new config and manifest; the layers are the
/// same). Called before the image is tagged.
pub(super) fn inline(store: &Store, mut built: Built) -> Result<Built, PipelineError> {
    if built.index.is_some() {
        return Err(PipelineError::Invalid(
            "--cache-to type=inline cannot be combined with an image index (a provenance \
             attestation, several platforms, index or descriptor annotations) yet"
                .into(),
        ));
    }
    let failed = |what: &str| cache_error(format!("write the inline cache ({what})"));
    // Inline caches are mode=min, as in BuildKit: a config holds what the
    // image's own layers can serve.
    let keys = exported_keys(store, false, &built)?;
    let document = store
        .cache_records_document(&keys)
        .map_err(failed("records"))?;
    let mut config = built.image.config.clone();
    let object = config
        .as_object_mut()
        .ok_or_else(|| PipelineError::Invalid("the image config is not a JSON object".into()))?;
    object.insert(INLINE_CACHE_KEY.to_string(), document);
    let config_bytes = serde_json::to_vec(&config).map_err(json_error)?;
    let config_blob = store
        .content()
        .put(&config_bytes)
        .map_err(failed("config"))?;
    let old = built.image.manifest.digest().to_string();
    let old_digest = hoist_cache::Digest::try_from(old.as_str())
        .map_err(|e| PipelineError::Invalid(format!("invalid manifest digest {old}: {e}")))?;
    let manifest_bytes = store
        .content()
        .read_blob(&old_digest)
        .map_err(failed("manifest"))?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&manifest_bytes).map_err(json_error)?;
    manifest["config"]["digest"] = config_blob.digest.to_string().into();
    manifest["config"]["size"] = config_blob.size.into();
    let manifest_bytes = serde_json::to_vec(&manifest).map_err(json_error)?;
    let manifest_blob = store
        .content()
        .put(&manifest_bytes)
        .map_err(failed("manifest"))?;
    let digest = Digest::from_str(manifest_blob.digest.as_ref()).map_err(|e| {
        PipelineError::Invalid(format!("invalid digest {}: {e}", manifest_blob.digest))
    })?;
    let mut descriptor = built.image.manifest.clone();
    descriptor.set_digest(digest);
    descriptor.set_size(manifest_blob.size);
    built.image.manifest = descriptor;
    built.image.config_digest = config_blob.digest.to_string();
    built.image.config = config;
    Ok(built)
}

fn json_error(e: serde_json::Error) -> PipelineError {
    PipelineError::Invalid(format!("the image's JSON cannot be rewritten: {e}"))
}

/// Exports what `built` used to `spec` (`type=inline` was written into the
/// image by [`inline`]: `None`).
pub(super) fn export(
    store: &Arc<Store>,
    client: &RegistryClient,
    spec: &CacheSpec,
    built: &Built,
) -> Result<Option<Moved>, PipelineError> {
    let keys = exported_keys(store, spec.max, built)?;
    match &spec.location {
        CacheLocation::Local(dir) => {
            let report = store.export_cache(dir, &keys).map_err(cache_error(format!(
                "export the cache to `{}`",
                dir.display()
            )))?;
            Ok(Some(report.into()))
        }
        CacheLocation::Registry(reference) => {
            export_registry(store, client.get()?, reference, &keys).map(Some)
        }
        CacheLocation::Inline => Ok(None),
    }
}

/// Pushes the records under `keys` as the cache artifact to `reference`,
/// replacing what the tag named (so stale records are gone from the cache;
/// the registry's own garbage collection reclaims their blobs).
fn export_registry(
    store: &Arc<Store>,
    client: &hoist_registry::Client,
    reference: &Reference,
    keys: &[String],
) -> Result<Moved, PipelineError> {
    let action = || format!("push the cache to {reference}");
    let (artifact, report) = store
        .stage_cache_artifact(keys)
        .map_err(cache_error(action()))?;
    let digest = Digest::from_str(&artifact.digest)
        .map_err(|e| PipelineError::Invalid(format!("invalid digest {}: {e}", artifact.digest)))?;
    let root = Descriptor::new(MediaType::ImageManifest, artifact.size, digest);
    let blobs = CacheBlobStore::new(store.clone()).map_err(|e| PipelineError::Other {
        action: action(),
        source: Box::new(e),
    })?;
    // The same push as `hoist push`: blobs known in another repository of
    // this registry are mounted, and every blob is recorded as living here.
    let pushed = block_on(blobs.push(client, reference, &root, None))
        .and_then(|r| r)
        .map_err(registry_error(action()))?;
    Ok(Moved {
        records: report.records,
        blobs_transferred: pushed.uploaded + pushed.mounted,
        blobs_present: pushed.existing,
    })
}

/// Pulls the cache artifact at `reference` into the store (every blob it
/// names, skipping those the store has) and adds its records.
fn import_registry(
    store: &Arc<Store>,
    client: &hoist_registry::Client,
    reference: &Reference,
) -> Result<Option<Moved>, PipelineError> {
    let action = || format!("pull the cache from {reference}");
    let blobs = CacheBlobStore::new(store.clone()).map_err(|e| PipelineError::Other {
        action: action(),
        source: Box::new(e),
    })?;
    // The manifest first: an image or anything else under the tag is
    // refused before a layer is downloaded.
    let resolved = match block_on(client.resolve(reference)).and_then(|r| r) {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(registry_error(action())(e)),
    };
    let probe: serde_json::Value = serde_json::from_slice(&resolved.bytes).map_err(|_| {
        PipelineError::Invalid(format!("{reference} did not serve a JSON manifest"))
    })?;
    let artifact = probe["artifactType"].as_str() == Some(CACHE_ARTIFACT_TYPE)
        || probe["config"]["mediaType"].as_str() == Some(CACHE_RECORDS_MEDIA_TYPE);
    if !artifact && !resolved.is_index() && !is_image_config(&probe) {
        return Err(PipelineError::Invalid(format!(
            "{reference} is not a hoist build cache (its manifest's artifactType is not \
             {CACHE_ARTIFACT_TYPE}, nor an image); name the ref a `--cache-to type=registry` \
             wrote or an image built with `--cache-to type=inline`"
        )));
    }
    // Pin the digest just resolved, so a concurrent export cannot swap the
    // manifest between the check and the pull.
    let pinned = Reference::parse(&format!(
        "{}/{}@{}",
        reference.registry(),
        reference.repository(),
        resolved.descriptor.digest()
    ))
    .unwrap_or_else(|_| reference.clone());
    let fetched = Arc::new(AtomicUsize::new(0));
    let present = Arc::new(AtomicUsize::new(0));
    let (f, p) = (fetched.clone(), present.clone());
    let options = PullOptions {
        platform: None,
        events: Some(Arc::new(move |event: PullEvent| match event {
            PullEvent::BlobDone { .. } => {
                f.fetch_add(1, Ordering::Relaxed);
            }
            PullEvent::BlobSkipped { .. } => {
                p.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        })),
    };
    // Pulled as `hoist pull` does: the blobs' sources are recorded, so a
    // later push to this registry mounts them.
    let pulled = block_on(blobs.pull(client, &pinned, &options))
        .and_then(|r| r)
        .map_err(registry_error(action()))?;
    let read = || format!("read the cache pulled from {reference}");
    let report = if artifact {
        store
            .import_cache_manifest(pulled.manifest.digest().as_ref())
            .map_err(cache_error(read()))?
    } else {
        // An image: its config may hold an inline cache (the image and all
        // its layers are in the store now, which the build needs anyway).
        let digest = hoist_cache::Digest::try_from(pulled.config.digest().as_ref())
            .map_err(|e| PipelineError::Invalid(format!("invalid config digest: {e}")))?;
        let bytes = store
            .content()
            .read_blob(&digest)
            .map_err(cache_error(read()))?;
        let config: serde_json::Value = serde_json::from_slice(&bytes).map_err(|_| {
            PipelineError::Invalid(format!("the config of {reference} is not JSON"))
        })?;
        let Some(document) = config.get(INLINE_CACHE_KEY) else {
            return Err(PipelineError::Invalid(format!(
                "{reference} is an image without an inline cache (build it with \
                 `--cache-to type=inline`)"
            )));
        };
        store
            .import_cache_records(document)
            .map_err(cache_error(read()))?
    };
    Ok(Some(Moved {
        records: report.records,
        blobs_transferred: fetched.load(Ordering::Relaxed),
        blobs_present: present.load(Ordering::Relaxed),
    }))
}

fn is_image_config(manifest: &serde_json::Value) -> bool {
    matches!(
        manifest["config"]["mediaType"].as_str(),
        Some("application/vnd.oci.image.config.v1+json")
            | Some("application/vnd.docker.container.image.v1+json")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_buildkit() {
        let s = CacheSpec::parse("type=local,dest=/tmp/c,mode=max", Direction::To).unwrap();
        assert_eq!(
            (s.location, s.max),
            (CacheLocation::Local(PathBuf::from("/tmp/c")), true)
        );
        assert!(
            !CacheSpec::parse("type=local,src=/c", Direction::From)
                .unwrap()
                .max
        );
        let s = CacheSpec::parse(
            "type=registry,ref=127.0.0.1:5000/cache:x,mode=max",
            Direction::To,
        )
        .unwrap();
        assert_eq!(
            s.location,
            CacheLocation::Registry(Reference::parse("127.0.0.1:5000/cache:x").unwrap())
        );
        assert!(s.max);
        assert!(CacheSpec::parse("type=registry", Direction::From).is_err());
        assert_eq!(
            CacheSpec::parse("type=inline", Direction::To)
                .unwrap()
                .location,
            CacheLocation::Inline
        );
        assert!(CacheSpec::parse("type=inline", Direction::From).is_err());
        let e = CacheSpec::parse("type=gha", Direction::To).unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        assert!(CacheSpec::parse("type=local", Direction::To).is_err());
        let e = CacheSpec::parse("type=\x1b[2J", Direction::To).unwrap_err();
        assert!(e.to_string().contains("\\u{1b}[2J"), "{e}");
        assert!(!e.to_string().contains('\x1b'), "{e}");
    }
}
