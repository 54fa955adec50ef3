//! Garbage collection of a store with the builder's snapshots taking part:
//! `hoist prune` and the automatic collection after builds.
//!
//! The cache crate collects blobs, cache records and cache mounts; the
//! snapshots under `<root>/snapshots` belong to the snapshotter, which knows
//! nothing of the cache, so this module presents them to the collection as
//! a [`DerivedStore`]: one entry per committed snapshot together with its
//! descendants (a parent cannot go before its children), last used when the
//! most recently used cache record whose output is that layer chain was,
//! and an orphan when no cache record or tagged image has that chain.
//! Active snapshots and views exist only while a build runs; collection
//! only looks at snapshots when no build holds a lease, so any left are
//! leftovers of a killed build, and orphans.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;

use hoist_cache::gc::disk_usage;
use hoist_cache::{
    DerivedCheck, DerivedEntry, DerivedStore, Finding, FsckOptions, FsckReport, GcOptions,
    GcReport, Store,
};
use hoist_snapshotter::{JsonFileRecords, Kind, RecordSet, SnapshotRecords};

use super::artifact::{snapshot_name, Artifact, Layer};
use crate::file_index::CacheOutput;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The builder's snapshots as collectable data.
pub struct Snapshots {
    root: PathBuf,
}

impl Snapshots {
    /// The snapshots of the store at `store_root` (`<root>/snapshots`).
    pub fn new(store_root: &std::path::Path) -> Self {
        Snapshots {
            root: store_root.join("snapshots"),
        }
    }

    fn records(&self) -> JsonFileRecords {
        JsonFileRecords::new(self.root.join("records.json"))
    }

    fn dir(&self, id: u64) -> PathBuf {
        self.root.join("snapshots").join(id.to_string())
    }

    fn snapshotter(&self) -> Result<hoist_snapshotter::LocalSnapshotter, BoxError> {
        Ok(hoist_snapshotter::LocalSnapshotter::open(
            &self.root,
            hoist_snapshotter::BackendChoice::Auto,
        )?)
    }
}

/// `name` and everything built on it, children before parents.
fn subtree(set: &RecordSet, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for child in set.children_of(name) {
        out.extend(subtree(set, child));
    }
    out.push(name.to_owned());
    out
}

/// Names of the snapshots of every prefix of the layer chains of tagged
/// images (read from their configs' diff_ids).
fn image_chains(store: &Store) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(refs) = store.list_refs() else {
        return out;
    };
    for r in refs {
        let Ok(image) = store.image(&r.target) else {
            continue;
        };
        let Ok(bytes) = store.content().read_blob(image.manifest.config().digest()) else {
            continue;
        };
        let Ok(config) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        let layers: Vec<Layer> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str())
            .map(|d| Layer {
                digest: String::new(),
                diff_id: d.to_owned(),
                size: 0,
                media_type: String::new(),
            })
            .collect();
        for n in 1..=layers.len() {
            if let Some(name) = snapshot_name(&layers[..n]) {
                out.insert(name);
            }
        }
    }
    out
}

impl DerivedStore for Snapshots {
    fn kind(&self) -> &'static str {
        "snapshot"
    }

    fn entries(&self, store: &Store) -> Result<Vec<DerivedEntry>, BoxError> {
        if !self.root.join("records.json").exists() {
            return Ok(Vec::new());
        }
        let set = self.records().read()?;
        // Last use of each chain by a cache record.
        let mut used: HashMap<String, i64> = HashMap::new();
        for record in store.list_cache_records()? {
            let Some(artifact) = Artifact::from_record_bytes(&record.output) else {
                continue;
            };
            if let Some(name) = snapshot_name(artifact.layers()) {
                let last = used.entry(name).or_insert(0);
                *last = (*last).max(record.last_used_ms);
            }
        }
        let images = image_chains(store);
        let mut entries = Vec::new();
        for (name, record) in &set.snapshots {
            let members = subtree(&set, name);
            let mut last = 0i64;
            let mut needed = false;
            let mut size = 0;
            for member in &members {
                let Some(r) = set.snapshots.get(member) else {
                    continue;
                };
                last = last.max(
                    used.get(member)
                        .copied()
                        .unwrap_or(r.created_unix as i64 * 1000),
                );
                needed |= r.kind == Kind::Committed
                    && (used.contains_key(member) || images.contains(member));
                size += disk_usage(&self.dir(r.id));
            }
            let what = match record.kind {
                Kind::Committed => "layer chain",
                Kind::Active => "left by a killed build (active)",
                Kind::View => "left by a killed build (view)",
            };
            entries.push(DerivedEntry {
                id: name.clone(),
                description: if members.len() > 1 {
                    format!("{what}, with {} built on it", members.len() - 1)
                } else {
                    what.to_owned()
                },
                last_used_ms: last,
                size,
                orphan: !needed,
            });
        }
        Ok(entries)
    }

    fn remove(&self, id: &str) -> Result<u64, BoxError> {
        use hoist_snapshotter::Snapshotter as _;
        let set = self.records().read()?;
        if !set.snapshots.contains_key(id) {
            return Ok(0);
        }
        let snapshotter = self.snapshotter()?;
        let mut freed = 0;
        for member in subtree(&set, id) {
            let Some(record) = set.snapshots.get(&member) else {
                continue;
            };
            let size = disk_usage(&self.dir(record.id));
            snapshotter.remove(&member)?;
            freed += size;
        }
        Ok(freed)
    }
}

impl DerivedCheck for Snapshots {
    fn kind(&self) -> &'static str {
        "snapshot"
    }

    /// A committed snapshot's record is damage when its directory is gone
    /// or its parent is not a committed snapshot (it cannot be mounted);
    /// what is built on it goes with it on repair, and the builder makes
    /// the chain again from the blobs when it next needs it. Leftovers of a
    /// killed build, looked for only while no build holds a lease: active
    /// snapshots and views (whatever state their files are in), and
    /// directories no record names.
    fn check(
        &self,
        _store: &Store,
        leased: bool,
        repair: bool,
    ) -> Result<(usize, Vec<Finding>), BoxError> {
        let dirs = self.root.join("snapshots");
        if !dirs.is_dir() {
            return Ok((0, Vec::new()));
        }
        let set = if self.root.join("records.json").exists() {
            self.records().read()?
        } else {
            RecordSet::default()
        };
        let mut findings = Vec::new();
        // Records to remove, each with what is built on it.
        let mut remove: Vec<String> = Vec::new();
        for (name, record) in &set.snapshots {
            if record.kind != Kind::Committed {
                // Active snapshots and views belong to the one process that
                // made them; their files go before their records (see the
                // snapshotter's `remove`), so a missing directory is only
                // a removal cut short. All of them are leftovers once no
                // build runs.
                if !leased {
                    let what = if record.kind == Kind::Active {
                        "an active snapshot"
                    } else {
                        "a view"
                    };
                    findings.push(
                        Finding::new(
                            "snapshot",
                            name.clone(),
                            format!("{what} left by a killed build"),
                        )
                        .leftover(),
                    );
                    remove.push(name.clone());
                }
                continue;
            }
            let problem = if !self.dir(record.id).join("fs").is_dir() {
                Some(format!("its directory snapshots/{} is missing", record.id))
            } else {
                match record.parent.as_ref().map(|p| (p, set.snapshots.get(p))) {
                    Some((parent, None)) => Some(format!("its parent {parent} is gone")),
                    Some((parent, Some(p))) if p.kind != Kind::Committed => {
                        Some(format!("its parent {parent} is not committed"))
                    }
                    _ => None,
                }
            };
            if let Some(problem) = problem {
                let members = subtree(&set, name);
                let problem = if members.len() > 1 {
                    format!("{problem} ({} built on it)", members.len() - 1)
                } else {
                    problem
                };
                findings.push(Finding::new("snapshot", name.clone(), problem));
                remove.extend(members);
            }
        }
        let known: HashSet<String> = set.snapshots.values().map(|r| r.id.to_string()).collect();
        let mut stray = Vec::new();
        if !leased {
            for entry in std::fs::read_dir(&dirs)? {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    findings.push(
                        Finding::new(
                            "snapshot",
                            format!("snapshots/{name}"),
                            "a directory no snapshot record names",
                        )
                        .leftover(),
                    );
                    stray.push(entry.path());
                }
            }
        }
        if repair && (!remove.is_empty() || !stray.is_empty()) {
            let remove: HashSet<String> = remove.into_iter().collect();
            let mut ids = Vec::new();
            self.records().update(&mut |set| {
                for name in &remove {
                    if let Some(r) = set.snapshots.remove(name) {
                        ids.push(r.id);
                    }
                }
                Ok(())
            })?;
            // Records first, files after, as the snapshotter removes.
            for path in ids.into_iter().map(|id| self.dir(id)).chain(stray) {
                match std::fs::remove_dir_all(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e.into()),
                }
            }
            for finding in &mut findings {
                finding.repaired = Some("removed".to_string());
            }
        }
        Ok((set.snapshots.len(), findings))
    }
}

/// Checks `store` with its snapshots (`hoist fsck`).
pub fn fsck(store: &Store, options: &FsckOptions) -> Result<FsckReport, hoist_cache::Error> {
    let snapshots = Snapshots::new(store.root());
    store.fsck(options, &[&snapshots])
}

/// The collection after a build that wrote something: when the store is
/// larger than `gc.max-storage`, least recently used cache goes until it is
/// not. Returns the report when it ran.
pub fn after_build(store: &Store) -> Result<Option<GcReport>, hoist_cache::Error> {
    let config = hoist_cache::GcConfig::load(store.root())?;
    if !config.enabled || config.max_storage == 0 {
        return Ok(None);
    }
    // The estimate can only be too large (see `estimated_usage`): a store
    // it puts over the limit is measured exactly before anything goes.
    if estimated_usage(store.root()) <= config.max_storage
        || disk_usage(store.root()) <= config.max_storage
    {
        return Ok(None);
    }
    let options = GcOptions {
        keep_storage: Some(config.max_storage),
        ..GcOptions::default()
    };
    collect(store, &options).map(Some)
}

/// Sizes of committed snapshots measured by earlier builds, by id:
/// `<root>/snapshots/usage-v1.json`.
const USAGE_MEMO: &str = "usage-v1.json";

/// One committed snapshot's size as last measured. The creation time guards
/// against an id counted again by a store whose records were started afresh.
#[derive(serde::Serialize, serde::Deserialize, Clone, Copy, PartialEq, Eq)]
struct MeasuredSnapshot {
    created_unix: u64,
    bytes: u64,
}

/// Committed snapshots this process is measuring, by directory: each is
/// measured on a thread of its own as soon as it is committed, while the
/// build goes on, so that the check after the build ([`estimated_usage`])
/// finds its size instead of walking it then (the incremental bench's new
/// 20,000-file COPY snapshot: 50 ms at the build's end, with a core idle
/// during the RUN step after it).
static MEASURING: std::sync::Mutex<Vec<(PathBuf, std::thread::JoinHandle<u64>)>> =
    std::sync::Mutex::new(Vec::new());

/// Starts measuring the committed snapshot directory `dir` (a committed
/// snapshot never changes, so its size now is its size at the check).
pub(crate) fn measure_committed(dir: PathBuf) {
    let measured = dir.clone();
    let Ok(thread) = std::thread::Builder::new()
        .name("snapshot-size".into())
        .spawn(move || disk_usage(&measured))
    else {
        // Measured at the check instead.
        return;
    };
    MEASURING
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((dir, thread));
}

/// The size [`measure_committed`] found for `dir`, once its thread is done.
fn measured_in_process(dir: &std::path::Path) -> Option<u64> {
    let mut measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let at = measuring.iter().position(|(d, _)| d == dir)?;
    let (_, thread) = measuring.swap_remove(at);
    drop(measuring);
    thread.join().ok()
}

/// The store's size on disk as [`disk_usage`] measures it, or more, for the
/// check after every build. A committed snapshot never changes, so its size
/// is measured once and remembered; walking every file of every snapshot
/// after each build would cost in proportion to the store (100,000 files
/// after a few rebuilds of a 20,000-file COPY), not to the build.
///
/// A file hard-linked between two committed snapshots (the COPY reuse)
/// counts in each, so the estimate may be above the exact figure, never
/// below it.
pub fn estimated_usage(store_root: &std::path::Path) -> u64 {
    let snapshots = Snapshots::new(store_root);
    let memo_path = snapshots.root.join(USAGE_MEMO);
    // Read only where records exist: reading takes their lock file, which
    // a store without snapshots should not gain.
    let records = snapshots
        .root
        .join("records.json")
        .exists()
        .then(|| snapshots.records().read().ok())
        .flatten();
    let committed: HashMap<u64, u64> = records
        .iter()
        .flat_map(|set| set.snapshots.values())
        .filter(|r| r.kind == Kind::Committed)
        .map(|r| (r.id, r.created_unix))
        .collect();
    let old: BTreeMap<u64, MeasuredSnapshot> = std::fs::read(&memo_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    let mut memo = BTreeMap::new();
    let ids_dir = snapshots.root.join("snapshots");
    let total = hoist_cache::gc::disk_usage_with(store_root, |dir| {
        if dir.parent() != Some(ids_dir.as_path()) {
            return None;
        }
        let id: u64 = dir.file_name()?.to_str()?.parse().ok()?;
        let created_unix = *committed.get(&id)?;
        let measured = match old.get(&id) {
            Some(m) if m.created_unix == created_unix => *m,
            _ => MeasuredSnapshot {
                created_unix,
                bytes: measured_in_process(dir).unwrap_or_else(|| disk_usage(dir)),
            },
        };
        memo.insert(id, measured);
        Some(measured.bytes)
    });
    // This store's measurements nobody asked for (a snapshot removed since,
    // or one of a build that failed) end here rather than keep their threads.
    let unused: Vec<_> = {
        let mut measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
        let (unused, others) = std::mem::take(&mut *measuring)
            .into_iter()
            .partition(|(dir, _)| dir.starts_with(&ids_dir));
        *measuring = others;
        unused
    };
    for (_, thread) in unused {
        let _ = thread.join();
    }
    if memo != old {
        // A memo lost in a crash is measured again; one half-written does
        // not parse and is measured again. No fsync needed.
        if let Ok(bytes) = serde_json::to_vec(&memo) {
            let tmp = memo_path.with_extension(format!("tmp-{}", std::process::id()));
            let written =
                std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &memo_path));
            if written.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
        }
    }
    total
}

/// Runs a collection of `store` with its snapshots.
pub fn collect(store: &Store, options: &GcOptions) -> Result<GcReport, hoist_cache::Error> {
    let snapshots = Snapshots::new(store.root());
    let report = store.collect_garbage(options, &[&snapshots])?;
    if report.in_use == 0 && snapshots.root.join("records.json").exists() {
        // Directories a crash left without records.
        if let Ok(s) = snapshots.snapshotter() {
            let _ = s.cleanup();
        }
    }
    // COPY reuse records whose snapshot went: they would only be ignored.
    if let Ok(set) = snapshots.records().read() {
        super::reuse::forget_dangling(store.root(), |name| {
            set.snapshots
                .get(name)
                .is_some_and(|r| r.kind == Kind::Committed)
        });
    }
    Ok(report)
}

/// One snapshot for `hoist du --verbose`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotUsage {
    /// Its key or name.
    pub name: String,
    /// Committed, active or view.
    pub kind: &'static str,
    /// Its parent.
    pub parent: Option<String>,
    /// Bytes on disk of its own directory.
    pub size: u64,
    /// Creation time (seconds since the epoch).
    pub created_unix: u64,
}

/// Every snapshot with its own size on disk, by name.
pub fn snapshot_usage(store_root: &std::path::Path) -> BTreeMap<String, SnapshotUsage> {
    let snapshots = Snapshots::new(store_root);
    let mut out = BTreeMap::new();
    if !snapshots.root.join("records.json").exists() {
        return out;
    }
    let Ok(set) = snapshots.records().read() else {
        return out;
    };
    for (name, record) in set.snapshots {
        out.insert(
            name.clone(),
            SnapshotUsage {
                size: disk_usage(&snapshots.dir(record.id)),
                kind: match record.kind {
                    Kind::Committed => "committed",
                    Kind::Active => "active",
                    Kind::View => "view",
                },
                parent: record.parent,
                created_unix: record.created_unix,
                name,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_snapshotter::Record;
    use std::fs;

    fn set_records(root: &std::path::Path, records: &[(&str, u64, Kind, u64)]) {
        let records: Vec<_> = records
            .iter()
            .map(|r| (r.0.to_owned(), r.1, r.2, r.3))
            .collect();
        Snapshots::new(root)
            .records()
            .update(&mut |set| {
                set.snapshots.clear();
                for (name, id, kind, created_unix) in &records {
                    set.snapshots.insert(
                        name.clone(),
                        Record {
                            id: *id,
                            kind: *kind,
                            parent: None,
                            created_unix: *created_unix,
                        },
                    );
                }
                Ok(())
            })
            .unwrap();
    }

    fn memo(root: &std::path::Path) -> BTreeMap<u64, MeasuredSnapshot> {
        serde_json::from_slice(&fs::read(root.join("snapshots").join(USAGE_MEMO)).unwrap()).unwrap()
    }

    /// The estimate once its memo is written: the memo file is part of the
    /// store, and the call that writes it walked the store before it did.
    fn settled(root: &std::path::Path) -> u64 {
        estimated_usage(root);
        estimated_usage(root)
    }

    #[test]
    fn a_snapshot_measured_when_committed_is_not_walked_at_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ids = root.join("snapshots/snapshots");
        fs::create_dir_all(ids.join("1/fs")).unwrap();
        fs::write(ids.join("1/fs/a"), vec![1u8; 100_000]).unwrap();
        set_records(root, &[("one", 1, Kind::Committed, 100)]);
        measure_committed(ids.join("1"));
        let at_commit = disk_usage(&ids.join("1"));
        // Wait for the measuring thread, then change what it measured:
        // the check must take the size it found, not walk again.
        while MEASURING
            .lock()
            .unwrap()
            .iter()
            .any(|(d, t)| d.starts_with(root) && !t.is_finished())
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        fs::write(ids.join("1/fs/later"), vec![2u8; 300_000]).unwrap();
        estimated_usage(root);
        assert_eq!(memo(root)[&1].bytes, at_commit);
        assert!(disk_usage(&ids.join("1")) > at_commit + 300_000);
        // Taken once: nothing of this store is left measuring.
        assert!(!MEASURING
            .lock()
            .unwrap()
            .iter()
            .any(|(d, _)| d.starts_with(root)));

        // A measurement of a snapshot the check does not count (removed
        // since) is ended by the check too.
        fs::create_dir_all(ids.join("9/fs")).unwrap();
        measure_committed(ids.join("9"));
        estimated_usage(root);
        assert!(!MEASURING
            .lock()
            .unwrap()
            .iter()
            .any(|(d, _)| d.starts_with(root)));
        assert!(!memo(root).contains_key(&9));
    }

    #[test]
    fn committed_snapshots_are_measured_once_and_the_rest_every_time() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let ids = root.join("snapshots/snapshots");
        fs::create_dir_all(ids.join("1/fs")).unwrap();
        fs::create_dir_all(ids.join("2/fs")).unwrap();
        fs::create_dir_all(root.join("content")).unwrap();
        fs::write(ids.join("1/fs/a"), vec![1u8; 100_000]).unwrap();
        fs::write(ids.join("2/fs/b"), vec![2u8; 50_000]).unwrap();
        fs::write(root.join("content/blob"), vec![3u8; 30_000]).unwrap();
        set_records(
            root,
            &[
                ("one", 1, Kind::Committed, 100),
                ("two", 2, Kind::Active, 101),
            ],
        );

        // Nothing linked twice: the estimate is the exact figure.
        assert_eq!(settled(root), disk_usage(root));
        let measured = memo(root);
        assert_eq!(measured.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(measured[&1].bytes, disk_usage(&ids.join("1")));

        // The committed snapshot is not walked again (were it changed, which
        // nothing does, the estimate would not see it)...
        let before = estimated_usage(root);
        fs::write(ids.join("1/fs/x"), vec![6u8; 100_000]).unwrap();
        assert_eq!(estimated_usage(root), before);
        fs::remove_file(ids.join("1/fs/x")).unwrap();
        // ...the active snapshot and the rest of the store are.
        fs::write(ids.join("2/fs/c"), vec![4u8; 200_000]).unwrap();
        fs::write(root.join("content/blob2"), vec![5u8; 200_000]).unwrap();
        assert_eq!(settled(root), disk_usage(root));
        assert!(settled(root) > before + 400_000);

        // A file linked into a second committed snapshot counts in each: the
        // estimate is above the exact figure, never below.
        fs::create_dir_all(ids.join("3/fs")).unwrap();
        fs::hard_link(ids.join("1/fs/a"), ids.join("3/fs/a")).unwrap();
        set_records(
            root,
            &[
                ("one", 1, Kind::Committed, 100),
                ("two", 2, Kind::Active, 101),
                ("three", 3, Kind::Committed, 102),
            ],
        );
        let estimate = settled(root);
        let exact = disk_usage(root);
        assert!(estimate >= exact, "{estimate} < {exact}");
        assert_eq!(memo(root).keys().copied().collect::<Vec<_>>(), [1, 3]);

        // A snapshot gone leaves the memo; an id whose creation time differs
        // (records started afresh) is measured again.
        fs::remove_dir_all(ids.join("3")).unwrap();
        fs::write(ids.join("1/fs/a"), vec![1u8; 400_000]).unwrap();
        set_records(root, &[("one", 1, Kind::Committed, 500)]);
        assert_eq!(settled(root), disk_usage(root));
        let measured = memo(root);
        assert_eq!(measured.keys().copied().collect::<Vec<_>>(), [1]);
        assert_eq!(measured[&1].created_unix, 500);
        assert_eq!(measured[&1].bytes, disk_usage(&ids.join("1")));
    }
}
