//! hoist-registry (work in progress).
