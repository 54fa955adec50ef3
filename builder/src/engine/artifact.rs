//! What the real ops pass between each other: a layer chain, or a build context.

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::file_index::CacheOutput;

/// One layer blob in the content store, or a lazy layer: one a step kept
/// no blob of (see [`Layer::lazy`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// `sha256:<hex>` of the blob (the manifest's layer digest).
    pub digest: String,
    /// `sha256:<hex>` of the uncompressed tar (the config's diff_id).
    pub diff_id: String,
    /// Size of the blob in bytes.
    pub size: u64,
    /// Media type of the blob.
    pub media_type: String,
}

/// The media type a lazy layer is recorded with: hoist's own, never in an
/// image. Its digest is its diff_id, the digest of the plain tar that
/// [`Layer::written`] names once the blob exists.
const LAZY_MEDIA_TYPE: &str = "application/vnd.hoist.layer.v1.tar+lazy";

impl Layer {
    /// The layer of a step that kept no blob (`LayerBlob::Lazy`): the plain
    /// tar of the step's diff, whose digest is the diff_id, with no blob in
    /// the store.
    pub fn lazy(diff_id: String, size: u64) -> Layer {
        Layer {
            digest: diff_id.clone(),
            diff_id,
            size,
            media_type: LAZY_MEDIA_TYPE.to_owned(),
        }
    }

    /// Whether this is a layer a step kept no blob of: its committed
    /// snapshot is all there is of it.
    pub fn is_lazy(&self) -> bool {
        self.media_type == LAZY_MEDIA_TYPE
    }

    /// This layer as an image names it once its blob is written: a lazy
    /// layer becomes a plain tar (same digest and size), any other is itself.
    pub fn written(&self) -> Layer {
        let mut layer = self.clone();
        if layer.is_lazy() {
            layer.media_type = hoist_snapshotter::Compression::Uncompressed
                .media_type()
                .to_owned();
        }
        layer
    }
}

/// The output of an op.
///
/// Filesystems are layer chains, not snapshots: the snapshot of a chain is named
/// after its chain id and made on demand (see `Engine::ensure_snapshot`), so a
/// cache hit never needs the snapshot to exist, only the blobs; a lazy layer
/// has only its snapshot (the cache index checks it is there).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Artifact {
    /// A root filesystem: its layers, bottom first (empty for `scratch`).
    Fs {
        /// The layers.
        layers: Vec<Layer>,
    },
    /// A local build context, by name; its directory belongs to the current build,
    /// so it is looked up in the engine, never recorded.
    Context {
        /// Context name (`context`).
        name: String,
    },
}

impl Artifact {
    /// The layers of a filesystem (none for a context).
    pub fn layers(&self) -> &[Layer] {
        match self {
            Artifact::Fs { layers } => layers,
            Artifact::Context { .. } => &[],
        }
    }
}

impl CacheOutput for Artifact {
    fn to_record_bytes(&self) -> Vec<u8> {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    fn from_record_bytes(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }
}

/// The OCI chain id of a layer stack, as hex (`None` for no layers).
pub fn chain_id(layers: &[Layer]) -> Option<String> {
    let mut chain: Option<String> = None;
    for layer in layers {
        chain = Some(match chain {
            None => layer.diff_id.clone(),
            Some(parent) => {
                let digest = Sha256::digest(format!("{parent} {}", layer.diff_id).as_bytes());
                format!("sha256:{}", hex::encode(digest))
            }
        });
    }
    chain.map(|c| c.trim_start_matches("sha256:").to_owned())
}

/// The snapshot name of a layer stack.
pub fn snapshot_name(layers: &[Layer]) -> Option<String> {
    chain_id(layers).map(|c| format!("chain-{c}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(diff_id: &str) -> Layer {
        Layer {
            digest: String::new(),
            diff_id: diff_id.into(),
            size: 0,
            media_type: String::new(),
        }
    }

    #[test]
    fn chain_id_follows_the_oci_definition() {
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_id(&[layer("sha256:aa")]).unwrap(), "aa");
        let expected = hex::encode(Sha256::digest(b"sha256:aa sha256:bb"));
        assert_eq!(
            chain_id(&[layer("sha256:aa"), layer("sha256:bb")]).unwrap(),
            expected
        );
    }

    #[test]
    fn artifacts_round_trip_through_records() {
        let a = Artifact::Fs {
            layers: vec![layer("sha256:aa")],
        };
        assert_eq!(Artifact::from_record_bytes(&a.to_record_bytes()), Some(a));
    }
}
