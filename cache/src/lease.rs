//! Leases: what a running process (a build) holds so that garbage
//! collection leaves it alone.
//!
//! A lease protects
//! - the blobs added to it explicitly ([`Store::lease_blobs`], and the blobs
//!   of every cache record read or written with it), and
//! - every blob whose file was written or refreshed after the lease was
//!   created: [`crate::ContentWriter::commit`] refreshes the modification time
//!   of a blob that already existed, so a build's outputs are protected from
//!   the moment they are committed, before it has recorded them anywhere.
//!
//! While any lease is alive, collection also leaves snapshots and cache
//! mounts alone (a build may be using them without having said so).
//!
//! A lease records the process that took it (pid and its start time, so a
//! reused pid does not keep it alive); a lease whose process is gone, or
//! whose expiry passed, is dead and removed by the next collection. The
//! usual life: [`Store::create_lease`] when a build starts, add blobs as it
//! goes, [`Store::release_lease`] after the result is tagged.

use rusqlite::{params, Transaction};

use crate::error::{Error, Result};
use crate::records::now_ms;
use crate::Store;

/// How long a lease lives at most, even if its process still runs.
const LEASE_LIFETIME_MS: i64 = 7 * 24 * 3600 * 1000;

/// A lease held by this process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    /// Its id (random hex).
    pub id: String,
    /// When it was taken (ms since the epoch).
    pub created_ms: i64,
}

/// A lease as recorded, from any process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its id.
    pub id: String,
    /// The process holding it.
    pub pid: u32,
    /// When it was taken (ms since the epoch).
    pub created_ms: i64,
    /// What took it (`build`).
    pub description: String,
    /// Whether its process still runs and it has not expired.
    pub alive: bool,
}

/// The start time of a process (field 22 of `/proc/<pid>/stat`, in clock
/// ticks since boot), or `None` when it does not exist.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields
    // after it start after the last `)`.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

pub(crate) fn add_blobs(
    tx: &Transaction<'_>,
    lease: &Lease,
    digests: &[String],
) -> rusqlite::Result<()> {
    let mut insert =
        tx.prepare_cached("INSERT OR IGNORE INTO lease_blobs (lease, digest) VALUES (?1, ?2)")?;
    for digest in digests {
        insert.execute(params![lease.id, digest])?;
    }
    Ok(())
}

/// Releases a lease when dropped: what a process holds while it writes
/// blobs no ref names yet (a pull, a load, a build), so that a concurrent
/// collection keeps them.
pub struct LeaseGuard<'a> {
    store: &'a Store,
    lease: Lease,
}

impl<'a> LeaseGuard<'a> {
    /// Guards `lease`, which the caller took.
    pub fn new(store: &'a Store, lease: Lease) -> Self {
        LeaseGuard { store, lease }
    }

    /// Takes a lease described by `what` (`pull`, `load`, `build`, ...).
    pub fn take(store: &'a Store, what: &str) -> Result<Self> {
        Ok(LeaseGuard::new(store, store.create_lease(what)?))
    }

    /// The lease held.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.release_lease(&self.lease) {
            tracing::warn!(error = %e, lease = %self.lease.id, "could not release a lease on the store");
        }
    }
}

impl Store {
    /// Takes a lease for this process.
    pub fn create_lease(&self, description: &str) -> Result<Lease> {
        let mut random = [0u8; 12];
        getrandom::fill(&mut random).map_err(|e| Error::Stream {
            action: "draw a random lease id".to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let pid = std::process::id();
        let lease = Lease {
            id: hex::encode(random),
            created_ms: now_ms(),
        };
        let start = process_start(pid).unwrap_or(0);
        self.db()
            .write(|tx| {
                tx.execute(
                    "INSERT INTO leases (id, pid, pid_start, created_ms, expires_ms, description)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    params![
                        lease.id,
                        pid,
                        start as i64,
                        lease.created_ms,
                        lease.created_ms + LEASE_LIFETIME_MS,
                        description
                    ],
                )
            })
            .map_err(Error::db("create a lease"))?;
        Ok(lease)
    }

    /// Puts blobs (`sha256:<hex>`) under `lease`.
    pub fn lease_blobs(&self, lease: &Lease, digests: &[String]) -> Result<()> {
        self.db()
            .write(|tx| add_blobs(tx, lease, digests))
            .map_err(Error::db(format!("add blobs to lease {}", lease.id)))
    }

    /// Drops `lease` and what it protected.
    pub fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.db()
            .write(|tx| tx.execute("DELETE FROM leases WHERE id = ?1", [&lease.id]))
            .map_err(Error::db(format!("release lease {}", lease.id)))?;
        Ok(())
    }

    /// Every recorded lease, oldest first.
    pub fn leases(&self) -> Result<Vec<LeaseInfo>> {
        self.db().read(list).map_err(Error::db("list leases"))
    }
}

pub(crate) fn list(c: &rusqlite::Connection) -> rusqlite::Result<Vec<LeaseInfo>> {
    let now = now_ms();
    let mut stmt = c.prepare(
        "SELECT id, pid, pid_start, created_ms, expires_ms, description FROM leases
         ORDER BY created_ms, id",
    )?;
    let rows = stmt.query_map([], |r| {
        let pid: u32 = r.get(1)?;
        let start: i64 = r.get(2)?;
        let expires: i64 = r.get(4)?;
        let alive = expires > now && process_start(pid).is_some_and(|s| s as i64 == start);
        Ok(LeaseInfo {
            id: r.get(0)?,
            pid,
            created_ms: r.get(3)?,
            description: r.get(5)?,
            alive,
        })
    })?;
    rows.collect()
}

/// Live leases, after removing the dead ones: (oldest creation time, leased
/// blobs).
pub(crate) fn live(tx: &Transaction<'_>) -> rusqlite::Result<(Option<i64>, Vec<String>)> {
    let leases = list(tx)?;
    let mut oldest = None;
    for lease in &leases {
        if lease.alive {
            oldest = Some(oldest.map_or(lease.created_ms, |o: i64| o.min(lease.created_ms)));
        } else {
            tx.execute("DELETE FROM leases WHERE id = ?1", [&lease.id])?;
        }
    }
    let mut stmt = tx.prepare_cached("SELECT DISTINCT digest FROM lease_blobs")?;
    let blobs = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<String>>>()?;
    Ok((oldest, blobs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_of_dead_processes_are_dead() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let lease = store.create_lease("build").unwrap();
        store
            .lease_blobs(&lease, &["sha256:aa".to_string()])
            .unwrap();
        let all = store.leases().unwrap();
        assert_eq!(all.len(), 1);
        assert!(all[0].alive);
        assert_eq!(all[0].pid, std::process::id());
        // A lease of a process that exited.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        store
            .db()
            .write(|tx| {
                tx.execute(
                    "INSERT INTO leases VALUES ('dead', ?1, 1, 0, 99999999999999, 'build')",
                    [pid],
                )
            })
            .unwrap();
        let (oldest, blobs) = store.db().write(live).unwrap();
        assert_eq!(oldest, Some(lease.created_ms));
        assert_eq!(blobs, ["sha256:aa"]);
        assert_eq!(store.leases().unwrap().len(), 1);
        store.release_lease(&lease).unwrap();
        let (oldest, blobs) = store.db().write(live).unwrap();
        assert_eq!((oldest, blobs.len()), (None, 0));
    }
}
