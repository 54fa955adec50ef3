//! Integration tests of hoist-snapshotter. Most need root (mounts, chown,
//! mknod) and skip with a message otherwise.

mod apply_safety;
mod conformance;
mod determinism;
mod fuzz_corpus;
mod interop;
mod lifecycle;
mod util;
