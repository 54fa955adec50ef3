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
        }
    }
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
