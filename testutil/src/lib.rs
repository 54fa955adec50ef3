//! Test fixtures shared by every hoist crate's integration tests.
//!
//! Everything here is real: the busybox root filesystem is made from Debian's
//! `busybox-static` binary, the registry is the CNCF distribution registry
//! (Debian's `docker-registry`) listening on 127.0.0.1. Only dev-dependencies
//! may use this crate.
//!
//! Besides fixtures it holds the harness several test binaries share:
//! [`cli`] (the `hoist` binary against a temp store, build contexts,
//! progress-output counts), [`git`] (real repositories), [`ok`] (a finished
//! program's success asserted, its stdout returned) and [`wait_until`].
#![allow(clippy::print_stderr)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cli;
pub mod fuzz;
pub mod git;
pub mod net;
pub mod postgres;
pub mod rootless;
pub mod slowproxy;

pub use git::{git, GitRepo};

/// Where Debian's `busybox-static` puts its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// True when CI demands that tests needing root or outside programs run
/// instead of skipping (`HOIST_REQUIRE_ROOT_TESTS=1`).
pub fn strict() -> bool {
    std::env::var_os("HOIST_REQUIRE_ROOT_TESTS").is_some_and(|v| v == "1")
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    // Reading /proc avoids a libc dependency for one getuid call.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// The current test cannot run here for want of `reason` (root, a program,
/// a file CI provides). Under `HOIST_REQUIRE_ROOT_TESTS=1` that is a failure
/// (a panic naming the reason). Otherwise the reason goes to the process's
/// real stderr: libtest captures `eprintln!` of a passing test, so a printed
/// skip would vanish behind its `ok`; a write to the stderr handle does not
/// go through the capture. The caller returns right after.
pub fn cannot_run(reason: &str) {
    if strict() {
        panic!("{reason} and HOIST_REQUIRE_ROOT_TESTS=1 is set");
    }
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    let _ = writeln!(std::io::stderr(), "skipped: {test}: {reason}");
}

/// Skip the current test (return early) with a visible reason when not root;
/// fail instead when `HOIST_REQUIRE_ROOT_TESTS=1` ([`cannot_run`]).
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::cannot_run("this test needs root");
            return;
        }
    };
}

/// Skip the current test when a program is not on PATH (fail under
/// `HOIST_REQUIRE_ROOT_TESTS=1`, where CI has installed everything).
#[macro_export]
macro_rules! require_program {
    ($name:expr) => {
        if $crate::which($name).is_none() {
            $crate::cannot_run(&format!("this test needs `{}` on PATH", $name));
            return;
        }
    };
}

/// Asserts that a finished program succeeded and returns its stdout; the
/// failure message names `what` and shows both streams.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `command` to the end, asserts that it succeeded (naming it and
/// showing both streams) and returns its stdout.
pub fn run_ok(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    ok(out, &format!("{command:?}"))
}

/// Polls `f` every `every` until it returns `Some`; `limit` only bounds a
/// bug (the test fails instead of hanging), it never decides an outcome.
pub fn wait_until<T>(
    what: &str,
    limit: Duration,
    every: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(every);
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// Full path of a program on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A TCP port nothing listens on, for a server the test starts as another
/// process (which needs the number before it binds).
///
/// The port comes from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`): a port the kernel handed out and took
/// back would be handed out again as the source port of some test's outgoing
/// connection, and the server's bind would then fail with `EADDRINUSE` (it did
/// in CI). Below the range only explicit binds take ports; each process starts
/// at its own offset and never hands a port out twice, and a port something
/// holds now is skipped. A server inside the test process binds port 0 instead.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let high = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        .filter(|&h| h > LOW + 1_000)
        .unwrap_or(32_768);
    let span = high - LOW;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (LOW + (start + n) % span) as u16;
        // Both binds, one after the other (each listener is closed before
        // the next): a server may listen on 127.0.0.1 or on every address.
        let any = TcpListener::bind(("0.0.0.0", port)).is_ok();
        if any && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port between {LOW} and {high}")
}

/// Build a busybox root filesystem in `dir`: the static binary, a link per
/// applet, a working `/bin/sh`, and minimal `/etc/passwd` and `/etc/group`.
///
/// Panics with a clear message when `busybox-static` is missing.
pub fn busybox_rootfs(dir: &Path) {
    let busybox = Path::new(BUSYBOX);
    assert!(
        busybox.is_file(),
        "{BUSYBOX} is missing: install Debian's busybox-static"
    );
    for d in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "tmp", "root", "home", "var", "proc", "sys",
        "dev",
    ] {
        fs::create_dir_all(dir.join(d)).expect("create rootfs dir");
    }
    fs::set_permissions(dir.join("tmp"), fs::Permissions::from_mode(0o1777)).expect("chmod /tmp");
    fs::set_permissions(dir.join("root"), fs::Permissions::from_mode(0o700)).expect("chmod /root");
    fs::copy(busybox, dir.join("bin/busybox")).expect("copy busybox");
    fs::set_permissions(dir.join("bin/busybox"), fs::Permissions::from_mode(0o755))
        .expect("chmod busybox");
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .expect("run busybox --list-full");
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "bin/busybox" {
            continue;
        }
        let link = dir.join(applet);
        if link.symlink_metadata().is_ok() {
            continue;
        }
        if let Some(parent) = link.parent() {
            fs::create_dir_all(parent).expect("create applet dir");
        }
        symlink("/bin/busybox", &link).expect("link applet");
    }
    if dir.join("bin/sh").symlink_metadata().is_err() {
        symlink("/bin/busybox", dir.join("bin/sh")).expect("link /bin/sh");
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .expect("write /etc/passwd");
    fs::write(
        dir.join("etc/group"),
        "root:x:0:\ndaemon:x:1:\nwheel:x:10:app\nnogroup:x:65534:\napp:x:1000:\n",
    )
    .expect("write /etc/group");
    fs::create_dir_all(dir.join("home/app")).expect("create /home/app");
}

/// Write the busybox root filesystem as an uncompressed tar at `tar_path`
/// (made with the system `tar`, numeric owners, sorted names).
pub fn busybox_rootfs_tar(tar_path: &Path) {
    let tmp = tempfile::tempdir().expect("tempdir");
    busybox_rootfs(tmp.path());
    tar_dir(tmp.path(), tar_path);
}

/// Write the tree at `dir` as an uncompressed tar at `tar_path` with the
/// system `tar`: names sorted, owners numeric and root's, paths `./…`.
pub fn tar_dir(dir: &Path, tar_path: &Path) {
    let status = Command::new("tar")
        .args([
            "--sort=name",
            "--numeric-owner",
            "--owner=0",
            "--group=0",
            "-cf",
        ])
        .arg(tar_path)
        .arg("-C")
        .arg(dir)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar of {} failed", dir.display());
}

/// A CNCF distribution registry (Debian's `docker-registry`) on 127.0.0.1,
/// killed and its storage removed on drop.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Start an open registry.
    pub fn start() -> Registry {
        Self::start_with("")
    }

    /// Start a registry requiring htpasswd basic auth for `user`/`password`
    /// (needs `htpasswd` from Debian's apache2-utils).
    pub fn start_basic_auth(user: &str, password: &str) -> Registry {
        let dir = tempfile::tempdir().expect("tempdir");
        let htpasswd = dir.path().join("htpasswd");
        let out = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .expect("run htpasswd (apache2-utils)");
        assert!(out.status.success(), "htpasswd failed");
        fs::write(&htpasswd, &out.stdout).expect("write htpasswd");
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: hoist-test\n    path: {}\n",
            htpasswd.display()
        );
        Self::start_in(dir, &auth)
    }

    /// Start a registry with extra top-level YAML appended to its config
    /// (for example an `auth.token` section).
    pub fn start_with(extra_yaml: &str) -> Registry {
        Self::start_in(tempfile::tempdir().expect("tempdir"), extra_yaml)
    }

    /// Start an open registry listening on `ip` instead of 127.0.0.1 (a
    /// host address, for what treats loopback specially: proxies, TLS).
    pub fn start_at(ip: std::net::IpAddr, extra_yaml: &str) -> Registry {
        Self::start_on(ip, tempfile::tempdir().expect("tempdir"), extra_yaml)
    }

    fn start_in(dir: tempfile::TempDir, extra_yaml: &str) -> Registry {
        Self::start_on(std::net::Ipv4Addr::LOCALHOST.into(), dir, extra_yaml)
    }

    fn start_on(ip: std::net::IpAddr, dir: tempfile::TempDir, extra_yaml: &str) -> Registry {
        let port = free_port();
        let addr = std::net::SocketAddr::new(ip, port).to_string();
        let config = dir.path().join("config.yml");
        fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n{extra_yaml}",
                dir.path().join("data").display()
            ),
        )
        .expect("write registry config");
        let log = fs::File::create(dir.path().join("registry.log")).expect("create registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let registry = Registry { child, addr, dir };
        registry.wait_ready();
        registry
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(&self.addr).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "registry did not listen on {} within 20 s:\n{}",
            self.addr,
            self.log()
        );
    }

    /// Everything the registry has logged so far (access log included).
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(f) = fs::File::open(self.dir.path().join("registry.log")) {
            let _ = BufReader::new(f).read_to_string(&mut s);
        }
        s
    }

    /// Lines of the access log that match `needle` (e.g. `"PUT /v2/"`).
    pub fn log_lines_matching(&self, needle: &str) -> Vec<String> {
        let f = match fs::File::open(self.dir.path().join("registry.log")) {
            Ok(f) => f,
            Err(_) => return Vec::new(),
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains(needle))
            .collect()
    }

    /// The directory holding the registry's config, data and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_rootfs_has_a_working_shell() {
        if which("busybox").is_none() && !Path::new(BUSYBOX).exists() {
            cannot_run("this test needs busybox-static");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        busybox_rootfs(dir.path());
        assert!(dir.path().join("bin/sh").symlink_metadata().is_ok());
        assert!(dir.path().join("bin/ls").symlink_metadata().is_ok());
        let passwd = fs::read_to_string(dir.path().join("etc/passwd")).unwrap();
        assert!(passwd.starts_with("root:x:0:0:"));
    }

    #[test]
    fn free_ports_are_distinct_free_and_below_the_ephemeral_range() {
        let low = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse::<u16>()
            .unwrap();
        let ports: Vec<u16> = (0..50).map(|_| free_port()).collect();
        let mut unique = ports.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), ports.len(), "{ports:?}");
        for port in ports {
            assert!(port < low, "{port} is in the ephemeral range from {low}");
            TcpListener::bind(("0.0.0.0", port)).unwrap();
        }
    }

    #[test]
    fn registry_starts_and_answers_v2() {
        if which("docker-registry").is_none() {
            cannot_run("this test needs docker-registry");
            return;
        }
        let reg = Registry::start();
        let mut s = TcpStream::connect(&reg.addr).unwrap();
        use std::io::Write;
        write!(s, "GET /v2/ HTTP/1.0\r\nHost: {}\r\n\r\n", reg.addr).unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(
            resp.starts_with("HTTP/1.0 200") || resp.starts_with("HTTP/1.1 200"),
            "{resp}"
        );
    }
}
