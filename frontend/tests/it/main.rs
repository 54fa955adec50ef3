//! Integration tests of hoist-frontend.

mod conformance;
