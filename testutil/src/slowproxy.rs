//! A slow network in front of a real server: a TCP proxy that throttles
//! what the server sends (bytes per second), stalls or cuts a connection
//! after a given number of bytes, and counts every byte it passed to the
//! client. For the registry tests: a registry answering at 100 kB/s, one
//! that stalls mid-blob, and how many bytes a resumed pull fetched.
//!
//! It knows nothing of HTTP: counts include headers, and a fault hits
//! whichever connection carries the byte it names.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// What happens to the connection that reaches a stall point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stall {
    /// Send nothing more until the client closes the connection (a
    /// registry that hangs: only the client's timeout ends it).
    UntilClosed,
    /// Send nothing for this long, then carry on.
    For(Duration),
    /// Close the connection both ways (a registry that drops it).
    Drop,
}

struct Fault {
    /// Downstream byte count (since the last reset) at which it hits.
    at: u64,
    stall: Stall,
}

struct Shared {
    upstream: String,
    /// Bytes per second towards the client; 0 = as fast as it comes.
    rate: AtomicU64,
    /// Bytes sent to clients since the last reset.
    sent: AtomicU64,
    /// Faults that hit so far.
    hits: AtomicU64,
    /// Armed faults, each firing once.
    faults: Mutex<Vec<Fault>>,
    stop: AtomicBool,
    streams: Mutex<Vec<TcpStream>>,
}

/// The proxy; stops (closing every connection) on drop.
pub struct SlowProxy {
    /// `127.0.0.1:PORT` to give clients instead of the server's address.
    pub addr: String,
    shared: Arc<Shared>,
}

impl SlowProxy {
    /// A proxy to `upstream` (`HOST:PORT`) on a free loopback port, passing
    /// everything at full speed until told otherwise.
    pub fn start(upstream: &str) -> SlowProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            rate: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            faults: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let accept = shared.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                if accept.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let shared = accept.clone();
                thread::spawn(move || connection(client, &shared));
            }
        });
        SlowProxy { addr, shared }
    }

    /// Sends at most `bytes_per_second` to clients (0: unlimited).
    pub fn throttle(&self, bytes_per_second: u64) {
        self.shared.rate.store(bytes_per_second, Ordering::SeqCst);
    }

    /// Once `at` bytes have been sent since the last [`SlowProxy::reset`],
    /// the connection carrying the next byte meets `stall` (once).
    pub fn fault_at(&self, at: u64, stall: Stall) {
        lock(&self.shared.faults).push(Fault { at, stall });
    }

    /// Bytes sent to clients since the start or the last reset.
    pub fn bytes_sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    /// How many armed faults have hit.
    pub fn faults_hit(&self) -> u64 {
        self.shared.hits.load(Ordering::SeqCst)
    }

    /// Zero the byte count and disarm faults that have not hit.
    pub fn reset(&self) {
        lock(&self.shared.faults).clear();
        self.shared.sent.store(0, Ordering::SeqCst);
        self.shared.hits.store(0, Ordering::SeqCst);
    }

    /// Blocks until `n` faults have hit (panics after `limit`, a guard
    /// against a hung test, not a timing assertion).
    pub fn wait_faults(&self, n: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.faults_hit() < n {
            assert!(
                Instant::now() < deadline,
                "the proxy saw {} of {n} faults hit within {limit:?} ({} bytes sent)",
                self.faults_hit(),
                self.bytes_sent()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for s in lock(&self.shared.streams).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect(&self.addr);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn connection(client: TcpStream, shared: &Arc<Shared>) {
    let Ok(server) = TcpStream::connect(&shared.upstream) else {
        return;
    };
    let (Ok(client_w), Ok(server_r)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    {
        let mut streams = lock(&shared.streams);
        for s in [&client, &server] {
            if let Ok(s) = s.try_clone() {
                streams.push(s);
            }
        }
    }
    let closed = Arc::new(AtomicBool::new(false));
    // Requests go up unchanged; the client closing ends a stall.
    let up = {
        let closed = closed.clone();
        let (mut client_r, mut server_w) = (client, server);
        thread::spawn(move || {
            let _ = std::io::copy(&mut client_r, &mut server_w);
            closed.store(true, Ordering::SeqCst);
            let _ = server_w.shutdown(Shutdown::Write);
        })
    };
    down(server_r, client_w, shared, &closed);
    let _ = up.join();
}

/// Server to client: throttled, counted, faults applied.
fn down(mut server: TcpStream, mut client: TcpStream, shared: &Shared, closed: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let rate = shared.rate.load(Ordering::SeqCst);
        // Ten slices a second when throttled, so the rate is smooth.
        let max = if rate == 0 {
            buf.len()
        } else {
            ((rate / 10).max(1) as usize).min(buf.len())
        };
        let n = match server.read(&mut buf[..max]) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        while !chunk.is_empty() {
            // Pass bytes up to the next fault point, then apply it.
            let sent = shared.sent.load(Ordering::SeqCst);
            let fault = {
                let mut faults = lock(&shared.faults);
                let due = faults.iter().position(|f| f.at <= sent);
                due.map(|i| faults.remove(i))
            };
            if let Some(fault) = fault {
                shared.hits.fetch_add(1, Ordering::SeqCst);
                match fault.stall {
                    Stall::Drop => {
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                        return;
                    }
                    Stall::UntilClosed => {
                        while !closed.load(Ordering::SeqCst) && !shared.stop.load(Ordering::SeqCst)
                        {
                            thread::sleep(Duration::from_millis(20));
                        }
                        let _ = client.shutdown(Shutdown::Both);
                        let _ = server.shutdown(Shutdown::Both);
                        return;
                    }
                    Stall::For(d) => thread::sleep(d),
                }
                continue;
            }
            let next = lock(&shared.faults)
                .iter()
                .map(|f| f.at.saturating_sub(sent))
                .min()
                .unwrap_or(u64::MAX);
            let take = (chunk.len() as u64).min(next.max(1)) as usize;
            if client.write_all(&chunk[..take]).is_err() {
                let _ = server.shutdown(Shutdown::Both);
                return;
            }
            shared.sent.fetch_add(take as u64, Ordering::SeqCst);
            chunk = &chunk[take..];
            if rate > 0 {
                thread::sleep(Duration::from_secs_f64(take as f64 / rate as f64));
            }
        }
    }
    let _ = client.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server sending `len` bytes to each connection, then closing.
    fn server(len: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        thread::spawn(move || {
            for s in listener.incoming() {
                let mut s = s.unwrap();
                thread::spawn(move || {
                    let _ = s.write_all(&vec![b'x'; len]);
                });
            }
        });
        addr
    }

    fn read_all(addr: &str) -> usize {
        let mut s = TcpStream::connect(addr).unwrap();
        let mut v = Vec::new();
        let _ = s.read_to_end(&mut v);
        v.len()
    }

    #[test]
    fn passes_and_counts() {
        let proxy = SlowProxy::start(&server(100_000));
        assert_eq!(read_all(&proxy.addr), 100_000);
        assert_eq!(proxy.bytes_sent(), 100_000);
    }

    #[test]
    fn drops_at_the_byte_it_was_told_then_passes_again() {
        let proxy = SlowProxy::start(&server(100_000));
        proxy.fault_at(30_000, Stall::Drop);
        assert_eq!(read_all(&proxy.addr), 30_000);
        assert_eq!(proxy.faults_hit(), 1);
        assert_eq!(read_all(&proxy.addr), 100_000);
    }

    #[test]
    fn a_stall_until_closed_ends_when_the_client_gives_up() {
        let proxy = SlowProxy::start(&server(100_000));
        proxy.fault_at(10_000, Stall::UntilClosed);
        let mut s = TcpStream::connect(&proxy.addr).unwrap();
        let mut got = vec![0u8; 10_000];
        s.read_exact(&mut got).unwrap();
        proxy.wait_faults(1, Duration::from_secs(60));
        s.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert_eq!(proxy.bytes_sent(), 10_000);
    }
}
