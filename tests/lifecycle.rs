//! Cache lifecycle end to end: garbage collection under a cap, leases
//! against concurrent prunes, crash safety, and `--explain`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod lifecycle {
    // Shared with the build tests; not every helper is used here.
    #[allow(dead_code, unused_imports)]
    #[path = "../build/common.rs"]
    pub mod common;
    pub mod explain;
    pub mod gc;
    pub mod share;
    pub mod util;
    pub mod writers;
}
