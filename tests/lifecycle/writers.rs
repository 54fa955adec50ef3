//! `hoist load`, `import` and `pull` write blobs before a ref names them;
//! they hold a lease meanwhile, so a concurrent `hoist prune` keeps them.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use hoist_testutil::cli::Hoist;

use super::common::{Env, HOIST};

fn blob_names(root: &Path) -> BTreeSet<String> {
    std::fs::read_dir(root.join("content/blobs/sha256"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Where the archive's last entry ends (the end-of-archive blocks start):
/// a reader fed up to here has read every entry and waits for the rest.
fn end_of_entries(archive: &[u8]) -> usize {
    let mut tar = tar::Archive::new(archive);
    let mut end = 0;
    for entry in tar.entries().unwrap() {
        let entry = entry.unwrap();
        let start = entry.raw_file_position() as usize;
        end = start + (entry.size() as usize).div_ceil(512) * 512;
    }
    end
}

#[test]
fn prune_all_while_a_load_waits_for_the_end_of_its_archive_keeps_its_blobs() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let archive = env.scratch.path().join("busybox-oci.tar");
    env.hoist().ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "busybox:latest",
    ]);
    let bytes = std::fs::read(&archive).unwrap();
    let end = end_of_entries(&bytes);
    assert!(end < bytes.len(), "no end-of-archive blocks after {end}");
    // The image's blobs, as the source store has them (it holds nothing else).
    let wanted = blob_names(env.root.path());
    assert_eq!(
        wanted.len(),
        3,
        "manifest, config and one layer: {wanted:?}"
    );

    let store = tempfile::tempdir().unwrap();
    let target = Hoist::new(HOIST, store.path());
    // A first command creates the store, so that the load below is the
    // only thing in flight.
    target.ok(&["images"]);
    let mut load = target
        .command()
        .args(["load", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = load.stdin.take().unwrap();
    input.write_all(&bytes[..end]).unwrap();
    input.flush().unwrap();
    // Every entry is in the store once its blob files are; the load then
    // blocks reading the end of the archive, with no ref naming them yet.
    hoist_testutil::wait_until(
        "the load to store every blob of the archive",
        Duration::from_secs(120),
        Duration::from_millis(20),
        || blob_names(store.path()).is_superset(&wanted).then_some(()),
    );
    let prune = target.run(&["prune", "--all", "-f"]);
    prune.assert_ok();
    assert!(
        blob_names(store.path()).is_superset(&wanted),
        "prune collected blobs of the running load:\n{}",
        prune.stdout
    );

    input.write_all(&bytes[end..]).unwrap();
    drop(input);
    let out = load.wait_with_output().unwrap();
    hoist_testutil::ok(out, "hoist load");
    // The loaded image is whole: its blobs are those of the source, byte
    // for byte, and `hoist save` reads every one.
    for name in &wanted {
        assert_eq!(
            std::fs::read(store.path().join("content/blobs/sha256").join(name)).unwrap(),
            std::fs::read(env.root.path().join("content/blobs/sha256").join(name)).unwrap(),
            "blob {name}"
        );
    }
    let again = store.path().join("again.tar");
    target.ok(&["save", "-o", again.to_str().unwrap(), "busybox:latest"]);
}
