//! Helpers of the fsck tests.

use std::path::Path;

use super::common::{hoist, Run};

/// `hoist fsck ARGS` on the store at `root`.
pub fn fsck(root: &Path, args: &[&str]) -> Run {
    let mut all = vec!["fsck"];
    all.extend_from_slice(args);
    hoist(root, &all, None)
}

/// `hoist fsck --format json`, parsed; asserts the exit code matches the
/// verdict.
pub fn fsck_json(root: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let run = fsck(root, &all);
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", run.stdout, run.stderr));
    let sound = doc["sound"].as_bool().unwrap();
    assert_eq!(
        run.code(),
        if sound { 0 } else { 1 },
        "exit code against the verdict: {doc}\n{}",
        run.stderr
    );
    doc
}

/// Asserts that `hoist fsck` finds no damage (leftovers of killed
/// processes allowed) and exits 0.
pub fn assert_sound(root: &Path, context: &str) {
    let doc = fsck_json(root, &[]);
    assert_eq!(
        doc["sound"], true,
        "{context}: fsck found damage:\n{:#}",
        doc["findings"]
    );
}

/// Every blob file's name under the store, sorted.
pub fn blob_names(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("content/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
