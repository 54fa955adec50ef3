//! A cache index in plain files, one per key: enough for the CLI until the
//! metadata database's table takes over, and a second backend for the seam.
//!
//! Layout under the root: `cache-v<FORMAT_VERSION>/<key hex>`, each file holding
//!
//! ```text
//! hoist-cache-record 1\n
//! sha256:<final cache key hex>\n
//! <output bytes, as CacheOutput encodes them>
//! ```
//!
//! Records are written to a temporary file in the same directory, synced, and
//! renamed over the final name, so a reader sees the old record or the new one and
//! a crash leaves at most a stray temporary file.

use std::fs;
use std::io::{self, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cache_index::{CacheIndex, CacheIndexAction, CacheIndexError, CacheRecord};
use crate::digest::{CacheKey, FORMAT_VERSION};

const HEADER: &str = "hoist-cache-record 1\n";

/// How an output is written into a file-backed index record and read back.
pub trait CacheOutput: Sized {
    /// The bytes to store.
    fn to_record_bytes(&self) -> Vec<u8>;

    /// The output from stored bytes, or `None` if they are not a valid encoding.
    fn from_record_bytes(bytes: &[u8]) -> Option<Self>;
}

/// Outputs that are text (snapshot names, test outputs) are stored as UTF-8.
impl CacheOutput for String {
    fn to_record_bytes(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }

    fn from_record_bytes(bytes: &[u8]) -> Option<Self> {
        String::from_utf8(bytes.to_vec()).ok()
    }
}

/// A failure of [`FileCacheIndex`]'s files.
#[derive(Debug, thiserror::Error)]
pub enum FileIndexError {
    /// A file operation failed.
    #[error("failed to {action} {}", path.display())]
    Io {
        /// What was being done (`create directory`, `read`, `write`, `rename into place`).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A record file is not in the expected format.
    #[error("failed to parse cache record {}: {reason}", path.display())]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
}

fn io_error<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> FileIndexError + 'a {
    move |source| FileIndexError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// A [`CacheIndex`] storing one file per key under a directory.
#[derive(Debug)]
pub struct FileCacheIndex<O> {
    directory: PathBuf,
    temporary_counter: AtomicU64,
    output: PhantomData<fn() -> O>,
}

impl<O> FileCacheIndex<O> {
    /// Opens (creating if needed) the index under `root`. Records of another
    /// [`FORMAT_VERSION`] live in another subdirectory and are never read.
    pub fn open(root: &Path) -> Result<Self, FileIndexError> {
        let directory = root.join(format!("cache-v{FORMAT_VERSION}"));
        fs::create_dir_all(&directory).map_err(io_error("create directory", &directory))?;
        Ok(FileCacheIndex {
            directory,
            temporary_counter: AtomicU64::new(0),
            output: PhantomData,
        })
    }

    /// The directory holding the record files.
    pub fn directory(&self) -> &Path {
        &self.directory
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.directory.join(key.0.hex())
    }

    fn read(&self, key: &CacheKey) -> Result<Option<CacheRecord<O>>, FileIndexError>
    where
        O: CacheOutput,
    {
        let path = self.path(key);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error("read", &path)(error)),
        };
        let corrupt = |reason| FileIndexError::Corrupt {
            path: path.clone(),
            reason,
        };
        let rest = bytes
            .strip_prefix(HEADER.as_bytes())
            .ok_or_else(|| corrupt("unknown header"))?;
        let newline = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| corrupt("no cache key line"))?;
        let cache_key = std::str::from_utf8(&rest[..newline])
            .ok()
            .and_then(|text| text.parse().ok())
            .map(CacheKey)
            .ok_or_else(|| corrupt("invalid cache key"))?;
        let output = O::from_record_bytes(&rest[newline + 1..])
            .ok_or_else(|| corrupt("invalid output encoding"))?;
        Ok(Some(CacheRecord { output, cache_key }))
    }

    fn write(&self, key: &CacheKey, record: &CacheRecord<O>) -> Result<(), FileIndexError>
    where
        O: CacheOutput,
    {
        let path = self.path(key);
        let temporary = self.directory.join(format!(
            ".tmp-{}-{}-{}",
            key.0.hex(),
            std::process::id(),
            self.temporary_counter.fetch_add(1, Ordering::Relaxed)
        ));
        let result = (|| {
            let mut file = fs::File::create(&temporary).map_err(io_error("create", &temporary))?;
            let mut bytes = Vec::from(HEADER.as_bytes());
            bytes.extend_from_slice(format!("{}\n", record.cache_key).as_bytes());
            bytes.extend_from_slice(&record.output.to_record_bytes());
            file.write_all(&bytes)
                .map_err(io_error("write", &temporary))?;
            file.sync_all().map_err(io_error("sync", &temporary))?;
            fs::rename(&temporary, &path).map_err(io_error("rename into place", &path))?;
            // Make the rename itself durable.
            fs::File::open(&self.directory)
                .and_then(|directory| directory.sync_all())
                .map_err(io_error("sync", &self.directory))
        })();
        if result.is_err() {
            // Best effort: the write already failed, and a stray temporary file is
            // harmless (never read), so a failure to remove it must not hide the cause.
            let _ = fs::remove_file(&temporary);
        }
        result
    }
}

impl<O: CacheOutput + Send> CacheIndex<O> for FileCacheIndex<O> {
    fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<O>>, CacheIndexError> {
        self.read(key).map_err(|error| CacheIndexError {
            action: CacheIndexAction::Get,
            key: *key,
            source: Box::new(error),
        })
    }

    fn put(&self, key: &CacheKey, record: &CacheRecord<O>) -> Result<(), CacheIndexError> {
        self.write(key, record).map_err(|error| CacheIndexError {
            action: CacheIndexAction::Put,
            key: *key,
            source: Box::new(error),
        })
    }
}

/// How long each op ran when it last executed, in one small file (`<op digest>
/// <milliseconds>` per line), for the solver's longest-first order
/// ([`crate::solver::StepHistory`]). Loaded once per build and written back
/// (temporary file, rename) when the build recorded something; a missing or
/// damaged file only costs the ordering, so every failure is ignored.
#[derive(Debug)]
pub struct FileStepHistory {
    file: PathBuf,
    state: std::sync::Mutex<HistoryState>,
}

#[derive(Debug, Default)]
struct HistoryState {
    /// op digest → (milliseconds, when it was last recorded: higher is later).
    entries: std::collections::HashMap<crate::digest::Digest, (u64, u64)>,
    clock: u64,
    dirty: bool,
}

/// The most ops the file keeps (the most recently recorded): a few hundred
/// KB at most, however many different steps the store has built.
const HISTORY_ENTRIES: usize = 4096;

impl FileStepHistory {
    /// The history in `file` (empty when it is missing or unreadable).
    pub fn load(file: PathBuf) -> Self {
        let mut state = HistoryState::default();
        if let Ok(text) = fs::read_to_string(&file) {
            // Oldest first in the file, so later lines are the more recent ones.
            for line in text.lines() {
                let mut fields = line.split(' ');
                let (Some(op), Some(ms), None) = (fields.next(), fields.next(), fields.next())
                else {
                    continue;
                };
                let (Ok(op), Ok(ms)) = (op.parse(), ms.parse::<u64>()) else {
                    continue;
                };
                state.clock += 1;
                state.entries.insert(op, (ms, state.clock));
            }
        }
        FileStepHistory {
            file,
            state: std::sync::Mutex::new(state),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HistoryState> {
        // One map operation per critical section.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the file back if anything was recorded since it was loaded.
    pub fn save(&self) {
        let mut state = self.lock();
        if !state.dirty {
            return;
        }
        state.dirty = false;
        let mut entries: Vec<_> = state.entries.iter().map(|(op, v)| (*op, *v)).collect();
        drop(state);
        entries.sort_by_key(|(_, (_, when))| std::cmp::Reverse(*when));
        entries.truncate(HISTORY_ENTRIES);
        entries.reverse();
        let mut text = String::new();
        for (op, (ms, _)) in entries {
            text.push_str(&format!("{op} {ms}\n"));
        }
        static SAVES: AtomicU64 = AtomicU64::new(0);
        let n = SAVES.fetch_add(1, Ordering::Relaxed);
        let temporary = self
            .file
            .with_extension(format!("tmp-{}-{n}", std::process::id()));
        let written = fs::write(&temporary, text).and_then(|()| fs::rename(&temporary, &self.file));
        if written.is_err() {
            let _ = fs::remove_file(&temporary);
        }
    }
}

impl crate::solver::StepHistory for FileStepHistory {
    fn expected(&self, op: &crate::digest::Digest) -> Option<std::time::Duration> {
        self.lock()
            .entries
            .get(op)
            .map(|(ms, _)| std::time::Duration::from_millis(*ms))
    }

    fn record(&self, op: &crate::digest::Digest, took: std::time::Duration) {
        let mut state = self.lock();
        state.clock += 1;
        let when = state.clock;
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        state.entries.insert(*op, (ms, when));
        state.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn record(output: &str, key: &[u8]) -> CacheRecord<String> {
        CacheRecord {
            output: output.to_owned(),
            cache_key: CacheKey(Digest::of(key)),
        }
    }

    #[test]
    fn records_survive_reopening_and_are_replaced_whole() {
        let root = tempfile::tempdir().unwrap();
        let key = CacheKey(Digest::of(b"fast"));
        {
            let index = FileCacheIndex::<String>::open(root.path()).unwrap();
            assert_eq!(index.get(&key).unwrap(), None);
            index
                .put(&key, &record("snapshot-1\nwith newline", b"slow"))
                .unwrap();
            index.put(&key, &record("snapshot-2", b"slow")).unwrap();
        }
        let index = FileCacheIndex::<String>::open(root.path()).unwrap();
        assert_eq!(
            index.get(&key).unwrap(),
            Some(record("snapshot-2", b"slow"))
        );
        // Only the record itself is left: no temporary files.
        let names: Vec<_> = fs::read_dir(index.directory())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [key.0.hex()]);
        assert!(index
            .directory()
            .ends_with(format!("cache-v{FORMAT_VERSION}")));
    }

    #[test]
    fn a_corrupt_record_is_an_error_naming_the_file() {
        let root = tempfile::tempdir().unwrap();
        let index = FileCacheIndex::<String>::open(root.path()).unwrap();
        let key = CacheKey(Digest::of(b"k"));
        fs::write(index.directory().join(key.0.hex()), b"garbage").unwrap();
        let error = index.get(&key).unwrap_err();
        assert_eq!(error.action, CacheIndexAction::Get);
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert!(
            cause.starts_with("failed to parse cache record "),
            "{cause}"
        );
        assert!(cause.ends_with(": unknown header"), "{cause}");
        assert!(cause.contains(&key.0.hex()), "{cause}");
    }

    #[test]
    fn an_unwritable_directory_fails_put_with_the_path() {
        let root = tempfile::tempdir().unwrap();
        let index = FileCacheIndex::<String>::open(root.path()).unwrap();
        fs::remove_dir(index.directory()).unwrap();
        let key = CacheKey(Digest::of(b"k"));
        let error = index.put(&key, &record("x", b"k")).unwrap_err();
        assert_eq!(error.action, CacheIndexAction::Put);
        let cause = std::error::Error::source(&error).unwrap().to_string();
        assert!(cause.starts_with("failed to create "), "{cause}");
        assert!(cause.contains("cache-v1/.tmp-"), "{cause}");
    }

    #[test]
    fn step_history_survives_reloading_and_ignores_damaged_lines() {
        use crate::solver::StepHistory;
        use std::time::Duration;
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("step-durations");
        let (a, b) = (Digest::of(b"RUN a"), Digest::of(b"RUN b"));
        let history = FileStepHistory::load(file.clone());
        assert_eq!(history.expected(&a), None);
        history.record(&a, Duration::from_millis(4700));
        history.record(&b, Duration::from_millis(2300));
        history.record(&a, Duration::from_millis(4200));
        history.save();
        let mut text = fs::read_to_string(&file).unwrap();
        text.push_str("garbage\nsha256:zz 12\n");
        fs::write(&file, text).unwrap();
        let history = FileStepHistory::load(file.clone());
        assert_eq!(history.expected(&a), Some(Duration::from_millis(4200)));
        assert_eq!(history.expected(&b), Some(Duration::from_millis(2300)));
        assert_eq!(history.expected(&Digest::of(b"RUN c")), None);
        let names: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file is left");
    }
}
