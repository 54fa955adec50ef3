//! hoist-snapshotter: filesystem snapshots for build steps, and the
//! translation between snapshots and OCI layers.
//!
//! It owns: snapshots (prepare, view, commit, remove, mounts) on two backends
//! — overlayfs and a native copying backend — chosen automatically or by
//! name; the diff of a snapshot into a deterministic, compressed OCI layer
//! written in one pass into any [`std::io::Write`]; and the safe extraction
//! of untrusted layers into a snapshot.
//!
//! It does not own: the content store (the builder connects the diff's
//! writer to the store's ingest), the database where snapshot records live
//! in production (the builder implements [`SnapshotRecords`]; this crate
//! ships [`JsonFileRecords`]), or anything about Dockerfiles.
//!
//! ```no_run
//! use hoist_snapshotter::{BackendChoice, DiffOptions, LocalSnapshotter, Snapshotter};
//! # fn main() -> Result<(), hoist_snapshotter::Error> {
//! let snapshots = LocalSnapshotter::open("/var/lib/hoist/snapshots", BackendChoice::Auto)?;
//! // Import a base layer.
//! snapshots.prepare("extract", None)?;
//! let mut layer = std::fs::File::open("base.tar.gz").unwrap();
//! snapshots.apply("extract", &mut layer, &Default::default())?;
//! snapshots.commit("base", "extract")?;
//! // A step on top of it.
//! let mounts = snapshots.prepare("step", Some("base"))?;
//! // ... mount_all(&mounts, rootfs), run, unmount(rootfs) ...
//! # let _ = mounts;
//! let mut blob = Vec::new();
//! let layer = snapshots.diff("step", &DiffOptions::default(), &mut blob)?;
//! println!("{} {}", layer.digest, layer.diff_id);
//! snapshots.commit("step-1", "step")?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod apply;
mod copy;
pub mod diff;
mod error;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod layer;
pub mod mount;
pub mod records;
mod snapshot;
mod sys;
mod tarread;
use hoist_untrusted::text;

pub use apply::{apply_layer, ApplyOptions, ApplyReport, ApplyTarget, ApplyWarning, WhiteoutStyle};
pub use diff::{write_layer, write_layer_reusing, DiffOptions, DiffSource};
pub use error::{Error, ErrorKind, Result};
pub use layer::{
    Compression, CompressionOptions, GzipBlock, GzipBlockSource, LayerDescriptor, LayerWriter,
};
pub use mount::{mount_all, unmount, Mount, MountGuard};
pub use records::{JsonFileRecords, Kind, Record, RecordSet, SnapshotRecords};
pub use snapshot::{probe_overlay, Backend, BackendChoice, Info, LocalSnapshotter, Snapshotter};
