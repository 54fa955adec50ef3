//! Solver tests with fake ops: no containers, no root. Each fake counts its
//! executions, so tests assert on what ran, what hit the cache, and what was
//! recorded.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod cache;
mod events;
mod failure;
mod keys;
mod scheduling;
mod util;
