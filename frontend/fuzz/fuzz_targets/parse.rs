#![no_main]
//! Parsing any text must not panic; a parsed file must dump and re-render errors.
//! The body is `hoist_frontend::fuzzing::parse`, which `cargo test` also
//! runs on every file of `corpus/parse/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_frontend::fuzzing::parse(data);
});
