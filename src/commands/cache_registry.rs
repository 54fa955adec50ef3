//! `--cache-to type=registry,ref=REF` / `--cache-from type=registry,ref=REF`:
//! the cache artifact of `type=local` (a manifest whose config is the
//! records document and whose layers are the records' blobs) pushed to and
//! pulled from a registry under a tag.

use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use hoist_cache::exchange::{CACHE_ARTIFACT_TYPE, CACHE_RECORDS_MEDIA_TYPE};
use hoist_cache::Store;
use hoist_registry::{
    block_on, CacheBlobStore, Client, ErrorKind, PullEvent, PullOptions, Reference,
};
use oci_spec::image::{Descriptor, Digest, MediaType};

/// What a registry export or import did, for the build's summary line.
pub struct Moved {
    pub records: usize,
    pub blobs_transferred: usize,
    pub blobs_present: usize,
}

/// Pushes the records under `keys` as the cache artifact to `reference`,
/// replacing what the tag named (so stale records are gone from the cache;
/// the registry's own garbage collection reclaims their blobs).
pub fn export(store: &Arc<Store>, reference: &Reference, keys: &[String]) -> anyhow::Result<Moved> {
    let (artifact, report) = store.stage_cache_artifact(keys)?;
    let digest = Digest::from_str(&artifact.digest)
        .map_err(|e| anyhow!("invalid digest {}: {e}", artifact.digest))?;
    let root = Descriptor::new(MediaType::ImageManifest, artifact.size, digest);
    let blobs = CacheBlobStore::new(store.clone())?;
    let client = Client::from_environment().context("failed to set up the registry client")?;
    // The same push as `hoist push`: blobs known in another repository of
    // this registry are mounted, and every blob is recorded as living here.
    let pushed = block_on(blobs.push(&client, reference, &root, None))?
        .with_context(|| format!("failed to push the cache to {reference}"))?;
    Ok(Moved {
        records: report.records,
        blobs_transferred: pushed.uploaded + pushed.mounted,
        blobs_present: pushed.existing,
    })
}

/// Pulls the cache artifact at `reference` into the store (every blob it
/// names, skipping those the store has) and adds its records. A tag that
/// does not exist yet is an empty cache, as BuildKit treats it.
pub fn import(store: &Arc<Store>, reference: &Reference) -> anyhow::Result<Option<Moved>> {
    let blobs = CacheBlobStore::new(store.clone())?;
    let client = Client::from_environment().context("failed to set up the registry client")?;
    // The manifest first: an image or anything else under the tag is
    // refused before a layer is downloaded.
    let resolved = match block_on(client.resolve(reference))? {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("failed to pull the cache from {reference}"))
        }
    };
    let probe: serde_json::Value = serde_json::from_slice(&resolved.bytes)
        .with_context(|| format!("{reference} did not serve a JSON manifest"))?;
    let artifact = probe["artifactType"].as_str() == Some(CACHE_ARTIFACT_TYPE)
        || probe["config"]["mediaType"].as_str() == Some(CACHE_RECORDS_MEDIA_TYPE);
    if !artifact && !resolved.is_index() && !is_image_config(&probe) {
        bail!(
            "{reference} is not a hoist build cache (its manifest's artifactType is not \
             {CACHE_ARTIFACT_TYPE}, nor an image); name the ref a `--cache-to type=registry` \
             wrote or an image built with `--cache-to type=inline`"
        );
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
    let pulled = block_on(blobs.pull(&client, &pinned, &options))?
        .with_context(|| format!("failed to pull the cache from {reference}"))?;
    let report = if artifact {
        store.import_cache_manifest(pulled.manifest.digest().as_ref())
    } else {
        // An image: its config may hold an inline cache (the image and all
        // its layers are in the store now, which the build needs anyway).
        let digest = hoist_cache::Digest::try_from(pulled.config.digest().as_ref())
            .map_err(|e| anyhow!("invalid config digest: {e}"))?;
        let config: serde_json::Value =
            serde_json::from_slice(&store.content().read_blob(&digest)?)
                .with_context(|| format!("the config of {reference} is not JSON"))?;
        let Some(document) = config.get(super::cache_spec::INLINE_CACHE_KEY) else {
            bail!(
                "{reference} is an image without an inline cache (build it with \
                 `--cache-to type=inline`)"
            );
        };
        store.import_cache_records(document)
    }
    .with_context(|| format!("failed to read the cache pulled from {reference}"))?;
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
