//! Every file of the fuzz corpora (`fuzz/corpus/{parse,expand,lower}/`)
//! through the body of its cargo-fuzz target, on stable, in `cargo test`.

use std::path::{Path, PathBuf};

use hoist_frontend::fuzzing;
use hoist_testutil::fuzz::replay;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn parse_corpus_replays() {
    replay(&corpus("parse"), 30, fuzzing::parse);
}

#[test]
fn expand_corpus_replays() {
    replay(&corpus("expand"), 100, fuzzing::expand);
}

#[test]
fn lower_corpus_replays() {
    replay(&corpus("lower"), 30, fuzzing::lower);
}
