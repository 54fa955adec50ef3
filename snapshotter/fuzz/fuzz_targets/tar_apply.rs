//! Layer apply of arbitrary bytes (plain and gzip) into a fresh root; see
//! `hoist_snapshotter::fuzzing::fuzz_apply` for what counts as a crash.
//! The stable-Rust driver of the same body is `examples/fuzz_apply.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_snapshotter::fuzzing::fuzz_apply(data);
});
