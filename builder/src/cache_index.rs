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

    /// Records the result of executing `vertex` (described as `description`,
    /// e.g. `Dockerfile:7: RUN make`); the solver calls this rather than
    /// [`CacheIndex::put`] so that indexes can keep who made a record (for
    /// `hoist du --verbose` and `--explain`). The default forgets it.
    fn put_vertex(
        &self,
        key: &CacheKey,
        record: &CacheRecord<O>,
        vertex: crate::graph::VertexId,
        description: &str,
    ) -> Result<(), CacheIndexError> {
        let _ = (vertex, description);
        self.put(key, record)
    }
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

/// Behavioural checks every [`CacheIndex`] must pass, for the backends' own tests
/// (the memory and file indexes here, the metadata database's table in the builder).
///
/// Panics with a message naming the broken rule. `sample(n)` must return distinct
/// outputs for distinct `n`.
#[cfg(any(test, feature = "conformance"))]
#[allow(
    clippy::expect_used,
    reason = "a conformance check for tests: a broken rule panics"
)]
pub fn check_conformance<O, I>(index: &I, sample: impl Fn(u32) -> O)
where
    O: Clone + PartialEq + std::fmt::Debug + Send,
    I: CacheIndex<O> + ?Sized,
{
    use crate::digest::Digest;

    let key = |n: u32| CacheKey(Digest::of(format!("conformance {n}").as_bytes()));
    let record = |output: u32, cache_key: u32| CacheRecord {
        output: sample(output),
        cache_key: key(cache_key),
    };

    assert_eq!(
        index.get(&key(1)).expect("get of a missing key"),
        None,
        "a key never recorded must be absent"
    );
    index.put(&key(1), &record(1, 1)).expect("put");
    assert_eq!(
        index.get(&key(1)).expect("get"),
        Some(record(1, 1)),
        "get must return what put recorded"
    );
    index
        .put(&key(1), &record(2, 1))
        .expect("put over a record");
    assert_eq!(
        index.get(&key(1)).expect("get"),
        Some(record(2, 1)),
        "put must replace an existing record"
    );
    // A definition-based key's record carries the content-based key.
    index.put(&key(2), &record(3, 9)).expect("put");
    assert_eq!(
        index.get(&key(2)).expect("get"),
        Some(record(3, 9)),
        "the record's cache key must be kept even when it differs from the key"
    );
    assert_eq!(
        index.get(&key(1)).expect("get"),
        Some(record(2, 1)),
        "keys must be independent"
    );
}

#[cfg(test)]
mod conformance_tests {
    use super::*;

    #[test]
    fn memory_index_conforms() {
        check_conformance(&MemoryCacheIndex::new(), |n| format!("output {n}"));
    }

    #[test]
    fn file_index_conforms() {
        let root = tempfile::tempdir().unwrap();
        let index = crate::FileCacheIndex::<String>::open(root.path()).unwrap();
        check_conformance(&index, |n| format!("output {n}\nline 2"));
    }

    #[test]
    #[should_panic(expected = "put must replace an existing record")]
    fn conformance_catches_an_index_that_keeps_old_records() {
        struct FirstWins(MemoryCacheIndex<String>);
        impl CacheIndex<String> for FirstWins {
            fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<String>>, CacheIndexError> {
                self.0.get(key)
            }
            fn put(
                &self,
                key: &CacheKey,
                record: &CacheRecord<String>,
            ) -> Result<(), CacheIndexError> {
                if self.0.get(key)?.is_none() {
                    self.0.put(key, record)?;
                }
                Ok(())
            }
        }
        check_conformance(&FirstWins(MemoryCacheIndex::new()), |n| n.to_string());
    }
}
