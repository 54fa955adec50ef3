//! Integration tests against the real CNCF distribution registry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod auth;
mod faults;
mod hostile;
mod interop;
mod mirrors;
mod push_pull;
mod tls;
mod util;

/// Skip (or fail under CI) when the registry is not installed.
#[macro_export]
macro_rules! require_registry {
    () => {
        hoist_testutil::require_program!("docker-registry");
    };
}
