//! Integration tests of hoist-autobuild: real git repositories made with the
//! git CLI, the server on a free port, requests over HTTP.
//!
//! The test binary doubles as the helper programs some tests need (a
//! post-receive hook, a server to SIGKILL): run with
//! `HOIST_AUTOBUILD_TEST_HELPER=hook|serve` and `--exact helper_entry`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod browser;
mod common;
mod fuzz_corpus;
mod helper;
mod hooks;
mod hostile;
mod limits;
mod pg;
mod queue;
mod real;
mod recovery;
mod webhooks;

/// Not a test: the entry point of the helper modes (returns at once when
/// the environment does not ask for one).
#[test]
fn helper_entry() {
    match std::env::var("HOIST_AUTOBUILD_TEST_HELPER").as_deref() {
        Ok("hook") => helper::hook(),
        Ok("serve") => helper::serve(),
        Ok("worker") => helper::worker(),
        _ => {}
    }
}
