#![no_main]
//! Word expansion of any word, in every lexer mode, must not panic.
//! The body is `hoist_frontend::fuzzing::expand`, which `cargo test` also
//! runs on every file of `corpus/expand/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_frontend::fuzzing::expand(data);
});
