//! The cache index seam: cache key → recorded result.
//!
//! The real index is a table in the store's metadata database (the `cache` crate);
//! the builder implements [`CacheIndex`] over it. [`MemoryCacheIndex`] serves tests
//! and one-shot builds.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::digest::CacheKey;

/// What the index records for a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRecord<O> {
    /// The result (for hoist: the committed snapshot and its layers).
    pub output: O,
    /// The vertex's final cache key, the one its consumers' keys are derived from.
    ///
    /// Equal to the key the record is stored under, except for records stored under
    /// the definition-based key of a vertex with content-addressed inputs: there it
    /// is the content-based key, so a later hit on the cheap key learns the content
    /// key without hashing anything.
    pub cache_key: CacheKey,
}

/// Which index operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheIndexAction {
    /// Looking a key up.
    Get,
    /// Recording a result.
    Put,
}

impl CacheIndexAction {
    fn verb(self) -> &'static str {
        match self {
            CacheIndexAction::Get => "look up",
            CacheIndexAction::Put => "record",
        }
    }
}

/// A failure of the index's storage.
#[derive(Debug, thiserror::Error)]
#[error("failed to {} cache key {key}", action.verb())]
pub struct CacheIndexError {
    /// What was being done.
    pub action: CacheIndexAction,
    /// The key concerned.
    pub key: CacheKey,
    /// The storage error.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

/// Maps cache keys to recorded results.
///
/// Implementations must make `put` atomic (a reader sees the old record or the new
/// one) and should return `None` from `get` when the recorded output no longer exists
/// (e.g. its snapshot was garbage-collected), so the solver re-executes instead of
/// handing out a dangling result. `put` replaces an existing record (that is how
/// `--no-cache` refreshes results).
pub trait CacheIndex<O>: Send + Sync {
    /// The record for `key`, if any.
    fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<O>>, CacheIndexError>;

    /// Records `record` under `key`, replacing any previous record.
    fn put(&self, key: &CacheKey, record: &CacheRecord<O>) -> Result<(), CacheIndexError>;
}

/// An index in memory, lost when dropped.
#[derive(Debug)]
pub struct MemoryCacheIndex<O> {
    records: Mutex<HashMap<CacheKey, CacheRecord<O>>>,
}

impl<O> MemoryCacheIndex<O> {
    /// An empty index.
    pub fn new() -> Self {
        MemoryCacheIndex {
            records: Mutex::new(HashMap::new()),
        }
    }

    /// Number of keys recorded.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Forgets `key` (what a garbage collection would do to its snapshot).
    pub fn remove(&self, key: &CacheKey) -> bool {
        self.lock().remove(key).is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, CacheRecord<O>>> {
        // Every critical section is a single map operation, so a poisoned map is
        // still consistent.
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<O> Default for MemoryCacheIndex<O> {
    fn default() -> Self {
        MemoryCacheIndex::new()
    }
}

impl<O: Clone + Send> CacheIndex<O> for MemoryCacheIndex<O> {
    fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<O>>, CacheIndexError> {
        Ok(self.lock().get(key).cloned())
    }

    fn put(&self, key: &CacheKey, record: &CacheRecord<O>) -> Result<(), CacheIndexError> {
        self.lock().insert(*key, record.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn memory_index_replaces_and_removes() {
        let index = MemoryCacheIndex::new();
        let key = CacheKey(Digest::of(b"k"));
        assert_eq!(index.get(&key).unwrap(), None);
        let record = |output: &str| CacheRecord {
            output: output.to_owned(),
            cache_key: key,
        };
        index.put(&key, &record("a")).unwrap();
        index.put(&key, &record("b")).unwrap();
        assert_eq!(index.get(&key).unwrap(), Some(record("b")));
        assert_eq!(index.len(), 1);
        assert!(index.remove(&key));
        assert!(index.is_empty());
    }

    #[test]
    fn index_error_names_action_and_key() {
        let key = CacheKey(Digest::of(b"k"));
        let error = CacheIndexError {
            action: CacheIndexAction::Put,
            key,
            source: "disk full".into(),
        };
        assert_eq!(
            error.to_string(),
            format!("failed to record cache key {key}")
        );
    }
}
