//! `hoist autobuild worker`: builds claimed from a PostgreSQL queue, and
//! the election of the one receiver that watches base images.
//!
//! A worker claims up to `concurrency` builds (`FOR UPDATE SKIP LOCKED`,
//! see [`crate::pg`]) under a claim token of its own process, renews their
//! heartbeat every third of the lease, and on each tick also requeues the
//! builds of workers whose heartbeat is older than the lease. On shutdown it
//! claims nothing more, waits up to the drain timeout for its running
//! builds, and hands back those still running.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use crate::pg::{PgQueue, WATCH_LOCK};
use crate::server::Service;
use crate::Error;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Recorded in each build it runs (`worker`).
    pub name: String,
    /// Builds at once.
    pub concurrency: usize,
    /// How long SIGTERM waits for running builds before handing them back.
    pub drain_timeout: Duration,
}

/// What a worker did when it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerReport {
    /// Builds it ran to their end.
    pub finished: usize,
    /// Builds still running at the drain timeout, queued again.
    pub handed_back: Vec<i64>,
}

/// How often an idle worker looks for queued builds.
const POLL: Duration = Duration::from_millis(500);

/// A default worker name: the host name and the process id.
pub fn default_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let host = if host.is_empty() {
        "worker".into()
    } else {
        host
    };
    format!("{host}-{}", std::process::id())
}

fn claim_token(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{name}/{}/{nanos:x}", std::process::id())
}

async fn on_pg<T: Send + 'static>(
    svc: &Service,
    f: impl FnOnce(&PgQueue) -> Result<T, crate::pg::PgError> + Send + 'static,
) -> Result<T, Error> {
    let queue = svc.queue().clone();
    tokio::task::spawn_blocking(move || match queue.postgres() {
        Some(pg) => f(pg).map_err(Error::from),
        None => Err(Error::NotShared),
    })
    .await
    .unwrap_or_else(|e| Err(Error::Task(e.to_string())))
}

/// Claim and run builds until `shutdown` completes, then drain (see the
/// module docs). The service must have a PostgreSQL queue.
pub async fn work(
    service: Service,
    options: WorkerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<WorkerReport, Error> {
    if !service.queue().is_shared() {
        return Err(Error::NotShared);
    }
    // One worker per store root: a SIGKILLed worker's checkouts are left
    // there, and only the lock's holder may remove them.
    let _lock = crate::server::lock_store(service.store().root())?;
    crate::server::remove_stale_checkouts(service.store().root());
    let token = claim_token(&options.name);
    let lease = service.config().queue.lease;
    let tick = (lease / 3).max(Duration::from_millis(100));

    // The heartbeat runs until the very end, through the drain.
    let (hb_stop, mut hb_rx) = watch::channel(false);
    let heartbeat = {
        let svc = service.clone();
        let token = token.clone();
        tokio::spawn(async move {
            // Ticks in a row the database answered. After an outage (a
            // database restart) every live worker gets one tick to renew
            // its heartbeats before anyone's expired builds are requeued.
            let mut healthy = 0u32;
            loop {
                let t = token.clone();
                match on_pg(&svc, move |pg| pg.heartbeat(&t)).await {
                    Ok(_) => healthy = healthy.saturating_add(1),
                    Err(e) => {
                        healthy = 0;
                        tracing::warn!(error = %e, "cannot renew the heartbeat");
                    }
                }
                if healthy >= 2 {
                    match on_pg(&svc, move |pg| pg.requeue_expired(lease)).await {
                        Ok(r) => {
                            for (id, copy) in r.interrupted {
                                tracing::warn!(id, requeued = ?copy, "a worker stopped sending heartbeats; its build is interrupted");
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "cannot requeue expired builds"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(tick) => {}
                    _ = hb_rx.changed() => return,
                }
            }
        })
    };

    let mut shutdown = std::pin::pin!(shutdown);
    let mut running = tokio::task::JoinSet::new();
    let mut report = WorkerReport::default();
    let concurrency = options.concurrency.max(1);
    'claim: loop {
        while running.len() < concurrency {
            let (name, t) = (options.name.clone(), token.clone());
            match on_pg(&service, move |pg| pg.claim_next(&name, &t)).await {
                Ok(Some(rec)) => {
                    tracing::info!(id = rec.id, worker = %options.name, "claimed a build");
                    let svc = service.clone();
                    let t = token.clone();
                    running.spawn(async move { svc.run(rec, Some(t)).await });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot claim a build");
                    break;
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break 'claim,
            Some(_) = running.join_next(), if !running.is_empty() => report.finished += 1,
            _ = tokio::time::sleep(POLL) => {}
        }
    }

    if !running.is_empty() {
        tracing::info!(
            running = running.len(),
            timeout = ?options.drain_timeout,
            "draining: waiting for the running builds"
        );
    }
    let drained = tokio::time::timeout(options.drain_timeout, async {
        let mut n = 0;
        while running.join_next().await.is_some() {
            n += 1;
        }
        n
    })
    .await;
    match drained {
        Ok(n) => report.finished += n,
        Err(_) => {
            let t = token.clone();
            report.handed_back = on_pg(&service, move |pg| pg.hand_back(&t)).await?;
            tracing::warn!(ids = ?report.handed_back, "drain timeout: running builds handed back to the queue");
            running.abort_all();
        }
    }
    let _ = hb_stop.send(true);
    let _ = heartbeat.await;
    Ok(report)
}

/// With a PostgreSQL queue: take part in electing the one receiver that
/// watches base images (a session advisory lock on its own connection) and,
/// while elected, run the watchers; stand by while another holds it.
pub async fn elect_and_watch(
    service: Service,
    client: hoist_registry::Client,
    mut stop: watch::Receiver<bool>,
) {
    const RETRY: Duration = Duration::from_secs(5);
    loop {
        let queue = service.queue().clone();
        let conn = tokio::task::spawn_blocking(move || {
            let pg = queue.postgres()?;
            let mut conn = pg.connect().ok()?;
            let got: bool = conn
                .query_one("SELECT pg_try_advisory_lock($1)", &[&WATCH_LOCK])
                .ok()?
                .get(0);
            if got {
                Some(conn)
            } else {
                drop(conn);
                None
            }
        })
        .await
        .ok()
        .flatten();
        let Some(conn) = conn else {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => continue,
                _ = stop.changed() => return,
            }
        };
        tracing::info!("this receiver watches the base images");
        let conn = std::sync::Arc::new(std::sync::Mutex::new(Some(conn)));
        let (term_tx, term_rx) = watch::channel(false);
        let watchers: Vec<_> = service
            .config()
            .repos
            .iter()
            .filter(|r| r.watch_base)
            .map(|repo| {
                tokio::spawn(crate::watch::watch_repo(
                    service.clone(),
                    repo.clone(),
                    client.clone(),
                    term_rx.clone(),
                ))
            })
            .collect();
        // The lock lives as long as its connection: check that it does.
        let stopping = loop {
            tokio::select! {
                _ = tokio::time::sleep(RETRY) => {}
                _ = stop.changed() => break true,
            }
            let c = std::sync::Arc::clone(&conn);
            let alive = tokio::task::spawn_blocking(move || {
                let mut guard = c.lock().unwrap_or_else(|p| p.into_inner());
                guard
                    .as_mut()
                    .is_some_and(|c| c.simple_query("SELECT 1").is_ok())
            })
            .await
            .unwrap_or(false);
            if !alive {
                tracing::warn!("lost the base-watching lock's connection; electing again");
                break false;
            }
        };
        let _ = term_tx.send(true);
        for w in watchers {
            let _ = w.await;
        }
        // Closing the connection releases the lock (on a blocking thread:
        // the client's close runs a runtime of its own).
        let _ = tokio::task::spawn_blocking(move || {
            drop(conn.lock().unwrap_or_else(|p| p.into_inner()).take())
        })
        .await;
        if stopping {
            return;
        }
    }
}
