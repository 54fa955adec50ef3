//! Snapshot records: which keys and names exist, their kind and parent, and
//! the directory id that holds their files.
//!
//! The builder keeps these in the cache database by implementing
//! [`SnapshotRecords`]; [`JsonFileRecords`] is the stand-alone implementation
//! (one JSON file, rewritten atomically under a file lock).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_err, Error, Result};

/// The state of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Writable, made by `prepare`; named by a *key*; can be committed.
    Active,
    /// Read-only, made by `view`; never committed.
    View,
    /// Immutable, made by `commit`; named by a *name*; can be a parent.
    Committed,
}

impl Kind {
    /// Lowercase word for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Active => "active",
            Kind::View => "a view",
            Kind::Committed => "committed",
        }
    }
}

/// One snapshot's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Directory id: files live in `<root>/snapshots/<id>/`.
    pub id: u64,
    /// Active, view or committed.
    pub kind: Kind,
    /// The committed snapshot this one builds on.
    pub parent: Option<String>,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: u64,
}

/// Every record, keyed by key or name (they share one namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// The next directory id to hand out (ids are never reused).
    pub next_id: u64,
    /// Records by key or name.
    pub snapshots: BTreeMap<String, Record>,
}

impl RecordSet {
    /// Keys and names of the snapshots whose parent is `name`.
    pub fn children_of(&self, name: &str) -> Vec<&str> {
        self.snapshots
            .iter()
            .filter(|(_, r)| r.parent.as_deref() == Some(name))
            .map(|(k, _)| k.as_str())
            .collect()
    }
}

/// Where the snapshotter keeps its records.
///
/// `update` must run its closure in one transaction: it sees the current
/// records, changes them, and the change becomes visible all at once when the
/// closure returns `Ok` (nothing changes when it returns `Err`). Concurrent
/// updates, from threads or processes, must be serialised.
pub trait SnapshotRecords: Send + Sync {
    /// A consistent copy of all records.
    fn read(&self) -> Result<RecordSet>;
    /// Runs `change` on the records in one transaction.
    fn update(&self, change: &mut dyn FnMut(&mut RecordSet) -> Result<()>) -> Result<()>;
}

/// Records in one JSON file, replaced atomically (temporary file, fsync,
/// rename, fsync of the directory) while holding an exclusive `flock` on a
/// sibling lock file, so several processes may share a root.
#[derive(Debug, Clone)]
pub struct JsonFileRecords {
    path: PathBuf,
    lock_path: PathBuf,
}

impl JsonFileRecords {
    /// Records stored in `path` (created on first update), locked through
    /// `path` + `.lock`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        JsonFileRecords {
            path,
            lock_path: lock.into(),
        }
    }

    /// The JSON file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self, exclusive: bool) -> Result<File> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.lock_path)
            .map_err(io_err("open lock file", &self.lock_path))?;
        let op = if exclusive {
            rustix::fs::FlockOperation::LockExclusive
        } else {
            rustix::fs::FlockOperation::LockShared
        };
        rustix::fs::flock(&file, op)
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
            .map_err(io_err("lock", &self.lock_path))?;
        Ok(file)
    }

    fn load(&self) -> Result<RecordSet> {
        let mut text = String::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_string(&mut text)
                    .map_err(io_err("read snapshot records", &self.path))?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(RecordSet {
                    next_id: 1,
                    snapshots: BTreeMap::new(),
                })
            }
            Err(e) => return Err(io_err("open snapshot records", &self.path)(e)),
        }
        serde_json::from_str(&text).map_err(|source| Error::Records {
            action: "parse",
            path: self.path.clone(),
            source,
        })
    }

    fn store(&self, set: &RecordSet) -> Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let bytes = serde_json::to_vec_pretty(set).map_err(|source| Error::Records {
            action: "encode",
            path: self.path.clone(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".records-")
            .tempfile_in(dir)
            .map_err(io_err("create temporary file in", dir))?;
        tmp.write_all(&bytes)
            .and_then(|_| tmp.as_file().sync_all())
            .map_err(io_err("write", tmp.path().to_path_buf()))?;
        tmp.persist(&self.path)
            .map_err(|e| io_err("replace", &self.path)(e.error))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("sync directory", dir))?;
        Ok(())
    }
}

impl SnapshotRecords for JsonFileRecords {
    fn read(&self) -> Result<RecordSet> {
        let _lock = self.lock(false)?;
        self.load()
    }

    fn update(&self, change: &mut dyn FnMut(&mut RecordSet) -> Result<()>) -> Result<()> {
        let _lock = self.lock(true)?;
        let mut set = self.load()?;
        change(&mut set)?;
        self.store(&set)
    }
}

/// Makes sure `dir` exists.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_is_all_or_nothing_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let records = JsonFileRecords::new(dir.path().join("records.json"));
        records
            .update(&mut |set| {
                set.snapshots.insert(
                    "a".into(),
                    Record {
                        id: 1,
                        kind: Kind::Committed,
                        parent: None,
                        created_unix: 0,
                    },
                );
                Ok(())
            })
            .unwrap();
        let err = records.update(&mut |set| {
            set.snapshots.clear();
            Err(Error::NotFound("x".into()))
        });
        assert!(err.is_err());
        let again = JsonFileRecords::new(dir.path().join("records.json"));
        let set = again.read().unwrap();
        assert_eq!(set.snapshots.len(), 1);
        assert_eq!(set.snapshots["a"].kind, Kind::Committed);
    }
}
