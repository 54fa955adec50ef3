//! Media types and the manifest shapes the client reads.

use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

use crate::error::RegistryError;

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2 schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `Accept` header sent when resolving: every type we can use.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";
/// Manifests are small; a bigger answer is refused rather than buffered.
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// Whether a media type names an index (OCI index or Docker list).
pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

/// Whether a media type names an image manifest.
pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Pick the media type of a manifest body: the header if it names a
/// manifest type, else the body's `mediaType`, else guess from its shape.
pub(crate) fn detect_media_type(content_type: Option<&str>, body: &[u8]) -> String {
    if let Some(ct) = content_type {
        let ct = ct.split(';').next().unwrap_or(ct).trim();
        if is_index(ct) || is_manifest(ct) || ct.contains("manifest.v1+prettyjws") {
            return ct.to_string();
        }
    }
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(body) {
        Ok(Probe {
            media_type: Some(m),
            ..
        }) => m,
        Ok(Probe {
            manifests: Some(_), ..
        }) => OCI_INDEX.to_string(),
        _ => OCI_MANIFEST.to_string(),
    }
}

/// Parse an image manifest.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<ImageManifest, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::Manifest {
        what: what.to_string(),
        source,
    })
}

/// Parse an image index or manifest list.
pub fn parse_index(bytes: &[u8], what: &str) -> Result<ImageIndex, RegistryError> {
    serde_json::from_slice(bytes).map_err(|source| RegistryError::Manifest {
        what: what.to_string(),
        source,
    })
}

/// The blobs a manifest references: config first, then layers.
pub fn manifest_blobs(manifest: &ImageManifest) -> Vec<Descriptor> {
    let mut out = vec![manifest.config().clone()];
    out.extend(manifest.layers().iter().cloned());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_type_detection() {
        assert_eq!(
            detect_media_type(Some("application/vnd.oci.image.index.v1+json"), b"{}"),
            OCI_INDEX
        );
        assert_eq!(
            detect_media_type(
                Some("application/json; charset=utf-8"),
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#
            ),
            DOCKER_MANIFEST
        );
        assert_eq!(
            detect_media_type(None, br#"{"schemaVersion":2,"manifests":[]}"#),
            OCI_INDEX
        );
        assert_eq!(
            detect_media_type(None, br#"{"schemaVersion":2,"layers":[]}"#),
            OCI_MANIFEST
        );
    }
}
