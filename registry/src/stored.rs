//! Which image of a stored ref suits a platform.
//!
//! `hoist pull` names a multi-platform image's *index* and fetches only the
//! manifests (and blobs) of the platforms asked for, as containerd's image
//! store does: pulling `linux/arm64` after `linux/amd64` adds a manifest to
//! what the same name holds instead of replacing it, and garbage collection
//! keeps every manifest of the index that is present (it walks the index and
//! skips what is missing). A ref may also name one image manifest (a
//! single-platform pull, an import, a build); its config then says which
//! platform it is.

use hoist_cache::image::{is_index, is_manifest};
use hoist_cache::Store;
use oci_spec::image::{Descriptor, Digest, MediaType};

use crate::manifest::detect_media_type;
use crate::platform::Platform;
use crate::pull::select_platform;

/// The image manifest of `target` (a ref's target: an index or a manifest)
/// for `platform`, among what the store holds; `None` when it holds none
/// (not pulled for that platform, or a single-platform image of another).
pub fn stored_manifest(
    store: &Store,
    target: &Descriptor,
    platform: &Platform,
) -> Result<Option<Descriptor>, hoist_cache::Error> {
    let media_type = target.media_type().to_string();
    if is_index(&media_type) {
        if !store.content().contains(target.digest()) {
            return Ok(None);
        }
        let index = store.read_index(target.digest())?;
        let present: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| is_manifest(d.media_type().as_ref()))
            .filter(|d| store.content().contains(d.digest()))
            .cloned()
            .collect();
        return Ok(select_platform(&present, platform).cloned());
    }
    if !is_manifest(&media_type) || !store.content().contains(target.digest()) {
        return Ok(None);
    }
    let manifest = store.read_manifest(target.digest())?;
    let config = store.read_config(manifest.config().digest())?;
    // A config that does not say (hand-made images) suits any platform.
    if config.architecture().to_string().is_empty() {
        return Ok(Some(target.clone()));
    }
    let own = Platform::new(
        &config.os().to_string(),
        &config.architecture().to_string(),
        config.variant().as_deref().unwrap_or(""),
    );
    Ok(platform.rank(&own).map(|_| target.clone()))
}

/// [`stored_manifest`] for a blob known only by digest (`FROM
/// name@sha256:…`): its media type is read from the blob itself.
pub fn stored_manifest_by_digest(
    store: &Store,
    digest: &Digest,
    platform: &Platform,
) -> Result<Option<Descriptor>, hoist_cache::Error> {
    if !store.content().contains(digest) {
        return Ok(None);
    }
    let bytes = store.content().read_blob(digest)?;
    let media_type = detect_media_type(None, &bytes);
    let descriptor = Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        digest.clone(),
    );
    stored_manifest(store, &descriptor, platform)
}

/// The platforms of `target` the store holds images for (for messages).
pub fn stored_platforms(store: &Store, target: &Descriptor) -> Vec<Platform> {
    let media_type = target.media_type().to_string();
    if is_index(&media_type) {
        let Ok(index) = store.read_index(target.digest()) else {
            return Vec::new();
        };
        return index
            .manifests()
            .iter()
            .filter(|d| is_manifest(d.media_type().as_ref()))
            .filter(|d| store.content().contains(d.digest()))
            .filter_map(|d| d.platform().as_ref().map(Platform::from))
            .collect();
    }
    let config = store
        .read_manifest(target.digest())
        .and_then(|m| store.read_config(m.config().digest()));
    match config {
        Ok(c) => vec![Platform::new(
            &c.os().to_string(),
            &c.architecture().to_string(),
            c.variant().as_deref().unwrap_or(""),
        )],
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_cache::image::media_types::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};

    /// A manifest (with its config) for `arch`, stored; its descriptor.
    fn image(store: &Store, arch: &str) -> Descriptor {
        let config = serde_json::json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": []},
        });
        let config = store.put_json(&config, OCI_CONFIG).unwrap();
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": config, "layers": [],
        });
        store.put_json(&manifest, OCI_MANIFEST).unwrap()
    }

    fn with_platform(d: &Descriptor, arch: &str) -> serde_json::Value {
        let mut v = serde_json::to_value(d).unwrap();
        v["platform"] = serde_json::json!({"architecture": arch, "os": "linux"});
        v
    }

    #[test]
    fn an_index_yields_the_present_manifest_of_the_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let amd64 = image(&store, "amd64");
        let arm64 = image(&store, "arm64");
        let absent = Descriptor::new(
            MediaType::ImageManifest,
            1,
            Digest::try_from(format!("sha256:{}", "1".repeat(64))).unwrap(),
        );
        let index = serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [with_platform(&amd64, "amd64"), with_platform(&arm64, "arm64"),
                          with_platform(&absent, "s390x")],
        });
        let index = store.put_json(&index, OCI_INDEX).unwrap();
        let pick = |p: &str| {
            stored_manifest(&store, &index, &Platform::parse(p).unwrap())
                .unwrap()
                .map(|d| d.digest().clone())
        };
        assert_eq!(pick("linux/arm64"), Some(arm64.digest().clone()));
        assert_eq!(pick("linux/amd64"), Some(amd64.digest().clone()));
        // Listed in the index but never pulled.
        assert_eq!(pick("linux/s390x"), None);
        let by_digest = stored_manifest_by_digest(
            &store,
            index.digest(),
            &Platform::parse("linux/arm64").unwrap(),
        )
        .unwrap();
        assert_eq!(by_digest.unwrap().digest(), arm64.digest());
        let platforms: Vec<String> = stored_platforms(&store, &index)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(platforms, ["linux/amd64", "linux/arm64"]);
    }

    #[test]
    fn a_single_manifest_suits_only_its_config_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let arm64 = image(&store, "arm64");
        let arm = |p: &str| stored_manifest(&store, &arm64, &Platform::parse(p).unwrap()).unwrap();
        assert!(arm("linux/arm64").is_some());
        assert!(arm("linux/amd64").is_none());
        assert_eq!(
            stored_manifest_by_digest(&store, arm64.digest(), &Platform::parse("arm64").unwrap())
                .unwrap()
                .unwrap()
                .digest(),
            arm64.digest()
        );
    }
}
