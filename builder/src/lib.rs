//! hoist-builder (work in progress).
