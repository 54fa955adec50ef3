//! A small DSL for the runner's tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hoist_runner::{Rootfs, RunResult, RunSpec, Runner, RunnerConfig, Runtime, Stream};
use libtest_mimic::{Completion, Failed};

pub type TestFn = fn(&Env) -> Result<(), Failed>;

std::thread_local! {
    /// Why the trial running on this thread could not run, set by
    /// [`cannot_run`]. A side channel so that the tests keep returning
    /// `Result<(), Failed>` and a skip is one line.
    static CANNOT_RUN: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// A precondition of the running trial is missing here (root, a program,
/// cgroups): the trial shows as ignored with `reason`, or fails under
/// HOIST_REQUIRE_ROOT_TESTS=1, where CI has provided everything. Return its
/// value from the test.
pub fn cannot_run(reason: impl Into<String>) -> Result<(), Failed> {
    let reason = reason.into();
    if hoist_testutil::strict() {
        return Err(format!("{reason} and HOIST_REQUIRE_ROOT_TESTS=1 is set").into());
    }
    host_limit(reason)
}

/// The running trial cannot run on this host for a reason no package lifts
/// (the kernel, the architecture, the cgroup layout): it shows as ignored
/// with `reason`, in strict mode too. Return its value from the test.
pub fn host_limit(reason: impl Into<String>) -> Result<(), Failed> {
    CANNOT_RUN.with(|c| *c.borrow_mut() = Some(reason.into()));
    Ok(())
}

/// Runs one trial body; ignored (with the reason) when it called
/// [`cannot_run`], never a silent pass.
pub fn outcome(body: impl FnOnce() -> Result<(), Failed>) -> Result<Completion, Failed> {
    CANNOT_RUN.with(|c| c.borrow_mut().take());
    body()?;
    Ok(match CANNOT_RUN.with(|c| c.borrow_mut().take()) {
        Some(reason) => Completion::ignored_with(reason),
        None => Completion::Completed,
    })
}

/// Ends the trial when not root: shown as ignored, a failure under
/// HOIST_REQUIRE_ROOT_TESTS=1.
#[macro_export]
macro_rules! need_root {
    () => {
        if !hoist_testutil::is_root() {
            return $crate::util::cannot_run("this test needs root");
        }
    };
}

/// `assert_eq!` that returns a readable failure instead of panicking.
#[macro_export]
macro_rules! check_eq {
    ($got:expr, $want:expr) => {{
        let (got, want) = (&$got, &$want);
        if got != want {
            return Err(format!(
                "{}:{}: {} differs\n  want: {:?}\n   got: {:?}",
                file!(),
                line!(),
                stringify!($got),
                want,
                got
            )
            .into());
        }
    }};
}

/// `assert!` with a message, returning a failure.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {{
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($msg)+)).into());
        }
    }};
}

/// Which runtime a test runs through.
#[derive(Clone, Debug)]
pub struct Env {
    pub name: String,
    pub runtime: Runtime,
    /// Why this runtime cannot run here; its trials are still listed.
    pub unavailable: Option<Unavailable>,
}

/// Why every trial of a runtime cannot run on this host.
#[derive(Clone, Debug)]
pub enum Unavailable {
    /// A limit of the host that installing packages cannot lift: the trials
    /// show as ignored with the reason, in strict mode too.
    Host(String),
    /// A precondition CI provides (an installed program): ignored with the
    /// reason, a failure under HOIST_REQUIRE_ROOT_TESTS=1.
    Missing(String),
}

impl Env {
    /// The embedded runtime, crun and runc: every runtime's trials are
    /// listed, those that cannot run here as ignored with the reason.
    pub fn all() -> Vec<Env> {
        let mut envs = vec![Env {
            name: "embedded".into(),
            runtime: Runtime::Embedded,
            unavailable: None,
        }];
        for rt in ["crun", "runc"] {
            let unavailable = if hoist_testutil::which(rt).is_none() {
                Some(Unavailable::Missing(format!("`{rt}` is not installed")))
            } else if rt == "crun" && hybrid_with_v2_controllers() {
                // crun refuses to run at all on such hosts ("cgroups in
                // hybrid mode not supported, drop all controllers from
                // cgroupv2"), whatever its cgroup manager: a host limit.
                Some(Unavailable::Host(format!(
                    "crun refuses hybrid cgroup hosts with controllers on the v2 mount, \
                     here {}: a host limit, not a missing package",
                    v2_controllers().trim()
                )))
            } else {
                None
            };
            envs.push(Env {
                name: rt.into(),
                runtime: Runtime::External(rt.into()),
                unavailable,
            });
        }
        envs
    }

    /// Runs `test` through this runtime, or says why it cannot run here.
    pub fn trial(&self, test: TestFn) -> Result<Completion, Failed> {
        match &self.unavailable {
            None => outcome(|| test(self)),
            Some(Unavailable::Host(reason)) => Ok(Completion::ignored_with(reason)),
            Some(Unavailable::Missing(reason)) => {
                cannot_run(reason.as_str())?;
                Ok(Completion::ignored_with(reason))
            }
        }
    }

    pub fn embedded(&self) -> bool {
        self.runtime == Runtime::Embedded
    }

    pub fn runner(&self) -> Runner {
        Runner::new(RunnerConfig {
            runtime: self.runtime.clone(),
            init_program: std::env::current_exe().expect("current exe"),
            ..RunnerConfig::default()
        })
        .expect("make a runner")
    }
}

/// A busybox root filesystem in a temp dir.
pub struct Root {
    pub dir: tempfile::TempDir,
}

impl Root {
    pub fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        hoist_testutil::busybox_rootfs(dir.path());
        Root { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn spec(&self, script: &str) -> RunSpec {
        RunSpec::new(
            Rootfs::Dir(self.path().to_path_buf()),
            vec!["sh".into(), "-c".into(), script.into()],
        )
    }
}

/// What a run produced.
pub struct Output {
    pub result: RunResult,
    pub stdout: String,
    pub stderr: String,
    pub chunks: Vec<(Stream, Vec<u8>)>,
}

pub fn run(env: &Env, spec: &RunSpec) -> Result<Output, Failed> {
    run_with(&env.runner(), spec, &mut |_, _| {})
}

pub fn run_with(
    runner: &Runner,
    spec: &RunSpec,
    hook: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Output, Failed> {
    let chunks = Arc::new(Mutex::new(Vec::new()));
    let c = chunks.clone();
    let result = runner
        .run(spec, &mut |stream, bytes| {
            c.lock().unwrap().push((stream, bytes.to_vec()));
            hook(stream, bytes);
        })
        .map_err(|e| {
            let mut text = e.to_string();
            let mut s = std::error::Error::source(&e);
            while let Some(x) = s {
                text.push_str(&format!(": {x}"));
                s = x.source();
            }
            Failed::from(text)
        })?;
    let chunks = chunks.lock().unwrap().clone();
    let join = |want: Stream| {
        String::from_utf8_lossy(
            &chunks
                .iter()
                .filter(|(s, _)| *s == want)
                .flat_map(|(_, b)| b.clone())
                .collect::<Vec<u8>>(),
        )
        .into_owned()
    };
    Ok(Output {
        result,
        stdout: join(Stream::Stdout),
        stderr: join(Stream::Stderr),
        chunks,
    })
}

/// Run and require exit 0, returning stdout.
pub fn stdout_of(env: &Env, spec: &RunSpec) -> Result<String, Failed> {
    let out = run(env, spec)?;
    if !out.result.status.success() {
        return Err(format!(
            "step failed: {}\nstdout: {}\nstderr: {}",
            out.result.status, out.stdout, out.stderr
        )
        .into());
    }
    Ok(out.stdout)
}

/// All entries below `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = walk(dir)
        .into_iter()
        .map(|p| p.strip_prefix(dir).unwrap().to_path_buf())
        .collect();
    out.sort();
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            out.push(e.path());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.extend(walk(&e.path()));
            }
        }
    }
    out
}

/// A hybrid cgroup layout whose v2 mount has controllers (crun refuses those).
fn hybrid_with_v2_controllers() -> bool {
    !v2_controllers().trim().is_empty()
}

/// The controllers of a hybrid layout's v2 mount; empty when there is none.
fn v2_controllers() -> String {
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default()
}
