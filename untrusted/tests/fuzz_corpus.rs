//! Every file of the fuzz corpus `fuzz/corpus/reference/` through the body
//! of its cargo-fuzz target, on stable, in `cargo test`.

use std::path::Path;

#[test]
fn reference_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/reference");
    hoist_testutil::fuzz::replay(&dir, 40, hoist_untrusted::fuzzing::reference);
}
