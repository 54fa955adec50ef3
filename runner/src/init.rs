//! The sandbox init: a re-executed copy of the calling binary (runc's and
//! BuildKit's pattern) that becomes PID 1 of the step's namespaces.
//!
//! Protocol with the runner (see `docs/runner.md`): fd 0/1/2 are the step's
//! stdin/stdout/stderr, fd 3 carries an [`InitConfig`] as JSON until EOF, fd 4
//! receives one [`InitMessage`] as JSON when the step ended or setup failed.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hoist_untrusted::text::error_chain;
use serde::{Deserialize, Serialize};

use crate::rootfs::{prepare_root, LinuxSyscalls, RootPlan, RootfsError};
use crate::security::SecurityError;
use crate::spec::DEFAULT_PATH;
use crate::sys;
use crate::user::{resolve_user, ResolvedUser, UserError};
use hoist_untrusted::Accounts;

/// The hidden first argument that turns the binary into the sandbox init.
pub const INIT_MARKER: &str = "__hoist-runner-init__";

/// Everything the init needs, sent over fd 3.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub plan: RootPlan,
    pub argv: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub no_new_privileges: bool,
    pub seccomp: bool,
    /// Keep all capabilities (see `RunSpec::all_capabilities`).
    #[serde(default)]
    pub all_capabilities: bool,
    /// See `RunSpec::discard_syncs`.
    #[serde(default)]
    pub discard_syncs: bool,
    /// Run an external OCI runtime instead of the step (see `external.rs`).
    pub external: Option<crate::external::ExternalPlan>,
    /// `--ulimit`s, set before privileges are dropped.
    #[serde(default)]
    pub ulimits: Vec<crate::spec::Ulimit>,
    /// fd 0 is a terminal that becomes the step's controlling terminal.
    #[serde(default)]
    pub tty: bool,
}

/// The init's answer on fd 4.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) enum InitMessage {
    Exited(i32),
    Signaled(i32),
    Error(String),
    /// The step's program could not be executed; `not_found` when it does
    /// not exist (Docker's exit 127), else it exists but cannot run (126).
    ExecFailed {
        message: String,
        not_found: bool,
    },
}

/// Errors of the sandbox init, sent to the runner as text.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    #[error("failed to read the sandbox configuration")]
    Config(#[source] std::io::Error),
    #[error("failed to decode the sandbox configuration")]
    Decode(#[source] serde_json::Error),
    #[error("failed to prepare the root filesystem")]
    Rootfs(#[from] RootfsError),
    #[error("failed to resolve the step's user")]
    User(#[from] UserError),
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Exec(String),
    #[error("{message}")]
    ExecFailed { message: String, not_found: bool },
    #[error(transparent)]
    External(#[from] crate::external::ExternalError),
}

/// Turn this process into the sandbox init when it was started as one, and
/// never return in that case; otherwise return at once.
///
/// Call this first thing in `main` of any binary used as the runner's init
/// program (the hoist binary, and test binaries), before any thread starts.
pub fn init_if_requested() {
    let mut args = std::env::args_os();
    args.next();
    if args.next().as_deref() != Some(OsStr::new(INIT_MARKER)) {
        return;
    }
    let code = init_main();
    std::process::exit(code)
}

fn init_main() -> i32 {
    // Signals are taken synchronously with sigwaitinfo (PID 1 has no default
    // actions anyway); the step's process unblocks them before exec.
    sys::block_all_signals();
    let Ok(status_fd) = sys::inherited_fd(4) else {
        return 125;
    };
    let mut status = File::from(status_fd);
    let message = match run_init() {
        Ok(message) => message,
        Err(InitError::ExecFailed { message, not_found }) => {
            InitMessage::ExecFailed { message, not_found }
        }
        Err(e) => InitMessage::Error(error_chain(&e)),
    };
    let code = match message {
        InitMessage::Exited(c) => c,
        InitMessage::Signaled(s) => 128 + s,
        InitMessage::Error(_) => 125,
        InitMessage::ExecFailed { not_found, .. } => {
            if not_found {
                127
            } else {
                126
            }
        }
    };
    if let Ok(json) = serde_json::to_vec(&message) {
        let _ = status.write_all(&json);
    }
    code
}

fn run_init() -> Result<InitMessage, InitError> {
    let control = sys::inherited_fd(3).map_err(InitError::Config)?;
    let mut text = Vec::new();
    File::from(control)
        .read_to_end(&mut text)
        .map_err(InitError::Config)?;
    if text.is_empty() {
        // The runner went away before sending anything: nothing to do.
        return Err(InitError::Exec(
            "the runner closed the sandbox configuration pipe".into(),
        ));
    }
    let config: InitConfig = serde_json::from_slice(&text).map_err(InitError::Decode)?;
    if let Some(external) = &config.external {
        return Err(crate::external::exec_runtime(&config, external).into());
    }
    // The runner moved us into the step's cgroup before sending the config:
    // a cgroup namespace made now is rooted there.
    if let Err(e) = sys::unshare(libc::CLONE_NEWCGROUP) {
        tracing::debug!(error = %e, "no cgroup namespace");
    }
    prepare_root(&LinuxSyscalls, &config.plan)?;
    // After pivot_root, `/` is the image's root.
    let accounts = Accounts::read_system().map_err(UserError::from)?;
    let user = resolve_user(&config.user, &accounts)?;
    let env = complete_env(&config.env, &user);
    ensure_cwd(&config.cwd, &user)?;
    let program = find_program(&config.argv, &env)?;
    let filters = if config.seccomp {
        Some(
            crate::security::default_seccomp_filters(config.all_capabilities, config.discard_syncs)
                .map_err(|e| InitError::Exec(error_chain(&e)))?,
        )
    } else {
        None
    };

    let (err_read, err_write) = sys::pipe().map_err(|source| InitError::Io {
        action: "create",
        path: "exec error pipe".into(),
        source,
    })?;
    let child = match sys::fork().map_err(|source| InitError::Io {
        action: "fork",
        path: program.clone(),
        source,
    })? {
        sys::Fork::Child => {
            drop(err_read);
            let (errno, err) = exec_step(&config, &user, &program, &env, filters.as_deref());
            let mut w = File::from(err_write);
            let mut report = errno.to_ne_bytes().to_vec();
            report.extend_from_slice(err.as_bytes());
            let _ = w.write_all(&report);
            sys::exit_now(127)
        }
        sys::Fork::Parent(pid) => pid,
    };
    drop(err_write);
    let mut exec_error = Vec::new();
    let _ = File::from(err_read).read_to_end(&mut exec_error);
    if exec_error.len() >= 4 {
        let _ = sys::wait4(child);
        let (errno, text) = exec_error.split_at(4);
        let errno = i32::from_ne_bytes([errno[0], errno[1], errno[2], errno[3]]);
        let message = String::from_utf8_lossy(text).into_owned();
        return Err(match errno {
            0 => InitError::Exec(message),
            libc::ENOENT | libc::ENOTDIR => InitError::ExecFailed {
                message,
                not_found: true,
            },
            _ => InitError::ExecFailed {
                message,
                not_found: false,
            },
        });
    }
    Ok(supervise(child))
}

/// Reap every child (we are PID 1), forward signals to the step, and return
/// when the step's main process ends. Exiting makes the kernel kill whatever
/// else is left in the PID namespace.
fn supervise(child: libc::pid_t) -> InitMessage {
    loop {
        let sig = match sys::wait_signal() {
            Ok(sig) => sig,
            Err(_) => continue,
        };
        if sig == libc::SIGCHLD {
            while let Some((pid, status)) = sys::reap_any() {
                if pid == child {
                    return match sys::decode_status(status) {
                        Ok(code) => InitMessage::Exited(code),
                        Err(signal) => InitMessage::Signaled(signal),
                    };
                }
            }
        } else {
            let _ = sys::kill(child, sig);
        }
    }
}

/// In the forked child: drop privileges and exec. Returns only on failure,
/// with the message for the runner and the errno of a failed `execve` (0
/// when something before it failed).
fn exec_step(
    config: &InitConfig,
    user: &ResolvedUser,
    program: &Path,
    env: &[String],
    filters: Option<&[Vec<libc::sock_filter>]>,
) -> (i32, String) {
    sys::reset_signals();
    if let Err(e) = sys::setsid() {
        return (0, format!("setsid: {e}"));
    }
    if config.tty {
        if let Err(e) = sys::set_controlling_terminal(0) {
            return (
                0,
                format!("make the terminal the controlling terminal: {e}"),
            );
        }
    }
    let result = (|| -> Result<(), String> {
        // While the init still holds its capabilities: raising a hard limit
        // needs CAP_SYS_RESOURCE.
        for limit in &config.ulimits {
            sys::setrlimit(limit.name.resource(), limit.soft, limit.hard).map_err(|e| {
                format!(
                    "setrlimit {}={}:{}: {e}",
                    limit.name.name(),
                    limit.soft,
                    limit.hard
                )
            })?;
        }
        let mut groups = user.additional_gids.clone();
        if !groups.contains(&user.gid) {
            groups.insert(0, user.gid);
        }
        if let Err(e) = sys::setgroups(&groups) {
            // A user namespace without a group map helper denies setgroups;
            // only fatal when the step asked for other groups.
            if user.additional_gids.iter().any(|g| *g != user.gid) {
                return Err(format!("setgroups {groups:?}: {e}"));
            }
        }
        if !config.all_capabilities {
            crate::security::drop_bounding_set().map_err(|e| error_chain(&e as &SecurityError))?;
        }
        if config.no_new_privileges {
            sys::set_no_new_privs().map_err(|e| format!("set no_new_privs: {e}"))?;
        }
        if let Some(filters) = filters {
            for f in filters {
                sys::install_seccomp(f).map_err(|e| format!("install seccomp filter: {e}"))?;
            }
        }
        sys::setresgid(user.gid).map_err(|e| format!("setresgid {}: {e}", user.gid))?;
        sys::setresuid(user.uid).map_err(|e| format!("setresuid {}: {e}", user.uid))?;
        if user.uid == 0 && !config.all_capabilities {
            crate::security::limit_root_capabilities().map_err(|e| error_chain(&e))?;
        }
        std::env::set_current_dir(&config.cwd).map_err(|e| format!("chdir {}: {e}", config.cwd))
    })();
    if let Err(e) = result {
        return (0, e);
    }
    let err = sys::execve(program, &config.argv, env);
    (
        err.raw_os_error().unwrap_or(libc::EIO),
        format!("exec {}: {err}", program.display()),
    )
}

/// Add `PATH` and `HOME` when missing, as Docker does.
fn complete_env(env: &[String], user: &ResolvedUser) -> Vec<String> {
    let mut env = env.to_vec();
    let has = |env: &[String], key: &str| env.iter().any(|e| e.split('=').next() == Some(key));
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home));
    }
    env
}

fn ensure_cwd(cwd: &str, user: &ResolvedUser) -> Result<(), InitError> {
    let path = Path::new(cwd);
    if path.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(path).map_err(|source| InitError::Io {
        action: "create working directory",
        path: path.to_path_buf(),
        source,
    })?;
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).map_err(|source| InitError::Io {
        action: "chown working directory",
        path: path.to_path_buf(),
        source,
    })
}

/// The program to exec: argv[0] itself when it has a `/`, else the first
/// executable of that name in the step's `PATH` (inside the new root).
fn find_program(argv: &[String], env: &[String]) -> Result<PathBuf, InitError> {
    let name = argv
        .first()
        .ok_or_else(|| InitError::Exec("no command given".into()))?;
    if name.contains('/') {
        return Ok(PathBuf::from(name));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if let Ok(meta) = std::fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    Err(InitError::ExecFailed {
        message: format!("exec: {name:?}: executable file not found in $PATH"),
        not_found: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_gains_path_and_home_only_when_missing() {
        let user = ResolvedUser {
            uid: 1,
            gid: 1,
            additional_gids: vec![],
            home: "/home/u".into(),
        };
        let env = complete_env(&["A=1".into()], &user);
        assert_eq!(
            env,
            vec![
                "A=1".to_string(),
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/home/u".into()
            ]
        );
        let env = complete_env(&["HOME=/x".into(), "PATH=/bin".into()], &user);
        assert_eq!(env, vec!["HOME=/x".to_string(), "PATH=/bin".into()]);
    }

    #[test]
    fn messages_round_trip() {
        for m in [
            InitMessage::Exited(3),
            InitMessage::Signaled(9),
            InitMessage::Error("x".into()),
        ] {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<InitMessage>(&json).unwrap(), m);
        }
    }
}
