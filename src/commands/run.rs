//! `hoist run [OPTIONS] IMAGE [COMMAND [ARG…]]`: `docker run` for checking
//! an image. The flags are parsed here; what runs, and how, is
//! `hoist_builder::engine::container`.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use hoist_builder::engine::container::{self, ContainerError, RunOptions};
use hoist_runner::{Attach, Control, ExitStatus, Mount, NetworkMode, RunError, Stream, WindowSize};

use crate::commands::ExitWith;
use crate::context::Context;
use crate::resolve;

/// `hoist run`'s flags (its help text is on `Command`'s variant).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove the container's filesystem at exit (always done; accepted for docker compatibility)
    #[arg(long)]
    rm: bool,
    /// Keep stdin open and pass it to the command
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal (raw mode, window size, Ctrl-C reaches it)
    #[arg(short, long)]
    tty: bool,
    /// Set an environment variable (KEY=VALUE, or KEY to pass hoist's own value)
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines, # comments)
    #[arg(long, value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Bind a host directory or file: SRC:DST[:ro|rw] (SRC absolute and existing)
    #[arg(short, long, value_name = "SRC:DST[:ro]")]
    volume: Vec<String>,
    /// type=bind,source=SRC,target=DST[,readonly] or type=tmpfs,target=DST[,tmpfs-size=N][,tmpfs-mode=OCTAL]
    #[arg(long, value_name = "SPEC")]
    mount: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long, value_name = "DIR")]
    workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short, long, value_name = "USER")]
    user: Option<String>,
    /// Replace the image's ENTRYPOINT ("" clears it)
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// Network: default (private, egress through slirp4netns, as RUN steps), none or host
    #[arg(long, value_name = "MODE", default_value = "default")]
    network: Network,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// Name of the container, also its hostname
    #[arg(long)]
    name: Option<String>,
    /// Image (name, ID or digest)
    image: String,
    /// Command and arguments (replace the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Network {
    Default,
    None,
    Host,
}

/// hoist's own failures exit 125, as `docker run`'s.
const EXIT_HOIST: u8 = 125;

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let result = run_inner(context, args);
    match result {
        Ok(status) => Err(ExitWith {
            code: match status {
                ExitStatus::Exited(code) => (code & 0xff) as u8,
                ExitStatus::Signaled(sig) => (128 + sig).clamp(0, 255) as u8,
            },
            error: None,
        }
        .into()),
        Err(error) => {
            let exec = match error.downcast_ref::<ContainerError>() {
                Some(ContainerError::Run(e)) => match &**e {
                    RunError::Exec { not_found, message } => Some((*not_found, message.clone())),
                    _ => None,
                },
                _ => None,
            };
            let (code, error) = match exec {
                Some((not_found, message)) => (
                    if not_found { 127 } else { 126 },
                    anyhow!("failed to start the command: {message}"),
                ),
                None => (EXIT_HOIST, error),
            };
            Err(ExitWith {
                code,
                error: Some(error),
            }
            .into())
        }
    }
}

fn run_inner(context: &Context, args: Args) -> anyhow::Result<ExitStatus> {
    let options = RunOptions {
        entrypoint: args.entrypoint.clone(),
        args: args.command.clone(),
        env: environment(&args.env, &args.env_file)?,
        workdir: args.workdir.clone(),
        user: args.user.clone(),
        mounts: mounts(&args.volume, &args.mount)?,
        network: match args.network {
            Network::Default => NetworkMode::Default,
            Network::None => NetworkMode::None,
            Network::Host => NetworkMode::Host,
        },
        read_only: args.read_only,
        hostname: args.name.clone(),
        tty: args.tty,
    };
    let store = Arc::new(context.store()?);
    let (entry, _) = resolve::resolve(&store, &args.image)?;
    let image = entry.image()?.clone();
    let engine = hoist_builder::engine::Engine::new(store, HashMap::new())
        .context("failed to set up the container's snapshot")?;

    let control = Control::new()?;
    forward_signals(control.clone(), args.tty)?;
    let stdin = std::io::stdin();
    let tty = args
        .tty
        .then(|| terminal_size().unwrap_or(WindowSize { rows: 24, cols: 80 }));
    // Raw mode only when there is a terminal to pass keys through: Ctrl-C
    // then reaches the command as a byte, and its terminal turns it into
    // SIGINT for it.
    let _raw = match (args.tty, args.interactive) {
        (true, true) => RawMode::enter(),
        _ => None,
    };
    let attach = Attach {
        stdin: args.interactive.then(|| stdin.as_fd()),
        tty,
        control: Some(&control),
    };
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let result = container::run_image(&engine, &image, &options, attach, &mut |stream, bytes| {
        // A reader that went away must not stop the command.
        let _ = match stream {
            Stream::Stdout => stdout.write_all(bytes).and_then(|()| stdout.flush()),
            Stream::Stderr => stderr.write_all(bytes).and_then(|()| stderr.flush()),
        };
    })?;
    Ok(result.status)
}

/// `-e` then `--env-file` entries as `KEY=value`, in order (a later one wins).
fn environment(flags: &[String], files: &[PathBuf]) -> anyhow::Result<Vec<String>> {
    let mut env = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("failed to read the env file {}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if let Some(entry) =
                env_entry(line).with_context(|| format!("{}:{}", file.display(), n + 1))?
            {
                env.push(entry);
            }
        }
    }
    for flag in flags {
        if let Some(entry) = env_entry(flag)? {
            env.push(entry);
        }
    }
    Ok(env)
}

/// `KEY=value` as is; `KEY` alone takes hoist's own value, or nothing when
/// hoist has none (Docker's rule).
fn env_entry(text: &str) -> anyhow::Result<Option<String>> {
    let (key, value) = match text.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (text, None),
    };
    if key.is_empty() {
        bail!(
            "invalid environment variable `{}`: the name is empty",
            hoist_cache::text::escape(text)
        );
    }
    if key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "invalid environment variable name `{}`: it contains white space",
            hoist_cache::text::escape(key)
        );
    }
    Ok(match value {
        Some(v) => Some(format!("{key}={v}")),
        None => std::env::var(key).ok().map(|v| format!("{key}={v}")),
    })
}

/// `-v` and `--mount` as runner mounts.
fn mounts(volumes: &[String], specs: &[String]) -> anyhow::Result<Vec<Mount>> {
    let mut mounts = Vec::new();
    for v in volumes {
        mounts.push(
            volume(v).with_context(|| format!("invalid -v `{}`", hoist_cache::text::escape(v)))?,
        );
    }
    for m in specs {
        mounts.push(
            mount_spec(m)
                .with_context(|| format!("invalid --mount `{}`", hoist_cache::text::escape(m)))?,
        );
    }
    Ok(mounts)
}

fn volume(text: &str) -> anyhow::Result<Mount> {
    let parts: Vec<&str> = text.split(':').collect();
    let (source, target, readonly) = match parts[..] {
        [s, t] => (s, t, false),
        [s, t, "ro"] => (s, t, true),
        [s, t, "rw"] => (s, t, false),
        [_, _, o] => bail!(
            "unknown option `{}` (ro or rw)",
            hoist_cache::text::escape(o)
        ),
        _ => bail!("expected SRC:DST[:ro|rw]"),
    };
    bind(source, target, readonly)
}

fn bind(source: &str, target: &str, readonly: bool) -> anyhow::Result<Mount> {
    if !source.starts_with('/') {
        bail!("the source must be an absolute host path (named volumes do not exist in hoist)");
    }
    let source = Path::new(source);
    if !source.exists() {
        bail!("the source {} does not exist", source.display());
    }
    Ok(Mount::Bind {
        source: source.to_path_buf(),
        target: target_path(target)?,
        readonly,
    })
}

/// An absolute path inside the container, cleaned (`/a/../b` is `/b`).
fn target_path(target: &str) -> anyhow::Result<String> {
    if !target.starts_with('/') {
        bail!("the destination must be an absolute path");
    }
    let mut parts: Vec<&str> = Vec::new();
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!("the destination cannot be /");
    }
    Ok(format!("/{}", parts.join("/")))
}

fn mount_spec(text: &str) -> anyhow::Result<Mount> {
    let mut kind = "volume";
    let (mut source, mut target, mut readonly) = (None, None, false);
    let (mut size, mut mode) = (None, None);
    for field in text.split(',') {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        match (key, value) {
            ("type", Some(v)) => kind = v,
            ("source" | "src", Some(v)) => source = Some(v),
            ("target" | "dst" | "destination", Some(v)) => target = Some(v),
            ("readonly" | "ro", None | Some("true" | "1")) => readonly = true,
            ("readonly" | "ro", Some("false" | "0")) => readonly = false,
            ("tmpfs-size", Some(v)) => {
                size = Some(
                    hoist_cache::units::parse_memory_size(v)
                        .map_err(|e| anyhow!("tmpfs-size: {e}"))?,
                )
            }
            ("tmpfs-mode", Some(v)) => {
                mode = Some(
                    u32::from_str_radix(v, 8)
                        .ok()
                        .filter(|m| *m <= 0o7777)
                        .ok_or_else(|| anyhow!("tmpfs-mode must be octal permission bits"))?,
                )
            }
            _ => bail!("unknown field `{}`", hoist_cache::text::escape(field)),
        }
    }
    let target = target.ok_or_else(|| anyhow!("target= is missing"))?;
    match kind {
        "bind" => bind(
            source.ok_or_else(|| anyhow!("source= is missing"))?,
            target,
            readonly,
        ),
        "tmpfs" => Ok(Mount::Tmpfs {
            target: target_path(target)?,
            size,
            mode,
        }),
        other => bail!(
            "type `{}` is not supported (bind or tmpfs)",
            hoist_cache::text::escape(other)
        ),
    }
}

/// Forwards the signals a person or a supervisor sends hoist to the
/// command (docker run's --sig-proxy), and window size changes to its
/// terminal. The thread lives as long as the process.
fn forward_signals(control: Control, tty: bool) -> anyhow::Result<()> {
    use signal_hook::consts::*;
    let mut signals = signal_hook::iterator::Signals::new([
        SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
    ])
    .context("failed to install signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                if signal == SIGWINCH {
                    if tty {
                        if let Some(size) = terminal_size() {
                            control.resize(size);
                        }
                    }
                } else {
                    control.signal(signal);
                }
            }
        })
        .context("failed to start the signal thread")?;
    Ok(())
}

/// The size of the terminal on stdout (else stdin), if either is one.
#[allow(unsafe_code)]
fn terminal_size() -> Option<WindowSize> {
    for fd in [libc::STDOUT_FILENO, libc::STDIN_FILENO] {
        // SAFETY: zeroed winsize is valid; the ioctl writes into it.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ on a descriptor number with a valid pointer.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0 && size.ws_row > 0 {
            return Some(WindowSize {
                rows: size.ws_row,
                cols: size.ws_col,
            });
        }
    }
    None
}

/// The terminal on stdin in raw mode until dropped.
struct RawMode(libc::termios);

impl RawMode {
    #[allow(unsafe_code)]
    fn enter() -> Option<RawMode> {
        // SAFETY: zeroed termios is valid; tcgetattr fills it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: plain calls on fd 0 with valid pointers.
        if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: as above.
        unsafe {
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return None;
            }
        }
        Some(RawMode(saved))
    }
}

impl Drop for RawMode {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: restores the settings read in `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_parse_as_docker_spells_them() {
        let Mount::Bind {
            source,
            target,
            readonly,
        } = volume("/tmp:/data/../mnt:ro").unwrap()
        else {
            panic!("not a bind");
        };
        assert_eq!(
            (source, target.as_str(), readonly),
            (PathBuf::from("/tmp"), "/mnt", true)
        );
        assert!(volume("tmp:/x").is_err());
        assert!(volume("/tmp:/x:z").is_err());
        assert!(volume("/tmp:/").is_err());
        assert!(volume("/does/not/exist:/x").is_err());
    }

    #[test]
    fn mounts_parse_bind_and_tmpfs() {
        assert_eq!(
            mount_spec("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=700").unwrap(),
            Mount::Tmpfs {
                target: "/t".into(),
                size: Some(1024 * 1024),
                mode: Some(0o700)
            }
        );
        assert!(matches!(
            mount_spec("type=bind,src=/tmp,dst=/x,readonly").unwrap(),
            Mount::Bind { readonly: true, .. }
        ));
        assert!(mount_spec("type=volume,target=/x").is_err());
        assert!(mount_spec("type=bind,src=/tmp").is_err());
    }

    #[test]
    fn env_entries_follow_docker() {
        assert_eq!(env_entry("A=1=2").unwrap().as_deref(), Some("A=1=2"));
        assert_eq!(env_entry("HOIST_SURELY_UNSET_VAR").unwrap(), None);
        assert!(env_entry("=x").is_err());
        assert!(env_entry("A B=x").is_err());
    }
}
