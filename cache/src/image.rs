//! The image model: manifests, indexes and configs in OCI and Docker v2
//! schema 2 media types, read from and written to the content store.
//!
//! Blobs read from elsewhere (a registry, an archive) are kept byte for byte;
//! parsing is for reading. New documents (an imported image, a converted
//! manifest) are serialized once and stored by the digest of those bytes.

use std::collections::BTreeSet;

use oci_spec::image::{
    Arch, Descriptor, Digest, ImageConfiguration, ImageIndex, ImageManifest, MediaType, Os,
};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::Store;

/// Media type strings, OCI and Docker.
pub mod media_types {
    /// OCI image manifest.
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    /// OCI image index.
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    /// OCI image config.
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    /// OCI uncompressed layer.
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    /// OCI gzip layer.
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    /// OCI zstd layer.
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    /// Docker v2 schema 2 manifest.
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    /// Docker manifest list.
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    /// Docker image config.
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    /// Docker gzip layer.
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    /// Docker uncompressed layer.
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
}
use media_types::*;

/// How a layer blob is compressed (sniffed by [`Compression::sniff`]).
pub use hoist_untrusted::Compression;

/// The compression a layer media type implies; `None` when it is not a layer.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        OCI_LAYER | DOCKER_LAYER | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
            Some(Compression::None)
        }
        OCI_LAYER_GZIP
        | DOCKER_LAYER_GZIP
        | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Some(Compression::Gzip),
        OCI_LAYER_ZSTD | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => {
            Some(Compression::Zstd)
        }
        _ => None,
    }
}

/// The media type of a layer compressed as `compression`, OCI's or Docker's.
/// Docker's schema 2 has no zstd layer: zstd is OCI's type either way (as
/// BuildKit forces OCI media types for zstd).
pub fn layer_media_type(compression: Compression, oci: bool) -> &'static str {
    match (compression, oci) {
        (Compression::Zstd, _) => OCI_LAYER_ZSTD,
        (Compression::Gzip, true) => OCI_LAYER_GZIP,
        (Compression::None, true) => OCI_LAYER,
        (Compression::Gzip, false) => DOCKER_LAYER_GZIP,
        (Compression::None, false) => DOCKER_LAYER,
    }
}

/// A layer's `media_type` said the OCI or the Docker way; a type with no
/// counterpart (nondistributable, foreign, not a layer) is kept.
pub fn layer_media_type_as(media_type: &str, oci: bool) -> &str {
    match media_type {
        OCI_LAYER | OCI_LAYER_GZIP | OCI_LAYER_ZSTD | DOCKER_LAYER | DOCKER_LAYER_GZIP => {
            layer_compression(media_type).map_or(media_type, |c| layer_media_type(c, oci))
        }
        _ => media_type,
    }
}

/// True for an image index or a Docker manifest list.
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// True for an OCI or Docker v2 schema 2 image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// One resolved image: its manifest and config (for an index, the manifest
/// chosen for this host's platform).
#[derive(Clone, Debug)]
pub struct Image {
    /// What the ref points at (a manifest, or the index it was chosen from).
    pub target: Descriptor,
    /// The manifest's own descriptor.
    pub manifest_descriptor: Descriptor,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config.
    pub config: ImageConfiguration,
}

impl Image {
    /// The image ID Docker shows: the config digest.
    pub fn id(&self) -> &Digest {
        self.manifest.config().digest()
    }

    /// The layers, bottom first.
    pub fn layers(&self) -> &[Descriptor] {
        self.manifest.layers()
    }

    /// Stored size: the sum of the layer blobs (compressed, as stored).
    pub fn size(&self) -> u64 {
        self.layers().iter().map(|l| l.size()).sum()
    }

    /// The layer digests, bottom first (the key for base/child relations).
    pub fn layer_digests(&self) -> Vec<String> {
        self.layers()
            .iter()
            .map(|l| l.digest().to_string())
            .collect()
    }
}

/// Checks that the times an image config carries (`created` and each
/// history entry's) are RFC 3339 times, as Docker's config parser requires:
/// an image from a registry or an archive with a year 99999 or a date that
/// is not one is refused on the way in, naming the value, instead of
/// showing wrong ages or reaching a reproducible build's clamp.
pub fn check_config_times(config: &ImageConfiguration) -> Result<()> {
    let check = |what: String, value: &Option<String>| match value {
        Some(text) => crate::units::parse_rfc3339(text)
            .map(drop)
            .map_err(|e| Error::invalid(format!("the image config's {what} is invalid: {e}"))),
        None => Ok(()),
    };
    check("`created`".into(), config.created())?;
    for (i, entry) in config.history().iter().flatten().enumerate() {
        check(format!("history entry {}", i + 1), entry.created())?;
    }
    Ok(())
}

fn json_error(action: String) -> impl FnOnce(serde_json::Error) -> Error {
    move |source| Error::Json { action, source }
}

impl Store {
    /// Read and parse a manifest blob (OCI or Docker).
    pub fn read_manifest(&self, digest: &Digest) -> Result<ImageManifest> {
        let bytes = self.content().read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(json_error(format!("parse manifest {digest}")))
    }

    /// Read and parse an index blob (OCI index or Docker manifest list).
    pub fn read_index(&self, digest: &Digest) -> Result<ImageIndex> {
        let bytes = self.content().read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(json_error(format!("parse image index {digest}")))
    }

    /// Read and parse a config blob.
    pub fn read_config(&self, digest: &Digest) -> Result<ImageConfiguration> {
        let bytes = self.content().read_blob(digest)?;
        serde_json::from_slice(&bytes).map_err(json_error(format!("parse image config {digest}")))
    }

    /// Serialize `value` and store it, returning its descriptor.
    pub fn put_json<T: Serialize>(&self, value: &T, media_type: &str) -> Result<Descriptor> {
        let bytes = serde_json::to_vec(value)
            .map_err(json_error(format!("serialize a {media_type} document")))?;
        let committed = self.content().put(&bytes)?;
        Ok(Descriptor::new(
            MediaType::from(media_type),
            committed.size,
            committed.digest,
        ))
    }

    /// Resolve what a ref points at into an image: a manifest directly, an
    /// index through the entry for this host's platform (or its first).
    pub fn image(&self, target: &Descriptor) -> Result<Image> {
        let media_type = target.media_type().to_string();
        let manifest_descriptor = if is_index(&media_type) {
            let index = self.read_index(target.digest())?;
            pick_platform(self, index.manifests())
                .cloned()
                .ok_or_else(|| {
                    Error::invalid(format!(
                        "image index {} has no image manifest",
                        target.digest()
                    ))
                })?
        } else if is_manifest(&media_type) {
            target.clone()
        } else {
            return Err(Error::UnsupportedMediaType {
                media_type,
                what: "an image ref target",
            });
        };
        let manifest = self.read_manifest(manifest_descriptor.digest())?;
        let config = self.read_config(manifest.config().digest())?;
        Ok(Image {
            target: target.clone(),
            manifest_descriptor,
            manifest,
            config,
        })
    }

    /// Every blob reachable from `target` (itself, child manifests, configs,
    /// layers). Fails when `target` or a manifest is missing; the manifests
    /// of an index that are not in the store (platforms never pulled) are
    /// skipped: see [`Store::missing_manifests`].
    pub fn reachable_blobs(&self, target: &Descriptor) -> Result<BTreeSet<String>> {
        let mut seen = BTreeSet::new();
        self.walk(target, &mut seen)?;
        Ok(seen)
    }

    /// The entries of the index `target` whose manifests the store lacks (a
    /// multi-platform image pulled for some platforms only); empty for a
    /// manifest.
    pub fn missing_manifests(&self, target: &Descriptor) -> Result<Vec<Descriptor>> {
        if !is_index(target.media_type().as_ref()) {
            return Ok(Vec::new());
        }
        Ok(self
            .read_index(target.digest())?
            .manifests()
            .iter()
            .filter(|d| !self.content().contains(d.digest()))
            .cloned()
            .collect())
    }

    fn walk(&self, descriptor: &Descriptor, seen: &mut BTreeSet<String>) -> Result<()> {
        if !seen.insert(descriptor.digest().to_string()) {
            return Ok(());
        }
        let media_type = descriptor.media_type().to_string();
        if is_index(&media_type) {
            for child in self.read_index(descriptor.digest())?.manifests() {
                if !self.content().contains(child.digest()) {
                    continue;
                }
                self.walk(child, seen)?;
            }
        } else if is_manifest(&media_type) {
            let manifest = self.read_manifest(descriptor.digest())?;
            seen.insert(manifest.config().digest().to_string());
            for layer in manifest.layers() {
                seen.insert(layer.digest().to_string());
            }
        }
        Ok(())
    }
}

/// The host platform as OCI names it (`linux`, `amd64`).
pub fn host_platform() -> (Os, Arch) {
    (Os::default(), Arch::default())
}

/// The host's manifest, else the first image manifest the store holds (an
/// index pulled for one platform only holds that one's), else the first.
fn pick_platform<'a>(store: &Store, manifests: &'a [Descriptor]) -> Option<&'a Descriptor> {
    let (os, arch) = host_platform();
    let images = || {
        manifests
            .iter()
            .filter(|d| is_manifest(d.media_type().as_ref()))
    };
    // Attestation manifests say `unknown/unknown`: never an image to pick.
    let is_image = |d: &&Descriptor| {
        d.platform()
            .as_ref()
            .is_none_or(|p| p.architecture().to_string() != "unknown")
    };
    let present = |d: &&Descriptor| store.content().contains(d.digest());
    images()
        .filter(present)
        .find(|d| {
            d.platform()
                .as_ref()
                .is_some_and(|p| *p.os() == os && *p.architecture() == arch)
        })
        .or_else(|| images().filter(is_image).find(present))
        .or_else(|| images().next())
}

/// The same manifest with Docker v2 schema 2 media types (manifest, config,
/// layers). zstd layers have no Docker equivalent and are refused.
pub fn to_docker_manifest(manifest: &ImageManifest) -> Result<ImageManifest> {
    let mut out = manifest.clone();
    out.set_media_type(Some(MediaType::from(DOCKER_MANIFEST)));
    let mut config = manifest.config().clone();
    config.set_media_type(MediaType::from(DOCKER_CONFIG));
    out.set_config(config);
    let layers = manifest
        .layers()
        .iter()
        .map(|layer| {
            let media_type = layer.media_type().to_string();
            let docker = match layer_compression(&media_type) {
                Some(Compression::Gzip) => DOCKER_LAYER_GZIP,
                Some(Compression::None) => DOCKER_LAYER,
                _ => {
                    return Err(Error::UnsupportedMediaType {
                        media_type,
                        what: "a layer of a Docker v2 schema 2 manifest",
                    })
                }
            };
            let mut layer = layer.clone();
            layer.set_media_type(MediaType::from(docker));
            Ok(layer)
        })
        .collect::<Result<Vec<_>>>()?;
    out.set_layers(layers);
    Ok(out)
}

/// The same manifest with OCI media types.
pub fn to_oci_manifest(manifest: &ImageManifest) -> Result<ImageManifest> {
    let mut out = manifest.clone();
    out.set_media_type(Some(MediaType::ImageManifest));
    let mut config = manifest.config().clone();
    config.set_media_type(MediaType::ImageConfig);
    out.set_config(config);
    let layers = manifest
        .layers()
        .iter()
        .map(|layer| {
            let media_type = layer.media_type().to_string();
            let oci = match layer_compression(&media_type) {
                Some(Compression::Gzip) => MediaType::ImageLayerGzip,
                Some(Compression::None) => MediaType::ImageLayer,
                Some(Compression::Zstd) => MediaType::ImageLayerZstd,
                None => {
                    return Err(Error::UnsupportedMediaType {
                        media_type,
                        what: "a layer of an OCI manifest",
                    })
                }
            };
            let mut layer = layer.clone();
            layer.set_media_type(oci);
            Ok(layer)
        })
        .collect::<Result<Vec<_>>>()?;
    out.set_layers(layers);
    Ok(out)
}

/// True when the manifest already uses OCI media types throughout.
pub fn is_oci_manifest(manifest: &ImageManifest) -> bool {
    manifest
        .media_type()
        .as_ref()
        .is_none_or(|m| m.as_ref() == OCI_MANIFEST)
        && manifest.config().media_type().as_ref() == OCI_CONFIG
        && manifest
            .layers()
            .iter()
            .all(|l| l.media_type().as_ref().starts_with("application/vnd.oci."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_media_types_are_said_the_oci_or_the_docker_way() {
        assert_eq!(layer_media_type_as(DOCKER_LAYER_GZIP, true), OCI_LAYER_GZIP);
        assert_eq!(
            layer_media_type_as(OCI_LAYER_GZIP, false),
            DOCKER_LAYER_GZIP
        );
        assert_eq!(layer_media_type_as(OCI_LAYER, false), DOCKER_LAYER);
        // Docker has no zstd layer type.
        assert_eq!(layer_media_type_as(OCI_LAYER_ZSTD, false), OCI_LAYER_ZSTD);
        let foreign = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
        assert_eq!(layer_media_type_as(foreign, true), foreign);
        assert_eq!(layer_media_type_as("x", true), "x");
    }
    use oci_spec::image::{
        ConfigBuilder, HistoryBuilder, ImageConfigurationBuilder, ImageManifestBuilder,
        RootFsBuilder,
    };

    fn sample(store: &Store) -> (Descriptor, ImageManifest, ImageConfiguration) {
        let layer = store.content().put(b"not really a layer").unwrap();
        let config = ImageConfigurationBuilder::default()
            .architecture(Arch::Amd64)
            .os(Os::Linux)
            .created("2024-01-02T03:04:05Z".to_string())
            .config(
                ConfigBuilder::default()
                    .cmd(vec!["sh".to_string()])
                    .env(vec!["PATH=/bin".to_string()])
                    .build()
                    .unwrap(),
            )
            .rootfs(
                RootFsBuilder::default()
                    .diff_ids(vec![layer.digest.to_string()])
                    .build()
                    .unwrap(),
            )
            .history(vec![HistoryBuilder::default()
                .created_by("hoist import".to_string())
                .build()
                .unwrap()])
            .build()
            .unwrap();
        let config_descriptor = store.put_json(&config, OCI_CONFIG).unwrap();
        let manifest = ImageManifestBuilder::default()
            .schema_version(2u32)
            .media_type(MediaType::ImageManifest)
            .config(config_descriptor)
            .layers(vec![Descriptor::new(
                MediaType::ImageLayerGzip,
                layer.size,
                layer.digest,
            )])
            .build()
            .unwrap();
        let target = store.put_json(&manifest, OCI_MANIFEST).unwrap();
        (target, manifest, config)
    }

    #[test]
    fn oci_image_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (target, manifest, config) = sample(&store);
        let image = store.image(&target).unwrap();
        assert_eq!(image.manifest, manifest);
        assert_eq!(image.config, config);
        assert_eq!(image.id(), manifest.config().digest());
        assert_eq!(image.size(), 18);
        let raw: serde_json::Value =
            serde_json::from_slice(&store.content().read_blob(target.digest()).unwrap()).unwrap();
        assert_eq!(raw["mediaType"], OCI_MANIFEST);
        assert_eq!(raw["layers"][0]["mediaType"], OCI_LAYER_GZIP);
        let reachable = store.reachable_blobs(&target).unwrap();
        assert_eq!(reachable.len(), 3);
    }

    #[test]
    fn docker_conversion_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (_, manifest, _) = sample(&store);
        let docker = to_docker_manifest(&manifest).unwrap();
        let json: serde_json::Value = serde_json::to_value(&docker).unwrap();
        assert_eq!(json["mediaType"], DOCKER_MANIFEST);
        assert_eq!(json["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(json["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
        assert!(!is_oci_manifest(&docker));
        // A Docker manifest stored as bytes resolves like an OCI one.
        let target = store.put_json(&docker, DOCKER_MANIFEST).unwrap();
        let image = store.image(&target).unwrap();
        assert_eq!(image.layers()[0].digest(), manifest.layers()[0].digest());
        let back = to_oci_manifest(&docker).unwrap();
        assert_eq!(back, manifest);
        assert!(is_oci_manifest(&back));
    }

    #[test]
    fn index_resolves_to_the_host_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (target, _, _) = sample(&store);
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST_LIST,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": format!("sha256:{}", "0".repeat(64)), "size": 1,
                 "platform": {"architecture": "s390x", "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": target.digest().to_string(), "size": target.size(),
                 "platform": {"architecture": Arch::default().to_string(), "os": "linux"}},
            ]
        });
        let index = store.put_json(&index, DOCKER_MANIFEST_LIST).unwrap();
        let image = store.image(&index).unwrap();
        assert_eq!(image.manifest_descriptor.digest(), target.digest());
        assert_eq!(image.target.digest(), index.digest());
    }

    #[test]
    fn index_pulled_for_another_platform_resolves_to_what_is_present() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (target, _, _) = sample(&store);
        let absent = format!("sha256:{}", "0".repeat(64));
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": absent, "size": 1,
                 "platform": {"architecture": Arch::default().to_string(), "os": "linux"}},
                {"mediaType": OCI_MANIFEST, "digest": target.digest().to_string(), "size": target.size(),
                 "platform": {"architecture": "riscv64", "os": "linux"}},
            ]
        });
        let index = store.put_json(&index, OCI_INDEX).unwrap();
        let image = store.image(&index).unwrap();
        assert_eq!(image.manifest_descriptor.digest(), target.digest());
    }

    #[test]
    fn docker_config_with_extra_fields_parses() {
        let raw = br#"{"architecture":"amd64","os":"linux","docker_version":"24.0.7",
            "container_config":{"Cmd":["x"]},"config":{"Cmd":["sh"],"Healthcheck":{"Test":["NONE"]}},
            "rootfs":{"type":"layers","diff_ids":[]},"history":[{"created_by":"x","empty_layer":true}]}"#;
        let config: ImageConfiguration = serde_json::from_slice(raw).unwrap();
        assert_eq!(
            config.config().as_ref().unwrap().cmd().as_ref().unwrap(),
            &["sh".to_string()]
        );
        assert_eq!(
            config.history().as_ref().unwrap()[0].empty_layer(),
            Some(true)
        );
    }

    #[test]
    fn layer_media_types_name_their_compression() {
        assert_eq!(
            layer_compression(DOCKER_LAYER_GZIP),
            Some(Compression::Gzip)
        );
        assert_eq!(layer_compression(OCI_CONFIG), None);
    }
}
