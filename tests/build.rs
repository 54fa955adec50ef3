//! `hoist build` end to end: the real binary, a store in a tempdir, a busybox
//! base image imported offline, assertions on the image it makes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

mod build {
    pub mod basics;
    pub mod cache;
    pub mod checks;
    pub mod common;
    pub mod compression;
    pub mod config;
    pub mod copy;
    pub mod dryrun;
    pub mod errors;
    pub mod heredocs;
    pub mod interrupt;
    pub mod mounts;
    pub mod multiplatform;
    pub mod named_contexts;
    pub mod network;
    pub mod outputs;
    pub mod platform;
    pub mod remote;
    pub mod reproducible;
    pub mod summary;
    pub mod tty;
}
