//! hoist-cache (work in progress).
