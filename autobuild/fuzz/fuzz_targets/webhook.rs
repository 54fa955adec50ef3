#![no_main]
//! Webhook bodies as any sender may post them: see
//! `hoist_autobuild::fuzzing::webhook`, which `cargo test` also runs on
//! every file of `corpus/webhook/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_autobuild::fuzzing::webhook(data);
});
