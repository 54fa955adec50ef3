//! `hoist build --load` and `hoist save | docker load` against a real
//! Docker engine. A test binary of its own: cargo runs test binaries one
//! after another, so no other hoist test runs beside the engine (in the
//! `build` binary, two CI runs saw a loaded image's containers fail to find
//! `sh` or `cat` under the parallel load of the other build tests).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

#[path = "build/common.rs"]
#[allow(
    dead_code,
    unused_imports,
    reason = "the build tests' helpers; these tests use a few of them"
)]
mod common;
#[path = "build/load.rs"]
mod load;
