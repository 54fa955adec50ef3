//! A real PostgreSQL server for tests: Debian's `postgresql` binaries,
//! `initdb` into a temp dir, `postgres` on 127.0.0.1 at a free port (and its
//! socket in the temp dir), as an unprivileged user: the server refuses to
//! run as root, so a root test runs it as [`USER`] (created when missing).
//! Trust authentication for the superuser `hoist`, no other client can
//! reach it but local ones. Stopped (immediate shutdown) on drop.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The system user a root test runs PostgreSQL as.
pub const USER: &str = "hoist-pg";

/// A running PostgreSQL server.
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The TCP port on 127.0.0.1.
    pub port: u16,
}

/// The newest `/usr/lib/postgresql/VERSION/bin` with `initdb` and `postgres`.
fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("postgres").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, b)| b)
}

/// The uid and gid of [`USER`], created (a system user) when missing.
fn user() -> (u32, u32) {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, USER]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    if id("-u").is_none() {
        let status = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/bin/false",
                USER,
            ])
            .status()
            .expect("useradd runs");
        // Two tests may race to create it.
        assert!(
            status.success() || id("-u").is_some(),
            "useradd {USER} failed"
        );
    }
    (id("-u").expect("uid"), id("-g").expect("gid"))
}

impl Postgres {
    /// Start a fresh server, or return `None` after [`crate::cannot_run`]
    /// when PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = bin_dir() else {
            crate::cannot_run("PostgreSQL is not installed (Debian's `postgresql`)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("hoist-pg-")
            .tempdir()
            .expect("temp dir for PostgreSQL");
        if crate::is_root() {
            let (uid, gid) = user();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown the pg dir");
        }
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod the pg dir");
        let mut pg = Postgres {
            bin,
            dir,
            child: None,
            port: crate::free_port(),
        };
        let out = pg
            .command("initdb")
            .args([
                "--auth=trust",
                "--username=hoist",
                "--encoding=UTF8",
                "--no-sync",
            ])
            .arg("-D")
            .arg(pg.data())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pg.start_again();
        Some(pg)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A PostgreSQL program, as [`USER`] when the test runs as root.
    fn command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut c = if crate::is_root() {
            let (uid, gid) = user();
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg(path);
            c
        } else {
            Command::new(path)
        };
        c.current_dir(self.dir.path())
            .env_remove("PGDATA")
            .env_remove("PGHOST")
            .env_remove("PGPORT")
            .stdin(Stdio::null());
        c
    }

    /// `postgres://hoist@127.0.0.1:PORT/NAME`.
    pub fn url_of(&self, database: &str) -> String {
        format!("postgres://hoist@127.0.0.1:{}/{database}", self.port)
    }

    /// A new empty database; its URL.
    pub fn fresh_database(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .args(["-h", "127.0.0.1", "-U", "hoist"])
            .args(["-p", &self.port.to_string(), name])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url_of(name)
    }

    /// Run SQL with `psql` against `database`; its output (unaligned,
    /// tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "hoist",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
            ])
            .args(["-p", &self.port.to_string(), "-d", database, "-c", sql])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stop the server at once (what a crash of the database looks like to
    /// its clients).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGQUIT: immediate shutdown.
            let _ = Command::new("kill")
                .args(["-QUIT", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Start the server again on the same data and port, and wait until it
    /// accepts connections.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("server log");
        if crate::is_root() {
            let (uid, gid) = user();
            let _ =
                std::os::unix::fs::chown(self.dir.path().join("server.log"), Some(uid), Some(gid));
        }
        let child = self
            .command("postgres")
            .arg("-D")
            .arg(self.data())
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!(
                "unix_socket_directories={}",
                self.dir.path().display()
            ))
            .args(["-c", "fsync=off", "-c", "max_connections=200"])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self
                .command("pg_isready")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "hoist",
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ready {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "postgres exited ({status}): {}",
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not accept connections within 60 s: {}",
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// The temp dir (data directory and socket).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
