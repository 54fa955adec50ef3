//! hoist-frontend (work in progress).
