//! The metadata database: SQLite in WAL mode.
//!
//! # Why SQLite and not redb
//!
//! Several hoist processes must be able to use one store at the same time (a
//! build while `hoist images` runs, two CI jobs on one machine). redb takes an
//! exclusive file lock for the lifetime of the process that opened the
//! database, so a second process could not even read. SQLite in WAL mode lets
//! any number of processes read while one writes, serializes writers with
//! its own locks (a `busy_timeout` makes them wait instead of failing), and
//! survives crashes and power loss with `synchronous=FULL`. `rusqlite` with
//! the `bundled` feature compiles SQLite in, so there is no system dependency.
//!
//! # Schema and migrations
//!
//! [`MIGRATIONS`] is an ordered list of SQL scripts; `schema_version` records
//! how many have run. Opening the database applies the missing ones inside
//! one `BEGIN IMMEDIATE` transaction, so concurrent first opens are safe. A
//! later feature (cache index, snapshot records, GC leases) appends a script;
//! scripts already released are never edited.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::error::{Error, Result};

/// The ordered schema migrations; index `i` takes the schema from version
/// `i` to `i + 1`.
pub const MIGRATIONS: &[&str] = &[
    // 1: image refs. The descriptor's media type and size are kept beside the
    // digest so index.json can be regenerated without reading blobs.
    "CREATE TABLE refs (
        name       TEXT PRIMARY KEY NOT NULL,
        media_type TEXT NOT NULL,
        digest     TEXT NOT NULL,
        size       INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX refs_by_digest ON refs (digest);",
    // 2: the build cache, leases and GC bookkeeping. `build_cache` existed
    // before this migration in stores written by earlier builds (the builder
    // created it itself), hence IF NOT EXISTS before the new columns.
    // Times ending in `_ms` are milliseconds since the epoch.
    "CREATE TABLE IF NOT EXISTS build_cache (
        key        TEXT PRIMARY KEY NOT NULL,
        final_key  TEXT NOT NULL,
        output     BLOB NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ALTER TABLE build_cache ADD COLUMN created_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE build_cache ADD COLUMN last_used_ms INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE build_cache ADD COLUMN description TEXT NOT NULL DEFAULT '';
    ALTER TABLE build_cache ADD COLUMN step TEXT NOT NULL DEFAULT '';
    ALTER TABLE build_cache ADD COLUMN preimage BLOB;
    UPDATE build_cache SET created_ms = updated_at * 1000, last_used_ms = updated_at * 1000;
    CREATE INDEX build_cache_by_step ON build_cache (step, created_ms);
    CREATE TABLE cache_blobs (
        key    TEXT NOT NULL REFERENCES build_cache (key) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (key, digest)
    );
    CREATE INDEX cache_blobs_by_digest ON cache_blobs (digest);
    CREATE TABLE leases (
        id          TEXT PRIMARY KEY NOT NULL,
        pid         INTEGER NOT NULL,
        pid_start   INTEGER NOT NULL,
        created_ms  INTEGER NOT NULL,
        expires_ms  INTEGER NOT NULL,
        description TEXT NOT NULL
    );
    CREATE TABLE lease_blobs (
        lease  TEXT NOT NULL REFERENCES leases (id) ON DELETE CASCADE,
        digest TEXT NOT NULL,
        PRIMARY KEY (lease, digest)
    );
    CREATE INDEX lease_blobs_by_digest ON lease_blobs (digest);",
    // 3: tables other crates own and query, created here so that a store
    // has one schema version: the autobuild build queue, build records and
    // watched base images (`hoist-autobuild`), and where blobs are known to
    // live in registries (`hoist-registry`'s cross-repository mounts).
    // Stores written before this migration may have them already (those
    // crates created them themselves; autobuild versioned its tables in
    // `autobuild_schema_version`, whose version 1 lacked `autobuild_bases`),
    // hence IF NOT EXISTS and the dropped version table.
    "CREATE TABLE IF NOT EXISTS blob_sources (
        digest     TEXT NOT NULL,
        registry   TEXT NOT NULL,
        repository TEXT NOT NULL,
        PRIMARY KEY (digest, registry, repository)
    );
    CREATE TABLE IF NOT EXISTS autobuild_builds (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        repo          TEXT NOT NULL,
        git_ref       TEXT NOT NULL,
        sha           TEXT NOT NULL,
        trigger       TEXT NOT NULL,
        message       TEXT NOT NULL DEFAULT '',
        state         TEXT NOT NULL,
        attempt       INTEGER NOT NULL DEFAULT 1,
        retry_of      INTEGER,
        superseded_by INTEGER,
        queued_at     INTEGER NOT NULL,
        started_at    INTEGER,
        finished_at   INTEGER,
        digest        TEXT,
        tags          TEXT NOT NULL DEFAULT '[]',
        pushed        TEXT NOT NULL DEFAULT '[]',
        error         TEXT
    );
    CREATE INDEX IF NOT EXISTS autobuild_builds_by_state ON autobuild_builds (state, id);
    CREATE INDEX IF NOT EXISTS autobuild_builds_by_repo ON autobuild_builds (repo, id);
    CREATE TABLE IF NOT EXISTS autobuild_bases (
        repo       TEXT NOT NULL,
        image      TEXT NOT NULL,
        digest     TEXT NOT NULL,
        build_id   INTEGER,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (repo, image)
    );
    DROP TABLE IF EXISTS autobuild_schema_version;",
    // 4: preimages in a table of their own. A build context's lists every
    // file (3.5 MB for 20,000), and SQLite rewrites a whole row on UPDATE:
    // marking such a record used rewrote its preimage into the WAL on every
    // cache hit. `build_cache.preimage` stays, always NULL (SQLite cannot
    // drop a column everywhere hoist runs).
    "CREATE TABLE cache_preimages (
        key      TEXT PRIMARY KEY NOT NULL REFERENCES build_cache (key) ON DELETE CASCADE,
        preimage BLOB NOT NULL
    );
    INSERT INTO cache_preimages (key, preimage)
        SELECT key, preimage FROM build_cache WHERE preimage IS NOT NULL;
    UPDATE build_cache SET preimage = NULL WHERE preimage IS NOT NULL;",
];

/// How long a writer waits for another process's transaction.
const BUSY_TIMEOUT: Duration = Duration::from_secs(60);

/// A handle on the metadata database, shareable between threads.
///
/// Other crates' records (cache index, snapshots, leases) use
/// [`Database::read`] and [`Database::write`] with their own tables, created by
/// their migrations in [`MIGRATIONS`].
#[derive(Debug)]
pub struct Database {
    connection: Mutex<Connection>,
    path: PathBuf,
}

impl Database {
    /// Open (creating when missing) the database at `path` and bring its
    /// schema up to date.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let connection = Connection::open(&path).map_err(Error::db(format!(
            "open the database file `{}`",
            path.display()
        )))?;
        connection
            .busy_timeout(BUSY_TIMEOUT)
            .map_err(Error::db("set the busy timeout"))?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(Error::db("switch to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(path = %path.display(), mode, "metadata database is not in WAL mode");
        }
        connection
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;")
            .map_err(Error::db("set pragmas"))?;
        let db = Database {
            connection: Mutex::new(connection),
            path,
        };
        db.migrate()?;
        Ok(db)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock drops its transaction (rolled back),
        // so the connection is still consistent: ignore the poison.
        self.connection
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Run read-only queries (a consistent snapshot when they are several:
    /// wrap them in `conn.unchecked_transaction()` if needed).
    pub fn read<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Connection) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let connection = self.lock();
        f(&connection)
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction (the write lock is taken at
    /// the start, so read-then-write cannot deadlock between processes) and
    /// commit when it returns `Ok`.
    pub fn write<T, E: From<rusqlite::Error>>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E> {
        let mut connection = self.lock();
        let tx = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// The schema version (number of migrations applied).
    pub fn schema_version(&self) -> Result<u32> {
        self.read(read_version)
    }

    fn migrate(&self) -> Result<()> {
        let supported = MIGRATIONS.len() as u32;
        self.write(|tx| {
            tx.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
            )
            .map_err(Error::db("create the schema_version table"))?;
            let found = read_version(tx)?;
            if found > supported {
                return Err(Error::SchemaTooNew {
                    path: self.path.clone(),
                    found,
                    supported,
                });
            }
            for (i, script) in MIGRATIONS.iter().enumerate().skip(found as usize) {
                tx.execute_batch(script)
                    .map_err(Error::db(format!("apply schema migration {}", i + 1)))?;
            }
            if found < supported {
                tx.execute("DELETE FROM schema_version", [])
                    .map_err(Error::db("record the schema version"))?;
                tx.execute(
                    "INSERT INTO schema_version (version) VALUES (?1)",
                    [supported],
                )
                .map_err(Error::db("record the schema version"))?;
                tracing::debug!(from = found, to = supported, "migrated metadata database");
            }
            Ok(())
        })
    }
}

fn read_version(connection: &Connection) -> Result<u32> {
    let version: Option<u32> = connection
        .query_row("SELECT version FROM schema_version", [], |row| row.get(0))
        .optional()
        .map_err(Error::db("read the schema version"))?;
    Ok(version.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_record_the_version() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("meta.db")).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as u32);
        drop(db);
        // Reopening applies nothing again (CREATE TABLE would fail otherwise).
        let db = Database::open(dir.path().join("meta.db")).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let mode: String = db
            .read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        let db = Database::open(&path).unwrap();
        db.write(|tx| tx.execute("UPDATE schema_version SET version = 999", []))
            .unwrap();
        drop(db);
        let err = Database::open(&path).unwrap_err();
        assert!(
            matches!(err, Error::SchemaTooNew { found: 999, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade hoist"));
    }

    #[test]
    fn autobuild_tables_of_an_old_store_are_kept_by_migration_3() {
        // A store of the schema before migration 3, with the autobuild
        // tables as autobuild's own `init` made them at its version 1 (no
        // `autobuild_bases`) and one build recorded.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(&format!(
                "CREATE TABLE schema_version (version INTEGER NOT NULL);
                 INSERT INTO schema_version VALUES (2);
                 {}
                 {}
                 CREATE TABLE autobuild_schema_version (version INTEGER NOT NULL);
                 INSERT INTO autobuild_schema_version VALUES (1);
                 CREATE TABLE autobuild_builds (
                     id INTEGER PRIMARY KEY AUTOINCREMENT, repo TEXT NOT NULL,
                     git_ref TEXT NOT NULL, sha TEXT NOT NULL, trigger TEXT NOT NULL,
                     message TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,
                     attempt INTEGER NOT NULL DEFAULT 1, retry_of INTEGER,
                     superseded_by INTEGER, queued_at INTEGER NOT NULL, started_at INTEGER,
                     finished_at INTEGER, digest TEXT, tags TEXT NOT NULL DEFAULT '[]',
                     pushed TEXT NOT NULL DEFAULT '[]', error TEXT);
                 INSERT INTO autobuild_builds (repo, git_ref, sha, trigger, state, queued_at)
                     VALUES ('demo', 'refs/heads/main', 'abc', 'hook', 'queued', 1000);",
                MIGRATIONS[0], MIGRATIONS[1]
            ))
            .unwrap();
        }
        let db = Database::open(&path).unwrap();
        assert_eq!(db.schema_version().unwrap(), MIGRATIONS.len() as u32);
        let (repo, sha, state): (String, String, String) = db
            .read(|c| {
                c.query_row(
                    "SELECT repo, sha, state FROM autobuild_builds WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
            })
            .unwrap();
        assert_eq!(
            (repo.as_str(), sha.as_str(), state.as_str()),
            ("demo", "abc", "queued")
        );
        let tables: Vec<String> = db
            .read(|c| {
                let mut q = c.prepare(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'autobuild%' \
                     ORDER BY name",
                )?;
                let names = q.query_map([], |r| r.get(0))?;
                names.collect::<rusqlite::Result<Vec<String>>>()
            })
            .unwrap();
        assert_eq!(tables, ["autobuild_bases", "autobuild_builds"]);
    }

    #[test]
    fn failed_write_rolls_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("meta.db")).unwrap();
        let result: Result<()> = db.write(|tx| {
            tx.execute("INSERT INTO refs VALUES ('a', 'm', 'd', 1, 0, 0)", [])?;
            Err(Error::invalid("stop"))
        });
        assert!(result.is_err());
        let n: i64 = db
            .read(|c| c.query_row("SELECT count(*) FROM refs", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 0);
    }
}
