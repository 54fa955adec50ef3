//! Integration tests of hoist-snapshotter. Most need root (mounts, chown,
//! mknod) and skip with a message otherwise.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod apply_safety;
mod conformance;
mod determinism;
mod fuzz_corpus;
mod interop;
mod lifecycle;
mod util;
