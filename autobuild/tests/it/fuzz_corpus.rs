//! Every file of the fuzz corpora (`fuzz/corpus/{webhook,config}/`) through
//! the body of its cargo-fuzz target, on stable, in `cargo test`.

use std::path::{Path, PathBuf};

use hoist_autobuild::fuzzing;
use hoist_testutil::fuzz::replay;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn webhook_corpus_replays() {
    replay(&corpus("webhook"), 15, fuzzing::webhook);
}

#[test]
fn config_corpus_replays() {
    replay(&corpus("config"), 8, fuzzing::config);
}
