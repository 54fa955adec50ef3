//! `hoist run`: an image's command in the sandbox RUN steps use, over a
//! throwaway writable snapshot of the image that is removed when it ends.
//!
//! What runs follows `docker run`'s rules: ENTRYPOINT and CMD combine as in
//! Docker's reference table ([`command_line`]), `-e` overrides the image's
//! variables by name ([`environment`]), `-w` and `-u` replace WorkingDir and
//! User. HEALTHCHECK, ExposedPorts and StopSignal mean nothing without a
//! daemon and are ignored, as `docker run` ignores them.

use hoist_cache::image::Image;
use hoist_runner::{Attach, NetworkMode, RunError, RunResult, RunSpec, Stream};
use hoist_snapshotter::Snapshotter;

use super::artifact::Layer;
use super::{snap_error, store_error, Engine, EngineError};

/// What `hoist run` asks for besides the image.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `--entrypoint`: `Some("")` clears the image's ENTRYPOINT.
    pub entrypoint: Option<String>,
    /// The arguments after the image: they replace CMD.
    pub args: Vec<String>,
    /// `-e`/`--env-file` entries, `KEY=value` (already resolved).
    pub env: Vec<String>,
    /// `-w`: the working directory instead of the image's.
    pub workdir: Option<String>,
    /// `-u`: the user instead of the image's.
    pub user: Option<String>,
    /// `-v` and `--mount`.
    pub mounts: Vec<hoist_runner::Mount>,
    /// `--network`.
    pub network: NetworkMode,
    /// `--read-only`: the root filesystem is mounted read-only.
    pub read_only: bool,
    /// `--name`, the container's hostname too (Docker uses the ID's prefix).
    pub hostname: Option<String>,
    /// `-t`: sets `TERM=xterm` when neither the image nor `-e` sets it, as Docker does.
    pub tty: bool,
}

/// Why `hoist run` could not run the command at all.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Neither the image nor the command line names a command.
    #[error("no command specified: the image has no ENTRYPOINT or CMD and none was given")]
    NoCommand,
    /// The snapshot or the store failed.
    #[error(transparent)]
    Engine(Box<EngineError>),
    /// The sandbox failed, or the command could not be executed
    /// ([`RunError::Exec`]).
    #[error(transparent)]
    Run(Box<RunError>),
}

impl From<EngineError> for ContainerError {
    fn from(e: EngineError) -> Self {
        ContainerError::Engine(Box::new(e))
    }
}

impl From<RunError> for ContainerError {
    fn from(e: RunError) -> Self {
        ContainerError::Run(Box::new(e))
    }
}

/// The process Docker runs for `config`'s Entrypoint and Cmd given
/// `--entrypoint` and the arguments after the image (moby's merge rules):
/// - no `--entrypoint`: the image's ENTRYPOINT, then the arguments, or the
///   image's CMD when there are none;
/// - `--entrypoint E`: `E` then the arguments; the image's CMD is dropped;
/// - `--entrypoint ""`: no ENTRYPOINT; the arguments, else the image's CMD.
///
/// Shell forms were turned into `/bin/sh -c …` when the image was built, so
/// a shell-form ENTRYPOINT gets CMD as `$0`, `$1`… that it ignores, which is
/// Docker's table.
pub fn command_line(
    image_entrypoint: &[String],
    image_cmd: &[String],
    entrypoint: Option<&str>,
    args: &[String],
) -> Result<Vec<String>, ContainerError> {
    let (entry, default_cmd): (Vec<String>, &[String]) = match entrypoint {
        None => (image_entrypoint.to_vec(), image_cmd),
        Some("") => (Vec::new(), image_cmd),
        Some(e) => (vec![e.to_string()], &[]),
    };
    let mut argv = entry;
    if args.is_empty() {
        argv.extend(default_cmd.iter().cloned());
    } else {
        argv.extend(args.iter().cloned());
    }
    if argv.is_empty() {
        return Err(ContainerError::NoCommand);
    }
    Ok(argv)
}

/// The image's environment with `overrides` applied: a variable set again
/// replaces the image's value in place, a new one is appended.
pub fn environment(image: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or_default().to_string();
    let mut env = image.to_vec();
    for o in overrides {
        match env.iter_mut().find(|e| key(e) == key(o)) {
            Some(slot) => *slot = o.clone(),
            None => env.push(o.clone()),
        }
    }
    env
}

/// The spec `hoist run` hands the runner for `image` (the root filled in
/// later): command, environment, directory, user, mounts, network.
pub fn run_spec(image: &Image, options: &RunOptions) -> Result<RunSpec, ContainerError> {
    let config = image.config.config().clone().unwrap_or_default();
    let argv = command_line(
        &config.entrypoint().clone().unwrap_or_default(),
        &config.cmd().clone().unwrap_or_default(),
        options.entrypoint.as_deref(),
        &options.args,
    )?;
    let mut spec = RunSpec::new(hoist_runner::Rootfs::Mounts(Vec::new()), argv);
    spec.env = environment(&config.env().clone().unwrap_or_default(), &options.env);
    if options.tty && !spec.env.iter().any(|e| e.starts_with("TERM=")) {
        spec.env.push("TERM=xterm".into());
    }
    let workdir = options
        .workdir
        .clone()
        .or_else(|| config.working_dir().clone())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| "/".into());
    if !workdir.starts_with('/') {
        return Err(EngineError::Invalid(format!(
            "the working directory {workdir:?} is not an absolute path"
        ))
        .into());
    }
    spec.cwd = workdir;
    spec.user = options
        .user
        .clone()
        .or_else(|| config.user().clone())
        .unwrap_or_default();
    spec.mounts = options.mounts.clone();
    spec.network = options.network;
    if let Some(name) = &options.hostname {
        spec.hostname = name.clone();
    }
    Ok(spec)
}

/// Runs `image` as `options` say, its output to `output`, with the
/// terminal and stdin of `attach`; the container's filesystem is a fresh
/// snapshot on the image, removed at the end whatever happens.
pub fn run_image(
    engine: &Engine,
    image: &Image,
    options: &RunOptions,
    attach: Attach<'_>,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<RunResult, ContainerError> {
    let mut spec = run_spec(image, options)?;
    let store = engine.store();
    // Collection leaves blobs and snapshots alone while a lease lives.
    let lease = hoist_cache::LeaseGuard::take(store, "run")
        .map_err(store_error("take a lease on the store"))?;
    let layers: Vec<Layer> =
        super::ops::image_layers(engine, image.manifest_descriptor.digest().as_ref())?;
    let mut blobs: Vec<String> = layers.iter().map(|l| l.digest.clone()).collect();
    blobs.push(image.manifest_descriptor.digest().to_string());
    store
        .lease_blobs(lease.lease(), &blobs)
        .map_err(store_error("lease the image's blobs"))?;
    let parent = engine.ensure_snapshot(&layers)?;
    let key = engine.unique("run");
    let mounts = engine
        .snapshots
        .prepare(&key, parent.as_deref())
        .map_err(snap_error(format!("prepare snapshot {key}")))?;
    // Never committed: dropping it removes the container's filesystem.
    let _active = super::Active {
        engine,
        key: key.clone(),
        done: false,
    };
    spec.rootfs = super::rootfs_of(&mounts, options.read_only);
    let runner = engine
        .runner
        .as_ref()
        .ok_or_else(|| EngineError::Invalid("the sandbox runner could not be set up".into()))?;
    Ok(runner.run_attached(&spec, output, attach)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    // Docker's table: rows are CMD forms, columns ENTRYPOINT forms.
    const SHELL_ENTRY: &[&str] = &["/bin/sh", "-c", "exec_entry p1_entry"];
    const EXEC_ENTRY: &[&str] = &["exec_entry", "p1_entry"];

    #[test]
    fn no_entrypoint_runs_cmd() {
        assert!(matches!(
            command_line(&[], &[], None, &[]),
            Err(ContainerError::NoCommand)
        ));
        assert_eq!(
            command_line(&[], &v(&["exec_cmd", "p1_cmd"]), None, &[]).unwrap(),
            v(&["exec_cmd", "p1_cmd"])
        );
        assert_eq!(
            command_line(&[], &v(&["/bin/sh", "-c", "exec_cmd p1_cmd"]), None, &[]).unwrap(),
            v(&["/bin/sh", "-c", "exec_cmd p1_cmd"])
        );
    }

    #[test]
    fn shell_entrypoint_gets_cmd_as_ignored_arguments() {
        for cmd in [v(&[]), v(&["exec_cmd", "p1_cmd"]), v(&["p1_cmd", "p2_cmd"])] {
            let mut want = v(SHELL_ENTRY);
            want.extend(cmd.iter().cloned());
            assert_eq!(
                command_line(&v(SHELL_ENTRY), &cmd, None, &[]).unwrap(),
                want
            );
        }
    }

    #[test]
    fn exec_entrypoint_gets_cmd_appended() {
        assert_eq!(
            command_line(&v(EXEC_ENTRY), &v(&["p1_cmd", "p2_cmd"]), None, &[]).unwrap(),
            v(&["exec_entry", "p1_entry", "p1_cmd", "p2_cmd"])
        );
        assert_eq!(
            command_line(
                &v(EXEC_ENTRY),
                &v(&["/bin/sh", "-c", "exec_cmd p1_cmd"]),
                None,
                &[]
            )
            .unwrap(),
            v(&["exec_entry", "p1_entry", "/bin/sh", "-c", "exec_cmd p1_cmd"])
        );
    }

    #[test]
    fn arguments_replace_cmd_and_entrypoint_flag_drops_it() {
        let args = v(&["a", "b"]);
        assert_eq!(
            command_line(&v(EXEC_ENTRY), &v(&["c"]), None, &args).unwrap(),
            v(&["exec_entry", "p1_entry", "a", "b"])
        );
        assert_eq!(
            command_line(&v(EXEC_ENTRY), &v(&["c"]), Some("/bin/echo"), &[]).unwrap(),
            v(&["/bin/echo"])
        );
        assert_eq!(
            command_line(&v(EXEC_ENTRY), &v(&["c"]), Some("/bin/echo"), &args).unwrap(),
            v(&["/bin/echo", "a", "b"])
        );
        assert_eq!(
            command_line(&v(EXEC_ENTRY), &v(&["c"]), Some(""), &[]).unwrap(),
            v(&["c"])
        );
        assert!(matches!(
            command_line(&v(EXEC_ENTRY), &[], Some(""), &[]),
            Err(ContainerError::NoCommand)
        ));
    }

    #[test]
    fn environment_overrides_by_name_in_place() {
        assert_eq!(
            environment(&v(&["PATH=/bin", "A=1", "B=2"]), &v(&["A=x", "C=3", "B="])),
            v(&["PATH=/bin", "A=x", "B=", "C=3"])
        );
    }
}
