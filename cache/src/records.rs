//! Build cache records: cache key → an opaque output, the blobs that output
//! needs, when it was made and last used, and the preimage of its key.
//!
//! The builder decides what the output bytes and the preimage mean; this
//! module only keeps them, tracks last use (for least-recently-used garbage
//! collection) and knows which blobs each record needs (so that collection
//! can tell which blobs a record holds alone). Reading a record through
//! [`Store::use_cache_record`] with a [`Lease`] puts its blobs under the
//! lease in the same transaction, so a concurrent collection either removes
//! the record first (the caller sees a miss) or leaves the blobs alone.

use rusqlite::{params, OptionalExtension, Transaction};

use crate::error::{Error, Result};
use crate::lease::{add_blobs, Lease};
use crate::Store;

/// A record to store.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewCacheRecord {
    /// The key it is stored under.
    pub key: String,
    /// The key consumers derive theirs from (may differ from `key`).
    pub final_key: String,
    /// The output, in the builder's encoding.
    pub output: Vec<u8>,
    /// `sha256:<hex>` digests of the blobs the output needs.
    pub blobs: Vec<String>,
    /// What made it, for people (`Dockerfile:7: RUN make`).
    pub description: String,
    /// Which step of which build made it (the builder's identity of a step,
    /// to find the nearest earlier record of the same step); may be empty.
    pub step: String,
    /// The preimage of the key, in the builder's encoding.
    pub preimage: Option<Vec<u8>>,
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheRecordRow {
    /// The key it is stored under.
    pub key: String,
    /// The key consumers derive theirs from.
    pub final_key: String,
    /// The output.
    pub output: Vec<u8>,
    /// The blobs the output needs.
    pub blobs: Vec<String>,
    /// What made it.
    pub description: String,
    /// The builder's step identity.
    pub step: String,
    /// The preimage of the key (`None` from [`Store::use_cache_record`],
    /// which does not read it).
    pub preimage: Option<Vec<u8>>,
    /// When it was recorded (ms since the epoch).
    pub created_ms: i64,
    /// When a build last used it (ms since the epoch).
    pub last_used_ms: i64,
}

pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A record's columns in [`read_row`]'s order, with `preimage` (a column, or
/// `NULL` where it is not read) in its place.
fn columns(preimage: &str) -> String {
    format!(
        "build_cache.key, final_key, output, description, step, {preimage}, created_ms,
         last_used_ms"
    )
}

/// The records with their preimages.
const RECORDS: &str =
    "build_cache LEFT JOIN cache_preimages ON cache_preimages.key = build_cache.key";

fn read_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<CacheRecordRow> {
    Ok(CacheRecordRow {
        key: row.get(0)?,
        final_key: row.get(1)?,
        output: row.get(2)?,
        description: row.get(3)?,
        step: row.get(4)?,
        preimage: row.get(5)?,
        created_ms: row.get(6)?,
        last_used_ms: row.get(7)?,
        blobs: Vec::new(),
    })
}

pub(crate) fn record_blobs(tx: &rusqlite::Connection, key: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        tx.prepare_cached("SELECT digest FROM cache_blobs WHERE key = ?1 ORDER BY digest")?;
    let rows = stmt.query_map([key], |r| r.get(0))?;
    rows.collect()
}

impl Store {
    /// Stores `record`, replacing any record under the same key; its blobs
    /// go under `lease` too.
    pub fn put_cache_record(&self, record: &NewCacheRecord, lease: Option<&Lease>) -> Result<()> {
        let now = now_ms();
        self.db()
            .write(|tx: &Transaction<'_>| {
                tx.execute(
                    "INSERT INTO build_cache (key, final_key, output, updated_at, created_ms,
                         last_used_ms, description, step)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5, ?6, ?7)
                     ON CONFLICT (key) DO UPDATE SET final_key = ?2, output = ?3,
                         updated_at = ?4, created_ms = ?5, last_used_ms = ?5,
                         description = ?6, step = ?7",
                    params![
                        record.key,
                        record.final_key,
                        record.output,
                        now / 1000,
                        now,
                        record.description,
                        record.step,
                    ],
                )?;
                match &record.preimage {
                    Some(preimage) => tx.execute(
                        "INSERT INTO cache_preimages (key, preimage) VALUES (?1, ?2)
                         ON CONFLICT (key) DO UPDATE SET preimage = ?2",
                        params![record.key, preimage],
                    )?,
                    None => {
                        tx.execute("DELETE FROM cache_preimages WHERE key = ?1", [&record.key])?
                    }
                };
                // Only a step's latest record is ever compared with (why a
                // step missed): the older ones' preimages go. A context's
                // lists every file, 3.6 MB for 20,000 files, and the
                // database grew by that much with every edit of one file.
                // Records of the same preimage (a step is recorded under
                // more than one key) keep it: either may be the latest.
                if !record.step.is_empty() && record.preimage.is_some() {
                    tx.execute(
                        "DELETE FROM cache_preimages
                         WHERE key IN (SELECT key FROM build_cache WHERE step = ?1 AND key != ?2)
                             AND preimage != ?3",
                        params![record.step, record.key, record.preimage],
                    )?;
                }
                tx.execute("DELETE FROM cache_blobs WHERE key = ?1", [&record.key])?;
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO cache_blobs (key, digest) VALUES (?1, ?2)",
                )?;
                for digest in &record.blobs {
                    insert.execute(params![record.key, digest])?;
                }
                if let Some(lease) = lease {
                    add_blobs(tx, lease, &record.blobs)?;
                }
                Ok(())
            })
            .map_err(Error::db(format!("record cache key {}", record.key)))
    }

    /// The record under `key`, marked as used now; its blobs go under
    /// `lease` in the same transaction (see the module docs). Its preimage
    /// is not read: a lookup has no use for it, and a context's is megabytes.
    pub fn use_cache_record(
        &self,
        key: &str,
        lease: Option<&Lease>,
    ) -> Result<Option<CacheRecordRow>> {
        let now = now_ms();
        self.db()
            .write(|tx: &Transaction<'_>| {
                let row = tx
                    .query_row(
                        &format!("SELECT {} FROM build_cache WHERE key = ?1", columns("NULL")),
                        [key],
                        read_row,
                    )
                    .optional()?;
                let Some(mut row) = row else {
                    return Ok(None);
                };
                tx.execute(
                    "UPDATE build_cache SET last_used_ms = ?2 WHERE key = ?1",
                    params![key, now],
                )?;
                row.last_used_ms = now;
                row.blobs = record_blobs(tx, key)?;
                if let Some(lease) = lease {
                    add_blobs(tx, lease, &row.blobs)?;
                }
                Ok(Some(row))
            })
            .map_err(Error::db(format!("look up cache key {key}")))
    }

    /// Every record, least recently used first (outputs and preimages
    /// included).
    pub fn list_cache_records(&self) -> Result<Vec<CacheRecordRow>> {
        self.db()
            .read(|c| {
                let mut stmt = c.prepare(&format!(
                    "SELECT {} FROM {RECORDS} ORDER BY last_used_ms, build_cache.key",
                    columns("cache_preimages.preimage")
                ))?;
                let mut rows = stmt
                    .query_map([], read_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut blobs: std::collections::HashMap<String, Vec<String>> =
                    std::collections::HashMap::new();
                let mut stmt = c.prepare("SELECT key, digest FROM cache_blobs ORDER BY digest")?;
                for pair in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
                    let (key, digest): (String, String) = pair?;
                    blobs.entry(key).or_default().push(digest);
                }
                for row in &mut rows {
                    row.blobs = blobs.remove(&row.key).unwrap_or_default();
                }
                Ok(rows)
            })
            .map_err(Error::db("list the build cache"))
    }

    /// The most recent record made by `step` (the builder's step identity),
    /// whatever its key.
    pub fn latest_cache_record_of_step(&self, step: &str) -> Result<Option<CacheRecordRow>> {
        self.db()
            .read(|c| {
                c.query_row(
                    &format!(
                        "SELECT {} FROM {RECORDS} WHERE step = ?1
                         ORDER BY created_ms DESC, build_cache.key LIMIT 1",
                        columns("cache_preimages.preimage")
                    ),
                    [step],
                    read_row,
                )
                .optional()
            })
            .map_err(Error::db(format!("look up the last record of step {step}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: &str, blobs: &[&str]) -> NewCacheRecord {
        NewCacheRecord {
            key: key.into(),
            final_key: format!("{key}-final"),
            output: b"out".to_vec(),
            blobs: blobs.iter().map(|s| s.to_string()).collect(),
            description: "RUN x".into(),
            step: "s1".into(),
            preimage: Some(format!("pre {key}").into_bytes()),
        }
    }

    #[test]
    fn stores_with_the_builders_old_table_migrate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::DATABASE_FILE);
        {
            // A store written before migration 2: schema version 1 and the
            // table the builder used to create itself.
            let c = rusqlite::Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (1);
                 {}
                 CREATE TABLE build_cache (key TEXT PRIMARY KEY NOT NULL, final_key TEXT NOT NULL,
                     output BLOB NOT NULL, updated_at INTEGER NOT NULL);
                 INSERT INTO build_cache VALUES ('old', 'old-final', x'7b7d', 1700000000);",
                crate::db::MIGRATIONS[0]
            ))
            .unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.db().schema_version().unwrap(),
            crate::db::MIGRATIONS.len() as u32
        );
        let old = store.use_cache_record("old", None).unwrap().unwrap();
        assert_eq!(old.final_key, "old-final");
        assert_eq!(old.output, b"{}");
        assert_eq!(old.created_ms, 1_700_000_000_000);
        assert!(old.last_used_ms > old.created_ms);
    }

    /// The single number `sql` selects.
    fn count(store: &Store, sql: &str) -> i64 {
        store
            .db()
            .read(|c| c.query_row(sql, [], |r| r.get(0)))
            .unwrap()
    }

    /// The preimage kept for `key` (a lookup does not read it).
    fn preimage(store: &Store, key: &str) -> Option<Vec<u8>> {
        let rows = store.list_cache_records().unwrap();
        let row = rows
            .into_iter()
            .find(|r| r.key == key)
            .expect("no such record");
        row.preimage
    }

    #[test]
    fn put_use_list_and_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.use_cache_record("k1", None).unwrap(), None);
        store
            .put_cache_record(&record("k1", &["sha256:a", "sha256:b"]), None)
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store
            .put_cache_record(&record("k2", &["sha256:b"]), None)
            .unwrap();
        // Last-use times are in milliseconds: make this use the newest.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let got = store.use_cache_record("k1", None).unwrap().unwrap();
        assert_eq!(got.blobs, ["sha256:a", "sha256:b"]);
        assert_eq!(got.preimage, None, "a lookup does not read the preimage");
        // k2 is the step's latest record: k1's preimage is no longer kept.
        assert_eq!(preimage(&store, "k1"), None);
        assert_eq!(preimage(&store, "k2").as_deref(), Some(&b"pre k2"[..]));
        assert!(got.last_used_ms >= got.created_ms);
        // k1 was used last: it comes last.
        let keys: Vec<String> = store
            .list_cache_records()
            .unwrap()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["k2", "k1"]);
        store
            .put_cache_record(&record("k1", &["sha256:c"]), None)
            .unwrap();
        let got = store.use_cache_record("k1", None).unwrap().unwrap();
        assert_eq!(got.blobs, ["sha256:c"]);
        let latest = store.latest_cache_record_of_step("s1").unwrap().unwrap();
        assert_eq!(latest.key, "k1");
        assert_eq!(latest.preimage.as_deref(), Some(&b"pre k1"[..]));
        assert_eq!(preimage(&store, "k2"), None);
        // Another step's records keep theirs.
        let mut other = record("k3", &[]);
        other.step = "s2".into();
        store.put_cache_record(&other, None).unwrap();
        assert_eq!(
            preimage(&store, "k1").as_deref(),
            Some(&b"pre k1"[..]),
            "another step"
        );
        // The same step under another key with the same preimage: both keep it.
        let mut same = record("k4", &[]);
        same.preimage = Some(b"pre k1".to_vec());
        store.put_cache_record(&same, None).unwrap();
        assert_eq!(
            preimage(&store, "k1").as_deref(),
            Some(&b"pre k1"[..]),
            "the same preimage"
        );
        // A record removed takes its preimage along.
        store
            .db()
            .write(|tx| tx.execute("DELETE FROM build_cache WHERE key = 'k1'", []))
            .unwrap();
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM cache_preimages WHERE key = 'k1'"
            ),
            0
        );
    }

    #[test]
    fn preimages_of_a_store_before_migration_4_move_to_their_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(crate::DATABASE_FILE);
        {
            let c = rusqlite::Connection::open(&path).unwrap();
            let mut script = String::from(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (3);",
            );
            for migration in &crate::db::MIGRATIONS[..3] {
                script.push_str(migration);
                script.push('\n');
            }
            script.push_str(
                "INSERT INTO build_cache (key, final_key, output, updated_at, step, preimage)
                     VALUES ('k', 'k-final', x'7b7d', 1700000000, 's', x'707265');
                 INSERT INTO build_cache (key, final_key, output, updated_at, step)
                     VALUES ('bare', 'bare-final', x'7b7d', 1700000000, 's');",
            );
            c.execute_batch(&script).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(preimage(&store, "k").as_deref(), Some(&b"pre"[..]));
        assert_eq!(preimage(&store, "bare"), None);
        assert_eq!(
            count(
                &store,
                "SELECT count(*) FROM build_cache WHERE preimage IS NOT NULL"
            ),
            0,
            "the old column is emptied"
        );
    }
}
