//! hoist-registry: the OCI distribution protocol (resolve, pull, push, auth,
//! mirrors, retries) and image reference parsing.
#![warn(missing_docs)]

pub mod reference;

pub use reference::{Reference, ReferenceError};
