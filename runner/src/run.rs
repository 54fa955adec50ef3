//! The runner's side of a run: prepare the per-run state, start the sandbox
//! init in new namespaces, stream its output, collect the result, clean up.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::cgroup::{Cgroup, CgroupVersion, Cgroups};
use crate::init::{InitConfig, InitMessage, INIT_MARKER};
use crate::rootfs::RootPlan;
use crate::spec::{
    Attach, ExitStatus, Limits, Mount, MountData, NetworkMode, Rootfs, RunResult, RunSpec, Stream,
    Usage, WindowSize,
};
use crate::stubs::{Stubs, Target};
use crate::{sys, RunError};

static RUN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Which runtime executes steps.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum Runtime {
    /// hoist's own sandbox (no external program needed).
    #[default]
    Embedded,
    /// An OCI runtime (`runc`, `crun` or a path to one), fed a generated
    /// runtime-spec `config.json`.
    External(PathBuf),
}

/// How a [`Runner`] is set up.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    /// Which runtime executes steps.
    pub runtime: Runtime,
    /// The program re-executed as the sandbox init: a binary whose `main`
    /// calls [`crate::init_if_requested`] first. Default `/proc/self/exe`.
    pub init_program: PathBuf,
    /// Where per-run state lives (generated `/etc` files, stub layers, OCI
    /// bundles). Default `$XDG_RUNTIME_DIR/hoist-runner` when that directory
    /// is the user's, else `$TMPDIR/hoist-runner-<euid>`. It must be a
    /// directory (not a symlink) owned by the user and writable by no one
    /// else, or [`Runner::new`] refuses it.
    pub state_dir: PathBuf,
}

impl Default for RunnerConfig {
    fn default() -> RunnerConfig {
        RunnerConfig {
            runtime: Runtime::Embedded,
            init_program: PathBuf::from("/proc/self/exe"),
            state_dir: default_state_dir(),
        }
    }
}

fn default_state_dir() -> PathBuf {
    let euid = sys::geteuid();
    // The variable survives `su` and sudo: use the directory only if it is
    // this user's (a private tmpfs, unlike the shared $TMPDIR).
    let own_runtime_dir = hoist_untrusted::xdg::runtime_dir()
        .filter(|dir| fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir() && m.uid() == euid));
    match own_runtime_dir {
        Some(dir) => dir.join("hoist-runner"),
        None => std::env::temp_dir().join(format!("hoist-runner-{euid}")),
    }
}

/// Refuses a state directory another user could plant or write into: in a
/// shared `/tmp`, `hoist-runner-<uid>` is a name anyone can create first.
fn check_state_dir(dir: &Path) -> Result<(), RunError> {
    let meta = fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    let euid = sys::geteuid();
    if !meta.is_dir() || meta.uid() != euid || meta.mode() & 0o022 != 0 {
        return Err(RunError::Setup(format!(
            "the runner's state directory {} is not a directory owned by uid {euid} and \
             writable only by it (owner {}, mode {:o}); remove it or choose another",
            hoist_untrusted::escape_path(dir),
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Runs steps. Making one cleans up what a killed earlier hoist left behind
/// (cgroups and state directories of dead owners).
#[derive(Debug)]
pub struct Runner {
    config: RunnerConfig,
    cgroups: Option<Cgroups>,
    rootless: bool,
}

fn io_err<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> RunError + 'a {
    move |source| RunError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// How long a cancelled step may take to stop after SIGTERM before SIGKILL.
pub const CANCEL_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Stops running steps on request (see [`Runner::run_with_cancel`]). Clone it
/// to share it between threads; one `cancel()` stops every run watching it.
#[derive(Clone, Debug)]
pub struct Cancel {
    pipe: std::sync::Arc<(OwnedFd, OwnedFd)>,
    fired: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cancel {
    /// A fresh, not yet fired, cancel handle.
    pub fn new() -> Result<Cancel, RunError> {
        let pipe = sys::pipe().map_err(io_err("create pipe for", Path::new("cancellation")))?;
        Ok(Cancel {
            pipe: std::sync::Arc::new(pipe),
            fired: Default::default(),
        })
    }

    /// Fire: every run watching this handle stops. Idempotent.
    pub fn cancel(&self) {
        if self.fired.swap(true, Ordering::SeqCst) {
            return;
        }
        // The byte is never read: the pipe stays readable for every watcher.
        if let Ok(fd) = self.pipe.1.try_clone() {
            let _ = File::from(fd).write(b"c");
        }
    }

    fn read_fd(&self) -> i32 {
        self.pipe.0.as_raw_fd()
    }
}

/// Forwards signals and terminal resizes to an attached run (see
/// [`Runner::run_attached`]). Clone it to share it with a signal-handling
/// thread.
#[derive(Clone, Debug)]
pub struct Control {
    pipe: std::sync::Arc<(OwnedFd, OwnedFd)>,
}

/// One request on a [`Control`] pipe: a tag byte and four bytes of data,
/// written at once (atomic: far below `PIPE_BUF`).
const CONTROL_RECORD: usize = 5;

impl Control {
    /// A fresh handle.
    pub fn new() -> Result<Control, RunError> {
        let pipe = sys::pipe().map_err(io_err("create pipe for", Path::new("signals")))?;
        Ok(Control {
            pipe: std::sync::Arc::new(pipe),
        })
    }

    /// Send `signal` to the step's main process (through the sandbox init,
    /// which forwards it).
    pub fn signal(&self, signal: i32) {
        let mut record = [b'S', 0, 0, 0, 0];
        record[1..].copy_from_slice(&signal.to_ne_bytes());
        self.send(record);
    }

    /// The terminal the step runs on now has this size (its foreground
    /// process group gets SIGWINCH). Ignored without a terminal.
    pub fn resize(&self, size: WindowSize) {
        let mut record = [b'W', 0, 0, 0, 0];
        record[1..3].copy_from_slice(&size.rows.to_ne_bytes());
        record[3..].copy_from_slice(&size.cols.to_ne_bytes());
        self.send(record);
    }

    fn send(&self, record: [u8; CONTROL_RECORD]) {
        if let Ok(fd) = self.pipe.1.try_clone() {
            let _ = File::from(fd).write(&record);
        }
    }

    fn read_fd(&self) -> i32 {
        self.pipe.0.as_raw_fd()
    }
}

/// Copies `source` into `sink` until `source` ends, `sink` refuses, or
/// `stop` becomes readable; dropping `sink` then gives the step EOF.
fn copy_stdin(source: OwnedFd, sink: OwnedFd, stop: OwnedFd) {
    let mut source = File::from(source);
    let mut sink = File::from(sink);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let Ok(revents) = sys::poll_in(&[source.as_raw_fd(), stop.as_raw_fd()], -1) else {
            return;
        };
        if revents[1] != 0 {
            return;
        }
        if revents[0] == 0 {
            continue;
        }
        match source.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if sink.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Kills and reaps the init if a run is abandoned half-way (an error or a
/// panicking output callback), so no sandbox outlives its run.
struct InitGuard {
    pid: libc::pid_t,
    reaped: bool,
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        if !self.reaped {
            let _ = sys::kill(self.pid, libc::SIGKILL);
            let _ = sys::wait4(self.pid);
        }
    }
}

/// Removes the per-run state directory.
struct RunDir(PathBuf);

impl Drop for RunDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.0.display(), error = %e, "could not remove run state");
            }
        }
    }
}

impl Runner {
    /// Set up a runner: find the cgroup hierarchy, clean stale state.
    pub fn new(config: RunnerConfig) -> Result<Runner, RunError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(io_err("create", &config.state_dir))?;
        check_state_dir(&config.state_dir)?;
        let cgroups = Cgroups::detect();
        if let Some(c) = &cgroups {
            c.clean_stale();
        }
        clean_stale_runs(&config.state_dir);
        Ok(Runner {
            config,
            cgroups,
            rootless: sys::geteuid() != 0,
        })
    }

    /// The cgroup hierarchy used for limits and accounting, if any.
    pub fn cgroup_version(&self) -> Option<CgroupVersion> {
        self.cgroups.as_ref().map(|c| c.version().clone())
    }

    /// The `hoist` parent cgroup directories (one per v1 controller, or one v2).
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        self.cgroups
            .as_ref()
            .map(|c| c.parents().map(Path::to_path_buf).collect())
            .unwrap_or_default()
    }

    /// Run one step and wait for it. Output chunks are handed to `output` as
    /// they are read, in the order they were read.
    pub fn run(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
    ) -> Result<RunResult, RunError> {
        self.run_with_cancel(spec, output, None)
    }

    /// [`Runner::run`] that stops the step when `cancel` fires: SIGTERM to the
    /// sandbox, which forwards it to the step, then SIGKILL if the step is
    /// still running [`CANCEL_GRACE`] later. The result is the step's own
    /// status (usually `Signaled(15)`).
    pub fn run_with_cancel(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: Option<&Cancel>,
    ) -> Result<RunResult, RunError> {
        self.run_inner(spec, output, cancel, Attach::default())
    }

    /// [`Runner::run`] for a person at a terminal: the step's stdin,
    /// terminal and signals as `attach` says. Output comes to `output` as
    /// with [`Runner::run`] (with a terminal, all of it as stdout).
    pub fn run_attached(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        attach: Attach<'_>,
    ) -> Result<RunResult, RunError> {
        if attach.tty.is_some() && matches!(self.config.runtime, Runtime::External(_)) {
            return Err(RunError::InvalidSpec(
                "a terminal is only supported with the embedded runtime".into(),
            ));
        }
        self.run_inner(spec, output, None, attach)
    }

    fn run_inner(
        &self,
        spec: &RunSpec,
        output: &mut dyn FnMut(Stream, &[u8]),
        cancel: Option<&Cancel>,
        attach: Attach<'_>,
    ) -> Result<RunResult, RunError> {
        validate(spec)?;
        if self.rootless && matches!(self.config.runtime, Runtime::External(_)) {
            return Err(RunError::InvalidSpec(
                "an external OCI runtime is only supported when hoist runs as root".into(),
            ));
        }
        let n = RUN_COUNTER.fetch_add(1, Ordering::Relaxed);
        let id = format!("hoist-{}-{n}", std::process::id());
        let run_dir = RunDir(self.config.state_dir.join(&id));
        fs::create_dir_all(&run_dir.0).map_err(io_err("create", &run_dir.0))?;
        let etc_files = write_etc_files(&run_dir.0, spec)?;

        let mut targets: Vec<Target> = etc_files
            .iter()
            .map(|(p, _)| Target {
                path: p.clone(),
                is_file: true,
                mode: None,
            })
            .collect();
        for d in ["/proc", "/sys", "/dev"] {
            targets.push(Target {
                path: d.into(),
                is_file: false,
                mode: None,
            });
        }
        for m in &spec.mounts {
            targets.push(Target {
                path: m.target().to_string(),
                is_file: m.target_is_file(),
                // runc gives a tmpfs the mode of the directory it covers.
                mode: match m {
                    Mount::Tmpfs { mode, .. } => Some(mode.unwrap_or(0o1777)),
                    _ => None,
                },
            });
        }
        let (root, root_mounts, mut stubs) = prepare_stubs(&run_dir.0, &spec.rootfs, &targets)?;

        // With an external runtime, the runtime's process itself sits in the
        // step's cgroup and makes its container cgroup below it: only the
        // memory limit goes here (so that an OOM kill stays visible to us);
        // cpus and pids go into config.json for the container cgroup, where
        // they do not throttle the runtime's own threads.
        let own_limits = match self.config.runtime {
            Runtime::Embedded => spec.limits,
            Runtime::External(_) => Limits {
                memory: spec.limits.memory,
                ..Limits::default()
            },
        };
        let cgroup = match &self.cgroups {
            // An external runtime confines devices in its own cgroup.
            Some(c) => Some(
                c.create(
                    &id,
                    &own_limits,
                    !spec.all_capabilities && self.config.runtime == Runtime::Embedded,
                )
                .map_err(RunError::Cgroup)?,
            ),
            None if spec.limits.any() => {
                return Err(RunError::Cgroup(crate::CgroupError::Unavailable))
            }
            None => None,
        };
        let cgroup = CgroupGuard(cgroup);

        let plan = RootPlan {
            root: root.clone(),
            root_mounts: root_mounts.clone(),
            hostname: spec.hostname.clone(),
            new_net: spec.network != NetworkMode::Host,
            etc_files,
            mounts: spec.mounts.clone(),
            secrets_dir: run_dir.0.join("secrets"),
            privileged: spec.all_capabilities,
            host_devices: if spec.all_capabilities {
                crate::rootfs::host_devices(Path::new("/dev"))
            } else {
                Vec::new()
            },
            shm_size: spec.options.shm_size,
        };
        let external = match &self.config.runtime {
            Runtime::Embedded => None,
            Runtime::External(program) => Some(crate::external::ExternalPlan {
                runtime: resolve_runtime(program)?,
                bundle: run_dir.0.join("bundle"),
                state: run_dir.0.join("runtime-state"),
                id: id.clone(),
                network: spec.network,
                limits: spec.limits,
            }),
        };
        let config = InitConfig {
            plan,
            argv: spec.argv.clone(),
            env: spec.env.clone(),
            cwd: spec.cwd.clone(),
            user: spec.user.clone(),
            no_new_privileges: spec.no_new_privileges,
            seccomp: spec.seccomp,
            all_capabilities: spec.all_capabilities,
            discard_syncs: spec.discard_syncs,
            external,
            ulimits: spec.options.ulimits.clone(),
            tty: attach.tty.is_some(),
        };
        let mut flags = if config.external.is_some() {
            // The runtime makes the step's namespaces (all but the default
            // network's, below); ours keeps the root's mounts private to
            // this run.
            libc::CLONE_NEWNS
        } else {
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC
        };
        // The default network's namespace is made here for an external
        // runtime too: the container, given no network namespace of its own
        // in config.json, shares the runtime's, which slirp4netns serves.
        // For `None` the runtime makes an empty one itself.
        if spec.network == NetworkMode::Default
            || (spec.network == NetworkMode::None && config.external.is_none())
        {
            flags |= libc::CLONE_NEWNET;
        }
        if self.rootless {
            flags |= libc::CLONE_NEWUSER;
        }

        let started = Instant::now();
        let slirp_log =
            (spec.network == NetworkMode::Default).then(|| run_dir.0.join("slirp4netns.log"));
        let result = self.spawn_and_wait(
            &config,
            flags,
            cgroup.0.as_ref(),
            slirp_log.as_deref(),
            output,
            Watch { cancel, attach },
        );
        let wall = started.elapsed();
        let stats = cgroup.0.as_ref().map(Cgroup::stats).unwrap_or_default();
        drop(cgroup);
        let stub_result = stubs.as_mut().map_or(Ok(()), Stubs::remove);
        drop(run_dir);

        let (message, waited) = result?;
        let usage = Usage {
            wall,
            cpu: stats
                .cpu
                .unwrap_or(std::time::Duration::from_micros(waited.cpu_micros)),
            peak_memory: stats.peak_memory.or(Some(waited.max_rss)),
        };
        let mut status = match message {
            Some(InitMessage::Exited(code)) => ExitStatus::Exited(code),
            Some(InitMessage::Signaled(sig)) => ExitStatus::Signaled(sig),
            Some(InitMessage::Error(text)) => return Err(RunError::Setup(text)),
            Some(InitMessage::ExecFailed { message, not_found }) => {
                return Err(RunError::Exec { message, not_found })
            }
            None if config.external.is_some() => external_status(waited.status),
            None if stats.oom_killed => ExitStatus::Signaled(libc::SIGKILL),
            None => {
                return Err(RunError::InitDied(
                    match sys::decode_status(waited.status) {
                        Ok(code) => format!("exit status {code}"),
                        Err(sig) => format!("signal {sig}"),
                    },
                ))
            }
        };
        stub_result?;
        // cgroup v1 counts an OOM kill in the victim's own cgroup; below an
        // external runtime that is the container cgroup, gone by now. The
        // step's cgroup still saw its limit hit.
        let oom_killed = stats.oom_killed
            || (stats.memory_limit_hit && status == ExitStatus::Signaled(libc::SIGKILL));
        if oom_killed {
            status = ExitStatus::Signaled(libc::SIGKILL);
        }
        Ok(RunResult {
            status,
            oom_killed,
            usage,
        })
    }

    fn spawn_and_wait(
        &self,
        config: &InitConfig,
        flags: libc::c_int,
        cgroup: Option<&Cgroup>,
        slirp_log: Option<&Path>,
        output: &mut dyn FnMut(Stream, &[u8]),
        watch: Watch<'_>,
    ) -> Result<(Option<InitMessage>, sys::Waited), RunError> {
        let Watch { cancel, attach } = watch;
        let pipe =
            |what: &'static str| sys::pipe().map_err(io_err("create pipe for", Path::new(what)));
        let (control_r, control_w) = pipe("the sandbox configuration")?;
        let (status_r, status_w) = pipe("the sandbox status")?;
        let (exec_r, exec_w) = pipe("exec errors")?;
        let (go_r, go_w) = pipe("the start signal")?;
        // The step's streams: a new terminal (its master stays here), or
        // pipes. Never one of hoist's own descriptors: a step holding the
        // user's terminal could push input into the user's shell (TIOCSTI).
        let dup = |fd: &OwnedFd, what: &'static str| {
            fd.try_clone()
                .map_err(io_err("duplicate descriptor of", Path::new(what)))
        };
        let (stdout_r, stdout_w, stderr_r, stderr_w, stdin, stdin_sink, master) = match attach.tty {
            Some(size) => {
                let (master, slave) = sys::openpty(size.rows, size.cols)
                    .map_err(io_err("open", Path::new("/dev/ptmx")))?;
                let sink = attach
                    .stdin
                    .is_some()
                    .then(|| dup(&master, "the terminal"))
                    .transpose()?;
                (
                    dup(&master, "the terminal")?,
                    dup(&slave, "the terminal")?,
                    None,
                    dup(&slave, "the terminal")?,
                    slave,
                    sink,
                    Some(master),
                )
            }
            None => {
                let (stdout_r, stdout_w) = pipe("stdout")?;
                let (stderr_r, stderr_w) = pipe("stderr")?;
                let (stdin, sink) = if attach.stdin.is_some() {
                    let (r, w) = pipe("stdin")?;
                    (r, Some(w))
                } else {
                    let null: OwnedFd = File::open("/dev/null")
                        .map_err(io_err("open", Path::new("/dev/null")))?
                        .into();
                    (null, None)
                };
                (
                    stdout_r,
                    stdout_w,
                    Some(stderr_r),
                    stderr_w,
                    stdin,
                    sink,
                    None,
                )
            }
        };
        // Copies hoist's stdin while the step runs; stopped (and joined)
        // when this function returns.
        let stdin_copier = match (attach.stdin, stdin_sink) {
            (Some(source), Some(sink)) => {
                let source = source
                    .try_clone_to_owned()
                    .map_err(io_err("duplicate descriptor of", Path::new("stdin")))?;
                let (stop_r, stop_w) = pipe("stopping stdin")?;
                let thread = std::thread::spawn(move || copy_stdin(source, sink, stop_r));
                Some(StdinCopier {
                    stop: Some(stop_w),
                    thread: Some(thread),
                })
            }
            _ => None,
        };
        let program = &self.config.init_program;
        let pid = sys::spawn_init(
            program,
            &[INIT_MARKER],
            flags,
            sys::InitFds {
                stdin: &stdin,
                stdout: &stdout_w,
                stderr: &stderr_w,
                control: &control_r,
                status: &status_w,
                exec_error: &exec_w,
                go: &go_r,
            },
        )
        .map_err(|source| RunError::Spawn {
            program: program.clone(),
            source,
        })?;
        let mut guard = InitGuard { pid, reaped: false };
        drop((control_r, status_w, stdout_w, stderr_w, exec_w, stdin, go_r));
        if self.rootless {
            crate::rootless::map_ids(pid)?;
        }
        {
            let mut go = File::from(go_w);
            let _ = go.write_all(b"g");
        }

        let mut errno = [0u8; 4];
        let mut exec_r = File::from(exec_r);
        if exec_r.read_exact(&mut errno).is_ok() {
            return Err(RunError::Spawn {
                program: program.clone(),
                source: std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno)),
            });
        }
        if let Some(cgroup) = cgroup {
            cgroup.attach(pid).map_err(RunError::Cgroup)?;
        }
        // The init waits for its configuration before it prepares the root,
        // so the step starts with its network configured. Dropped (stopped)
        // after the init is reaped, or on any early return.
        let _slirp = match slirp_log {
            Some(log) => Some(crate::net::Slirp::start(pid, log).map_err(RunError::Network)?),
            None => None,
        };
        let json = serde_json::to_vec(config).map_err(RunError::Encode)?;
        {
            let mut control = File::from(control_w);
            // A failed write means the init died already; its status says why.
            let _ = control.write_all(&json);
        }

        let mut files = [
            Some(File::from(stdout_r)),
            stderr_r.map(File::from),
            Some(File::from(status_r)),
        ];
        let mut status_text = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut control_buf: Vec<u8> = Vec::new();
        // None: not cancelled; Some(false): SIGTERM sent; Some(true): SIGKILL sent.
        let mut cancelled: Option<bool> = None;
        while files.iter().any(Option::is_some) {
            let open: Vec<usize> = (0..3).filter(|i| files[*i].is_some()).collect();
            let mut fds: Vec<i32> = open
                .iter()
                .filter_map(|i| files[*i].as_ref().map(AsRawFd::as_raw_fd))
                .collect();
            if let Some(c) = attach.control {
                fds.push(c.read_fd());
            }
            let watch_cancel = cancel.filter(|_| cancelled.is_none());
            if let Some(c) = watch_cancel {
                fds.push(c.read_fd());
            }
            let timeout = match cancelled {
                Some(false) => CANCEL_GRACE.as_millis() as libc::c_int,
                _ => -1,
            };
            let mut revents =
                sys::poll_in(&fds, timeout).map_err(io_err("poll", Path::new("step output")))?;
            if revents.iter().all(|r| *r == 0) && cancelled == Some(false) {
                let _ = sys::kill(pid, libc::SIGKILL);
                cancelled = Some(true);
                continue;
            }
            if watch_cancel.is_some() && revents.pop().is_some_and(|r| r != 0) {
                let _ = sys::kill(pid, libc::SIGTERM);
                cancelled = Some(false);
            }
            if let Some(c) = attach.control {
                if revents.pop().is_some_and(|r| r != 0) {
                    let mut chunk = [0u8; 64 * CONTROL_RECORD];
                    let n = sys::read(c.read_fd(), &mut chunk).unwrap_or(0);
                    control_buf.extend_from_slice(&chunk[..n]);
                    while control_buf.len() >= CONTROL_RECORD {
                        let record: Vec<u8> = control_buf.drain(..CONTROL_RECORD).collect();
                        match record[0] {
                            b'S' => {
                                let sig = i32::from_ne_bytes([
                                    record[1], record[2], record[3], record[4],
                                ]);
                                // The init forwards what it gets to the step.
                                let _ = sys::kill(pid, sig);
                            }
                            b'W' => {
                                if let Some(master) = &master {
                                    let rows = u16::from_ne_bytes([record[1], record[2]]);
                                    let cols = u16::from_ne_bytes([record[3], record[4]]);
                                    let _ = sys::set_window_size(master.as_raw_fd(), rows, cols);
                                }
                            }
                            _ => {}
                        }
                    }
                }
            }
            for (slot, rev) in open.into_iter().zip(revents) {
                if rev == 0 {
                    continue;
                }
                let Some(file) = files[slot].as_mut() else {
                    continue;
                };
                match file.read(&mut buf) {
                    Ok(0) => files[slot] = None,
                    Ok(n) => match slot {
                        0 => output(Stream::Stdout, &buf[..n]),
                        1 => output(Stream::Stderr, &buf[..n]),
                        _ => status_text.extend_from_slice(&buf[..n]),
                    },
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => files[slot] = None,
                }
            }
        }
        let waited = sys::wait4(pid).map_err(io_err("wait for", program))?;
        guard.reaped = true;
        drop(stdin_copier);
        let message = if status_text.is_empty() {
            None
        } else {
            Some(serde_json::from_slice(&status_text).map_err(RunError::Decode)?)
        };
        Ok((message, waited))
    }
}

/// What a run watches besides the step's output: cancellation, and the
/// streams, terminal and signals of an attached run.
struct Watch<'a> {
    cancel: Option<&'a Cancel>,
    attach: Attach<'a>,
}

/// Stops and joins the thread copying hoist's stdin into the step.
struct StdinCopier {
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for StdinCopier {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = File::from(stop).write(b"s");
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct CgroupGuard(Option<Cgroup>);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(c) = &self.0 {
            c.destroy();
        }
    }
}

/// An external runtime exits 128+n when the step was killed by signal n.
fn external_status(status: libc::c_int) -> ExitStatus {
    match sys::decode_status(status) {
        Ok(code) if code > 128 && code < 128 + 65 => ExitStatus::Signaled(code - 128),
        Ok(code) => ExitStatus::Exited(code),
        Err(sig) => ExitStatus::Signaled(sig),
    }
}

fn resolve_runtime(program: &Path) -> Result<PathBuf, RunError> {
    if program.components().count() > 1 {
        return Ok(program.to_path_buf());
    }
    which(program).ok_or_else(|| RunError::RuntimeNotFound(program.to_path_buf()))
}

/// The first file named `program` in a directory of `PATH`.
pub(crate) fn which(program: impl AsRef<Path>) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program.as_ref()))
        .find(|p| p.is_file())
}

fn validate(spec: &RunSpec) -> Result<(), RunError> {
    if spec.argv.is_empty() {
        return Err(RunError::InvalidSpec("argv is empty".into()));
    }
    if !spec.cwd.starts_with('/') {
        return Err(RunError::InvalidSpec(format!(
            "working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    for m in &spec.mounts {
        if !m.target().starts_with('/') || m.target() == "/" {
            return Err(RunError::InvalidSpec(format!(
                "mount target {:?} is not an absolute path below /",
                m.target()
            )));
        }
    }
    Ok(())
}

/// The per-run `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
fn write_etc_files(run_dir: &Path, spec: &RunSpec) -> Result<Vec<(String, PathBuf)>, RunError> {
    let dir = run_dir.join("etc");
    fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
    let hostname = &spec.hostname;
    let mut hosts =
        format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    // `--add-host`, after the step's own lines as Docker writes them.
    for (name, address) in &spec.options.extra_hosts {
        hosts.push_str(&format!("{address}\t{name}\n"));
    }
    let resolv = match spec.network {
        // No network: a resolv.conf that points nowhere rather than a host's
        // resolver that cannot be reached.
        NetworkMode::None => String::new(),
        NetworkMode::Host => fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        NetworkMode::Default => {
            crate::net::resolv_conf(&fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
        }
    };
    let mut files = Vec::new();
    for (name, content) in [
        ("hosts", hosts),
        ("resolv.conf", resolv),
        ("hostname", format!("{hostname}\n")),
    ] {
        let path = dir.join(name);
        fs::write(&path, content).map_err(io_err("write", &path))?;
        files.push((format!("/etc/{name}"), path));
    }
    Ok(files)
}

type PreparedRoot = (PathBuf, Option<Vec<MountData>>, Option<Stubs>);

/// Decide where the root is mounted and arrange stubs for mount targets.
fn prepare_stubs(
    run_dir: &Path,
    rootfs: &Rootfs,
    targets: &[Target],
) -> Result<PreparedRoot, RunError> {
    match rootfs {
        Rootfs::Dir(dir) => {
            let stubs = Stubs::create_in_dir(dir, targets)?;
            Ok((dir.clone(), None, Some(stubs)))
        }
        Rootfs::Mounts(mounts) => {
            let root = run_dir.join("rootfs");
            fs::create_dir_all(&root).map_err(io_err("create", &root))?;
            let mut mounts = mounts.clone();
            let mut stubs = None;
            match mounts.first_mut() {
                Some(first)
                    if first.kind == "overlay" && first.target.trim_matches('/').is_empty() =>
                {
                    let lower = run_dir.join("stubs");
                    fs::create_dir_all(&lower).map_err(io_err("create", &lower))?;
                    Stubs::create_lower(&lower, targets)?;
                    let lower = lower.display().to_string();
                    let mut found = false;
                    for o in first.options.iter_mut() {
                        if let Some(rest) = o.strip_prefix("lowerdir=") {
                            *o = format!("lowerdir={lower}:{rest}");
                            found = true;
                        }
                    }
                    if !found {
                        return Err(RunError::InvalidSpec(
                            "overlay root mount without lowerdir".into(),
                        ));
                    }
                }
                Some(first)
                    if first.kind == "bind" && first.target.trim_matches('/').is_empty() =>
                {
                    stubs = Some(Stubs::create_in_dir(Path::new(&first.source), targets)?);
                }
                Some(_) => {}
                None => return Err(RunError::InvalidSpec("rootfs has no mounts".into())),
            }
            Ok((root, Some(mounts), stubs))
        }
    }
}

/// Remove state directories of runs whose hoist process is gone.
fn clean_stale_runs(state_dir: &Path) {
    let Ok(entries) = fs::read_dir(state_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = crate::cgroup::owner_pid(&name) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_dir_others_could_plant_or_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let own = tmp.path().join("own");
        fs::create_dir(&own).unwrap();
        fs::set_permissions(&own, fs::Permissions::from_mode(0o700)).unwrap();
        check_state_dir(&own).unwrap();
        fs::set_permissions(&own, fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_state_dir(&own).unwrap_err().to_string();
        assert!(err.contains("mode 777"), "{err}");
        fs::set_permissions(&own, fs::Permissions::from_mode(0o700)).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        assert!(check_state_dir(&link).is_err(), "a planted symlink");
        if sys::geteuid() == 0 {
            std::os::unix::fs::chown(&own, Some(4242), None).unwrap();
            let err = check_state_dir(&own).unwrap_err().to_string();
            assert!(err.contains("owner 4242"), "{err}");
        }
    }

    fn targets() -> Vec<Target> {
        vec![
            Target {
                path: "/etc/hosts".into(),
                is_file: true,
                mode: None,
            },
            Target {
                path: "/proc".into(),
                is_file: false,
                mode: None,
            },
        ]
    }

    #[test]
    fn overlay_root_gets_a_stub_layer_on_top() {
        let run_dir = tempfile::tempdir().unwrap();
        let rootfs = Rootfs::Mounts(vec![MountData {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec![
                "lowerdir=/l1:/l2".into(),
                "upperdir=/u".into(),
                "workdir=/w".into(),
            ],
        }]);
        let (root, mounts, stubs) = prepare_stubs(run_dir.path(), &rootfs, &targets()).unwrap();
        assert_eq!(root, run_dir.path().join("rootfs"));
        assert!(stubs.is_none());
        let stub_dir = run_dir.path().join("stubs");
        assert_eq!(
            mounts.unwrap()[0].options[0],
            format!("lowerdir={}:/l1:/l2", stub_dir.display())
        );
        assert!(stub_dir.join("etc/hosts").is_file());
        assert!(stub_dir.join("proc").is_dir());
    }

    #[test]
    fn specs_are_validated() {
        let mut spec = RunSpec::new(Rootfs::Dir("/r".into()), vec![]);
        assert!(matches!(validate(&spec), Err(RunError::InvalidSpec(_))));
        spec.argv = vec!["true".into()];
        spec.cwd = "relative".into();
        assert!(matches!(validate(&spec), Err(RunError::InvalidSpec(_))));
        spec.cwd = "/".into();
        spec.mounts.push(Mount::Tmpfs {
            target: "/".into(),
            size: None,
            mode: None,
        });
        assert!(matches!(validate(&spec), Err(RunError::InvalidSpec(_))));
    }

    #[test]
    fn external_runtimes_report_signals_as_128_plus_n() {
        assert_eq!(external_status(137 << 8), ExitStatus::Signaled(9));
        assert_eq!(external_status(7 << 8), ExitStatus::Exited(7));
        assert_eq!(external_status(9), ExitStatus::Signaled(9));
    }
}
