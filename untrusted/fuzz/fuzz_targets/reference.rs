#![no_main]
//! Image references from users, Dockerfiles and registries: see
//! `hoist_untrusted::fuzzing::reference`, which `cargo test` also runs on
//! every file of `corpus/reference/`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    hoist_untrusted::fuzzing::reference(data);
});
