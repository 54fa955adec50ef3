//! The data a caller hands to the runner, and what it gets back.
//!
//! Everything here is plain data (serde) because the spec crosses a pipe to the
//! sandbox init, which is a re-executed copy of the calling binary.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `PATH` given to a step whose environment has none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Hostname of a step unless the spec says otherwise (BuildKit uses
/// `buildkitsandbox`).
pub const DEFAULT_HOSTNAME: &str = "hoist";

/// One process to run in a sandbox.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RunSpec {
    /// The root filesystem of the step.
    pub rootfs: Rootfs,
    /// Program and arguments; a program name without `/` is looked up in the
    /// step's `PATH` inside the rootfs.
    pub argv: Vec<String>,
    /// Environment as `KEY=value`; `PATH` and `HOME` are added when missing,
    /// as Docker does.
    pub env: Vec<String>,
    /// Absolute working directory inside the rootfs; created (owned by the
    /// step's user) when missing, as BuildKit does.
    pub cwd: String,
    /// `name[:group]` or numeric `uid[:gid]`, resolved through the rootfs's
    /// `/etc/passwd` and `/etc/group`. Empty means root.
    pub user: String,
    /// Extra mounts, mounted in order after the rootfs, `/proc`, `/sys` and `/dev`.
    pub mounts: Vec<Mount>,
    /// Network mode of the step.
    pub network: NetworkMode,
    /// Hostname inside the step (its own UTS namespace).
    pub hostname: String,
    /// Resource limits, applied through cgroups.
    pub limits: Limits,
    /// Set `no_new_privs` on the step (setuid binaries and file capabilities
    /// gain nothing). Docker leaves this off by default; hoist turns it on.
    pub no_new_privileges: bool,
    /// Install the default seccomp filter (see `docs/runner.md`).
    pub seccomp: bool,
    /// Keep every capability the runner has instead of Docker's default set
    /// (`RUN --security=insecure`, like `docker run --privileged`).
    pub all_capabilities: bool,
    /// With the seccomp filter on, `fsync`, `fdatasync`, `sync`, `syncfs`
    /// and `sync_file_range` return success at once without flushing
    /// anything (what `eatmydata` does). For build steps: a step's files
    /// are only kept through the layer hoist writes and syncs itself, so a
    /// package manager's thousands of flushes buy nothing but time
    /// (`docs/runner.md`, "Flushes in build steps"). Off in
    /// [`RunSpec::new`], so `hoist run` flushes for real.
    #[serde(default)]
    pub discard_syncs: bool,
    /// `--add-host`, `--shm-size`, `--ulimit`.
    #[serde(default)]
    pub options: StepOptions,
}

impl RunSpec {
    /// A spec with Docker-like defaults: root user, cwd `/`, default network,
    /// hostname [`DEFAULT_HOSTNAME`], no limits, `no_new_privs` and seccomp on.
    pub fn new(rootfs: Rootfs, argv: Vec<String>) -> RunSpec {
        RunSpec {
            rootfs,
            argv,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".to_string(),
            user: String::new(),
            mounts: Vec::new(),
            network: NetworkMode::Default,
            hostname: DEFAULT_HOSTNAME.to_string(),
            limits: Limits::default(),
            no_new_privileges: true,
            seccomp: true,
            all_capabilities: false,
            discard_syncs: false,
            options: StepOptions::default(),
        }
    }
}

/// What `docker build --add-host`, `--shm-size` and `--ulimit` set for
/// every step.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StepOptions {
    /// `/etc/hosts` entries after the step's own: (name, address).
    pub extra_hosts: Vec<(String, std::net::IpAddr)>,
    /// Size of `/dev/shm` in bytes (default 64 MiB, as Docker).
    pub shm_size: Option<u64>,
    /// Resource limits set with setrlimit(2) before the step starts.
    pub ulimits: Vec<Ulimit>,
}

impl StepOptions {
    /// True when nothing differs from the defaults.
    pub fn is_default(&self) -> bool {
        self == &StepOptions::default()
    }
}

/// A resource `--ulimit` can limit, by Docker's name (serialized as that
/// name, so a step's cache key reads `"nofile"`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Rlimit {
    /// `core`: `RLIMIT_CORE`.
    Core,
    /// `cpu`: `RLIMIT_CPU`.
    Cpu,
    /// `data`: `RLIMIT_DATA`.
    Data,
    /// `fsize`: `RLIMIT_FSIZE`.
    Fsize,
    /// `locks`: `RLIMIT_LOCKS`.
    Locks,
    /// `memlock`: `RLIMIT_MEMLOCK`.
    Memlock,
    /// `msgqueue`: `RLIMIT_MSGQUEUE`.
    Msgqueue,
    /// `nice`: `RLIMIT_NICE`.
    Nice,
    /// `nofile`: `RLIMIT_NOFILE`.
    Nofile,
    /// `nproc`: `RLIMIT_NPROC`.
    Nproc,
    /// `rss`: `RLIMIT_RSS`.
    Rss,
    /// `rtprio`: `RLIMIT_RTPRIO`.
    Rtprio,
    /// `rttime`: `RLIMIT_RTTIME`.
    Rttime,
    /// `sigpending`: `RLIMIT_SIGPENDING`.
    Sigpending,
    /// `stack`: `RLIMIT_STACK`.
    Stack,
}

impl Rlimit {
    /// Every resource, in Docker's (alphabetical) order.
    pub const ALL: [Rlimit; 15] = [
        Rlimit::Core,
        Rlimit::Cpu,
        Rlimit::Data,
        Rlimit::Fsize,
        Rlimit::Locks,
        Rlimit::Memlock,
        Rlimit::Msgqueue,
        Rlimit::Nice,
        Rlimit::Nofile,
        Rlimit::Nproc,
        Rlimit::Rss,
        Rlimit::Rtprio,
        Rlimit::Rttime,
        Rlimit::Sigpending,
        Rlimit::Stack,
    ];

    /// Docker's name (`nofile`).
    pub fn name(self) -> &'static str {
        match self {
            Rlimit::Core => "core",
            Rlimit::Cpu => "cpu",
            Rlimit::Data => "data",
            Rlimit::Fsize => "fsize",
            Rlimit::Locks => "locks",
            Rlimit::Memlock => "memlock",
            Rlimit::Msgqueue => "msgqueue",
            Rlimit::Nice => "nice",
            Rlimit::Nofile => "nofile",
            Rlimit::Nproc => "nproc",
            Rlimit::Rss => "rss",
            Rlimit::Rtprio => "rtprio",
            Rlimit::Rttime => "rttime",
            Rlimit::Sigpending => "sigpending",
            Rlimit::Stack => "stack",
        }
    }

    /// The setrlimit(2) resource.
    pub fn resource(self) -> libc::__rlimit_resource_t {
        match self {
            Rlimit::Core => libc::RLIMIT_CORE,
            Rlimit::Cpu => libc::RLIMIT_CPU,
            Rlimit::Data => libc::RLIMIT_DATA,
            Rlimit::Fsize => libc::RLIMIT_FSIZE,
            Rlimit::Locks => libc::RLIMIT_LOCKS,
            Rlimit::Memlock => libc::RLIMIT_MEMLOCK,
            Rlimit::Msgqueue => libc::RLIMIT_MSGQUEUE,
            Rlimit::Nice => libc::RLIMIT_NICE,
            Rlimit::Nofile => libc::RLIMIT_NOFILE,
            Rlimit::Nproc => libc::RLIMIT_NPROC,
            Rlimit::Rss => libc::RLIMIT_RSS,
            Rlimit::Rtprio => libc::RLIMIT_RTPRIO,
            Rlimit::Rttime => libc::RLIMIT_RTTIME,
            Rlimit::Sigpending => libc::RLIMIT_SIGPENDING,
            Rlimit::Stack => libc::RLIMIT_STACK,
        }
    }
}

/// One `--ulimit NAME=SOFT[:HARD]`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Ulimit {
    /// The resource.
    pub name: Rlimit,
    /// The soft limit (`-1`: unlimited).
    pub soft: i64,
    /// The hard limit (`-1`: unlimited).
    pub hard: i64,
}

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]` as `docker build --ulimit` does (`-1` is
    /// unlimited; the soft limit may not exceed the hard one).
    pub fn parse(text: &str) -> Result<Ulimit, String> {
        let shown = hoist_untrusted::escape(text);
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| format!("invalid ulimit `{shown}`: expected NAME=SOFT[:HARD]"))?;
        let name = Rlimit::ALL
            .into_iter()
            .find(|r| r.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Rlimit::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "invalid ulimit `{shown}`: unknown resource (one of {})",
                    names.join(", ")
                )
            })?;
        let number = |v: &str| -> Result<i64, String> {
            match v.parse::<i64>() {
                Ok(n) if n >= -1 => Ok(n),
                _ => Err(format!(
                    "invalid ulimit `{shown}`: `{}` is not a limit (a number, or -1 for unlimited)",
                    hoist_untrusted::escape(v)
                )),
            }
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (number(s)?, number(h)?),
            None => {
                let n = number(values)?;
                (n, n)
            }
        };
        let bound = |n: i64| if n < 0 { u64::MAX } else { n as u64 };
        if bound(soft) > bound(hard) {
            return Err(format!(
                "invalid ulimit `{shown}`: the soft limit is above the hard one"
            ));
        }
        Ok(Ulimit { name, soft, hard })
    }
}

/// Parses `--add-host NAME:ADDRESS` (also `NAME=ADDRESS`, as Docker 25
/// accepts; an IPv6 address may be in brackets).
pub fn parse_extra_host(text: &str) -> Result<(String, std::net::IpAddr), String> {
    let shown = hoist_untrusted::escape(text);
    let (name, address) = match text.split_once('=') {
        Some(pair) => pair,
        None => text
            .split_once(':')
            .ok_or_else(|| format!("invalid --add-host `{shown}`: expected NAME:ADDRESS"))?,
    };
    let address = address.trim_start_matches('[').trim_end_matches(']');
    let ip: std::net::IpAddr = address.parse().map_err(|_| {
        format!(
            "invalid --add-host `{shown}`: `{}` is not an IP address",
            hoist_untrusted::escape(address)
        )
    })?;
    // One hosts-file token: no space, no control character, no comment.
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '#')
    {
        return Err(format!(
            "invalid --add-host `{shown}`: `{}` is not a host name",
            hoist_untrusted::escape(name)
        ));
    }
    Ok((name.to_owned(), ip))
}

/// How a step's standard streams are connected, for a person at a
/// terminal (`hoist run`). The default is a build step's: stdin
/// `/dev/null`, stdout and stderr piped to the output callback.
#[derive(Clone, Copy, Debug, Default)]
pub struct Attach<'a> {
    /// Copied into the step's stdin until it ends (`-i`); the step's stdin
    /// is a pipe (or the terminal below), never this descriptor itself.
    pub stdin: Option<std::os::fd::BorrowedFd<'a>>,
    /// Give the step a new pseudo-terminal of this size as stdin, stdout,
    /// stderr and controlling terminal (`-t`); its output comes back as
    /// [`Stream::Stdout`].
    pub tty: Option<WindowSize>,
    /// Signals to forward to the step and terminal resizes.
    pub control: Option<&'a crate::Control>,
}

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// Where the root filesystem comes from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub enum Rootfs {
    /// A directory that is already populated (or already mounted) on the host.
    Dir(PathBuf),
    /// Mounts to perform, in order, inside the step's mount namespace to build
    /// the root (what a snapshotter returns, e.g. one overlay mount at `/`).
    Mounts(Vec<MountData>),
}

/// A mount described as data, as snapshotters return them.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MountData {
    /// Filesystem type: `overlay`, `bind`, `tmpfs`, ...
    pub kind: String,
    /// Source (device, directory or `overlay`).
    pub source: String,
    /// Where to mount, relative to the root of the step (`/` for the root itself).
    pub target: String,
    /// Options as `mount(8)` spells them: `ro`, `rbind`, `lowerdir=...`, ...
    pub options: Vec<String>,
}

/// An extra mount of a step.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum Mount {
    /// A host directory or file bound at `target` (cache dirs are rw binds).
    Bind {
        /// Host path.
        source: PathBuf,
        /// Absolute path inside the step.
        target: String,
        /// Mount read-only.
        readonly: bool,
    },
    /// A fresh tmpfs.
    Tmpfs {
        /// Absolute path inside the step.
        target: String,
        /// Size limit in bytes (`None`: the kernel's default, half of RAM).
        size: Option<u64>,
        /// Mode of the tmpfs root (default 0o1777).
        mode: Option<u32>,
    },
    /// A secret: the content of the host file `source` copied onto a private
    /// tmpfs and bound read-only at `target`. It never touches the rootfs.
    Secret {
        /// Host file holding the secret.
        source: PathBuf,
        /// Absolute path inside the step (BuildKit: `/run/secrets/<id>`).
        target: String,
        /// Permission bits of the file (BuildKit: 0o400).
        mode: u32,
        /// Owner inside the step.
        uid: u32,
        /// Group inside the step.
        gid: u32,
    },
    /// An ssh-agent socket of the host bound at `target`.
    SshAgent {
        /// Host socket (for example `$SSH_AUTH_SOCK`).
        socket: PathBuf,
        /// Absolute path inside the step (BuildKit: `/run/buildkit/ssh_agent.0`).
        target: String,
    },
}

impl Mount {
    /// The absolute path inside the step where this mount lands.
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Secret { target, .. }
            | Mount::SshAgent { target, .. } => target,
        }
    }

    /// True when the mount target is a file (not a directory).
    pub(crate) fn target_is_file(&self) -> bool {
        match self {
            Mount::Bind { source, .. } => !source.is_dir(),
            Mount::Tmpfs { .. } => false,
            Mount::Secret { .. } | Mount::SshAgent { .. } => true,
        }
    }
}

/// Network mode of a step.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A new network namespace with only `lo`, up.
    None,
    /// The host's network, and the host's hostname and `/etc/hosts`.
    Host,
    /// A new network namespace with egress through slirp4netns: DNS, the
    /// internet and the host's non-loopback addresses, but not the host's
    /// loopback (see the `net` module for the model and why slirp4netns);
    /// the step's own hostname and a generated `/etc/hosts`.
    #[default]
    Default,
}

/// Resource limits of a step. `None` means unlimited.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Default)]
pub struct Limits {
    /// Memory limit in bytes (swap is limited to the same amount again, as Docker does).
    pub memory: Option<u64>,
    /// CPU quota in CPUs (1.5 = one and a half CPUs).
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads.
    pub pids: Option<i64>,
}

impl Limits {
    /// True when any limit is set.
    pub fn any(&self) -> bool {
        self.memory.is_some() || self.cpus.is_some() || self.pids.is_some()
    }
}

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Stream {
    /// The step's standard output.
    Stdout,
    /// The step's standard error.
    Stderr,
}

/// How the step's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal.
    Signaled(i32),
}

impl ExitStatus {
    /// True for `Exited(0)`.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exit status {code}"),
            ExitStatus::Signaled(sig) => write!(f, "killed by signal {sig}"),
        }
    }
}

/// Resources a step used.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// Wall time from start of the sandbox to the end of the step.
    pub wall: Duration,
    /// CPU time, user plus system, of every process of the step.
    pub cpu: Duration,
    /// Peak memory in bytes: the cgroup's peak when a cgroup was used, else the
    /// largest resident set of a single process of the step.
    pub peak_memory: Option<u64>,
}

/// What came of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunResult {
    /// Exit code or signal of the main process.
    pub status: ExitStatus,
    /// True when the kernel's OOM killer killed a process of the step because
    /// of its memory limit.
    pub oom_killed: bool,
    /// Resources used.
    pub usage: Usage,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ulimits_parse_as_docker_reads_them() {
        let l = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((l.soft, l.hard), (1024, 2048));
        assert_eq!(l.name.resource(), libc::RLIMIT_NOFILE);
        // The cache key and the runner's spec carry Docker's name.
        assert_eq!(
            serde_json::to_value(&l).unwrap(),
            serde_json::json!({"name": "nofile", "soft": 1024, "hard": 2048})
        );
        for r in Rlimit::ALL {
            assert_eq!(Ulimit::parse(&format!("{}=1", r.name())).unwrap().name, r);
        }
        let l = Ulimit::parse("core=-1").unwrap();
        assert_eq!((l.soft, l.hard), (-1, -1));
        assert!(Ulimit::parse("nofile=10:5")
            .unwrap_err()
            .contains("soft limit is above the hard one"));
        assert!(Ulimit::parse("nofile=-1:5").is_err());
        let e = Ulimit::parse("files=1").unwrap_err();
        assert!(
            e.contains("unknown resource") && e.contains("nofile"),
            "{e}"
        );
        assert!(Ulimit::parse("nofile").is_err());
        assert!(Ulimit::parse("nofile=x").is_err());
        assert!(Ulimit::parse("nproc=-2").is_err());
    }

    #[test]
    fn extra_hosts_parse_as_docker_reads_them() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        assert_eq!(
            parse_extra_host("db:10.0.0.2").unwrap(),
            ("db".to_string(), ip("10.0.0.2"))
        );
        assert_eq!(
            parse_extra_host("v6:::1").unwrap(),
            ("v6".to_string(), ip("::1"))
        );
        assert_eq!(
            parse_extra_host("v6=[fe80::1]").unwrap(),
            ("v6".to_string(), ip("fe80::1"))
        );
        assert!(parse_extra_host("db").is_err());
        assert!(parse_extra_host("db:host-gateway").is_err());
        let e = parse_extra_host("a\nb:1.2.3.4").unwrap_err();
        assert!(e.contains("a\\nb") && !e.contains('\n'), "{e}");
        assert!(parse_extra_host("a b:1.2.3.4").is_err());
        assert!(parse_extra_host(":1.2.3.4").is_err());
    }
}
