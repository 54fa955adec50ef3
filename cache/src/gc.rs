//! Garbage collection: removes what nothing needs, least recently used
//! first, until the store's size *on disk* is at or under a target.
//!
//! # What is kept
//!
//! - **Roots**: every blob reachable from a ref (tagged images: their
//!   manifests, configs and layers).
//! - **Leases** ([`crate::lease`]): blobs a live lease names, blobs written or
//!   refreshed after the oldest live lease was taken, and, while any lease is
//!   alive, every snapshot and cache mount.
//!
//! # What goes
//!
//! - Always: files left in `content/ingest/` by killed processes, blobs that
//!   no ref, cache record or lease needs, and cache records whose blobs are
//!   gone.
//! - Default ([`GcOptions::default`]): besides the above, *dangling* cache
//!   records, those holding a blob no tagged image reaches, and derived
//!   entries (snapshots) that no record or image needs.
//! - [`GcOptions::all`] or a size target: every cache record, derived entry
//!   and cache mount is a candidate, least recently used first.
//! - [`GcOptions::until`]: only candidates last used longer ago than that.
//!
//! With a size target ([`GcOptions::keep_storage`]) collection stops as soon
//! as the size measured on disk (allocated blocks, each inode once, like
//! `du -s`) is at or under it, re-measuring rather than trusting estimates.
//!
//! # Concurrency
//!
//! One collection at a time (`<root>/gc.lock`); refs do not change while it
//! runs (it holds `<root>/lock`). Each removal of a record and its blobs is
//! one database transaction that first re-reads the leases, so a build that
//! reads a record (putting its blobs under its lease in its own transaction)
//! either sees the record gone, and rebuilds, or keeps its blobs. A blob is
//! removed by renaming it aside, checking its modification time against the
//! oldest live lease, and only then unlinking it; a writer that refreshes an
//! existing blob links its own copy again if the refresh finds it gone.
//!
//! Snapshots belong to another crate: they take part through the
//! [`DerivedStore`] trait, which the builder implements.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::records::now_ms;
use crate::Store;

/// Directory of `RUN --mount=type=cache` directories: the builder keeps
/// each as `<root>/cache-mounts/v1/<sha256 of id>[-N]`, beside a `.lock`
/// file it holds (flock) while a step uses the directory.
pub const CACHE_MOUNTS_DIR: &str = "cache-mounts/v1";

/// The cache mount directories (not their lock files, nor a staging
/// directory being filled).
fn cache_mount_dirs(root: &Path) -> Vec<fs::DirEntry> {
    fs::read_dir(root.join(CACHE_MOUNTS_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().contains('.'))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .collect()
}

/// Removes a cache mount unless a step holds it; `Ok(false)` when in use.
fn remove_cache_mount(path: &Path) -> Result<bool> {
    let lock_path = path.with_extension("lock");
    let lock = match fs::OpenOptions::new().write(true).open(&lock_path) {
        Ok(file) => Some(file),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open cache mount lock", &lock_path, e)),
    };
    if let Some(file) = &lock {
        if !crate::sys::try_lock_exclusive(file)
            .map_err(|e| Error::io("lock cache mount", &lock_path, e))?
        {
            return Ok(false);
        }
    }
    match fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("remove cache mount", path, e)),
    }
    if lock.is_some() {
        // Still held: a step that opened the old file waits for us, then
        // finds no directory and makes a fresh one.
        let _ = fs::remove_file(&lock_path);
    }
    Ok(true)
}
/// The default cap of the store's size: 20 GB, Docker Desktop's default
/// `builder.gc.defaultKeepStorage`.
pub const DEFAULT_MAX_STORAGE: u64 = 20_000_000_000;
/// Ingest files untouched this long belong to killed processes.
const INGEST_GRACE_MS: i64 = 10 * 60 * 1000;
/// Kernel file times lag the wall clock by up to a tick; leases are
/// compared with this much slack.
const CLOCK_SLACK_MS: i64 = 1000;

/// What to collect.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcOptions {
    /// Every cache record, snapshot and cache mount is a candidate, not only
    /// dangling ones (`hoist prune --all`).
    pub all: bool,
    /// Only candidates last used longer ago than this (`--filter until=`).
    pub until: Option<Duration>,
    /// Stop once the store's size on disk is at or under this many bytes;
    /// candidates go least recently used first (`--keep-storage`, and the
    /// automatic collection with `gc.max-storage`).
    pub keep_storage: Option<u64>,
}

/// Data of another crate that lives under the store root and may be
/// removed (the builder's snapshots).
pub trait DerivedStore {
    /// What its entries are called (`snapshot`).
    fn kind(&self) -> &'static str;
    /// Its entries, with what removing each would free.
    fn entries(
        &self,
        store: &Store,
    ) -> std::result::Result<Vec<DerivedEntry>, Box<dyn std::error::Error + Send + Sync>>;
    /// Removes one entry (and whatever must go with it); returns the bytes
    /// freed on disk.
    fn remove(
        &self,
        id: &str,
    ) -> std::result::Result<u64, Box<dyn std::error::Error + Send + Sync>>;
}

/// One entry of a [`DerivedStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DerivedEntry {
    /// Its id, given back to [`DerivedStore::remove`].
    pub id: String,
    /// For people.
    pub description: String,
    /// Last use, ms since the epoch.
    pub last_used_ms: i64,
    /// Bytes on disk.
    pub size: u64,
    /// Nothing needs it (a default collection removes it).
    pub orphan: bool,
}

/// One thing a collection removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Removed {
    /// `cache record`, `blob`, `snapshot`, `cache mount`, `ingest`.
    pub kind: &'static str,
    /// Its id (key, digest, name).
    pub id: String,
    /// What made it or what it is.
    pub description: String,
    /// Bytes freed on disk.
    pub size: u64,
}

/// What a collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// What went, in order.
    pub removed: Vec<Removed>,
    /// Bytes freed (the sum of `removed`).
    pub reclaimed: u64,
    /// Size on disk before.
    pub usage_before: u64,
    /// Size on disk after (measured).
    pub usage_after: u64,
    /// Candidates left alone because a live lease protects them.
    pub in_use: usize,
}

/// The `[gc]` table of a config file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct GcSection {
    #[serde(alias = "max_storage")]
    max_storage: Option<toml::Value>,
    enabled: Option<bool>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    gc: GcSection,
}

/// Automatic collection settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GcConfig {
    /// Collect after a build when the store is larger than this.
    pub max_storage: u64,
    /// Whether builds collect automatically.
    pub enabled: bool,
    /// Where `max_storage` came from (a file, or `default`).
    pub source: String,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig {
            max_storage: DEFAULT_MAX_STORAGE,
            enabled: true,
            source: "default".to_string(),
        }
    }
}

impl GcConfig {
    /// The config files read, in order, later ones winning: the system and
    /// user files (`/etc/hoist/config.toml`, `$XDG_CONFIG_HOME/hoist/config.toml`)
    /// then the store's own `<root>/config.toml`.
    pub fn default_paths(root: &Path) -> Vec<PathBuf> {
        let mut paths = hoist_untrusted::xdg::config_files();
        paths.push(root.join("config.toml"));
        paths
    }

    /// Reads `[gc]` from the default files for the store at `root`.
    pub fn load(root: &Path) -> Result<GcConfig> {
        Self::load_from(&Self::default_paths(root))
    }

    /// Reads `[gc]` from `paths` in order; missing files are skipped.
    ///
    /// ```toml
    /// [gc]
    /// max-storage = "10GB"   # or a number of bytes; 0 disables the cap
    /// enabled = true
    /// ```
    pub fn load_from(paths: &[PathBuf]) -> Result<GcConfig> {
        let mut config = GcConfig::default();
        for path in paths {
            let text = match fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::io("read config file", path, e)),
            };
            let file: ConfigFile = toml::from_str(&text).map_err(|e| {
                Error::invalid(format!("invalid config file `{}`: {e}", path.display()))
            })?;
            if let Some(value) = file.gc.max_storage {
                let bytes = match &value {
                    toml::Value::Integer(n) => u64::try_from(*n).map_err(|_| {
                        format!("invalid size `{n}`: expected a size such as \"10GB\"")
                    }),
                    toml::Value::String(s) => {
                        crate::units::parse_size(s).map_err(|e| e.to_string())
                    }
                    _ => Err(format!(
                        "invalid size `{value}`: expected a size such as \"10GB\""
                    )),
                };
                config.max_storage = bytes.map_err(|e| {
                    Error::invalid(format!(
                        "invalid gc.max-storage in `{}`: {e}",
                        path.display()
                    ))
                })?;
                config.source = path.display().to_string();
            }
            if let Some(enabled) = file.gc.enabled {
                config.enabled = enabled;
            }
        }
        Ok(config)
    }
}

/// Bytes the tree at `path` occupies on disk: allocated blocks of every file
/// and directory, each inode once, not crossing into other filesystems
/// (mounts of running builds), as `du -s -x -B1` counts them.
pub fn disk_usage(path: &Path) -> u64 {
    disk_usage_with(path, |_| None)
}

/// [`disk_usage`], except that a directory for which `known` gives a size
/// counts as that size and is not walked: a caller that knows a directory
/// cannot have changed since it last measured it (a committed snapshot)
/// saves walking it again. Inodes linked from both such a directory and
/// elsewhere then count twice, so the result can only be larger than
/// [`disk_usage`]'s.
pub fn disk_usage_with(path: &Path, mut known: impl FnMut(&Path) -> Option<u64>) -> u64 {
    let Ok(top) = fs::symlink_metadata(path) else {
        return 0;
    };
    let device = top.dev();
    let mut seen = HashSet::new();
    let mut total = 0;
    let mut stack = vec![(path.to_path_buf(), top)];
    while let Some((path, meta)) = stack.pop() {
        if meta.dev() != device {
            continue;
        }
        if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
            continue;
        }
        if meta.is_dir() {
            if let Some(size) = known(&path) {
                total += size;
                continue;
            }
        }
        total += meta.blocks() * 512;
        if meta.is_dir() {
            let Ok(entries) = fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                // The entry's own metadata: a stat relative to the open
                // directory, not a lookup of the whole path again.
                if let Ok(m) = entry.metadata() {
                    stack.push((entry.path(), m));
                }
            }
        }
    }
    total
}

/// Blobs reachable from a descriptor, skipping what is missing (a partly
/// pulled index still protects the manifests it has).
fn reach(store: &Store, digest: &str, seen: &mut BTreeSet<String>) {
    if !seen.insert(digest.to_string()) {
        return;
    }
    let Ok(parsed) = crate::content::parse_digest(digest) else {
        return;
    };
    // Layers are not JSON: skip reading anything big.
    if store
        .content()
        .blob_size(&parsed)
        .map_or(true, |s| s > 4 << 20)
    {
        return;
    }
    let Ok(bytes) = store.content().read_blob(&parsed) else {
        return;
    };
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return;
    };
    if let Some(config) = doc["config"]["digest"].as_str() {
        seen.insert(config.to_string());
    }
    for layer in doc["layers"].as_array().into_iter().flatten() {
        if let Some(d) = layer["digest"].as_str() {
            seen.insert(d.to_string());
        }
    }
    for child in doc["manifests"].as_array().into_iter().flatten() {
        if let Some(d) = child["digest"].as_str() {
            reach(store, d, seen);
        }
    }
}

/// Every blob a tagged image needs.
pub fn roots(store: &Store) -> Result<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for r in store.list_refs()? {
        reach(store, r.target.digest().as_ref(), &mut seen);
    }
    Ok(seen)
}

fn mtime_ms(meta: &fs::Metadata) -> i64 {
    meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000
}

/// `None`: in use; `Some(None)`: kept, it frees nothing; otherwise the
/// blobs only the removed record needed.
type RemovalOutcome = Option<Option<Vec<String>>>;

/// How long an ingest file must be untouched before it may be taken for a
/// killed writer's: a writer locks its file right after creating it.
const INGEST_LOCK_GRACE_MS: i64 = 5000;

/// True when the ingest file at `path` belongs to no live writer: it is a
/// blob a killed collection moved aside (`gc-<hex>`; collections are one at
/// a time and this one holds `gc.lock`), or no process holds its lock.
pub(crate) fn abandoned_ingest(path: &Path, meta: &fs::Metadata, now: i64) -> bool {
    if mtime_ms(meta) > now - INGEST_LOCK_GRACE_MS {
        return false;
    }
    if path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("gc-"))
    {
        return true;
    }
    let Ok(file) = fs::OpenOptions::new().write(true).open(path) else {
        return false;
    };
    crate::sys::try_lock_exclusive(&file).unwrap_or(false)
}

enum Candidate {
    Record { key: String, description: String },
    Derived { store: usize, entry: DerivedEntry },
    CacheMount { path: PathBuf, size: u64 },
}

impl Store {
    /// Runs a collection (see the module docs); `derived` are other crates'
    /// data under the root (snapshots).
    pub fn collect_garbage(
        &self,
        options: &GcOptions,
        derived: &[&dyn DerivedStore],
    ) -> Result<GcReport> {
        let gc_lock_path = self.root().join("gc.lock");
        let gc_lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&gc_lock_path)
            .map_err(|e| Error::io("open lock file", &gc_lock_path, e))?;
        crate::sys::lock_exclusive(&gc_lock).map_err(|e| Error::io("lock", &gc_lock_path, e))?;
        let _refs_lock = self.lock()?;

        let mut report = GcReport {
            usage_before: disk_usage(self.root()),
            ..GcReport::default()
        };
        let mut usage = report.usage_before;
        let now = now_ms();
        let old_enough = |last_used: i64| {
            options
                .until
                // Checked: `until` comes from the command line.
                .is_none_or(|u| {
                    let ago = i64::try_from(u.as_millis()).unwrap_or(i64::MAX);
                    last_used < now.saturating_sub(ago)
                })
        };
        let (oldest_lease, _) = self
            .db()
            .write(crate::lease::live)
            .map_err(Error::db("read the leases"))?;
        let leased = oldest_lease.is_some();
        let roots = roots(self)?;

        // Blobs a killed collection left aside go back first; what is
        // garbage among them goes again below.
        self.restore_aside_blobs()?;
        // Junk: abandoned ingests.
        let ingest = self.content().ingest_dir();
        for entry in fs::read_dir(&ingest).into_iter().flatten().flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let modified = mtime_ms(&meta);
            let abandoned = (modified < now - INGEST_GRACE_MS
                && oldest_lease.is_none_or(|o| modified < o - CLOCK_SLACK_MS))
                || abandoned_ingest(&entry.path(), &meta, now);
            if abandoned && fs::remove_file(entry.path()).is_ok() {
                let size = meta.blocks() * 512;
                usage = usage.saturating_sub(size);
                report.push("ingest", entry.file_name().to_string_lossy(), "", size);
            }
        }

        // Cache records whose blobs are gone: nothing can use them.
        let records = self.list_cache_records()?;
        let mut dangling = Vec::new();
        for record in &records {
            let missing = record.blobs.iter().any(|d| {
                crate::content::parse_digest(d).map_or(true, |d| !self.content().contains(&d))
            });
            if missing {
                self.remove_record(
                    &record.key,
                    &record.description,
                    false,
                    &roots,
                    &mut report,
                    &mut usage,
                )?;
            } else if record.blobs.iter().any(|b| !roots.contains(b)) {
                dangling.push(record.key.clone());
            }
        }

        // Blobs nothing names.
        let named: HashSet<String> = records
            .iter()
            .flat_map(|r| r.blobs.iter().cloned())
            .collect();
        for (digest, _) in self.content().blobs()? {
            let d = digest.to_string();
            if !roots.contains(&d) && !named.contains(&d) {
                if let Some(size) = self.remove_blob_checked(&d, &roots)? {
                    usage = usage.saturating_sub(size);
                    report.push("blob", &d, "unreferenced", size);
                }
            }
        }

        // Candidates.
        let sized = options.keep_storage.is_some();
        let mut candidates: Vec<(i64, Candidate)> = Vec::new();
        let dangling: HashSet<String> = dangling.into_iter().collect();
        for record in self.list_cache_records()? {
            if (options.all || sized || dangling.contains(&record.key))
                && old_enough(record.last_used_ms)
            {
                candidates.push((
                    record.last_used_ms,
                    Candidate::Record {
                        key: record.key,
                        description: record.description,
                    },
                ));
            }
        }
        if leased {
            report.in_use += derived.len();
        } else {
            for (i, d) in derived.iter().enumerate() {
                let entries = d.entries(self).map_err(|source| Error::Derived {
                    action: format!("list {}s", d.kind()),
                    source,
                })?;
                for entry in entries {
                    if (options.all || sized || entry.orphan) && old_enough(entry.last_used_ms) {
                        candidates
                            .push((entry.last_used_ms, Candidate::Derived { store: i, entry }));
                    }
                }
            }
            for entry in cache_mount_dirs(self.root()) {
                let Ok(meta) = entry.metadata() else { continue };
                let last = mtime_ms(&meta);
                if (options.all || sized) && old_enough(last) {
                    candidates.push((
                        last,
                        Candidate::CacheMount {
                            size: disk_usage(&entry.path()),
                            path: entry.path(),
                        },
                    ));
                }
            }
        }
        candidates.sort_by_key(|(last, _)| *last);

        for (_, candidate) in candidates {
            if let Some(target) = options.keep_storage {
                if usage <= target {
                    // The running figure is an estimate: check before stopping.
                    usage = disk_usage(self.root());
                    if usage <= target {
                        break;
                    }
                }
            }
            match candidate {
                Candidate::Record { key, description } => {
                    // Evicting for space: a record holding no blob alone frees
                    // nothing and stays.
                    let only_if_it_frees = sized && !options.all;
                    self.remove_record(
                        &key,
                        &description,
                        only_if_it_frees,
                        &roots,
                        &mut report,
                        &mut usage,
                    )?;
                }
                Candidate::Derived { store, entry } => {
                    let d = derived[store];
                    let freed = d.remove(&entry.id).map_err(|source| Error::Derived {
                        action: format!("remove {} {}", d.kind(), entry.id),
                        source,
                    })?;
                    usage = usage.saturating_sub(freed);
                    report.push(d.kind(), &entry.id, &entry.description, freed);
                }
                Candidate::CacheMount { path, size } => {
                    if !remove_cache_mount(&path)? {
                        report.in_use += 1;
                        continue;
                    }
                    usage = usage.saturating_sub(size);
                    let id = path
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    report.push("cache mount", &id, "", size);
                }
            }
        }
        // Give the WAL's pages back; readers in other processes may hold it,
        // which only postpones this.
        let _ = self
            .db()
            .read(|c| c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
        report.usage_after = disk_usage(self.root());
        report.reclaimed = report.removed.iter().map(|r| r.size).sum();
        drop(gc_lock);
        Ok(report)
    }

    /// Removes a record and the blobs only it needed, unless a live lease
    /// names any of its blobs (then it is in use and stays) or
    /// `only_if_it_frees` and it holds no blob alone.
    fn remove_record(
        &self,
        key: &str,
        description: &str,
        only_if_it_frees: bool,
        roots: &BTreeSet<String>,
        report: &mut GcReport,
        usage: &mut u64,
    ) -> Result<()> {
        let outcome = self.db().write(|tx| -> Result<RemovalOutcome> {
            let (_, leased) = crate::lease::live(tx).map_err(Error::db("read the leases"))?;
            let blobs =
                crate::records::record_blobs(tx, key).map_err(Error::db("read a cache record"))?;
            let leased: HashSet<String> = leased.into_iter().collect();
            if blobs.iter().any(|b| leased.contains(b)) {
                return Ok(None);
            }
            // The blobs only this record needs.
            let mut own = Vec::new();
            for blob in blobs {
                if roots.contains(&blob) {
                    continue;
                }
                let others: i64 = tx
                    .query_row(
                        "SELECT count(*) FROM cache_blobs WHERE digest = ?1 AND key != ?2",
                        [&blob, key],
                        |r| r.get(0),
                    )
                    .map_err(Error::db("count the users of a blob"))?;
                if others == 0 {
                    own.push(blob);
                }
            }
            if own.is_empty() && only_if_it_frees {
                return Ok(Some(None));
            }
            tx.execute("DELETE FROM build_cache WHERE key = ?1", [key])
                .map_err(Error::db(format!("remove cache record {key}")))?;
            Ok(Some(Some(own)))
        })?;
        match outcome {
            None => report.in_use += 1,
            Some(None) => {}
            Some(Some(own)) => {
                // Blobs go only once the record's removal is committed: a
                // process killed in between leaves unreferenced blobs (the
                // next collection's), never a record naming a missing blob.
                // Each is checked again in a transaction of its own: a
                // record written meanwhile, or a lease, keeps it.
                let mut freed = Vec::new();
                for blob in own {
                    if let Some(size) = self.remove_blob_checked(&blob, roots)? {
                        freed.push((blob, size));
                    }
                }
                let total: u64 = freed.iter().map(|(_, s)| s).sum();
                *usage = usage.saturating_sub(total);
                report.push("cache record", key, description, total);
            }
        }
        Ok(())
    }

    /// Removes a blob no record names, unless leased (checked in one
    /// transaction); returns the bytes freed.
    fn remove_blob_checked(&self, digest: &str, roots: &BTreeSet<String>) -> Result<Option<u64>> {
        if roots.contains(digest) {
            return Ok(None);
        }
        self.db().write(|tx| -> Result<Option<u64>> {
            let (oldest, leased) = crate::lease::live(tx).map_err(Error::db("read the leases"))?;
            if leased.iter().any(|l| l == digest) {
                return Ok(None);
            }
            let users: i64 = tx
                .query_row(
                    "SELECT count(*) FROM cache_blobs WHERE digest = ?1",
                    [digest],
                    |r| r.get(0),
                )
                .map_err(Error::db("count the users of a blob"))?;
            if users > 0 {
                return Ok(None);
            }
            self.unlink_blob(digest, oldest)
        })
    }

    /// Puts back the blobs a killed collection renamed aside
    /// (`ingest/gc-<hex>`, see `unlink_blob`): the caller holds `gc.lock`,
    /// so no collection has any aside now. A blob that was garbage is
    /// collected again; one a build had refreshed is whole again.
    pub(crate) fn restore_aside_blobs(&self) -> Result<()> {
        let ingest = self.content().ingest_dir();
        for entry in fs::read_dir(&ingest).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(hex) = name.strip_prefix("gc-") else {
                continue;
            };
            let Ok(digest) = crate::content::parse_digest(&format!("sha256:{hex}")) else {
                continue;
            };
            self.put_back(&digest, &entry.path())?;
            let _ = fs::remove_file(entry.path());
        }
        Ok(())
    }

    /// Links the blob a collection renamed aside to `aside` back under its
    /// digest (kept when the digest is there again); the caller removes
    /// `aside`. Whether it is sound is the caller's to know.
    pub(crate) fn put_back(&self, digest: &crate::Digest, aside: &Path) -> Result<()> {
        let target = self.content().blob_path(digest)?;
        match fs::hard_link(aside, &target) {
            Ok(()) => crate::content::fsync_dir(target.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("put blob back", &target, e)),
        }
    }

    /// Takes `gc.lock` without waiting and puts back blobs a killed
    /// collection left aside; nothing when a collection runs.
    pub(crate) fn restore_aside_blobs_if_idle(&self) -> Result<()> {
        let ingest = self.content().ingest_dir();
        let any = fs::read_dir(&ingest)
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("gc-"));
        if !any {
            return Ok(());
        }
        let path = self.root().join("gc.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io("open lock file", &path, e))?;
        if crate::sys::try_lock_exclusive(&lock).map_err(|e| Error::io("lock", &path, e))? {
            self.restore_aside_blobs()?;
        }
        Ok(())
    }

    /// Renames the blob aside, then unlinks it unless it was written or
    /// refreshed after the oldest live lease (then it goes back).
    fn unlink_blob(&self, digest: &str, oldest_lease: Option<i64>) -> Result<Option<u64>> {
        let parsed = crate::content::parse_digest(digest)?;
        let path = self.content().blob_path(&parsed)?;
        let aside = self
            .content()
            .ingest_dir()
            .join(format!("gc-{}", parsed.digest()));
        match fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("move blob aside", &path, e)),
        }
        let meta = fs::symlink_metadata(&aside).map_err(|e| Error::io("stat", &aside, e))?;
        if oldest_lease.is_some_and(|o| mtime_ms(&meta) >= o - CLOCK_SLACK_MS) {
            match fs::hard_link(&aside, &path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("put blob back", &path, e)),
            }
            let _ = fs::remove_file(&aside);
            return Ok(None);
        }
        fs::remove_file(&aside).map_err(|e| Error::io("remove blob", &aside, e))?;
        Ok(Some(meta.blocks() * 512))
    }
}

impl GcReport {
    fn push(&mut self, kind: &'static str, id: impl ToString, description: &str, size: u64) {
        self.removed.push(Removed {
            kind,
            id: id.to_string(),
            description: description.to_string(),
            size,
        });
    }
}

/// Sizes on disk of the store's parts, for `hoist du`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UsageSummary {
    /// The whole store.
    pub total: u64,
    /// Each top-level entry of the root.
    pub parts: BTreeMap<String, u64>,
    /// Each cache mount.
    pub cache_mounts: BTreeMap<String, (u64, i64)>,
}

/// Measures the store's parts on disk.
pub fn usage_summary(root: &Path) -> UsageSummary {
    let mut summary = UsageSummary {
        total: disk_usage(root),
        ..UsageSummary::default()
    };
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        summary.parts.insert(name, disk_usage(&entry.path()));
    }
    for entry in cache_mount_dirs(root) {
        let last = entry.metadata().map(|m| mtime_ms(&m)).unwrap_or(0);
        summary.cache_mounts.insert(
            entry.file_name().to_string_lossy().into_owned(),
            (disk_usage(&entry.path()), last),
        );
    }
    summary
}

/// Sizes by blob on disk (allocated), for reports.
pub fn blob_sizes(store: &Store) -> Result<HashMap<String, u64>> {
    let mut out = HashMap::new();
    for (digest, _) in store.content().blobs()? {
        if let Ok(path) = store.content().blob_path(&digest) {
            if let Ok(meta) = fs::symlink_metadata(path) {
                out.insert(digest.to_string(), meta.blocks() * 512);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_files_merge_and_default() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(GcConfig::load_from(&[]).unwrap(), GcConfig::default());
        let a = dir.path().join("a.toml");
        let b = dir.path().join("b.toml");
        fs::write(&a, "[gc]\nmax-storage = \"10GB\"\n").unwrap();
        fs::write(&b, "[gc]\nmax_storage = 5000000\nenabled = false\n").unwrap();
        let c = GcConfig::load_from(std::slice::from_ref(&a)).unwrap();
        assert_eq!(c.max_storage, 10_000_000_000);
        let c = GcConfig::load_from(&[a.clone(), b.clone()]).unwrap();
        assert_eq!((c.max_storage, c.enabled), (5_000_000, false));
        assert_eq!(c.source, b.display().to_string());
        fs::write(&b, "[gc]\nmax-storage = \"lots\"\n").unwrap();
        let err = GcConfig::load_from(&[b]).unwrap_err().to_string();
        assert!(err.contains("invalid gc.max-storage"), "{err}");
    }

    #[test]
    fn disk_usage_counts_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![1u8; 100_000]).unwrap();
        let one = disk_usage(dir.path());
        fs::hard_link(dir.path().join("a"), dir.path().join("b")).unwrap();
        assert_eq!(disk_usage(dir.path()), one);
        assert!(one >= 100_000);
    }
}
