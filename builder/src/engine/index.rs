//! The cache index as a table of the store's metadata database.
//!
//! The cache crate's migrations are a released list this crate may not append
//! to, so the table is created with `CREATE TABLE IF NOT EXISTS` on open (an
//! idempotent statement, safe for concurrent first opens under SQLite's write
//! lock).

use std::sync::Arc;

use hoist_cache::Store;
use rusqlite::OptionalExtension;

use crate::cache_index::{CacheIndex, CacheIndexAction, CacheIndexError, CacheRecord};
use crate::digest::CacheKey;
use crate::engine::artifact::Artifact;
use crate::file_index::CacheOutput;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS build_cache (
    key        TEXT PRIMARY KEY NOT NULL,
    final_key  TEXT NOT NULL,
    output     BLOB NOT NULL,
    updated_at INTEGER NOT NULL
)";

/// Cache records in `<root>/meta.db`, table `build_cache`.
///
/// `get` returns `None` when a recorded layer blob is gone from the content store
/// (snapshots are rebuilt from blobs on demand, so blobs are all a hit needs).
pub struct StoreCacheIndex {
    store: Arc<Store>,
}

impl StoreCacheIndex {
    /// Opens the table, creating it when missing.
    pub fn open(store: Arc<Store>) -> Result<Self, hoist_cache::Error> {
        store
            .db()
            .write(|tx| tx.execute_batch(SCHEMA).map_err(hoist_cache::Error::from))?;
        Ok(StoreCacheIndex { store })
    }
}

fn index_error(
    action: CacheIndexAction,
    key: &CacheKey,
) -> impl FnOnce(rusqlite::Error) -> CacheIndexError + '_ {
    move |e| CacheIndexError {
        action,
        key: *key,
        source: Box::new(e),
    }
}

impl CacheIndex<Artifact> for StoreCacheIndex {
    fn get(&self, key: &CacheKey) -> Result<Option<CacheRecord<Artifact>>, CacheIndexError> {
        let row: Option<(String, Vec<u8>)> = self
            .store
            .db()
            .read(|conn| {
                conn.query_row(
                    "SELECT final_key, output FROM build_cache WHERE key = ?1",
                    [key.to_string()],
                    |row| Ok((row.get(0)?, row.get(1)?)),
                )
                .optional()
            })
            .map_err(index_error(CacheIndexAction::Get, key))?;
        let Some((final_key, output)) = row else {
            return Ok(None);
        };
        let (Ok(final_key), Some(output)) = (
            final_key.parse().map(CacheKey),
            Artifact::from_record_bytes(&output),
        ) else {
            // A record this version cannot read is a miss, not an error.
            return Ok(None);
        };
        for layer in output.layers() {
            let present = layer
                .digest
                .parse()
                .map(|d| self.store.content().contains(&d))
                .unwrap_or(false);
            if !present {
                return Ok(None);
            }
        }
        Ok(Some(CacheRecord {
            output,
            cache_key: final_key,
        }))
    }

    fn put(&self, key: &CacheKey, record: &CacheRecord<Artifact>) -> Result<(), CacheIndexError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        self.store
            .db()
            .write(|tx| {
                tx.execute(
                    "INSERT INTO build_cache (key, final_key, output, updated_at)
                     VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (key) DO UPDATE SET final_key = ?2, output = ?3, updated_at = ?4",
                    rusqlite::params![
                        key.to_string(),
                        record.cache_key.to_string(),
                        record.output.to_record_bytes(),
                        now
                    ],
                )
            })
            .map_err(index_error(CacheIndexAction::Put, key))?;
        Ok(())
    }
}
