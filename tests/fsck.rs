//! `hoist fsck` end to end, the crash-consistency harness (SIGKILL at a
//! random moment of every command that writes the store), full disks, many
//! builds on one store, and a slow registry (figures: docs/reliability.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod fsck {
    // Shared with the build tests; not every helper is used here.
    #[allow(dead_code, unused_imports)]
    #[path = "../build/common.rs"]
    pub mod common;
    pub mod concurrency;
    pub mod crash;
    pub mod damage;
    pub mod fulldisk;
    pub mod slowregistry;
    pub mod util;
}
