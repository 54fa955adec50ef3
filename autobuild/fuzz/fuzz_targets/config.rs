#![no_main]
//! Autobuild config files: see `hoist_autobuild::fuzzing::config`, which
//! `cargo test` also runs on every file of `corpus/config/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_autobuild::fuzzing::config(data);
});
