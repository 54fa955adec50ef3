//! The cache index as records of the store's metadata database
//! (`hoist_cache::records`, table `build_cache`).
//!
//! Reads and writes go through the build's lease, so that a garbage
//! collection in another process never removes the blobs of a record this
//! build has looked up or made; a hit marks the record as used now (for
//! least-recently-used collection).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use hoist_cache::{Lease, NewCacheRecord, Store};

use crate::cache_index::{CacheIndex, CacheIndexAction, CacheIndexError, CacheRecord};
use crate::digest::CacheKey;
use crate::engine::artifact::{snapshot_name, Artifact};
use crate::file_index::CacheOutput;
use crate::graph::VertexId;

/// What the index keeps about the vertex that made a record besides its
/// description: the step identity and the preimage of the key (see
/// `explain`).
pub trait StepRecorder: Send + Sync {
    /// `(step identity, preimage bytes)` of `vertex`, computed after it ran.
    fn step_of(&self, vertex: VertexId) -> Option<(String, Vec<u8>)>;
}

/// Whether the committed snapshot of a name exists.
pub type SnapshotCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Cache records in `<root>/meta.db`.
///
/// `get` returns `None` when a recorded layer blob is gone from the content store
/// (snapshots are rebuilt from blobs on demand, so blobs are all a hit needs),
/// or, for a lazy layer (one a step kept no blob of), when the snapshot of its
/// chain is gone.
pub struct StoreCacheIndex {
    store: Arc<Store>,
    /// Whether the committed snapshot of that name exists; without it, a
    /// lazy layer is a miss.
    has_snapshot: Option<SnapshotCheck>,
    lease: Option<Lease>,
    steps: Option<Arc<dyn StepRecorder>>,
    /// Keys this build hit or recorded (what `--cache-to` exports).
    touched: Mutex<BTreeSet<String>>,
}

impl StoreCacheIndex {
    /// The index of `store` (its table is made by the store's migrations).
    pub fn open(store: Arc<Store>) -> Result<Self, hoist_cache::Error> {
        Ok(StoreCacheIndex {
            store,
            has_snapshot: None,
            lease: None,
            steps: None,
            touched: Mutex::new(BTreeSet::new()),
        })
    }

    /// Puts what this index reads and writes under `lease`.
    pub fn with_lease(mut self, lease: Option<Lease>) -> Self {
        self.lease = lease;
        self
    }

    /// Lets a record of lazy layers hit while their snapshots exist.
    pub fn with_snapshots(mut self, has_snapshot: SnapshotCheck) -> Self {
        self.has_snapshot = Some(has_snapshot);
        self
    }

    /// Records step identities and preimages through `steps`.
    pub fn with_steps(mut self, steps: Arc<dyn StepRecorder>) -> Self {
        self.steps = Some(steps);
        self
    }

    /// Keys this build hit or recorded, sorted.
    pub fn touched_keys(&self) -> Vec<String> {
        self.touch_lock().iter().cloned().collect()
    }

    fn has_blob(&self, digest: &str) -> bool {
        digest
            .parse()
            .map(|d| self.store.content().contains(&d))
            .unwrap_or(false)
    }

    fn touch_lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // Single inserts: a poisoned set is still consistent.
        self.touched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put_record(
        &self,
        key: &CacheKey,
        record: &CacheRecord<Artifact>,
        description: &str,
        step: Option<(String, Vec<u8>)>,
    ) -> Result<(), CacheIndexError> {
        let (step, preimage) = match step {
            Some((s, p)) => (s, Some(p)),
            None => (String::new(), None),
        };
        let new = NewCacheRecord {
            key: key.to_string(),
            final_key: record.cache_key.to_string(),
            output: record.output.to_record_bytes(),
            // A lazy layer has no blob to keep; its snapshot is kept as the
            // snapshot of any record's chain is (`engine::gc`).
            blobs: record
                .output
                .layers()
                .iter()
                .filter(|l| !l.is_lazy())
                .map(|l| l.digest.clone())
                .collect(),
            description: description.to_owned(),
            step,
            preimage,
        };
        self.touch_lock().insert(new.key.clone());
        self.store
            .put_cache_record(&new, self.lease.as_ref())
            .map_err(|e| CacheIndexError {
                action: CacheIndexAction::Put,
                key: *key,
                source: Box::new(e),
            })
    }
}

impl CacheIndex<Artifact> for StoreCacheIndex {
    fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<Artifact>>, CacheIndexError> {
        let row = self
            .store
            .use_cache_record(&key.to_string(), self.lease.as_ref())
            .map_err(|e| CacheIndexError {
                action: CacheIndexAction::Get,
                key: *key,
                source: Box::new(e),
            })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (Ok(final_key), Some(output)) = (
            row.final_key.parse().map(CacheKey),
            Artifact::from_record_bytes(&row.output),
        ) else {
            // A record this version cannot read is a miss, not an error.
            return Ok(None);
        };
        // The lease now holds the blobs, and keeps collections off the
        // snapshots: present now means present until the build ends.
        let layers = output.layers();
        for (n, layer) in layers.iter().enumerate() {
            let present = self.has_blob(&layer.digest)
                || (layer.is_lazy()
                    && self.has_snapshot.as_ref().is_some_and(|has| {
                        snapshot_name(&layers[..=n]).is_some_and(|name| has(&name))
                    }));
            if !present {
                return Ok(None);
            }
        }
        self.touch_lock().insert(row.key);
        Ok(Some(CacheRecord {
            output,
            cache_key: final_key,
        }))
    }

    fn put(&self, key: &CacheKey, record: &CacheRecord<Artifact>) -> Result<(), CacheIndexError> {
        self.put_record(key, record, "", None)
    }

    fn put_vertex(
        &self,
        key: &CacheKey,
        record: &CacheRecord<Artifact>,
        vertex: VertexId,
        description: &str,
    ) -> Result<(), CacheIndexError> {
        let step = self.steps.as_ref().and_then(|s| s.step_of(vertex));
        self.put_record(key, record, description, step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_index_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let index = StoreCacheIndex::open(store).unwrap();
        crate::cache_index::check_conformance(&index, |n| Artifact::Context {
            name: format!("context {n}"),
        });
    }
}
