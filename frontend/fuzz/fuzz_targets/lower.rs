#![no_main]
//! Lowering any parsable Dockerfile must not panic.
//! The body is `hoist_frontend::fuzzing::lower`, which `cargo test` also
//! runs on every file of `corpus/lower/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_frontend::fuzzing::lower(data);
});
