//! Exports of a built filesystem: a directory (`type=local`) or a tar stream
//! (`type=tar`).

use std::io::Write;
use std::path::Path;

use hoist_cache::Store;
use hoist_snapshotter::{
    apply_layer, write_layer, ApplyOptions, ApplyTarget, Compression, DiffOptions, DiffSource,
    WhiteoutStyle,
};

use super::artifact::Layer;
use super::{io_error, EngineError};

/// Writes the filesystem of `layers` into `dest` (created when missing), by
/// applying each layer in order with deletions for whiteouts.
pub fn export_local(store: &Store, layers: &[Layer], dest: &Path) -> Result<(), EngineError> {
    std::fs::create_dir_all(dest).map_err(io_error("create directory", dest))?;
    let target = ApplyTarget {
        root: dest.to_path_buf(),
        whiteouts: WhiteoutStyle::Delete,
        lowers: vec![],
    };
    for layer in layers {
        let digest = layer
            .digest
            .parse()
            .map_err(|_| EngineError::Invalid(format!("bad layer digest {}", layer.digest)))?;
        let mut blob = store
            .content()
            .open_blob(&digest)
            .map_err(|source| EngineError::Store {
                action: format!("open layer {}", layer.digest),
                source,
            })?;
        apply_layer(&target, &mut blob, &ApplyOptions::default()).map_err(|source| {
            EngineError::Snapshot {
                action: format!("extract layer {} into {}", layer.digest, dest.display()),
                source,
            }
        })?;
    }
    Ok(())
}

/// Writes the filesystem of `layers` as one tar stream.
pub fn export_tar(store: &Store, layers: &[Layer], out: impl Write) -> Result<(), EngineError> {
    export_tar_each(store, &[("", layers)], out)
}

/// Writes several filesystems as one tar stream, each under its directory
/// (`linux_arm64/…` for the platforms of a multi-platform build, as
/// BuildKit's tar exporter does; `""` is the root).
pub fn export_tar_each(
    store: &Store,
    parts: &[(&str, &[Layer])],
    out: impl Write,
) -> Result<(), EngineError> {
    let tmp = store.tmp_dir().map_err(|source| EngineError::Store {
        action: "create the store's scratch directory".into(),
        source,
    })?;
    let dir = tempfile::Builder::new()
        .prefix("export-")
        .tempdir_in(&tmp)
        .map_err(io_error("create a directory in", &tmp))?;
    for (name, layers) in parts {
        export_local(store, layers, &dir.path().join(name))?;
    }
    // The one tar writer, through the snapshotter's layer writer (plain tar):
    // entries as BuildKit's tar exporter names them (no `./`), and no host
    // user names or access times in the stream.
    let mut out = out;
    let source = DiffSource::Trees {
        lower: None,
        upper: dir.path().to_path_buf(),
    };
    let options = DiffOptions {
        compression: Compression::Uncompressed,
        ..DiffOptions::default()
    };
    write_layer(&source, &options, &mut out).map_err(|source| EngineError::Snapshot {
        action: format!("write a tar of {}", dir.path().display()),
        source,
    })?;
    out.flush()
        .map_err(io_error("finish the tar of", dir.path()))
}
