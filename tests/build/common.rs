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
