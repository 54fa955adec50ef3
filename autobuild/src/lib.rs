//! hoist-autobuild (work in progress).
