//! Replaying a fuzz target's corpus in `cargo test`: every file of
//! `<crate>/fuzz/corpus/<target>/` goes through the same function the
//! cargo-fuzz target calls, so what the fuzzer once found (a `crash-*` file
//! saved into the corpus) stays fixed without nightly or cargo-fuzz.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

/// Feeds every file of `dir` to `target`; panics naming each file that
/// made it panic. Returns the number of files replayed, which must be at
/// least `min` (a corpus that went missing fails instead of passing empty).
pub fn replay(dir: &Path, min: usize, target: impl Fn(&[u8])) -> usize {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read the corpus {}: {e}", dir.display()))
        .map(|e| e.expect("a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| target(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "the fuzz target panicked on {} corpus file(s):\n{}",
        failed.len(),
        failed.join("\n")
    );
    assert!(
        files.len() >= min,
        "{} holds {} files, fewer than the {min} expected",
        dir.display(),
        files.len()
    );
    eprintln!("replayed {} corpus files of {}", files.len(), dir.display());
    files.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_panics_the_target_fails_the_replay_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fine"), b"ok").unwrap();
        std::fs::write(dir.path().join("crash-1"), b"boom").unwrap();
        let outcome = catch_unwind(|| replay(dir.path(), 1, |d| assert_ne!(d, b"boom")));
        let message = outcome.unwrap_err();
        let message = message.downcast_ref::<String>().unwrap();
        assert!(message.contains("crash-1"), "{message}");
        assert!(!message.contains("fine"), "{message}");
        assert_eq!(replay(dir.path(), 1, |_| ()), 2);
    }

    #[test]
    fn a_corpus_smaller_than_expected_fails() {
        let dir = tempfile::tempdir().unwrap();
        assert!(catch_unwind(|| replay(dir.path(), 1, |_| ())).is_err());
    }
}
