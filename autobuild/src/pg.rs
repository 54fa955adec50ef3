//! The PostgreSQL queue: the same builds, bases and supersede rule as the
//! store's SQLite tables, shared by any number of receivers and workers.
//!
//! Differences from SQLite, all for several processes on several machines:
//! - A claim is `SELECT … FOR UPDATE SKIP LOCKED`: concurrent workers never
//!   wait on each other's rows and never take the same build. A partial
//!   unique index (one `running` build per repository and ref) makes a
//!   second claim of the same ref fail instead of running both.
//! - A running build belongs to one worker process (its `claim_token`),
//!   which renews `heartbeat_at` while it runs; a build whose heartbeat is
//!   older than the lease is interrupted and queued again, by whoever looks
//!   first (workers and receivers do, under `SKIP LOCKED`).
//! - Logs are rows (`autobuild_logs`, chunks at byte offsets) so every
//!   receiver serves a running build's output.
//! - Times come from the database's clock, so machines with skewed clocks
//!   agree on how old a heartbeat is.
//!
//! The schema has its own versioned migrations ([`MIGRATIONS`], table
//! `autobuild_migrations`), applied under an advisory lock by the first
//! process that opens the database.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};

use crate::queue::{BuildRecord, BuildState, Enqueued, NewBuild, Recovery, NEWER_BLOCKS_REQUEUE};

/// The schema, in order; entry `i` is version `i + 1`. Never edit an entry
/// that shipped: append a new one.
pub const MIGRATIONS: &[&str] = &["
CREATE TABLE autobuild_builds (
    id            BIGSERIAL PRIMARY KEY,
    repo          TEXT NOT NULL,
    git_ref       TEXT NOT NULL,
    sha           TEXT NOT NULL,
    trigger       TEXT NOT NULL,
    message       TEXT NOT NULL DEFAULT '',
    state         TEXT NOT NULL,
    attempt       BIGINT NOT NULL DEFAULT 1,
    retry_of      BIGINT,
    superseded_by BIGINT,
    queued_at     BIGINT NOT NULL,
    started_at    BIGINT,
    finished_at   BIGINT,
    digest        TEXT,
    tags          TEXT NOT NULL DEFAULT '[]',
    pushed        TEXT NOT NULL DEFAULT '[]',
    error         TEXT,
    worker        TEXT,
    claim_token   TEXT,
    heartbeat_at  BIGINT
);
CREATE INDEX autobuild_builds_by_state ON autobuild_builds (state, id);
CREATE INDEX autobuild_builds_by_repo ON autobuild_builds (repo, id);
CREATE UNIQUE INDEX autobuild_one_running_per_ref ON autobuild_builds (repo, git_ref)
    WHERE state = 'running';
CREATE TABLE autobuild_bases (
    repo       TEXT NOT NULL,
    image      TEXT NOT NULL,
    digest     TEXT NOT NULL,
    build_id   BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (repo, image)
);
CREATE TABLE autobuild_logs (
    build_id BIGINT NOT NULL REFERENCES autobuild_builds (id) ON DELETE CASCADE,
    pos      BIGINT NOT NULL,
    data     BYTEA NOT NULL,
    PRIMARY KEY (build_id, pos)
);
"];

/// The advisory lock key migrations run under (`hoist` in ASCII, then 1).
const MIGRATION_LOCK: i64 = 0x686f_6973_7401;
/// The advisory lock the base-image poller holds (one receiver polls).
pub const WATCH_LOCK: i64 = 0x686f_6973_7402;

/// How long connecting may take unless the URL says (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a pooled connection has to answer its liveness check.
const VALID_TIMEOUT: Duration = Duration::from_secs(10);

/// A pooled connection idle longer than this is checked before use (one
/// round trip); one used more recently is trusted, so a worker's burst of
/// calls (claim, heartbeat, finish) pays for no checks.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);

/// The database's clock in Unix milliseconds.
const NOW_MS: &str = "(extract(epoch from clock_timestamp()) * 1000)::bigint";

const COLUMNS: &str = "id, repo, git_ref, sha, trigger, message, state, attempt, retry_of, \
    superseded_by, queued_at, started_at, finished_at, digest, tags, pushed, error, worker";

/// Errors of the PostgreSQL queue.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Connecting failed (the URL shown without its password).
    #[error("failed to connect to the PostgreSQL queue `{url}`")]
    Connect {
        /// The URL, credentials redacted.
        url: String,
        /// The cause.
        #[source]
        source: postgres::Error,
    },
    /// A statement failed.
    #[error("PostgreSQL queue statement failed: {0}")]
    Db(#[from] postgres::Error),
    /// The database was migrated by a newer hoist.
    #[error("the PostgreSQL queue's schema is version {found}; this hoist knows up to {known}")]
    TooNew {
        /// The database's version.
        found: i64,
        /// The newest this build knows.
        known: i64,
    },
}

/// A PostgreSQL queue: a small pool of connections to one database.
pub struct PgQueue {
    config: postgres::Config,
    shown_url: String,
    /// Idle connections and when each was last used.
    pool: Mutex<Vec<(Client, Instant)>>,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue")
            .field("url", &self.shown_url)
            .finish()
    }
}

impl Drop for PgQueue {
    fn drop(&mut self) {
        // The synchronous client closes its connection with a runtime of
        // its own, which may not start on a thread driving async tasks.
        let clients = std::mem::take(self.pool.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !clients.is_empty() {
            let _ = std::thread::spawn(move || drop(clients)).join();
        }
    }
}

fn from_row(r: &Row) -> BuildRecord {
    let json_list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    BuildRecord {
        id: r.get(0),
        repo: r.get(1),
        git_ref: r.get(2),
        sha: r.get(3),
        trigger: r.get(4),
        message: r.get(5),
        state: BuildState::parse(r.get::<_, &str>(6)),
        attempt: r.get(7),
        retry_of: r.get(8),
        superseded_by: r.get(9),
        queued_at: r.get(10),
        started_at: r.get(11),
        finished_at: r.get(12),
        digest: r.get(13),
        tags: json_list(r.get(14)),
        pushed: json_list(r.get(15)),
        error: r.get(16),
        worker: r.get(17),
    }
}

fn insert(
    tx: &mut Transaction<'_>,
    b: &NewBuild,
    attempt: i64,
    retry_of: Option<i64>,
) -> Result<i64, postgres::Error> {
    let row = tx.query_one(
        &format!(
            "INSERT INTO autobuild_builds (repo, git_ref, sha, trigger, message, state, attempt, \
             retry_of, queued_at) VALUES ($1, $2, $3, $4, $5, 'queued', $6, $7, {NOW_MS}) \
             RETURNING id"
        ),
        &[
            &b.repo, &b.git_ref, &b.sha, &b.trigger, &b.message, &attempt, &retry_of,
        ],
    )?;
    Ok(row.get(0))
}

fn supersede_older(
    tx: &mut Transaction<'_>,
    repo: &str,
    git_ref: &str,
    id: i64,
) -> Result<Vec<i64>, postgres::Error> {
    // A row a worker is claiming right now is locked: this waits for the
    // claim and then sees `running`, so a started build is never superseded.
    let rows = tx.query(
        &format!(
            "UPDATE autobuild_builds SET state = 'superseded', superseded_by = $1, \
             finished_at = {NOW_MS} WHERE repo = $2 AND git_ref = $3 AND state = 'queued' \
             AND id < $1 RETURNING id"
        ),
        &[&id, &repo, &git_ref],
    )?;
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    ids.sort_unstable();
    Ok(ids)
}

/// The newest build of `rec`'s ref newer than it that is queued, running
/// or built: a requeue or hand-back of `rec` would put an older commit
/// after it (and push it over the newer image).
fn newer_of_ref(
    tx: &mut Transaction<'_>,
    rec: &BuildRecord,
) -> Result<Option<i64>, postgres::Error> {
    let row = tx.query_one(
        &format!(
            "SELECT MAX(id) FROM autobuild_builds WHERE repo = $1 AND git_ref = $2 AND id > $3 \
             AND {NEWER_BLOCKS_REQUEUE}"
        ),
        &[&rec.repo, &rec.git_ref, &rec.id],
    )?;
    Ok(row.get(0))
}

impl PgQueue {
    /// Connect to `url` and bring the schema up to date (creating it in a
    /// fresh database).
    /// May be called from async code (`Service::open` inside a runtime):
    /// the blocking client then connects on a thread of its own.
    pub fn open(url: &str) -> Result<PgQueue, PgError> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return std::thread::scope(|s| {
                s.spawn(|| Self::open_here(url))
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p))
            });
        }
        Self::open_here(url)
    }

    fn open_here(url: &str) -> Result<PgQueue, PgError> {
        let shown_url = crate::redact::redact_credentials(url);
        let mut config: postgres::Config = url.parse().map_err(|source| PgError::Connect {
            url: shown_url.clone(),
            source,
        })?;
        // An unreachable database fails a call in seconds rather than
        // after the kernel's TCP timeout (a URL's connect_timeout wins).
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hoist-autobuild");
        }
        let queue = PgQueue {
            config,
            shown_url,
            pool: Mutex::new(Vec::new()),
        };
        queue.with(migrate)?;
        Ok(queue)
    }

    /// The URL without credentials.
    pub fn shown_url(&self) -> &str {
        &self.shown_url
    }

    /// A new connection of its own (for a session advisory lock).
    pub fn connect(&self) -> Result<Client, PgError> {
        self.config
            .connect(NoTls)
            .map_err(|source| PgError::Connect {
                url: self.shown_url.clone(),
                source,
            })
    }

    /// Run `f` on a pooled connection. A connection that broke (the
    /// database restarted) is dropped, so the next call connects anew.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T, PgError>) -> Result<T, PgError> {
        let mut client = loop {
            let pooled = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match pooled {
                // A pooled connection may have died with the server (a
                // restart) while it sat idle: one round trip tells.
                Some((mut c, used)) => {
                    if !c.is_closed()
                        && (used.elapsed() < CHECK_AFTER_IDLE || c.is_valid(VALID_TIMEOUT).is_ok())
                    {
                        break c;
                    }
                }
                None => break self.connect()?,
            }
        };
        let result = f(&mut client);
        // An error the server did not send (I/O, protocol) leaves the
        // connection in doubt: it is not pooled again.
        let broken = matches!(&result, Err(PgError::Db(e)) if e.as_db_error().is_none());
        if !broken && !client.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < 8 {
                pool.push((client, Instant::now()));
            }
        }
        result
    }

    /// Run `f` in a transaction.
    fn tx<T>(
        &self,
        f: impl FnOnce(&mut Transaction<'_>) -> Result<T, PgError>,
    ) -> Result<T, PgError> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// Queue a build; queued builds of the same repository and ref become
    /// superseded by it.
    pub fn enqueue(&self, b: &NewBuild) -> Result<Enqueued, PgError> {
        self.tx(|tx| {
            let id = insert(tx, b, 1, None)?;
            let superseded = supersede_older(tx, &b.repo, &b.git_ref, id)?;
            Ok(Enqueued { id, superseded })
        })
    }

    /// Queue a copy of build `id`; `None` when there is no such build.
    pub fn retry(&self, id: i64) -> Result<Option<Enqueued>, PgError> {
        self.tx(|tx| {
            let Some(rec) = tx
                .query_opt(
                    &format!("SELECT {COLUMNS} FROM autobuild_builds WHERE id = $1"),
                    &[&id],
                )?
                .map(|r| from_row(&r))
            else {
                return Ok(None);
            };
            let b = rec.retry();
            let new_id = insert(tx, &b, 1, Some(id))?;
            let superseded = supersede_older(tx, &b.repo, &b.git_ref, new_id)?;
            Ok(Some(Enqueued {
                id: new_id,
                superseded,
            }))
        })
    }

    /// Claim the oldest queued build whose ref is not building now for
    /// `worker` (its name) under `token` (this worker process's claim).
    pub fn claim_next(&self, worker: &str, token: &str) -> Result<Option<BuildRecord>, PgError> {
        let claimed = self.tx(|tx| {
            let row = tx.query_opt(
                &format!(
                    "UPDATE autobuild_builds SET state = 'running', started_at = {NOW_MS}, \
                     heartbeat_at = {NOW_MS}, worker = $1, claim_token = $2 WHERE id = \
                     (SELECT q.id FROM autobuild_builds AS q WHERE q.state = 'queued' \
                      AND NOT EXISTS (SELECT 1 FROM autobuild_builds AS r WHERE \
                      r.state = 'running' AND r.repo = q.repo AND r.git_ref = q.git_ref) \
                      ORDER BY q.id LIMIT 1 FOR UPDATE SKIP LOCKED) \
                     RETURNING {COLUMNS}"
                ),
                &[&worker, &token],
            )?;
            Ok(row.map(|r| from_row(&r)))
        });
        match claimed {
            // Another worker claimed a build of the same ref in the same
            // instant: the index refused the second; it stays queued.
            Err(PgError::Db(e)) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
            other => other,
        }
    }

    /// Renew the heartbeat of every build `token` runs; the ids still held.
    pub fn heartbeat(&self, token: &str) -> Result<Vec<i64>, PgError> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "UPDATE autobuild_builds SET heartbeat_at = {NOW_MS} \
                     WHERE state = 'running' AND claim_token = $1 RETURNING id"
                ),
                &[&token],
            )?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    /// Builds whose heartbeat is older than `lease` become `interrupted`,
    /// each queued again once (a requeue is not requeued a second time).
    pub fn requeue_expired(&self, lease: Duration) -> Result<Recovery, PgError> {
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        self.tx(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {COLUMNS} FROM autobuild_builds WHERE state = 'running' \
                     AND heartbeat_at < {NOW_MS} - $1 ORDER BY id FOR UPDATE SKIP LOCKED"
                ),
                &[&lease_ms],
            )?;
            let mut recovery = Recovery::default();
            for rec in rows.iter().map(from_row) {
                let newer = newer_of_ref(tx, &rec)?;
                let mut error = format!(
                    "worker `{}` stopped sending heartbeats (lease {} s)",
                    rec.worker.as_deref().unwrap_or("?"),
                    lease.as_secs_f64()
                );
                if let Some(n) = newer {
                    error.push_str(&format!("; not queued again: #{n} is newer"));
                }
                tx.execute(
                    &format!(
                        "UPDATE autobuild_builds SET state = 'interrupted', \
                         finished_at = {NOW_MS}, error = $1 WHERE id = $2"
                    ),
                    &[&error, &rec.id],
                )?;
                let requeued = if rec.attempt < 2 && newer.is_none() {
                    Some(insert(tx, &rec.requeue(), rec.attempt + 1, Some(rec.id))?)
                } else {
                    None
                };
                recovery.interrupted.push((rec.id, requeued));
            }
            Ok(recovery)
        })
    }

    /// Give builds `token` runs back to the queue (a worker stopping before
    /// they finished): queued again under the same id, their log restarted;
    /// superseded instead when a newer build of the ref was queued meanwhile.
    pub fn hand_back(&self, token: &str) -> Result<Vec<i64>, PgError> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!(
                    "UPDATE autobuild_builds SET state = 'queued', started_at = NULL, \
                     heartbeat_at = NULL, worker = NULL, claim_token = NULL, tags = '[]' \
                     WHERE state = 'running' AND claim_token = $1 RETURNING {COLUMNS}"
                ),
                &[&token],
            )?;
            let recs: Vec<BuildRecord> = rows.iter().map(from_row).collect();
            for rec in &recs {
                if let Some(n) = newer_of_ref(tx, rec)? {
                    tx.execute(
                        &format!(
                            "UPDATE autobuild_builds SET state = 'superseded', \
                             superseded_by = $1, finished_at = {NOW_MS} WHERE id = $2"
                        ),
                        &[&n, &rec.id],
                    )?;
                }
            }
            let ids: Vec<i64> = recs.iter().map(|r| r.id).collect();
            tx.execute(
                "DELETE FROM autobuild_logs WHERE build_id = ANY($1)",
                &[&ids],
            )?;
            Ok(ids)
        })
    }

    /// Record the tags a running build is about to produce.
    pub fn set_tags(&self, id: i64, tags: &[String]) -> Result<(), PgError> {
        let tags = serde_json::to_string(tags).unwrap_or_else(|_| "[]".into());
        self.with(|c| {
            c.execute(
                "UPDATE autobuild_builds SET tags = $1 WHERE id = $2",
                &[&tags, &id],
            )?;
            Ok(())
        })
    }

    /// Record the end of a build `token` still holds; false when it lost
    /// the build (its lease expired and the build was requeued).
    pub fn finish(
        &self,
        id: i64,
        token: Option<&str>,
        result: Result<(&str, &[String]), &str>,
    ) -> Result<bool, PgError> {
        self.with(|c| {
            let n = match result {
                Ok((digest, pushed)) => c.execute(
                    &format!(
                        "UPDATE autobuild_builds SET state = 'succeeded', \
                         finished_at = {NOW_MS}, digest = $1, pushed = $2 WHERE id = $3 \
                         AND state = 'running' AND ($4::TEXT IS NULL OR claim_token = $4)"
                    ),
                    &[
                        &digest,
                        &serde_json::to_string(pushed).unwrap_or_else(|_| "[]".into()),
                        &id,
                        &token,
                    ],
                )?,
                Err(error) => c.execute(
                    &format!(
                        "UPDATE autobuild_builds SET state = 'failed', \
                         finished_at = {NOW_MS}, error = $1 WHERE id = $2 \
                         AND state = 'running' AND ($3::TEXT IS NULL OR claim_token = $3)"
                    ),
                    &[&error, &id, &token],
                )?,
            };
            Ok(n == 1)
        })
    }

    /// Append `data` to build `id`'s log at byte offset `pos` (a chunk sent
    /// twice is stored once).
    pub fn append_log(&self, id: i64, pos: i64, data: &[u8]) -> Result<(), PgError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO autobuild_logs (build_id, pos, data) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
                &[&id, &pos, &data],
            )?;
            Ok(())
        })
    }

    /// Build `id`'s log from byte `offset` to what has arrived.
    pub fn read_log(&self, id: i64, offset: u64) -> Result<Vec<u8>, PgError> {
        let offset = i64::try_from(offset).unwrap_or(i64::MAX);
        self.with(|c| {
            let rows = c.query(
                "SELECT pos, data FROM autobuild_logs WHERE build_id = $1 \
                 AND pos + length(data) > $2 ORDER BY pos",
                &[&id, &offset],
            )?;
            let mut out = Vec::new();
            let mut at = offset;
            for r in rows {
                let pos: i64 = r.get(0);
                let data: &[u8] = r.get(1);
                // Chunks are contiguous; a gap (a chunk still in flight)
                // ends what can be returned now.
                if pos > at {
                    break;
                }
                let skip = usize::try_from(at - pos).unwrap_or(usize::MAX);
                if let Some(rest) = data.get(skip..) {
                    out.extend_from_slice(rest);
                    at += rest.len() as i64;
                }
            }
            Ok(out)
        })
    }

    /// One build.
    pub fn get(&self, id: i64) -> Result<Option<BuildRecord>, PgError> {
        self.with(|c| {
            Ok(c.query_opt(
                &format!("SELECT {COLUMNS} FROM autobuild_builds WHERE id = $1"),
                &[&id],
            )?
            .map(|r| from_row(&r)))
        })
    }

    /// Builds, newest first, optionally of one repository.
    pub fn list(&self, repo: Option<&str>, limit: usize) -> Result<Vec<BuildRecord>, PgError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {COLUMNS} FROM autobuild_builds WHERE ($1::TEXT IS NULL OR repo = $1) \
                     ORDER BY id DESC LIMIT $2"
                ),
                &[&repo, &limit],
            )?;
            Ok(rows.iter().map(from_row).collect())
        })
    }

    /// The newest build of each repository that has one.
    pub fn latest_per_repo(&self) -> Result<BTreeMap<String, BuildRecord>, PgError> {
        self.with(|c| {
            let rows = c.query(
                &format!(
                    "SELECT {COLUMNS} FROM autobuild_builds WHERE id IN \
                     (SELECT MAX(id) FROM autobuild_builds WHERE state != 'superseded' \
                      GROUP BY repo)"
                ),
                &[],
            )?;
            Ok(rows
                .iter()
                .map(from_row)
                .map(|r| (r.repo.clone(), r))
                .collect())
        })
    }

    /// Replace the base images remembered for `repo`.
    pub fn set_bases(
        &self,
        repo: &str,
        build_id: Option<i64>,
        bases: &BTreeMap<String, String>,
    ) -> Result<(), PgError> {
        self.tx(|tx| {
            tx.execute("DELETE FROM autobuild_bases WHERE repo = $1", &[&repo])?;
            for (image, digest) in bases {
                tx.execute(
                    &format!(
                        "INSERT INTO autobuild_bases (repo, image, digest, build_id, updated_at) \
                         VALUES ($1, $2, $3, $4, {NOW_MS})"
                    ),
                    &[&repo, image, digest, &build_id],
                )?;
            }
            Ok(())
        })
    }

    /// Remember a new digest of one base image of `repo`.
    pub fn update_base(&self, repo: &str, image: &str, digest: &str) -> Result<(), PgError> {
        self.with(|c| {
            c.execute(
                &format!(
                    "INSERT INTO autobuild_bases (repo, image, digest, build_id, updated_at) \
                     VALUES ($1, $2, $3, NULL, {NOW_MS}) ON CONFLICT (repo, image) \
                     DO UPDATE SET digest = EXCLUDED.digest, updated_at = EXCLUDED.updated_at"
                ),
                &[&repo, &image, &digest],
            )?;
            Ok(())
        })
    }

    /// The base images remembered for `repo`.
    pub fn bases(&self, repo: &str) -> Result<BTreeMap<String, String>, PgError> {
        self.with(|c| {
            let rows = c.query(
                "SELECT image, digest FROM autobuild_bases WHERE repo = $1",
                &[&repo],
            )?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    /// The schema version the database is at.
    pub fn schema_version(&self) -> Result<i64, PgError> {
        self.with(|c| {
            Ok(c.query_one(
                "SELECT COALESCE(MAX(version), 0)::BIGINT FROM autobuild_migrations",
                &[],
            )?
            .get(0))
        })
    }
}

/// Apply the migrations the database lacks, one transaction, under an
/// advisory lock so processes starting together migrate once.
fn migrate(c: &mut Client) -> Result<(), PgError> {
    let mut tx = c.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS autobuild_migrations (
             version    BIGINT PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )?;
    let found: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0)::BIGINT FROM autobuild_migrations",
            &[],
        )?
        .get(0);
    let known = MIGRATIONS.len() as i64;
    if found > known {
        return Err(PgError::TooNew { found, known });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql)?;
        tx.execute(
            "INSERT INTO autobuild_migrations (version) VALUES ($1)",
            &[&(i as i64 + 1)],
        )?;
    }
    tx.commit()?;
    Ok(())
}
