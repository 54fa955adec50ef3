//! Network fixtures for the default-network tests of the runner and of
//! `hoist build`: the host's primary address, TCP listeners that answer a
//! token, and the Debian mirror named in apt's sources.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The host's primary non-loopback IPv4 address: the source address of its
/// route to the internet (what `ip -4 route get 1` names as `src`). A UDP
/// connect sends nothing; it only picks the route.
pub fn host_ipv4() -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("1.0.0.1:53").ok()?;
    match socket.local_addr().ok()?.ip() {
        IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Some(ip),
        _ => None,
    }
}

/// A TCP listener on the host that writes `token` and a newline to every
/// connection, until dropped.
pub struct TokenListener {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it answers.
    pub token: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TokenListener {
    /// Listen on `ip` (an ephemeral port), answering `token`.
    pub fn start(ip: IpAddr, token: &str) -> std::io::Result<TokenListener> {
        let listener = TcpListener::bind(SocketAddr::new(ip, 0))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let answer = format!("{token}\n");
        let thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((mut conn, _)) => {
                            let _ = conn.set_nonblocking(false);
                            let _ = conn.write_all(answer.as_bytes());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Ok(TokenListener {
            addr,
            token: token.to_owned(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for TokenListener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host name of the first `http(s)://` mirror in apt's sources
/// (`/etc/apt/sources.list` and `sources.list.d/*.list|*.sources`), e.g.
/// `deb.debian.org`.
pub fn debian_mirror_host() -> Option<String> {
    let mut files = vec![std::path::PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<_> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files.iter().find_map(|f| {
        let text = std::fs::read_to_string(f).ok()?;
        text.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
            .find_map(|w| {
                let rest = w
                    .strip_prefix("http://")
                    .or_else(|| w.strip_prefix("https://"))?;
                let host = rest.split(['/', ':']).next()?;
                (!host.is_empty()).then(|| host.to_owned())
            })
    })
}

/// True when the host resolves `name` through DNS (its resolv.conf's
/// nameservers; `/etc/hosts` is not consulted), asked with busybox's
/// `nslookup`, the same client a busybox step uses.
pub fn host_resolves_by_dns(name: &str) -> bool {
    Command::new(crate::BUSYBOX)
        .args(["nslookup", name])
        .output()
        .is_ok_and(|o| o.status.success() && nslookup_found(&String::from_utf8_lossy(&o.stdout)))
}

/// True when busybox `nslookup` output holds an answer (an `Address:` line
/// after the `Name:` line; the first `Address:` is the server's).
pub fn nslookup_found(output: &str) -> bool {
    output
        .split_once("Name:")
        .is_some_and(|(_, rest)| rest.contains("Address"))
}
