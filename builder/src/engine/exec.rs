//! Running a RUN step's process on a mounted root.
//!
//! Interim sandbox until the runner crate lands on this branch: util-linux
//! `unshare` gives the step its own mount and PID namespaces (and network
//! namespace for `--network=none`; the default network is refused here), a fresh `/proc`, the root as `/`, the working
//! directory and the user. The process tree dies with the step (`--kill-child`).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use hoist_frontend::graph::NetworkMode;

use super::files::Owner;
use super::{io_error, EngineError};
use crate::op::OpContext;
use crate::progress::LogStream;

/// One process to run.
pub struct ProcessSpec<'a> {
    /// Program and arguments.
    pub argv: &'a [String],
    /// `KEY=value` environment.
    pub env: &'a [String],
    /// Working directory inside the root.
    pub cwd: &'a str,
    /// Numeric user, `None` for root.
    pub user: Option<Owner>,
    /// Network mode.
    pub network: NetworkMode,
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exit code.
    Code(i32),
    /// Killed by a signal.
    Signal(i32),
}

/// Runs the process with `root` as `/`, streaming its output to the op's log.
/// Returns `Ok(None)` if the build was cancelled (the process was killed).
pub fn run(
    root: &Path,
    spec: &ProcessSpec<'_>,
    context: &OpContext,
) -> Result<Option<Exit>, EngineError> {
    let proc_dir = root.join("proc");
    let made_proc = !proc_dir.exists();
    if made_proc {
        std::fs::create_dir(&proc_dir).map_err(io_error("create", &proc_dir))?;
    }
    let result = run_inner(root, spec, context);
    if made_proc {
        let _ = std::fs::remove_dir(&proc_dir);
    }
    result
}

fn run_inner(
    root: &Path,
    spec: &ProcessSpec<'_>,
    context: &OpContext,
) -> Result<Option<Exit>, EngineError> {
    let mut command = Command::new("unshare");
    command
        .arg("--mount")
        .arg("--pid")
        .arg("--uts")
        .arg("--ipc")
        .arg("--fork")
        .arg("--kill-child")
        // unshare changes root before it mounts proc: the path is inside the root.
        .arg("--mount-proc=/proc")
        .arg(format!("--root={}", root.display()))
        .arg(format!(
            "--wd={}",
            if spec.cwd.is_empty() { "/" } else { spec.cwd }
        ));
    match spec.network {
        NetworkMode::None => {
            command.arg("--net");
        }
        NetworkMode::Host => {}
        // The default network is a private namespace with egress, which
        // only the runner makes: never fall back to the host's.
        NetworkMode::Default => {
            return Err(EngineError::Invalid(
                "the default network of RUN steps needs the sandbox runner, which could not be \
                 set up (see the log); build with --network none, or --network host with \
                 --allow network.host"
                    .into(),
            ))
        }
    }
    if let Some(owner) = spec.user {
        command
            .arg(format!("--setgid={}", owner.gid))
            .arg(format!("--setuid={}", owner.uid));
    }
    command.arg("--").args(spec.argv);
    command.env_clear();
    for entry in spec.env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        command.env(k, v);
    }
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(io_error("start the sandbox (unshare) for", root))?;
    let pump = |stream: Option<Box<dyn Read + Send>>, kind: LogStream| {
        let context = context.clone();
        std::thread::spawn(move || {
            let Some(mut stream) = stream else { return };
            let mut buf = vec![0u8; 8192];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                context.log(kind, &buf[..n]);
            }
        })
    };
    let out = pump(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        LogStream::Stdout,
    );
    let err = pump(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        LogStream::Stderr,
    );
    let status = loop {
        if context.is_cancelled() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = out.join();
            let _ = err.join();
            return Ok(None);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(io_error("wait for the step in", root)(e)),
        }
    };
    let _ = out.join();
    let _ = err.join();
    use std::os::unix::process::ExitStatusExt;
    Ok(Some(match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        (None, None) => Exit::Code(-1),
    }))
}

/// BuildKit's entitlement for `RUN --security=insecure`.
pub const ENTITLEMENT_INSECURE: &str = "security.insecure";

/// BuildKit's entitlement for the host's network (`RUN --network=host` or
/// `--network host` for the whole build).
pub const ENTITLEMENT_NETWORK_HOST: &str = "network.host";

/// Refuses a graph whose steps need an entitlement the build was not started
/// with (`hoist build --allow`), naming the first such step as
/// `Dockerfile:LINE: INSTRUCTION`. `network` is the build's `--network`,
/// which applies to the steps that do not choose their own.
pub fn check_entitlements(
    file: &str,
    graph: &hoist_frontend::graph::BuildGraph,
    network: Option<NetworkMode>,
    allowed: &[String],
) -> Result<(), String> {
    use hoist_frontend::graph::{Op, SecurityMode};
    let granted = |e: &str| allowed.iter().any(|a| a == e);
    for v in &graph.vertices {
        let Op::Exec(e) = &v.op else {
            continue;
        };
        let mut needs = Vec::new();
        if e.security == SecurityMode::Insecure {
            needs.push((ENTITLEMENT_INSECURE, "RUN --security=insecure"));
        }
        if e.network == NetworkMode::Host {
            needs.push((ENTITLEMENT_NETWORK_HOST, "RUN --network=host"));
        } else if e.network == NetworkMode::Default && network == Some(NetworkMode::Host) {
            needs.push((
                ENTITLEMENT_NETWORK_HOST,
                "the host's network (--network host) for this step",
            ));
        }
        let Some((need, what)) = needs.into_iter().find(|(need, _)| !granted(need)) else {
            continue;
        };
        let instruction = match v.name.strip_prefix('[') {
            Some(rest) => rest.split_once("] ").map_or(v.name.as_str(), |(_, i)| i),
            None => v.name.as_str(),
        };
        let at = match v.span {
            Some(span) => format!("{file}:{}: {instruction}", span.start.line),
            None => instruction.to_owned(),
        };
        return Err(format!(
            "{at}: {what} needs the {need} entitlement, \
             which this build was not given (build with --allow {need})"
        ));
    }
    Ok(())
}
