//! `hoist run` and `hoist rebase` end to end: the real binary, a store in a
//! tempdir, images built with `hoist build` on a busybox base imported
//! offline.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod run {
    pub mod command;
    // Shared with tests/build; not every helper is used here.
    #[allow(dead_code, unused_imports)]
    #[path = "../build/common.rs"]
    pub mod common;
    pub mod io;
    pub mod rebase;
}
