//! The real ops behind `hoist build`: the frontend's graph ops (image, scratch,
//! context, file actions, exec) implemented over the content store, the
//! snapshotter and a process sandbox, plus image assembly and exports.
//!
//! Everything here is driven by [`build::build`]; the CLI only parses flags and
//! renders [`Event`](crate::Event)s.

pub mod artifact;
pub mod assemble;
pub mod build;
pub mod container;
pub mod convert;
pub mod dryrun;
pub mod emulation;
mod exec;
pub use exec::{ENTITLEMENT_INSECURE, ENTITLEMENT_NETWORK_HOST};
pub mod export;
pub mod fetch;
mod files;
pub use files::{read_build_files, read_in_root, BuildFiles};
pub mod gc;
pub(crate) mod hash;
pub mod index;
pub mod mounts;
pub mod named;
mod ops;
pub mod provenance;
pub mod rebase;
pub mod reproducible;
mod reuse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hoist_cache::Store;
use hoist_frontend::dockerignore::Matcher;
use hoist_snapshotter::{
    ApplyOptions, BackendChoice, Compression, DiffOptions, LocalSnapshotter, MountGuard,
    Snapshotter,
};

use artifact::{snapshot_name, Layer};

/// A layer's gzip blocks: where earlier ones may be taken from (the COPY
/// reuse's previous layer), and, once it is written, its own.
#[derive(Default)]
pub(crate) struct LayerBlocks {
    pub earlier: Option<Arc<dyn hoist_snapshotter::GzipBlockSource>>,
    pub written: Vec<hoist_snapshotter::GzipBlock>,
}

/// What a step keeps of its layer besides the snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayerBlob {
    /// A blob in this compression, written when the step ends.
    Written(Compression),
    /// No blob, as BuildKit keeps none for a layer no image holds: the
    /// committed snapshot is the layer, and the step's [`Layer::lazy`] names
    /// the plain tar of its diff. [`Engine::write_lazy_blobs`] writes that blob
    /// from the snapshot when an image comes to hold the layer.
    Lazy,
}

/// gzip level of the layers steps make. Level 3 costs half the CPU of the
/// default 6 for about 5% larger layers (docs/snapshotter.md's measurements),
/// and compression is most of the work of a step that writes many files.
pub(crate) const LAYER_GZIP_LEVEL: u32 = 3;

/// Errors of the engine's own work (snapshots, blobs, files). What they
/// quote (context paths, URLs, Dockerfile words) is shown with control
/// characters escaped.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The snapshotter failed.
    #[error("failed to {}", hoist_cache::text::escape(action))]
    Snapshot {
        /// What was attempted.
        action: String,
        /// The cause.
        #[source]
        source: hoist_snapshotter::Error,
    },
    /// The store failed.
    #[error("failed to {}", hoist_cache::text::escape(action))]
    Store {
        /// What was attempted.
        action: String,
        /// The cause.
        #[source]
        source: hoist_cache::Error,
    },
    /// A file operation failed.
    #[error(
        "failed to {} {}",
        hoist_cache::text::escape(action),
        hoist_cache::text::escape_path(path)
    )]
    Io {
        /// What was attempted.
        action: String,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Something the user asked for is wrong or unsupported.
    #[error("{}", hoist_cache::text::escape_except(.0, &['\n']))]
    Invalid(String),
    /// A path named by the Dockerfile, the context or an image could not be
    /// resolved inside its root (a symlink loop, a file where a directory
    /// must be).
    #[error("cannot resolve a path inside {}", root.display())]
    Path {
        /// The root the path was resolved in.
        root: PathBuf,
        /// Why.
        #[source]
        source: hoist_untrusted::Error,
    },
    /// An image's `/etc/passwd` or `/etc/group` could not be read.
    #[error("cannot read the users and groups of the image")]
    Accounts(#[from] hoist_untrusted::AccountsError),
}

pub(crate) fn io_error(
    action: impl Into<String>,
    path: &Path,
) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    let action = action.into();
    move |source| EngineError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// A snapshot's mounts as the root filesystem of a container (a RUN step's
/// or `hoist run`'s), read-only if asked.
fn rootfs_of(mounts: &[hoist_snapshotter::Mount], read_only: bool) -> hoist_runner::Rootfs {
    hoist_runner::Rootfs::Mounts(
        mounts
            .iter()
            .map(|m| {
                let mut options = m.options.clone();
                if read_only {
                    options.retain(|o| o != "rw");
                    options.push("ro".into());
                }
                hoist_runner::MountData {
                    kind: m.kind.clone(),
                    source: m.source.to_string_lossy().into_owned(),
                    target: "/".into(),
                    options,
                }
            })
            .collect(),
    )
}

fn snap_error(action: impl Into<String>) -> impl FnOnce(hoist_snapshotter::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Snapshot { action, source }
}

fn store_error(action: impl Into<String>) -> impl FnOnce(hoist_cache::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Store { action, source }
}

/// A local build context: its directory and what `.dockerignore` leaves out.
#[derive(Debug)]
pub struct LocalContext {
    /// The directory.
    pub dir: PathBuf,
    /// The ignore rules.
    pub ignore: Matcher,
}

/// Shared state of one build: the store, the snapshots, the contexts.
pub struct Engine {
    store: Arc<Store>,
    snapshots: LocalSnapshotter,
    contexts: HashMap<String, LocalContext>,
    /// Serialises making snapshots of layer chains, so that two steps needing
    /// the same chain apply it once.
    materialize: Mutex<()>,
    /// Mount points and scratch files of this build.
    scratch: tempfile::TempDir,
    /// Per-file digests computed in this build (path, size, mtime, inode → digest).
    pub(crate) hashes: hash::StatCache,
    /// Whether builds check the store's size after they end (`gc.enabled`
    /// with a `gc.max-storage`): committed snapshots are then measured as
    /// they are made (`gc::measure_committed`).
    measure_sizes: bool,
    /// The sandbox for RUN steps (`None`: the interim `unshare` path is used).
    runner: Option<hoist_runner::Runner>,
    /// Resource limits of RUN steps.
    limits: hoist_runner::Limits,
    /// `--add-host`, `--shm-size`, `--ulimit` of RUN steps.
    step_options: hoist_runner::StepOptions,
    /// `--secret` and `--ssh` sources for RUN mounts.
    secrets: mounts::Secrets,
    /// SOURCE_DATE_EPOCH: mtimes of new layers are clamped to it.
    source_date_epoch: Option<i64>,
    /// Proxy variables RUN steps get as Docker's predefined build args
    /// (`HTTP_PROXY=…`) unless `--build-arg` or the step's ENV sets them.
    proxy_env: Vec<(String, String)>,
    /// COPY steps may link files of their previous snapshot (`reuse.rs`).
    file_reuse: bool,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// Removes an active snapshot unless it was committed.
struct Active<'a> {
    engine: &'a Engine,
    key: String,
    done: bool,
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if !self.done {
            if let Err(e) = self.engine.snapshots.remove(&self.key) {
                tracing::warn!(key = %self.key, error = %e, "could not remove active snapshot");
            }
        }
    }
}

impl Engine {
    /// An engine over `store`, with snapshots under `<root>/snapshots`.
    pub fn new(
        store: Arc<Store>,
        contexts: HashMap<String, LocalContext>,
    ) -> Result<Self, EngineError> {
        let snapshots = LocalSnapshotter::open(store.root().join("snapshots"), BackendChoice::Auto)
            .map_err(snap_error("open the snapshotter"))?;
        let tmp = store
            .tmp_dir()
            .map_err(store_error("create the store's scratch directory"))?;
        let scratch = tempfile::Builder::new()
            .prefix("build-")
            .tempdir_in(&tmp)
            .map_err(io_error("create a scratch directory in", &tmp))?;
        let hashes = hash::StatCache::load(store.root().join("build-stat-cache"));
        let measure_sizes =
            hoist_cache::GcConfig::load(store.root()).is_ok_and(|c| c.enabled && c.max_storage > 0);
        let runner = match hoist_runner::Runner::new(hoist_runner::RunnerConfig::default()) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "sandbox runner unavailable, RUN uses unshare");
                None
            }
        };
        Ok(Engine {
            runner,
            limits: hoist_runner::Limits::default(),
            step_options: hoist_runner::StepOptions::default(),
            secrets: mounts::Secrets::default(),
            source_date_epoch: None,
            // As the docker CLI hands its proxy settings to the builder: the
            // builder here is this process, so its environment.
            proxy_env: hoist_registry::proxy::build_args_from_env(),
            file_reuse: true,
            store,
            snapshots,
            contexts,
            materialize: Mutex::new(()),
            scratch,
            hashes,
            measure_sizes,
        })
    }

    /// Sets the resource limits of RUN steps (`--memory`, `--cpus`).
    pub fn with_limits(mut self, memory: Option<u64>, cpus: Option<f64>) -> Self {
        self.limits.memory = memory;
        self.limits.cpus = cpus;
        self
    }

    /// Sets the `/etc/hosts` entries, `/dev/shm` size and rlimits of RUN
    /// steps (part of their cache keys when set).
    pub fn with_step_options(mut self, options: hoist_runner::StepOptions) -> Self {
        self.step_options = options;
        self
    }

    /// Replaces the proxy variables RUN steps get (default: those of this
    /// process's environment); an empty list gives them none.
    pub fn with_proxy_env(mut self, proxy_env: Vec<(String, String)>) -> Self {
        self.proxy_env = proxy_env;
        self
    }

    /// Sets the secrets and ssh agents RUN mounts may use.
    pub fn with_secrets(mut self, secrets: mounts::Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Clamps the mtimes of every layer this engine writes to `epoch`
    /// (SOURCE_DATE_EPOCH); layers of base images are never rewritten.
    pub fn with_source_date_epoch(mut self, epoch: Option<i64>) -> Self {
        self.source_date_epoch = epoch;
        self
    }

    /// Whether COPY steps may link the unchanged files of their previous
    /// snapshot (`reuse.rs`; on by default, off for `--no-cache`).
    pub fn with_file_reuse(mut self, reuse: bool) -> Self {
        self.file_reuse = reuse;
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The context called `name`.
    pub fn context(&self, name: &str) -> Result<&LocalContext, EngineError> {
        self.contexts
            .get(name)
            .ok_or_else(|| EngineError::Invalid(format!("no build context named `{name}`")))
    }

    pub(crate) fn unique(&self, what: &str) -> String {
        // Process-wide: scratch snapshot names share one namespace in the
        // store, and one process may run several builds (autobuild).
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        format!("{what}-{}-{n}", std::process::id())
    }

    /// A fresh empty directory in this build's scratch space.
    pub(crate) fn scratch_dir(&self, what: &str) -> Result<PathBuf, EngineError> {
        let dir = self.scratch.path().join(self.unique(what));
        std::fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        Ok(dir)
    }

    /// Has the size of the snapshot `name`, just committed, measured while
    /// the build goes on, when the store's size is checked after builds.
    fn measure_committed(&self, name: &str) {
        if !self.measure_sizes {
            return;
        }
        if let Ok(Some(dir)) = self.snapshots.committed_dir(name) {
            gc::measure_committed(dir);
        }
    }

    /// Saves what the stat cache learned.
    pub fn save_stat_cache(&self) {
        self.hashes.save();
    }

    /// Makes sure the committed snapshot of `layers` exists (applying whatever
    /// layers are missing) and returns its name (`None` for no layers).
    pub(crate) fn ensure_snapshot(&self, layers: &[Layer]) -> Result<Option<String>, EngineError> {
        let Some(name) = snapshot_name(layers) else {
            return Ok(None);
        };
        // Poison only means another step panicked mid-apply; its active snapshot
        // is removed by its guard, so the committed set is still consistent.
        let _lock = self.materialize.lock().unwrap_or_else(|e| e.into_inner());
        if self.snapshots.stat(&name).is_ok() {
            return Ok(Some(name));
        }
        // Longest prefix that exists already.
        let mut have = layers.len() - 1;
        while have > 0 {
            let prefix = snapshot_name(&layers[..have]).unwrap_or_default();
            if self.snapshots.stat(&prefix).is_ok() {
                break;
            }
            have -= 1;
        }
        for n in have..layers.len() {
            let parent = snapshot_name(&layers[..n]);
            let this = snapshot_name(&layers[..=n]).unwrap_or_default();
            let key = self.unique("extract");
            self.snapshots
                .prepare(&key, parent.as_deref())
                .map_err(snap_error(format!("prepare snapshot {key}")))?;
            let mut active = Active {
                engine: self,
                key: key.clone(),
                done: false,
            };
            let layer = &layers[n];
            let digest = layer
                .digest
                .parse()
                .map_err(|_| EngineError::Invalid(format!("bad layer digest {}", layer.digest)))?;
            let mut blob = self
                .store
                .content()
                .open_blob(&digest)
                .map_err(store_error(format!("open layer {}", layer.digest)))?;
            let report = self
                .snapshots
                .apply(&key, &mut blob, &ApplyOptions::default())
                .map_err(snap_error(format!("apply layer {}", layer.digest)))?;
            if report.diff_id != layer.diff_id {
                return Err(EngineError::Invalid(format!(
                    "layer {} has diff_id {} but the image says {}",
                    layer.digest, report.diff_id, layer.diff_id
                )));
            }
            match self.snapshots.commit(&this, &key) {
                Ok(()) => {
                    active.done = true;
                    self.measure_committed(&this);
                }
                // Another build (here or in another process) committed the
                // same chain meanwhile: same layers, same tree; ours is
                // dropped by its guard.
                Err(e) if e.kind() == hoist_snapshotter::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(snap_error(format!("commit snapshot {this}"))(e)),
            }
        }
        Ok(Some(name))
    }

    /// Prepares a writable snapshot on `layers` and mounts it; the closure
    /// changes the tree; its changes become a new layer on top of `layers`,
    /// written in `compression` (gzip at hoist's level, zstd at its default
    /// level, or plain).
    pub(crate) fn with_new_layer(
        &self,
        layers: &[Layer],
        blob: LayerBlob,
        change: impl FnOnce(&Path) -> Result<(), crate::OpError>,
    ) -> Result<Vec<Layer>, crate::OpError> {
        self.new_layer(layers, blob, change, None, None)
    }

    /// [`Engine::with_new_layer`], then, once the snapshot is unmounted and
    /// before its diff, `unmounted` with the snapshot's own directory (its
    /// overlay upper dir) when the backend keeps one. A gzip layer takes
    /// what it can from `blocks.earlier` and lists its blocks in
    /// `blocks.written`.
    pub(crate) fn with_new_layer_then(
        &self,
        layers: &[Layer],
        blob: LayerBlob,
        change: impl FnOnce(&Path) -> Result<(), crate::OpError>,
        unmounted: impl FnOnce(&Path) -> Result<(), crate::OpError>,
        blocks: &mut LayerBlocks,
    ) -> Result<Vec<Layer>, crate::OpError> {
        self.new_layer(
            layers,
            blob,
            change,
            Some(Box::new(unmounted)),
            Some(blocks),
        )
    }

    /// Both of the above: the snapshot's own directory is looked up (a read
    /// of the snapshot records) only for a step that has something to do
    /// with it.
    #[allow(clippy::type_complexity)]
    fn new_layer<'a>(
        &self,
        layers: &[Layer],
        blob: LayerBlob,
        change: impl FnOnce(&Path) -> Result<(), crate::OpError>,
        unmounted: Option<Box<dyn FnOnce(&Path) -> Result<(), crate::OpError> + 'a>>,
        blocks: Option<&mut LayerBlocks>,
    ) -> Result<Vec<Layer>, crate::OpError> {
        self.with_new_snapshot(layers, blob, blocks, |key, mounts| {
            let mountpoint = self.scratch_dir("root")?;
            let guard = MountGuard::new(mounts, &mountpoint)
                .map_err(snap_error(format!("mount snapshot {key}")))?;
            change(&mountpoint)?;
            guard
                .unmount()
                .map_err(snap_error(format!("unmount snapshot {key}")))?;
            let _ = std::fs::remove_dir(&mountpoint);
            let Some(unmounted) = unmounted else {
                return Ok(());
            };
            if let Some(own) = self
                .snapshots
                .own_dir(key)
                .map_err(snap_error(format!("find the directory of snapshot {key}")))?
            {
                unmounted(&own)?;
            }
            Ok(())
        })
    }

    /// Whether COPY steps may reuse their previous snapshot's files: only
    /// the overlay backend keeps a snapshot's own files apart (`reuse.rs`).
    pub(crate) fn reuses_files(&self) -> bool {
        self.file_reuse && self.snapshots.backend() == hoist_snapshotter::Backend::Overlay
    }

    /// Whether the committed snapshot `name` exists.
    pub(crate) fn has_committed_snapshot(&self, name: &str) -> bool {
        matches!(self.snapshots.committed_dir(name), Ok(Some(_)))
    }

    /// The own directory of the committed snapshot `name`, when it exists.
    pub(crate) fn committed_own_dir(&self, name: &str) -> Option<PathBuf> {
        self.snapshots.committed_own_dir(name).ok().flatten()
    }

    /// Prepares a writable snapshot on `layers` and hands its mounts to `change`
    /// (which must leave them unmounted); the changes become a new layer.
    pub(crate) fn with_new_snapshot(
        &self,
        layers: &[Layer],
        blob: LayerBlob,
        blocks: Option<&mut LayerBlocks>,
        change: impl FnOnce(&str, &[hoist_snapshotter::Mount]) -> Result<(), crate::OpError>,
    ) -> Result<Vec<Layer>, crate::OpError> {
        let parent = self.ensure_snapshot(layers)?;
        let key = self.unique("step");
        let mounts = self
            .snapshots
            .prepare(&key, parent.as_deref())
            .map_err(snap_error(format!("prepare snapshot {key}")))?;
        let mut active = Active {
            engine: self,
            key: key.clone(),
            done: false,
        };
        change(&key, &mounts)?;

        let compression = match blob {
            LayerBlob::Written(compression) => compression,
            LayerBlob::Lazy => {
                // The diff_id names the snapshot: the tar is made and hashed,
                // but neither compressed nor stored.
                let descriptor = self
                    .snapshots
                    .diff(&key, &self.lazy_diff_options(), &mut std::io::sink())
                    .map_err(snap_error(format!("diff snapshot {key}")))?;
                let mut out = layers.to_vec();
                out.push(Layer::lazy(
                    descriptor.diff_id,
                    descriptor.uncompressed_size,
                ));
                self.commit_step(&out, &mut active)?;
                return Ok(out);
            }
        };
        let mut writer = self
            .store
            .content()
            .writer()
            .map_err(store_error("start a layer blob"))?;
        let gzip = compression == Compression::Gzip;
        let options = DiffOptions {
            compression,
            // Only gzip's level is hoist's own; the export relies on steps
            // writing these levels (`convert`).
            level: gzip.then_some(LAYER_GZIP_LEVEL),
            source_date_epoch: self.source_date_epoch,
            // The ingest hashes the blob to name it: once is enough.
            skip_blob_digest: true,
            ..DiffOptions::default()
        };
        let mut descriptor = match blocks.as_deref().filter(|_| gzip) {
            Some(blocks) => self.snapshots.diff_source(&key).and_then(|source| {
                hoist_snapshotter::write_layer_reusing(
                    &source,
                    &options,
                    blocks.earlier.clone(),
                    &mut writer,
                )
            }),
            None => self.snapshots.diff(&key, &options, &mut writer),
        }
        .map_err(snap_error(format!("diff snapshot {key}")))?;
        if let Some(blocks) = blocks {
            blocks.written = std::mem::take(&mut descriptor.blocks);
        }
        let committed = writer
            .commit(Some(descriptor.size), None)
            .map_err(store_error(format!("store the layer of {key}")))?;
        let mut out = layers.to_vec();
        out.push(Layer {
            digest: committed.digest.to_string(),
            diff_id: descriptor.diff_id,
            size: descriptor.size,
            media_type: descriptor.media_type.to_owned(),
        });
        self.commit_step(&out, &mut active)?;
        Ok(out)
    }

    /// Commits the active snapshot of a step as the snapshot of `layers`,
    /// unless a concurrent build committed that chain first.
    fn commit_step(&self, layers: &[Layer], active: &mut Active<'_>) -> Result<(), EngineError> {
        let name = snapshot_name(layers).unwrap_or_default();
        let _lock = self.materialize.lock().unwrap_or_else(|e| e.into_inner());
        if self.snapshots.stat(&name).is_err() {
            match self.snapshots.commit(&name, &active.key) {
                Ok(()) => {
                    active.done = true;
                    self.measure_committed(&name);
                }
                // Committed by a concurrent build between stat and commit.
                Err(e) if e.kind() == hoist_snapshotter::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(snap_error(format!("commit snapshot {name}"))(e)),
            }
        }
        Ok(())
    }

    /// How a lazy layer's tar is made: when its step ends (hashed only) and
    /// when an image comes to need its blob, the same bytes.
    fn lazy_diff_options(&self) -> DiffOptions {
        DiffOptions {
            compression: Compression::Uncompressed,
            source_date_epoch: self.source_date_epoch,
            skip_blob_digest: true,
            ..DiffOptions::default()
        }
    }

    /// Writes the blob of each lazy layer of `layers` the store lacks (see
    /// [`LayerBlob::Lazy`]) from the committed snapshot of its chain, as a
    /// plain tar checked against its diff_id, and returns the layers as an
    /// image names them ([`Layer::written`]): an image is about to hold them.
    pub(crate) fn write_lazy_blobs(&self, layers: &[Layer]) -> Result<Vec<Layer>, EngineError> {
        for (n, layer) in layers.iter().enumerate() {
            if !layer.is_lazy() {
                continue;
            }
            let digest: hoist_cache::Digest = layer
                .digest
                .parse()
                .map_err(|_| EngineError::Invalid(format!("bad layer digest {}", layer.digest)))?;
            if self.store.content().contains(&digest) {
                continue;
            }
            let name = snapshot_name(&layers[..=n]).unwrap_or_default();
            let source = self
                .snapshots
                .committed_diff_source(&name)
                .map_err(snap_error(format!("find snapshot {name}")))?;
            let mut writer = self
                .store
                .content()
                .writer()
                .map_err(store_error("start a layer blob"))?;
            let descriptor =
                hoist_snapshotter::write_layer(&source, &self.lazy_diff_options(), &mut writer)
                    .map_err(snap_error(format!("diff snapshot {name}")))?;
            // Another digest means the snapshot changed since its step:
            // refused by the commit, nothing stored.
            writer
                .commit(Some(descriptor.size), Some(&digest))
                .map_err(store_error(format!("store the layer of snapshot {name}")))?;
        }
        Ok(layers.iter().map(Layer::written).collect())
    }

    /// Mounts a read-only view of `layers` for the duration of `read`.
    pub(crate) fn with_view<T>(
        &self,
        layers: &[Layer],
        read: impl FnOnce(&Path) -> Result<T, crate::OpError>,
    ) -> Result<T, crate::OpError> {
        let Some(parent) = self.ensure_snapshot(layers)? else {
            let empty = self.scratch_dir("empty")?;
            return read(&empty);
        };
        let key = self.unique("view");
        let mounts = self
            .snapshots
            .view(&key, Some(&parent))
            .map_err(snap_error(format!("make view {key}")))?;
        let _active = Active {
            engine: self,
            key: key.clone(),
            done: false,
        };
        let mountpoint = self.scratch_dir("view")?;
        let guard = MountGuard::new(&mounts, &mountpoint)
            .map_err(snap_error(format!("mount view {key}")))?;
        let result = read(&mountpoint);
        guard
            .unmount()
            .map_err(snap_error(format!("unmount view {key}")))?;
        let _ = std::fs::remove_dir(&mountpoint);
        result
    }
}
