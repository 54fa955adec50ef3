//! `hoist build` end to end: the real binary, a store in a tempdir, a busybox
//! base image imported offline, assertions on the image it makes.

mod build {
    pub mod basics;
    pub mod cache;
    pub mod common;
    pub mod errors;
    pub mod interrupt;
    pub mod outputs;
    pub mod reproducible;
    pub mod summary;
    pub mod tty;
}
