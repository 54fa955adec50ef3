//! Shared helpers: a store with busybox imported, running `hoist build`.
//! The harness itself is `hoist_testutil::cli`; this module binds it to
//! this package's binary under the names the tests use.

use std::path::Path;

pub use hoist_testutil::cli::{cached_steps, done_steps, mode, owner, Run};

/// This package's `hoist` binary.
pub const HOIST: &str = env!("CARGO_BIN_EXE_hoist");

/// A store with `busybox:latest` imported, a context and a scratch dir
/// (`hoist_testutil::cli::Env` for this package's binary).
pub struct Env(hoist_testutil::cli::Env);

impl Env {
    /// A fresh store with `busybox:latest` imported.
    pub fn new() -> Env {
        Env(hoist_testutil::cli::Env::new(HOIST))
    }
}

impl std::ops::Deref for Env {
    type Target = hoist_testutil::cli::Env;

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// `hoist --root ROOT ARGS`, with `stdin` as its input when given.
pub fn hoist(root: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    hoist_testutil::cli::Hoist::new(HOIST, root).run_with_input(args, stdin)
}

/// A `hoist build --progress plain -t TAG` of the context running in the
/// background: the child, its stderr lines as they come, and the thread
/// reading them (ends with the child).
pub struct Spawned {
    /// The `hoist` process.
    pub child: std::process::Child,
    /// Its stderr, line by line.
    pub lines: std::sync::mpsc::Receiver<String>,
    /// The reader thread.
    pub reader: std::thread::JoinHandle<()>,
}

/// Starts `hoist build --progress plain -t TAG CONTEXT` without waiting.
pub fn spawn_build(env: &Env, tag: &str) -> Spawned {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = env
        .hoist()
        .command()
        .args(["build", "--progress", "plain", "-t", tag])
        .arg(env.context.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hoist build");
    let (sender, lines) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = sender.send(line);
        }
    });
    Spawned {
        child,
        lines,
        reader,
    }
}
