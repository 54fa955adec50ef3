//! The persisted build queue and build records, in the store's metadata
//! database.
//!
//! Every state change is one `BEGIN IMMEDIATE` transaction in SQLite with
//! `synchronous=FULL`, so a build the server answered "queued" for survives a
//! SIGKILL or a power loss. States:
//!
//! ```text
//! queued ──claim──▶ running ──▶ succeeded | failed
//!    │                 └──(server died)──▶ interrupted  (+ one new queued copy, retry_of = id)
//!    └──(newer commit to the same ref queued)──▶ superseded (superseded_by = newer id)
//! ```
//!
//! The tables (`autobuild_builds`, `autobuild_bases`) are created by the
//! store's own ordered migrations (migration 3 of `hoist-cache`), so opening
//! the store is all the setup this module needs.

use std::collections::BTreeMap;

use hoist_builder::Database;
use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Where a build is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    /// Waiting for a worker.
    Queued,
    /// A worker is building it.
    Running,
    /// Built (and pushed when asked).
    Succeeded,
    /// The build failed; `error` says why.
    Failed,
    /// A newer commit to the same ref was queued before this one started.
    Superseded,
    /// The server stopped while it ran; a copy was queued unless it was
    /// itself a requeue.
    Interrupted,
}

impl BuildState {
    /// The lowercase name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Queued => "queued",
            BuildState::Running => "running",
            BuildState::Succeeded => "succeeded",
            BuildState::Failed => "failed",
            BuildState::Superseded => "superseded",
            BuildState::Interrupted => "interrupted",
        }
    }

    pub(crate) fn parse(s: &str) -> BuildState {
        match s {
            "queued" => BuildState::Queued,
            "running" => BuildState::Running,
            "succeeded" => BuildState::Succeeded,
            "superseded" => BuildState::Superseded,
            "interrupted" => BuildState::Interrupted,
            _ => BuildState::Failed,
        }
    }

    /// True once the build will not change any more.
    pub fn is_final(self) -> bool {
        !matches!(self, BuildState::Queued | BuildState::Running)
    }
}

/// One build record, as stored and as served by `/api/builds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildRecord {
    /// Unique id, increasing.
    pub id: i64,
    /// Repository name from the config.
    pub repo: String,
    /// Full git ref, e.g. `refs/heads/main`.
    pub git_ref: String,
    /// Full commit id.
    pub sha: String,
    /// What queued it: `github`, `bitbucket`, `gitlab`, `gitea`, `trigger`,
    /// `hook`, `retry`, `requeue`, `base:IMAGE`, `rebase:IMAGE` (a requeued
    /// rebase keeps its trigger).
    pub trigger: String,
    /// The head commit's message when the trigger said it (payload data).
    pub message: String,
    /// Current state.
    pub state: BuildState,
    /// 1 for a first run, 2 for a requeue after an interruption.
    pub attempt: i64,
    /// The build this one repeats (requeue or retry).
    pub retry_of: Option<i64>,
    /// The newer build that replaced this queued one.
    pub superseded_by: Option<i64>,
    /// Unix milliseconds.
    pub queued_at: i64,
    /// Unix milliseconds.
    pub started_at: Option<i64>,
    /// Unix milliseconds.
    pub finished_at: Option<i64>,
    /// Image digest of a successful build.
    pub digest: Option<String>,
    /// Tags the build produced.
    pub tags: Vec<String>,
    /// Tags pushed.
    pub pushed: Vec<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The worker that ran (or runs) it, by its `--name`: builds of a
    /// PostgreSQL queue; `None` for the store's own queue.
    #[serde(default)]
    pub worker: Option<String>,
}

impl BuildRecord {
    /// The first 7 characters of the commit id.
    pub fn short_sha(&self) -> &str {
        self.sha.get(..7).unwrap_or(&self.sha)
    }

    /// The short ref name (`main` for `refs/heads/main`).
    pub fn ref_name(&self) -> &str {
        crate::config::SourceKind::split(&self.git_ref)
            .map(|(_, n)| n)
            .unwrap_or(&self.git_ref)
    }

    /// Run time in milliseconds, when started.
    pub fn duration_ms(&self) -> Option<i64> {
        Some(self.finished_at.unwrap_or_else(now_ms) - self.started_at?)
    }

    /// The build that runs this interrupted one again: the same commit, and
    /// a rebase stays a rebase (its trigger says what to do; the attempt
    /// and `retry_of` say it is a requeue).
    pub(crate) fn requeue(&self) -> NewBuild {
        let trigger = if self.trigger.starts_with("rebase:") {
            self.trigger.clone()
        } else {
            "requeue".to_owned()
        };
        NewBuild {
            repo: self.repo.clone(),
            git_ref: self.git_ref.clone(),
            sha: self.sha.clone(),
            trigger,
            message: self.message.clone(),
        }
    }

    /// The build a user's retry queues: the same commit, built (a failed
    /// rebase is retried as a full build).
    pub(crate) fn retry(&self) -> NewBuild {
        NewBuild {
            repo: self.repo.clone(),
            git_ref: self.git_ref.clone(),
            sha: self.sha.clone(),
            trigger: "retry".into(),
            message: self.message.clone(),
        }
    }
}

/// Which builds of the same ref, newer than an interrupted one, keep it
/// from being queued again (both queues' rule): running it after them would
/// push an older commit over their image. A SQL condition on `state`.
pub(crate) const NEWER_BLOCKS_REQUEUE: &str = "state IN ('queued', 'running', 'succeeded')";

/// A build to queue.
#[derive(Debug, Clone)]
pub struct NewBuild {
    /// Repository name.
    pub repo: String,
    /// Full ref.
    pub git_ref: String,
    /// Full commit id.
    pub sha: String,
    /// What queued it.
    pub trigger: String,
    /// Commit message, when known.
    pub message: String,
}

/// What [`enqueue`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Enqueued {
    /// The new build.
    pub id: i64,
    /// Older queued builds of the same ref it superseded.
    pub superseded: Vec<i64>,
}

/// What [`recover`] did at startup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Builds that were running, now interrupted, with their new queued copy
    /// (`None` when the interrupted build was already a requeue).
    pub interrupted: Vec<(i64, Option<i64>)>,
}

/// Unix time in milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Replace the base images remembered for `repo` with those build `build_id`
/// used (image → manifest digest): base-image watching follows the
/// Dockerfile of the latest successful build.
pub fn set_bases(
    db: &Database,
    repo: &str,
    build_id: Option<i64>,
    bases: &BTreeMap<String, String>,
) -> Result<(), Error> {
    db.write(|tx| {
        tx.execute("DELETE FROM autobuild_bases WHERE repo = ?1", [repo])?;
        for (image, digest) in bases {
            tx.execute(
                "INSERT INTO autobuild_bases (repo, image, digest, build_id, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![repo, image, digest, build_id, now_ms()],
            )?;
        }
        Ok(())
    })
}

/// Remember a new digest of one base image of `repo`.
pub fn update_base(db: &Database, repo: &str, image: &str, digest: &str) -> Result<(), Error> {
    db.write(|tx| {
        tx.execute(
            "INSERT INTO autobuild_bases (repo, image, digest, build_id, updated_at) \
             VALUES (?1, ?2, ?3, NULL, ?4) \
             ON CONFLICT (repo, image) DO UPDATE SET digest = ?3, updated_at = ?4",
            params![repo, image, digest, now_ms()],
        )?;
        Ok(())
    })
}

/// The base images remembered for `repo` (image → manifest digest).
pub fn bases(db: &Database, repo: &str) -> Result<BTreeMap<String, String>, Error> {
    db.read(|c| {
        let mut q = c.prepare("SELECT image, digest FROM autobuild_bases WHERE repo = ?1")?;
        let rows = q.query_map([repo], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<BTreeMap<String, String>>>()
            .map_err(Error::from)
    })
}

const COLUMNS: &str = "id, repo, git_ref, sha, trigger, message, state, attempt, retry_of, \
    superseded_by, queued_at, started_at, finished_at, digest, tags, pushed, error";

fn from_row(r: &Row<'_>) -> rusqlite::Result<BuildRecord> {
    let json_list = |s: String| serde_json::from_str::<Vec<String>>(&s).unwrap_or_default();
    Ok(BuildRecord {
        id: r.get(0)?,
        repo: r.get(1)?,
        git_ref: r.get(2)?,
        sha: r.get(3)?,
        trigger: r.get(4)?,
        message: r.get(5)?,
        state: BuildState::parse(&r.get::<_, String>(6)?),
        attempt: r.get(7)?,
        retry_of: r.get(8)?,
        superseded_by: r.get(9)?,
        queued_at: r.get(10)?,
        started_at: r.get(11)?,
        finished_at: r.get(12)?,
        digest: r.get(13)?,
        tags: json_list(r.get(14)?),
        pushed: json_list(r.get(15)?),
        error: r.get(16)?,
        worker: None,
    })
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    b: &NewBuild,
    attempt: i64,
    retry_of: Option<i64>,
) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO autobuild_builds (repo, git_ref, sha, trigger, message, state, attempt, \
         retry_of, queued_at) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)",
        params![
            b.repo,
            b.git_ref,
            b.sha,
            b.trigger,
            b.message,
            attempt,
            retry_of,
            now_ms()
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

/// Queue a build; queued (not yet running) builds of the same repository and
/// ref become superseded by it.
pub fn enqueue(db: &Database, b: &NewBuild) -> Result<Enqueued, Error> {
    db.write(|tx| {
        let id = insert(tx, b, 1, None)?;
        let superseded = supersede_older(tx, &b.repo, &b.git_ref, id)?;
        Ok(Enqueued { id, superseded })
    })
}

fn supersede_older(
    tx: &rusqlite::Transaction<'_>,
    repo: &str,
    git_ref: &str,
    id: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = tx.prepare(
        "SELECT id FROM autobuild_builds WHERE repo = ?1 AND git_ref = ?2 \
         AND state = 'queued' AND id < ?3",
    )?;
    let ids = stmt
        .query_map(params![repo, git_ref, id], |r| r.get::<_, i64>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for old in &ids {
        tx.execute(
            "UPDATE autobuild_builds SET state = 'superseded', superseded_by = ?1, \
             finished_at = ?2 WHERE id = ?3",
            params![id, now_ms(), old],
        )?;
    }
    Ok(ids)
}

/// Take the oldest queued build whose ref is not building now and mark it
/// running.
pub fn claim_next(db: &Database) -> Result<Option<BuildRecord>, Error> {
    db.write(|tx| {
        let sql = format!(
            "SELECT {COLUMNS} FROM autobuild_builds AS q WHERE q.state = 'queued' \
             AND NOT EXISTS (SELECT 1 FROM autobuild_builds AS r WHERE r.state = 'running' \
             AND r.repo = q.repo AND r.git_ref = q.git_ref) ORDER BY q.id LIMIT 1"
        );
        let Some(mut rec) = tx.query_row(&sql, [], from_row).optional()? else {
            return Ok(None);
        };
        let now = now_ms();
        tx.execute(
            "UPDATE autobuild_builds SET state = 'running', started_at = ?1 WHERE id = ?2",
            params![now, rec.id],
        )?;
        rec.state = BuildState::Running;
        rec.started_at = Some(now);
        Ok(Some(rec))
    })
}

/// Record the tags a running build is about to produce.
pub fn set_tags(db: &Database, id: i64, tags: &[String]) -> Result<(), Error> {
    let tags = serde_json::to_string(tags).map_err(Error::Json)?;
    db.write(|tx| {
        tx.execute(
            "UPDATE autobuild_builds SET tags = ?1 WHERE id = ?2",
            params![tags, id],
        )?;
        Ok(())
    })
}

/// Record the end of a running build.
pub fn finish(
    db: &Database,
    id: i64,
    result: Result<(&str, &[String]), &str>,
) -> Result<(), Error> {
    db.write(|tx| {
        match result {
            Ok((digest, pushed)) => tx.execute(
                "UPDATE autobuild_builds SET state = 'succeeded', finished_at = ?1, digest = ?2, \
                 pushed = ?3 WHERE id = ?4 AND state = 'running'",
                params![
                    now_ms(),
                    digest,
                    serde_json::to_string(pushed).unwrap_or_else(|_| "[]".into()),
                    id
                ],
            )?,
            Err(error) => tx.execute(
                "UPDATE autobuild_builds SET state = 'failed', finished_at = ?1, error = ?2 \
                 WHERE id = ?3 AND state = 'running'",
                params![now_ms(), error, id],
            )?,
        };
        Ok(())
    })
}

/// At server start: builds left `running` by a dead server become
/// `interrupted`, and each is queued again once (a build that was already a
/// requeue is not requeued a second time).
///
/// Only one server may use a store's autobuild queue at a time; the caller
/// makes sure of that (see [`crate::server::Service::open`]).
pub fn recover(db: &Database) -> Result<Recovery, Error> {
    db.write(|tx| {
        let sql =
            format!("SELECT {COLUMNS} FROM autobuild_builds WHERE state = 'running' ORDER BY id");
        let running = tx
            .prepare(&sql)?
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut recovery = Recovery::default();
        for rec in running {
            // A newer commit of the ref already queued or built wins: the
            // older one, run again after it, would push over its image.
            let newer: Option<i64> = tx.query_row(
                &format!(
                    "SELECT MAX(id) FROM autobuild_builds WHERE repo = ?1 AND git_ref = ?2 \
                     AND id > ?3 AND {NEWER_BLOCKS_REQUEUE}"
                ),
                params![rec.repo, rec.git_ref, rec.id],
                |r| r.get(0),
            )?;
            let error = match newer {
                Some(id) => format!(
                    "the server stopped while this build ran; not queued again: build #{id} of \
                     its ref is newer"
                ),
                None => "the server stopped while this build ran".to_owned(),
            };
            tx.execute(
                "UPDATE autobuild_builds SET state = 'interrupted', finished_at = ?1, \
                 error = ?3 WHERE id = ?2",
                params![now_ms(), rec.id, error],
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

/// Queue a copy of build `id` (any state) as a new build.
pub fn retry(db: &Database, id: i64) -> Result<Enqueued, Error> {
    db.write(|tx| {
        let sql = format!("SELECT {COLUMNS} FROM autobuild_builds WHERE id = ?1");
        let rec = tx
            .query_row(&sql, [id], from_row)
            .optional()?
            .ok_or(Error::NoSuchBuild(id))?;
        let b = rec.retry();
        let new_id = insert(tx, &b, 1, Some(id))?;
        let superseded = supersede_older(tx, &b.repo, &b.git_ref, new_id)?;
        Ok(Enqueued {
            id: new_id,
            superseded,
        })
    })
}

/// One build.
pub fn get(db: &Database, id: i64) -> Result<Option<BuildRecord>, Error> {
    db.read(|c| {
        let sql = format!("SELECT {COLUMNS} FROM autobuild_builds WHERE id = ?1");
        Ok(c.query_row(&sql, [id], from_row).optional()?)
    })
}

/// Builds, newest first, optionally of one repository.
pub fn list(db: &Database, repo: Option<&str>, limit: usize) -> Result<Vec<BuildRecord>, Error> {
    db.read(|c| {
        let sql = format!(
            "SELECT {COLUMNS} FROM autobuild_builds WHERE (?1 IS NULL OR repo = ?1) \
             ORDER BY id DESC LIMIT ?2"
        );
        let rows = c
            .prepare(&sql)?
            .query_map(params![repo, limit as i64], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
}

/// The newest build of each repository that has one.
pub fn latest_per_repo(db: &Database) -> Result<BTreeMap<String, BuildRecord>, Error> {
    db.read(|c| {
        let sql = format!(
            "SELECT {COLUMNS} FROM autobuild_builds WHERE id IN \
             (SELECT MAX(id) FROM autobuild_builds WHERE state != 'superseded' GROUP BY repo)"
        );
        let rows = c
            .prepare(&sql)?
            .query_map([], from_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows.into_iter().map(|r| (r.repo.clone(), r)).collect())
    })
}

/// Where builds are queued: the store's SQLite database (one server per
/// store, builds run in the server) or a PostgreSQL database shared by
/// receivers and workers ([`crate::pg`]). Cheap to clone. Every method
/// blocks: async code calls them on a blocking thread.
#[derive(Clone)]
pub enum Queue {
    /// The store's `meta.db` (tables `autobuild_*`), logs as files.
    Sqlite(std::sync::Arc<hoist_builder::Store>),
    /// A PostgreSQL database, logs as rows.
    Postgres(std::sync::Arc<crate::pg::PgQueue>),
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Queue::Sqlite(s) => write!(f, "Queue::Sqlite({})", s.root().display()),
            Queue::Postgres(p) => write!(f, "Queue::Postgres({})", p.shown_url()),
        }
    }
}

impl Queue {
    /// The queue a config names: PostgreSQL when `url` is set, else the
    /// store at `store_root`.
    pub fn open(url: Option<&str>, store_root: &std::path::Path) -> Result<Queue, Error> {
        match url {
            Some(url) => Ok(Queue::Postgres(std::sync::Arc::new(
                crate::pg::PgQueue::open(url)?,
            ))),
            None => Ok(Queue::Sqlite(std::sync::Arc::new(crate::open_db(
                store_root,
            )?))),
        }
    }

    /// True for a queue several machines share (PostgreSQL).
    pub fn is_shared(&self) -> bool {
        matches!(self, Queue::Postgres(_))
    }

    /// The PostgreSQL queue, when it is one.
    pub fn postgres(&self) -> Option<&crate::pg::PgQueue> {
        match self {
            Queue::Postgres(p) => Some(p),
            Queue::Sqlite(_) => None,
        }
    }

    /// Queue a build, superseding queued builds of the same ref.
    pub fn enqueue(&self, b: &NewBuild) -> Result<Enqueued, Error> {
        match self {
            Queue::Sqlite(s) => enqueue(s.db(), b),
            Queue::Postgres(p) => Ok(p.enqueue(b)?),
        }
    }

    /// Queue a copy of build `id`.
    pub fn retry(&self, id: i64) -> Result<Enqueued, Error> {
        match self {
            Queue::Sqlite(s) => retry(s.db(), id),
            Queue::Postgres(p) => p.retry(id)?.ok_or(Error::NoSuchBuild(id)),
        }
    }

    /// Record the tags a running build is about to produce.
    pub fn set_tags(&self, id: i64, tags: &[String]) -> Result<(), Error> {
        match self {
            Queue::Sqlite(s) => set_tags(s.db(), id, tags),
            Queue::Postgres(p) => Ok(p.set_tags(id, tags)?),
        }
    }

    /// Record the end of a running build (on PostgreSQL only while the
    /// claim `token` still holds it); false when it was no longer ours.
    pub fn finish(
        &self,
        id: i64,
        token: Option<&str>,
        result: Result<(&str, &[String]), &str>,
    ) -> Result<bool, Error> {
        match self {
            Queue::Sqlite(s) => finish(s.db(), id, result).map(|()| true),
            Queue::Postgres(p) => Ok(p.finish(id, token, result)?),
        }
    }

    /// One build.
    pub fn get(&self, id: i64) -> Result<Option<BuildRecord>, Error> {
        match self {
            Queue::Sqlite(s) => get(s.db(), id),
            Queue::Postgres(p) => Ok(p.get(id)?),
        }
    }

    /// Builds, newest first.
    pub fn list(&self, repo: Option<&str>, limit: usize) -> Result<Vec<BuildRecord>, Error> {
        match self {
            Queue::Sqlite(s) => list(s.db(), repo, limit),
            Queue::Postgres(p) => Ok(p.list(repo, limit)?),
        }
    }

    /// The newest build of each repository.
    pub fn latest_per_repo(&self) -> Result<BTreeMap<String, BuildRecord>, Error> {
        match self {
            Queue::Sqlite(s) => latest_per_repo(s.db()),
            Queue::Postgres(p) => Ok(p.latest_per_repo()?),
        }
    }

    /// Replace the base images remembered for `repo`.
    pub fn set_bases(
        &self,
        repo: &str,
        build_id: Option<i64>,
        bases: &BTreeMap<String, String>,
    ) -> Result<(), Error> {
        match self {
            Queue::Sqlite(s) => set_bases(s.db(), repo, build_id, bases),
            Queue::Postgres(p) => Ok(p.set_bases(repo, build_id, bases)?),
        }
    }

    /// Remember a new digest of one base image of `repo`.
    pub fn update_base(&self, repo: &str, image: &str, digest: &str) -> Result<(), Error> {
        match self {
            Queue::Sqlite(s) => update_base(s.db(), repo, image, digest),
            Queue::Postgres(p) => Ok(p.update_base(repo, image, digest)?),
        }
    }

    /// The base images remembered for `repo`.
    pub fn bases(&self, repo: &str) -> Result<BTreeMap<String, String>, Error> {
        match self {
            Queue::Sqlite(s) => bases(s.db(), repo),
            Queue::Postgres(p) => Ok(p.bases(repo)?),
        }
    }

    /// Build `id`'s log from byte `offset` (the file under the store, or
    /// the rows a worker streamed).
    pub fn read_log(&self, id: i64, offset: u64) -> Result<Vec<u8>, Error> {
        use std::io::{Read, Seek, SeekFrom};
        let s = match self {
            Queue::Postgres(p) => return Ok(p.read_log(id, offset)?),
            Queue::Sqlite(s) => s,
        };
        let path = crate::server::log_path(s.root(), id);
        let mut data = Vec::new();
        match std::fs::File::open(&path) {
            Ok(mut f) => {
                let io = |source| Error::Io {
                    action: "read the build log",
                    path: path.clone(),
                    source,
                };
                f.seek(SeekFrom::Start(offset)).map_err(io)?;
                f.read_to_end(&mut data).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(Error::Io {
                    action: "open the build log",
                    path,
                    source,
                })
            }
        }
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(git_ref: &str, sha: &str) -> NewBuild {
        NewBuild {
            repo: "demo".into(),
            git_ref: git_ref.into(),
            sha: sha.into(),
            trigger: "test".into(),
            message: String::new(),
        }
    }

    #[test]
    fn an_interrupted_rebase_is_requeued_as_a_rebase_and_retried_as_a_build() {
        let dir = tempfile::tempdir().unwrap();
        let store = hoist_builder::Store::open(dir.path()).unwrap();
        let db = store.db();
        let mut b = new("refs/heads/main", "a");
        b.trigger = "rebase:docker.io/library/busybox:latest".into();
        let id = enqueue(db, &b).unwrap().id;
        assert_eq!(claim_next(db).unwrap().unwrap().id, id);
        let r = recover(db).unwrap();
        let requeued = get(db, r.interrupted[0].1.unwrap()).unwrap().unwrap();
        assert_eq!(requeued.trigger, b.trigger);
        assert_eq!((requeued.attempt, requeued.retry_of), (2, Some(id)));
        let retried = retry(db, requeued.id).unwrap().id;
        assert_eq!(get(db, retried).unwrap().unwrap().trigger, "retry");
    }

    #[test]
    fn claims_respect_refs_and_interruptions_requeue_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = hoist_builder::Store::open(dir.path()).unwrap();
        let db = store.db();
        let a = enqueue(db, &new("refs/heads/main", "a")).unwrap().id;
        let other = enqueue(db, &new("refs/heads/dev", "d")).unwrap().id;
        assert_eq!(claim_next(db).unwrap().unwrap().id, a);
        let b = enqueue(db, &new("refs/heads/main", "b")).unwrap();
        assert!(
            b.superseded.is_empty(),
            "a running build is never superseded"
        );
        // main is building, so dev goes first and main's next waits.
        assert_eq!(claim_next(db).unwrap().unwrap().id, other);
        assert!(claim_next(db).unwrap().is_none());

        // The server dies: dev's build is requeued once; main's is not, as
        // a newer commit of main (b) is queued and would be pushed over.
        let r = recover(db).unwrap();
        assert_eq!(r.interrupted.len(), 2);
        assert_eq!(r.interrupted[0], (a, None), "{r:?}");
        let interrupted_a = get(db, a).unwrap().unwrap();
        assert_eq!(interrupted_a.state, BuildState::Interrupted);
        assert!(
            interrupted_a
                .error
                .as_deref()
                .is_some_and(|e| e.contains(&format!("build #{} of its ref is newer", b.id))),
            "{interrupted_a:?}"
        );
        let requeued_dev = r.interrupted[1].1.unwrap();
        let rec = get(db, requeued_dev).unwrap().unwrap();
        assert_eq!(
            (rec.attempt, rec.retry_of, rec.sha.as_str()),
            (2, Some(other), "d")
        );
        assert_eq!(claim_next(db).unwrap().unwrap().id, b.id);
        finish(db, b.id, Ok(("sha256:x", &[]))).unwrap();
        assert_eq!(claim_next(db).unwrap().unwrap().id, requeued_dev);
        assert!(claim_next(db).unwrap().is_none(), "a is never built again");
        // Dies again: the requeue is not requeued a second time.
        let r = recover(db).unwrap();
        assert!(r.interrupted.contains(&(requeued_dev, None)), "{r:?}");
        let done = get(db, b.id).unwrap().unwrap();
        assert_eq!(
            (done.state, done.digest.as_deref()),
            (BuildState::Succeeded, Some("sha256:x"))
        );
    }
}

#[cfg(test)]
mod old_store_tests {
    use super::*;

    /// The tables as `queue::init` created them before they became the
    /// store's migration 3 (version 2: with `autobuild_bases`), verbatim.
    const OLD_INIT_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS autobuild_schema_version (version INTEGER NOT NULL);
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
INSERT INTO autobuild_schema_version (version) VALUES (2);
";

    /// Turns a fresh store into one the old hoist wrote: the store's schema
    /// at version 2 (no autobuild migration), the tables made by the old
    /// `init`, one finished build and one watched base in them.
    fn make_old_store(root: &std::path::Path) {
        let store = hoist_builder::Store::open(root).unwrap();
        store
            .db()
            .write(|tx| {
                tx.execute_batch(
                    "DROP TABLE autobuild_builds; DROP TABLE autobuild_bases;
                     DROP TABLE cache_preimages; UPDATE schema_version SET version = 2;",
                )?;
                tx.execute_batch(OLD_INIT_SCHEMA)?;
                tx.execute(
                    "INSERT INTO autobuild_builds (repo, git_ref, sha, trigger, message, state, \
                     queued_at, finished_at, digest, tags) VALUES ('demo', 'refs/heads/main', \
                     'abc', 'github', 'first', 'succeeded', 1000, 2000, 'sha256:d', '[\"t:1\"]')",
                    [],
                )?;
                tx.execute(
                    "INSERT INTO autobuild_bases VALUES ('demo', 'busybox', 'sha256:b', 1, 1500)",
                    [],
                )?;
                Ok::<_, rusqlite::Error>(())
            })
            .unwrap();
    }

    #[test]
    fn a_store_made_by_the_old_init_opens_with_its_builds_and_bases() {
        let dir = tempfile::tempdir().unwrap();
        make_old_store(dir.path());

        let store = hoist_builder::Store::open(dir.path()).unwrap();
        let db = store.db();
        let version: i64 = db
            .read(|c| c.query_row("SELECT version FROM schema_version", [], |r| r.get(0)))
            .unwrap();
        let current: i64 = hoist_builder::Store::open(tempfile::tempdir().unwrap().path())
            .unwrap()
            .db()
            .read(|c| c.query_row("SELECT version FROM schema_version", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(version, current, "one schema version, the store's");
        let old_table: i64 = db
            .read(|c| {
                c.query_row(
                    "SELECT count(*) FROM sqlite_master WHERE name = 'autobuild_schema_version'",
                    [],
                    |r| r.get(0),
                )
            })
            .unwrap();
        assert_eq!(old_table, 0, "the old version table is gone");

        let old = get(db, 1).unwrap().expect("the old build is still there");
        assert_eq!(
            (
                old.repo.as_str(),
                old.sha.as_str(),
                old.message.as_str(),
                old.state,
                old.digest.as_deref(),
                old.tags.clone()
            ),
            (
                "demo",
                "abc",
                "first",
                BuildState::Succeeded,
                Some("sha256:d"),
                vec!["t:1".to_string()]
            )
        );
        assert_eq!(
            bases(db, "demo").unwrap(),
            BTreeMap::from([("busybox".to_string(), "sha256:b".to_string())])
        );
        // And the queue goes on from there: ids continue after the old one.
        let next = enqueue(
            db,
            &NewBuild {
                repo: "demo".into(),
                git_ref: "refs/heads/main".into(),
                sha: "def".into(),
                trigger: "test".into(),
                message: String::new(),
            },
        )
        .unwrap();
        assert_eq!(next.id, 2);
        assert_eq!(list(db, Some("demo"), 10).unwrap().len(), 2);
    }
}
