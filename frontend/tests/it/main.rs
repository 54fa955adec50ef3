//! Integration tests of hoist-frontend.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod conformance;
mod errors;
mod fuzz_corpus;
mod heredocs;
mod lowering;
mod properties;
mod util;
