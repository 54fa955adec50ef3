//! hoist-runner (work in progress).
