//! hoist-runner: run one process in a sandbox, from a spec.
//!
//! It owns namespaces (mount, PID, UTS, IPC, cgroup, network unless the host's,
//! user when rootless), the default network's egress (slirp4netns), the
//! step's root and mounts (`/proc`, read-only `/sys`, a minimal `/dev`,
//! per-run `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname`, binds, tmpfs,
//! secrets, an ssh-agent socket), users and groups, capabilities,
//! `no_new_privs`, a seccomp filter, cgroup limits and accounting, and
//! optionally handing the same spec to an external OCI
//! runtime (runc, crun). It knows nothing of Dockerfiles, images or layers.
//!
//! The sandbox's PID 1 is a re-executed copy of the calling binary (the
//! pattern of runc and BuildKit): any binary that uses the runner must call
//! [`init_if_requested`] first thing in `main`.
//!
//! ```no_run
//! use hoist_runner::{Runner, RunnerConfig, RunSpec, Rootfs, Stream};
//!
//! fn main() {
//!     hoist_runner::init_if_requested(); // becomes the sandbox init when asked
//!     let runner = Runner::new(RunnerConfig::default()).unwrap();
//!     let spec = RunSpec::new(
//!         Rootfs::Dir("/path/to/rootfs".into()),
//!         vec!["sh".into(), "-c".into(), "echo hi".into()],
//!     );
//!     let result = runner
//!         .run(&spec, &mut |stream: Stream, bytes: &[u8]| {
//!             let _ = (stream, bytes); // forward to progress output
//!         })
//!         .unwrap();
//!     assert!(result.status.success());
//! }
//! ```
#![warn(missing_docs)]

mod cgroup;
mod external;
mod init;
mod net;
mod rootfs;
mod rootless;
mod run;
mod security;
mod spec;
mod stubs;
mod sys;
mod user;

use std::path::PathBuf;

pub use cgroup::{CgroupError, CgroupVersion};
pub use external::ExternalError;
pub use init::{init_if_requested, INIT_MARKER};
pub use net::NetError;
pub use rootfs::RootfsError;
pub use run::{Cancel, Control, Runner, RunnerConfig, Runtime, CANCEL_GRACE};
pub use security::{SecurityError, DEFAULT_CAPABILITIES};
pub use spec::{
    parse_extra_host, Attach, ExitStatus, Limits, Mount, MountData, NetworkMode, Rlimit, Rootfs,
    RunResult, RunSpec, StepOptions, Stream, Ulimit, Usage, WindowSize, DEFAULT_HOSTNAME,
    DEFAULT_PATH,
};
pub use user::{resolve_user, ResolvedUser, UserError};

/// Errors of a run. A step that runs and fails is not an error: it is a
/// [`RunResult`] with a non-zero [`ExitStatus`].
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The spec is unusable.
    #[error("invalid run spec: {0}")]
    InvalidSpec(String),
    /// A file or directory of the run's state could not be handled.
    #[error("failed to {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Preparing the root failed on the runner's side.
    #[error(transparent)]
    Rootfs(RootfsError),
    /// Cgroup setup failed.
    #[error("failed to set up the step's cgroup")]
    Cgroup(#[source] CgroupError),
    /// The init program could not be started.
    #[error("failed to start the sandbox init {program}")]
    Spawn {
        /// The init program.
        program: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The step's default network could not be set up.
    #[error("failed to set up the step's network")]
    Network(#[source] NetError),
    /// Writing uid/gid maps for a rootless run failed.
    #[error("failed to map user ids for the rootless sandbox: {0}")]
    IdMap(String),
    /// The sandbox reported a setup failure (mounts, user, exec, ...).
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// The step's program could not be executed. Its text is the same as a
    /// setup failure's; `not_found` tells Docker's exit 127 (no such
    /// program) from 126 (it exists but cannot be executed).
    #[error("sandbox setup failed: {message}")]
    Exec {
        /// What failed, e.g. `exec: "x": executable file not found in $PATH`.
        message: String,
        /// The program does not exist.
        not_found: bool,
    },
    /// The sandbox init died without reporting.
    #[error("sandbox init died without reporting a result ({0})")]
    InitDied(String),
    /// The external runtime binary is not on `PATH`.
    #[error("OCI runtime {0} not found on PATH")]
    RuntimeNotFound(PathBuf),
    /// The configuration could not be encoded.
    #[error("failed to encode the sandbox configuration")]
    Encode(#[source] serde_json::Error),
    /// The init's report could not be decoded.
    #[error("failed to decode the sandbox's report")]
    Decode(#[source] serde_json::Error),
}

impl RunResult {
    /// A one-line explanation when the step did not succeed, e.g.
    /// `ran out of memory (killed by the OOM killer at its 64 MiB limit)`.
    pub fn failure_message(&self, limits: &Limits) -> Option<String> {
        if self.oom_killed {
            let limit = limits
                .memory
                .map(|m| format!(" at its {} MiB limit", m / (1024 * 1024)))
                .unwrap_or_default();
            return Some(format!(
                "ran out of memory (a process was killed by the OOM killer{limit}; {})",
                self.status
            ));
        }
        (!self.status.success()).then(|| self.status.to_string())
    }
}
