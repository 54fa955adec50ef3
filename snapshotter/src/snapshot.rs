//! The [`Snapshotter`] interface and its local implementation with two
//! backends, overlay and native.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use crate::apply::{self, ApplyOptions, ApplyReport, ApplyTarget, WhiteoutStyle};
use crate::diff::{self, DiffOptions, DiffSource};
use crate::error::{io_err, Error, Result};
use crate::layer::LayerDescriptor;
use crate::mount::{self, Mount};
use crate::records::{ensure_dir, JsonFileRecords, Kind, Record, RecordSet, SnapshotRecords};

/// What is known about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active, view) or name (committed).
    pub key: String,
    /// Active, view or committed.
    pub kind: Kind,
    /// The committed parent, if any.
    pub parent: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Snapshots of filesystem trees, in the manner of containerd's snapshotters.
///
/// # Words
///
/// A *key* names an active (writable) snapshot or a view; a *name* names a
/// committed one; a *parent* is always committed. Keys and names share one
/// namespace.
///
/// # Lifecycle
///
/// Importing an image, layer by layer:
///
/// ```text
/// prepare("extract-1", None)            -> mounts of an empty writable dir
/// apply("extract-1", layer 1)            -> layer 1 is now the snapshot's content
/// commit("sha256:<chain 1>", "extract-1") -> "extract-1" is gone, the name exists
/// prepare("extract-2", Some("sha256:<chain 1>"))
/// apply("extract-2", layer 2)
/// commit("sha256:<chain 2>", "extract-2")
/// ```
///
/// Running a build step on top of it and turning its changes into a layer:
///
/// ```text
/// mounts = prepare("step-7", Some("sha256:<chain 2>"))
/// mount_all(&mounts, rootfs); run the process; unmount(rootfs)
/// diff("step-7", options, content-store writer) -> LayerDescriptor
/// commit("sha256:<chain 3>", "step-7")
/// ```
///
/// Reading a committed snapshot without changing it: `view(key, Some(name))`,
/// mount, read, unmount, `remove(key)`.
///
/// # Rules for callers
///
/// * `diff` and `apply` work on the snapshot's directories directly; the
///   snapshot must not be mounted and written to at the same time.
/// * `apply` is meant for a freshly prepared snapshot.
/// * `remove` refuses a snapshot that has children; remove them first.
///   Unmount a snapshot before removing or committing it.
/// * Mounts of an active snapshot stay valid until it is committed or removed;
///   `mounts(key)` gives them again later.
pub trait Snapshotter: Send + Sync {
    /// Creates the active snapshot `key` on `parent` (committed) and returns
    /// the mounts of its writable tree.
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// Creates the read-only view `key` of `parent`; views are never committed.
    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>>;
    /// The mounts of an active snapshot or view.
    fn mounts(&self, key: &str) -> Result<Vec<Mount>>;
    /// Turns the active snapshot `key` into the committed snapshot `name`;
    /// `key` no longer exists afterwards.
    fn commit(&self, name: &str, key: &str) -> Result<()>;
    /// Removes a snapshot of any kind; refuses when others build on it.
    fn remove(&self, key_or_name: &str) -> Result<()>;
    /// Information about one snapshot.
    fn stat(&self, key_or_name: &str) -> Result<Info>;
    /// Every snapshot, sorted by key.
    fn list(&self) -> Result<Vec<Info>>;
    /// Calls `visit` for every snapshot, sorted by key; stops at the first
    /// error it returns.
    fn walk(&self, visit: &mut dyn FnMut(&Info) -> Result<()>) -> Result<()> {
        for info in self.list()? {
            visit(&info)?;
        }
        Ok(())
    }
    /// Where the changes of the active snapshot `key` can be read.
    fn diff_source(&self, key: &str) -> Result<DiffSource>;
    /// Where a layer must be written to become the content of `key`.
    fn apply_target(&self, key: &str) -> Result<ApplyTarget>;

    /// Writes the changes of the active snapshot `key` against its parent as
    /// an OCI layer blob into `out` (see [`diff::write_layer`]).
    fn diff(
        &self,
        key: &str,
        options: &DiffOptions,
        out: &mut dyn Write,
    ) -> Result<LayerDescriptor> {
        diff::write_layer(&self.diff_source(key)?, options, out)
    }

    /// Extracts a layer blob (gzip, zstd or plain) into the active snapshot
    /// `key` (see [`apply::apply_layer`]).
    fn apply(
        &self,
        key: &str,
        layer: &mut (dyn Read + Send),
        options: &ApplyOptions,
    ) -> Result<ApplyReport> {
        apply::apply_layer(&self.apply_target(key)?, layer, options)
    }
}

/// How snapshots are stored on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Each snapshot holds only its own changes; the chain is stacked by
    /// overlayfs at mount time.
    Overlay,
    /// Each active snapshot is a full copy of its parent (reflinked where the
    /// filesystem allows); mounts are bind mounts. Works wherever overlayfs
    /// does not.
    Native,
}

/// Which backend to use when opening a root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// Overlay if a probe mount works in the root, native otherwise.
    #[default]
    Auto,
    /// Overlay or fail.
    Overlay,
    /// Native.
    Native,
}

impl FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "overlay" | "overlayfs" => Ok(BackendChoice::Overlay),
            "native" => Ok(BackendChoice::Native),
            _ => Err(Error::UnknownName {
                what: "snapshotter",
                value: s.to_string(),
                expected: "auto, overlay, native",
            }),
        }
    }
}

impl Backend {
    /// `overlay` or `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Overlay => "overlay",
            Backend::Native => "native",
        }
    }
}

/// Options every overlay mount gets: no inode index, no redirects and no
/// metacopy, so that an upper dir holds plain files, whiteouts and opaque
/// markers only, which is what the differ translates into a layer.
const OVERLAY_OPTIONS: [&str; 3] = ["index=off", "redirect_dir=off", "metacopy=off"];

/// A snapshot directory's tree (native) or upper dir (overlay).
const FS_DIR: &str = "fs";

/// Tries an overlay mount with two lower layers inside `root`.
pub fn probe_overlay(root: &Path) -> Result<()> {
    probe_overlay_with(root, &[])
}

/// The option that spares a writable overlay's unmount a `syncfs` of the whole
/// filesystem under its upper dir (Linux 5.10). A step's upper dir is a cache
/// of the layer written from it, which the content store syncs; nothing else
/// of the snapshot directory is ever synced (layers unpacked from images are
/// not either), so the flush bought nothing hoist relies on. Buildah mounts
/// its build containers so too.
const VOLATILE: &str = "volatile";

/// [`probe_overlay`] with `extra` options, for an option older kernels lack.
fn probe_overlay_with(root: &Path, extra: &[&str]) -> Result<()> {
    ensure_dir(root)?;
    let dir = tempfile::Builder::new()
        .prefix("probe-")
        .tempdir_in(root)
        .map_err(io_err("create probe directory in", root))?;
    let p = dir.path();
    for d in ["l1", "l2", "u", "w", "m"] {
        fs::create_dir(p.join(d)).map_err(io_err("create directory", p.join(d)))?;
    }
    let mut options: Vec<String> = OVERLAY_OPTIONS
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect();
    options.push(format!("workdir={}", p.join("w").display()));
    options.push(format!("upperdir={}", p.join("u").display()));
    options.push(format!(
        "lowerdir={}:{}",
        p.join("l2").display(),
        p.join("l1").display()
    ));
    let m = Mount {
        kind: "overlay".into(),
        source: "overlay".into(),
        options,
    };
    let guard = mount::MountGuard::new(&[m], &p.join("m"))?;
    let wrote = fs::write(p.join("m/probe"), b"x").map_err(io_err("write", p.join("m/probe")));
    guard.unmount()?;
    wrote?;
    if !p.join("u/probe").exists() {
        return Err(io_err("find probe file in", p.join("u"))(
            std::io::Error::from(std::io::ErrorKind::NotFound),
        ));
    }
    Ok(())
}

/// The backend recorded in `marker`, if any.
fn read_marker(marker: &Path) -> Result<Option<String>> {
    match fs::read_to_string(marker) {
        Ok(s) => Ok(Some(s.trim().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", marker)(e)),
    }
}

/// Snapshots stored under one root directory:
/// `<root>/backend` (the backend chosen when the root was first opened; a
/// root never changes backend),
/// `<root>/snapshots/<id>/fs` (the tree; for overlay the upper dir),
/// `<root>/snapshots/<id>/work` (overlay's work dir, active snapshots only),
/// and by default the records in `<root>/records.json`.
pub struct LocalSnapshotter {
    root: PathBuf,
    backend: Backend,
    records: Arc<dyn SnapshotRecords>,
    /// Whether this kernel takes [`VOLATILE`]; probed at the first writable
    /// overlay mount, since the kernel may have changed since the root was made.
    volatile: OnceLock<bool>,
}

impl std::fmt::Debug for LocalSnapshotter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSnapshotter")
            .field("root", &self.root)
            .field("backend", &self.backend)
            .finish()
    }
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl LocalSnapshotter {
    /// Opens (creating if needed) a snapshotter at `root` with its records in
    /// `<root>/records.json`.
    pub fn open(root: impl Into<PathBuf>, choice: BackendChoice) -> Result<Self> {
        let root = root.into();
        let records = Arc::new(JsonFileRecords::new(root.join("records.json")));
        Self::with_records(root, choice, records)
    }

    /// Opens a snapshotter at `root` whose records live elsewhere (the
    /// builder passes its database here).
    pub fn with_records(
        root: impl Into<PathBuf>,
        choice: BackendChoice,
        records: Arc<dyn SnapshotRecords>,
    ) -> Result<Self> {
        let root = root.into();
        ensure_dir(&root.join("snapshots"))?;
        let root_text = root.to_string_lossy();
        let overlay_safe = !root_text.contains(':') && !root_text.contains(',');
        if choice == BackendChoice::Overlay && !overlay_safe {
            return Err(Error::UnusableRoot { root });
        }
        // The two layouts are not interchangeable (upper dirs vs full trees),
        // so the first choice made for a root is kept in it.
        let marker = root.join("backend");
        if let Some(recorded) = read_marker(&marker)? {
            return Self::as_recorded(root, choice, records, recorded);
        }
        let backend = match choice {
            BackendChoice::Native => Backend::Native,
            BackendChoice::Overlay => {
                probe_overlay(&root).map_err(|e| Error::OverlayUnavailable {
                    root: root.clone(),
                    source: Box::new(e),
                })?;
                Backend::Overlay
            }
            BackendChoice::Auto if !overlay_safe => Backend::Native,
            BackendChoice::Auto => match probe_overlay(&root) {
                Ok(()) => Backend::Overlay,
                Err(e) => {
                    tracing::debug!(root = %root.display(), error = %e, "overlay unusable, using native snapshots");
                    Backend::Native
                }
            },
        };
        // Two opens of a new root at once (two builds of an autobuild worker,
        // say) both get here. Each writes a temp file of its own and links it
        // in place: only the first link makes the marker, and the other open
        // takes what it says. (One shared temp name, renamed, once failed the
        // second rename with ENOENT, and could have let the last writer's
        // choice replace a backend already in use.)
        let mut tmp = tempfile::Builder::new()
            .prefix("backend.tmp-")
            .tempfile_in(&root)
            .map_err(io_err("create a temporary file in", &root))?;
        tmp.write_all(backend.as_str().as_bytes())
            .map_err(io_err("write", tmp.path()))?;
        // (The store links blobs too: a filesystem without hard links holds
        // no store.)
        match fs::hard_link(tmp.path(), &marker) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let recorded = read_marker(&marker)?.unwrap_or_default();
                return Self::as_recorded(root, choice, records, recorded);
            }
            Err(e) => return Err(io_err("link", &marker)(e)),
        }
        Ok(LocalSnapshotter {
            root,
            backend,
            records,
            volatile: OnceLock::new(),
        })
    }

    /// Opens a root whose backend is already `recorded`, if `choice` allows it.
    fn as_recorded(
        root: PathBuf,
        choice: BackendChoice,
        records: Arc<dyn SnapshotRecords>,
        recorded: String,
    ) -> Result<Self> {
        let backend = match recorded.as_str() {
            "overlay" => Backend::Overlay,
            "native" => Backend::Native,
            _ => {
                return Err(Error::UnknownName {
                    what: "backend recorded in the snapshot root",
                    value: recorded,
                    expected: "overlay, native",
                })
            }
        };
        let requested = match choice {
            BackendChoice::Auto => backend,
            BackendChoice::Overlay => Backend::Overlay,
            BackendChoice::Native => Backend::Native,
        };
        if requested != backend {
            return Err(Error::BackendMismatch {
                root,
                recorded,
                requested: requested.as_str().to_string(),
            });
        }
        Ok(LocalSnapshotter {
            root,
            backend,
            records,
            volatile: OnceLock::new(),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether writable overlay mounts get [`VOLATILE`].
    pub fn volatile_mounts(&self) -> bool {
        *self.volatile.get_or_init(|| {
            self.backend == Backend::Overlay
                && probe_overlay_with(&self.root, &[VOLATILE])
                    .inspect_err(|e| {
                        tracing::debug!(error = %e, "overlay refuses `volatile`: a step's unmount syncs its filesystem")
                    })
                    .is_ok()
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding only what the snapshot `key_or_name` adds to
    /// its parent (its overlay upper dir; the whole tree of one without a
    /// parent): overlay backend only, `None` on the native one, whose trees
    /// hold their parents' files too. A committed snapshot's directory is
    /// never written again; an active one's may be written only while it is
    /// not mounted.
    pub fn own_dir(&self, key_or_name: &str) -> Result<Option<PathBuf>> {
        if self.backend != Backend::Overlay {
            return Ok(None);
        }
        let set = self.records.read()?;
        let rec = self.get(&set, key_or_name)?;
        if rec.kind == Kind::View {
            return Ok(None);
        }
        Ok(Some(self.fs_dir(rec.id)))
    }

    /// [`LocalSnapshotter::own_dir`] of `name` when it is a committed
    /// snapshot, from one read of the records; `None` otherwise.
    pub fn committed_own_dir(&self, name: &str) -> Result<Option<PathBuf>> {
        if self.backend != Backend::Overlay {
            return Ok(None);
        }
        Ok(self.committed_dir(name)?.map(|dir| dir.join(FS_DIR)))
    }

    /// The whole directory of the committed snapshot `name` (its tree or
    /// upper dir and the backend's own files), on any backend; `None` when
    /// no committed snapshot has that name.
    pub fn committed_dir(&self, name: &str) -> Result<Option<PathBuf>> {
        let set = self.records.read()?;
        Ok(set
            .snapshots
            .get(name)
            .filter(|rec| rec.kind == Kind::Committed)
            .map(|rec| self.dir(rec.id)))
    }

    /// Where the changes of the committed snapshot `name` against its
    /// parent can be read: the layer it was committed with, written again
    /// (a step that kept no blob of it, see the builder's lazy layers).
    pub fn committed_diff_source(&self, name: &str) -> Result<DiffSource> {
        let (set, rec) = self.of_kind(name, Kind::Committed, "diff")?;
        self.source_of(&set, &rec)
    }

    fn source_of(&self, set: &RecordSet, rec: &Record) -> Result<DiffSource> {
        let upper = self.fs_dir(rec.id);
        let chain = self.chain(set, rec.parent.as_deref())?;
        Ok(match (self.backend, chain.first()) {
            (_, None) => DiffSource::Trees { lower: None, upper },
            (Backend::Overlay, Some(_)) => DiffSource::OverlayUpper { upper },
            (Backend::Native, Some(lower)) => DiffSource::Trees {
                lower: Some(lower.clone()),
                upper,
            },
        })
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn fs_dir(&self, id: u64) -> PathBuf {
        self.dir(id).join(FS_DIR)
    }

    /// Removes directories under `snapshots/` that no record names (left by a
    /// crash between creating a directory and recording it, or after a
    /// remove whose deletion failed). Returns what was removed.
    pub fn cleanup(&self) -> Result<Vec<PathBuf>> {
        let set = self.records.read()?;
        let known: std::collections::HashSet<String> =
            set.snapshots.values().map(|r| r.id.to_string()).collect();
        let snapshots = self.root.join("snapshots");
        let mut removed = Vec::new();
        for entry in fs::read_dir(&snapshots).map_err(io_err("read directory", &snapshots))? {
            let entry = entry.map_err(io_err("read directory", &snapshots))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(io_err("remove", &path))?;
                removed.push(path);
            }
        }
        Ok(removed)
    }

    /// The committed chain starting at `parent`, nearest first, as fs dirs.
    fn chain(&self, set: &RecordSet, parent: Option<&str>) -> Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut next = parent.map(str::to_string);
        while let Some(name) = next {
            let rec = set
                .snapshots
                .get(&name)
                .ok_or_else(|| Error::NotFound(name.clone()))?;
            out.push(self.fs_dir(rec.id));
            next = rec.parent.clone();
        }
        Ok(out)
    }

    fn check_new(
        set: &RecordSet,
        key: &str,
        parent: Option<&str>,
        action: &'static str,
    ) -> Result<()> {
        if set.snapshots.contains_key(key) {
            return Err(Error::AlreadyExists(key.to_string()));
        }
        if let Some(p) = parent {
            let rec = set
                .snapshots
                .get(p)
                .ok_or_else(|| Error::NotFound(p.to_string()))?;
            if rec.kind != Kind::Committed {
                return Err(Error::WrongKind {
                    action,
                    key: p.to_string(),
                    actual: rec.kind.as_str(),
                    expected: "committed (to be a parent)",
                });
            }
        }
        Ok(())
    }

    fn create(&self, key: &str, parent: Option<&str>, kind: Kind) -> Result<Vec<Mount>> {
        let action = if kind == Kind::Active {
            "prepare on"
        } else {
            "view"
        };
        let set = self.records.read()?;
        Self::check_new(&set, key, parent, action)?;
        let snapshots = self.root.join("snapshots");
        let tmp = tempfile::Builder::new()
            .prefix("new-")
            .tempdir_in(&snapshots)
            .map_err(io_err("create temporary directory in", &snapshots))?;
        let fs_dir = tmp.path().join(FS_DIR);
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&fs_dir)
            .map_err(io_err("create directory", &fs_dir))?;
        if kind == Kind::Active {
            match self.backend {
                Backend::Overlay => {
                    let work = tmp.path().join("work");
                    fs::create_dir(&work).map_err(io_err("create directory", &work))?;
                }
                Backend::Native => {
                    if let Some(p) = parent {
                        let chain = self.chain(&set, Some(p))?;
                        crate::copy::copy_tree(&chain[0], &fs_dir)?;
                    }
                }
            }
        }
        let mut id = 0;
        let tmp_path = tmp.path().to_path_buf();
        self.records.update(&mut |set| {
            Self::check_new(set, key, parent, action)?;
            id = set.next_id.max(1);
            set.next_id = id + 1;
            let dest = self.dir(id);
            // A directory under an id no record holds is what a process
            // killed between this rename and the record write (or in the
            // middle of a removal) left: nothing refers to it, and the next
            // snapshot takes its id.
            if !set.snapshots.values().any(|r| r.id == id) && dest.exists() {
                fs::remove_dir_all(&dest)
                    .map_err(io_err("remove the leftover directory", &dest))?;
            }
            fs::rename(&tmp_path, &dest).map_err(io_err("rename snapshot directory to", &dest))?;
            set.snapshots.insert(
                key.to_string(),
                Record {
                    id,
                    kind,
                    parent: parent.map(str::to_string),
                    created_unix: now_unix(),
                },
            );
            Ok(())
        })?;
        // The directory now has its final name; don't let the guard delete it.
        let _ = tmp.keep();
        self.mounts(key)
    }

    fn get(&self, set: &RecordSet, key: &str) -> Result<Record> {
        set.snapshots
            .get(key)
            .cloned()
            .ok_or_else(|| Error::NotFound(key.to_string()))
    }

    fn active(&self, key: &str, action: &'static str) -> Result<(RecordSet, Record)> {
        self.of_kind(key, Kind::Active, action)
    }

    /// The records and the record of `key`, which must be of `kind` for
    /// `action`.
    fn of_kind(&self, key: &str, kind: Kind, action: &'static str) -> Result<(RecordSet, Record)> {
        let set = self.records.read()?;
        let rec = self.get(&set, key)?;
        if rec.kind != kind {
            return Err(Error::WrongKind {
                action,
                key: key.to_string(),
                actual: rec.kind.as_str(),
                expected: kind.as_str(),
            });
        }
        Ok((set, rec))
    }
}

fn bind(source: PathBuf, read_only: bool) -> Mount {
    Mount {
        kind: "bind".into(),
        source,
        options: vec!["rbind".into(), if read_only { "ro" } else { "rw" }.into()],
    }
}

fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":")
}

impl Snapshotter for LocalSnapshotter {
    fn prepare(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::Active)
    }

    fn view(&self, key: &str, parent: Option<&str>) -> Result<Vec<Mount>> {
        self.create(key, parent, Kind::View)
    }

    fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let set = self.records.read()?;
        let rec = self.get(&set, key)?;
        let chain = self.chain(&set, rec.parent.as_deref())?;
        let own = self.fs_dir(rec.id);
        let mount = match (rec.kind, self.backend) {
            (Kind::Committed, _) => {
                return Err(Error::WrongKind {
                    action: "mount",
                    key: key.to_string(),
                    actual: rec.kind.as_str(),
                    expected: "active or a view (use view() to read a committed snapshot)",
                })
            }
            (Kind::Active, Backend::Native) => bind(own, false),
            (Kind::View, Backend::Native) => bind(chain.first().cloned().unwrap_or(own), true),
            (Kind::Active, Backend::Overlay) if chain.is_empty() => bind(own, false),
            (Kind::Active, Backend::Overlay) => {
                let mut options: Vec<String> =
                    OVERLAY_OPTIONS.iter().map(|s| s.to_string()).collect();
                let work = self.dir(rec.id).join("work");
                if self.volatile_mounts() {
                    options.push(VOLATILE.into());
                    // A volatile mount leaves a marker in the work dir that
                    // makes the kernel refuse the next mount, against reusing
                    // an upper dir a crash may have torn. An active snapshot
                    // never outlives the process that prepared it (`cleanup`
                    // removes leftovers), so a second mount is that process's
                    // own, with no crash between: the marker may go.
                    // The kernel's own dir inside the work dir, which it
                    // makes again at each mount; the marker is inside.
                    let kernel_work = work.join("work");
                    match fs::remove_dir_all(&kernel_work) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(io_err("remove", &kernel_work)(e))
                        }
                        _ => {}
                    }
                }
                options.push(format!("workdir={}", work.display()));
                options.push(format!("upperdir={}", own.display()));
                options.push(format!("lowerdir={}", join_paths(&chain)));
                Mount {
                    kind: "overlay".into(),
                    source: "overlay".into(),
                    options,
                }
            }
            (Kind::View, Backend::Overlay) => match chain.len() {
                0 => bind(own, true),
                // overlayfs wants two lower dirs when there is no upper dir.
                1 => bind(chain[0].clone(), true),
                _ => {
                    let mut options: Vec<String> =
                        OVERLAY_OPTIONS.iter().map(|s| s.to_string()).collect();
                    options.push("ro".into());
                    options.push(format!("lowerdir={}", join_paths(&chain)));
                    Mount {
                        kind: "overlay".into(),
                        source: "overlay".into(),
                        options,
                    }
                }
            },
        };
        Ok(vec![mount])
    }

    fn commit(&self, name: &str, key: &str) -> Result<()> {
        let mut id = 0;
        self.records.update(&mut |set| {
            let rec = self.get(set, key)?;
            if rec.kind != Kind::Active {
                return Err(Error::WrongKind {
                    action: "commit",
                    key: key.to_string(),
                    actual: rec.kind.as_str(),
                    expected: "active",
                });
            }
            if set.snapshots.contains_key(name) {
                return Err(Error::AlreadyExists(name.to_string()));
            }
            set.snapshots.remove(key);
            id = rec.id;
            set.snapshots.insert(
                name.to_string(),
                Record {
                    kind: Kind::Committed,
                    ..rec
                },
            );
            Ok(())
        })?;
        // Committed snapshots are never mounted writable again; the work dir
        // is dead weight. Failing to remove it leaves only litter.
        let work = self.dir(id).join("work");
        if work.exists() {
            if let Err(e) = fs::remove_dir_all(&work) {
                tracing::warn!(path = %work.display(), error = %e, "failed to remove work dir");
            }
        }
        Ok(())
    }

    fn remove(&self, key_or_name: &str) -> Result<()> {
        // An active snapshot or a view belongs to the one process using it
        // (nothing builds on either), so its files may go before its
        // record; on a full disk they must, since rewriting the records
        // needs room. A crash in between leaves a record of an active
        // snapshot, a leftover either way.
        if let Ok(Some(rec)) = self
            .records
            .read()
            .map(|set| set.snapshots.get(key_or_name).cloned())
        {
            if rec.kind != Kind::Committed {
                for dir in [self.fs_dir(rec.id), self.dir(rec.id).join("work")] {
                    if let Err(e) = fs::remove_dir_all(&dir) {
                        if e.kind() != std::io::ErrorKind::NotFound {
                            tracing::debug!(path = %dir.display(), error = %e, "could not empty a snapshot before removing it");
                        }
                    }
                }
            }
        }
        let mut id = 0;
        self.records.update(&mut |set| {
            let rec = self.get(set, key_or_name)?;
            let children = set.children_of(key_or_name);
            if !children.is_empty() {
                return Err(Error::HasChildren {
                    key: key_or_name.to_string(),
                    children: children
                        .iter()
                        .map(|c| format!("`{c}`"))
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            id = rec.id;
            set.snapshots.remove(key_or_name);
            Ok(())
        })?;
        // Records first, files after: a crash in between leaves a directory
        // that `cleanup` removes, never a record without files.
        let dir = self.dir(id);
        fs::remove_dir_all(&dir).map_err(io_err("remove snapshot directory", &dir))
    }

    fn stat(&self, key_or_name: &str) -> Result<Info> {
        let set = self.records.read()?;
        let rec = self.get(&set, key_or_name)?;
        Ok(Info {
            key: key_or_name.to_string(),
            kind: rec.kind,
            parent: rec.parent,
            created_unix: rec.created_unix,
        })
    }

    fn list(&self) -> Result<Vec<Info>> {
        let set = self.records.read()?;
        Ok(set
            .snapshots
            .into_iter()
            .map(|(key, rec)| Info {
                key,
                kind: rec.kind,
                parent: rec.parent,
                created_unix: rec.created_unix,
            })
            .collect())
    }

    fn diff_source(&self, key: &str) -> Result<DiffSource> {
        let (set, rec) = self.active(key, "diff")?;
        self.source_of(&set, &rec)
    }

    fn apply_target(&self, key: &str) -> Result<ApplyTarget> {
        let (set, rec) = self.active(key, "apply to")?;
        let root = self.fs_dir(rec.id);
        Ok(match self.backend {
            Backend::Overlay => ApplyTarget {
                root,
                whiteouts: WhiteoutStyle::Overlay,
                lowers: self.chain(&set, rec.parent.as_deref())?,
            },
            Backend::Native => ApplyTarget {
                root,
                whiteouts: WhiteoutStyle::Delete,
                lowers: Vec::new(),
            },
        })
    }
}
