//! The accept loop: hyper's HTTP/1 connections with a header read timeout,
//! at most `max_connections` of them, and room made for a new one by
//! closing the connection that has been idle (or waiting for its headers)
//! the longest. axum's own `serve` has neither limit: a client opening
//! connections and never finishing its headers held them forever.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{watch, Notify};
use tower::ServiceExt as _;

use crate::config::ServerConfig;

struct Conn {
    /// Requests being answered; 0 means idle or still reading headers.
    busy: usize,
    /// When it last became idle (or was accepted).
    since: Instant,
    close: Arc<Notify>,
}

/// The live connections.
struct Tracker {
    conns: Mutex<HashMap<u64, Conn>>,
    /// Signalled when a connection ends.
    freed: Notify,
}

impl Tracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Conn>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait until a new connection may be added: below the cap, or after
    /// closing the connection idle the longest. Connections answering a
    /// request are never closed for room.
    async fn make_room(&self, max: usize) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            {
                let mut conns = self.lock();
                if conns.len() < max {
                    return;
                }
                let oldest_idle = conns
                    .iter()
                    .filter(|(_, c)| c.busy == 0)
                    .min_by_key(|(_, c)| c.since)
                    .map(|(id, _)| *id);
                if let Some(id) = oldest_idle {
                    if let Some(c) = conns.remove(&id) {
                        tracing::debug!(id, "closing the longest idle connection for a new one");
                        c.close.notify_one();
                    }
                    return;
                }
            }
            freed.await;
        }
    }

    fn busy(&self, id: u64, delta: isize) {
        if let Some(c) = self.lock().get_mut(&id) {
            c.busy = c.busy.saturating_add_signed(delta);
            if c.busy == 0 {
                c.since = Instant::now();
            }
        }
    }

    fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.freed.notify_waiters();
    }
}

/// Marks a connection busy while a request is answered.
struct BusyGuard {
    tracker: Arc<Tracker>,
    id: u64,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.tracker.busy(self.id, -1);
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then let the
/// connections finish their requests (idle ones close at once) and return.
pub(crate) async fn serve_connections(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: &ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let tracker = Arc::new(Tracker {
        conns: Mutex::new(HashMap::new()),
        freed: Notify::new(),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(64 << 10);
    let builder = Arc::new(builder);
    tokio::pin!(shutdown);
    let mut next_id: u64 = 0;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: wait a little
                // instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::select! {
            _ = tracker.make_room(limits.max_connections) => {}
            _ = &mut shutdown => break,
        }
        next_id += 1;
        let id = next_id;
        let close = Arc::new(Notify::new());
        tracker.lock().insert(
            id,
            Conn {
                busy: 0,
                since: Instant::now(),
                close: Arc::clone(&close),
            },
        );
        let router = router.clone();
        let t = Arc::clone(&tracker);
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            t.busy(id, 1);
            let guard = BusyGuard {
                tracker: Arc::clone(&t),
                id,
            };
            req.extensions_mut().insert(ConnectInfo(peer));
            let router = router.clone();
            async move {
                let _guard = guard;
                router.oneshot(req.map(axum::body::Body::new)).await
            }
        });
        let builder = Arc::clone(&builder);
        let tracker = Arc::clone(&tracker);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                // Closed to make room: dropping the connection closes it.
                _ = close.notified() => {}
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            tracker.remove(id);
        });
    }
    let _ = stop_tx.send(true);
    loop {
        let freed = tracker.freed.notified();
        tokio::pin!(freed);
        freed.as_mut().enable();
        if tracker.lock().is_empty() {
            return Ok(());
        }
        freed.await;
    }
}
