//! Image references: hoist-untrusted's one parser and normaliser (the
//! frontend, which may not depend on this crate, uses the same one).

pub use hoist_untrusted::reference::*;
