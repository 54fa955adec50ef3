//! Hostile builds: Dockerfiles, contexts, images and archives that try to
//! reach the host. Every case plants a sentinel directory on the host (with
//! a secret in it), runs the attack through the real `hoist` binary, and
//! asserts that the sentinel is byte- and mode-identical afterwards and that
//! its secret is in no file of the store and no output. A case may fail the
//! build (naming `Dockerfile:LINE`), never succeed by touching the host.
//! Cases run as root and, where the attack applies, rootless.
//! docs/security.md describes what each layer enforces.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod hostile {
    pub mod common;
    pub mod devices;
    pub mod network;
    pub mod paths;
}
