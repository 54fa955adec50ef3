//! hoist-snapshotter (work in progress).
