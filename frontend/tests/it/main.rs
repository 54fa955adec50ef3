//! Integration tests of hoist-frontend.

mod conformance;
mod errors;
mod lowering;
mod util;
