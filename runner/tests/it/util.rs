//! A small DSL for the runner's tests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hoist_runner::{Rootfs, RunResult, RunSpec, Runner, RunnerConfig, Runtime, Stream};
use libtest_mimic::Failed;

pub type TestFn = fn(&Env) -> Result<(), Failed>;

/// Skip (Ok) when not root, fail under HOIST_REQUIRE_ROOT_TESTS=1.
#[macro_export]
macro_rules! need_root {
    () => {
        if !hoist_testutil::is_root() {
            if hoist_testutil::strict() {
                return Err("this test needs root and HOIST_REQUIRE_ROOT_TESTS=1 is set".into());
            }
            eprintln!("skipped: this test needs root");
            return Ok(());
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
}

impl Env {
    /// The embedded runtime, plus crun and runc when installed.
    pub fn all() -> Vec<Env> {
        let mut envs = vec![Env {
            name: "embedded".into(),
            runtime: Runtime::Embedded,
        }];
        for rt in ["crun", "runc"] {
            if rt == "crun" && hybrid_with_v2_controllers() {
                // crun refuses to run at all on such hosts ("cgroups in
                // hybrid mode not supported, drop all controllers from
                // cgroupv2"), whatever its cgroup manager: a host limit.
                eprintln!(
                    "skipped: crun cannot run on this hybrid cgroup host, no tests through it"
                );
            } else if hoist_testutil::which(rt).is_some() {
                envs.push(Env {
                    name: rt.into(),
                    runtime: Runtime::External(rt.into()),
                });
            } else if hoist_testutil::strict() {
                panic!("`{rt}` is not installed and HOIST_REQUIRE_ROOT_TESTS=1 is set");
            } else {
                eprintln!("skipped: `{rt}` is not installed, no tests through it");
            }
        }
        envs
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
    std::fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers")
        .is_ok_and(|c| !c.trim().is_empty())
}
