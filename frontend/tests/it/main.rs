//! Integration tests of hoist-frontend.

mod conformance;
mod errors;
mod heredocs;
mod lowering;
mod properties;
mod util;
