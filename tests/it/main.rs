//! Integration tests of the `hoist` binary: each drives the real binary
//! against a store in a temp dir.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod bad_input;
mod ci_logs;
mod concurrency;
mod debug;
mod import;
mod manage;
mod private_registry;
mod proxy;
mod registry;
mod remote_input;
mod save_load;
mod shell;
mod transfer_progress;
mod tree;
mod util;
