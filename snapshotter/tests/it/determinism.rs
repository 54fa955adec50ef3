//! Same change, same bytes: across roots, backends, thread counts; mtimes
//! clamped to SOURCE_DATE_EPOCH; clean headers; every compression readable.

use std::fs;
use std::io::Read;
use std::path::Path;

use hoist_snapshotter::{
    ApplyOptions, BackendChoice, Compression, DiffOptions, LayerDescriptor, LocalSnapshotter,
    Snapshotter,
};
use sha2::{Digest, Sha256};

use crate::util::*;

/// A tree with text, a multi-block pseudo-random file, links, a deep path
/// and a long name, all with fixed mtimes.
fn populate(p: &Path) {
    write(p.join("etc/config.txt"), "line\n".repeat(10_000).as_bytes());
    let mut x: u64 = 42;
    let random: Vec<u8> = (0..3 * 1024 * 1024 / 2 + 123)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write(p.join("bin/blob"), &random);
    fs::hard_link(p.join("bin/blob"), p.join("bin/blob-link")).unwrap();
    std::os::unix::fs::symlink("../etc/config.txt", p.join("bin/cfg")).unwrap();
    let long = format!("{}/{}", "n".repeat(90), "f".repeat(120));
    write(p.join(long), b"long name");
    write(
        p.join("a.b/c"),
        b"sorting: a.b sorts after a and before a/b",
    );
    write(p.join("a/b"), b"x");
    sh(&format!(
        "find {} -mindepth 1 -exec touch -h -d @1600000000 {{}} +",
        p.display()
    ));
}

fn layer(choice: BackendChoice, options: &DiffOptions) -> (LayerDescriptor, Vec<u8>) {
    let (_tmp, root) = temp_root();
    let s = LocalSnapshotter::open(&root, choice).unwrap();
    s.prepare("base-k", None).unwrap();
    with_mounted(&s, "base-k", |p| write(p.join("base-file"), b"base"));
    s.commit("base", "base-k").unwrap();
    s.prepare("k", Some("base")).unwrap();
    with_mounted(&s, "k", |p| {
        populate(p);
        fs::remove_file(p.join("base-file")).unwrap();
    });
    let mut blob = Vec::new();
    let d = s.diff("k", options, &mut blob).unwrap();
    (d, blob)
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

#[test]
fn same_change_same_digest_across_roots_backends_and_threads() {
    hoist_testutil::require_root!();
    let one = DiffOptions {
        threads: 1,
        ..Default::default()
    };
    let (reference, blob) = layer(BackendChoice::Overlay, &one);
    assert_eq!(reference.digest, sha(&blob));
    assert!(reference.size > 3 * 1024 * 1024 / 2, "several gzip blocks");
    for threads in [2, 3, 8] {
        let (d, _) = layer(
            BackendChoice::Overlay,
            &DiffOptions {
                threads,
                ..Default::default()
            },
        );
        assert_eq!(d, reference, "{threads} threads");
    }
    // Another root, the native backend: only the root dir entry differs in
    // approach, not the bytes of this change.
    let (native, _) = layer(BackendChoice::Native, &one);
    assert_eq!(native.diff_id, reference.diff_id);
    assert_eq!(native.digest, reference.digest);

    // The system's gzip and tar agree with the digests and read the layer.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("layer.tar.gz");
    fs::write(&file, &blob).unwrap();
    let out = std::process::Command::new("sh")
        .arg("-ec")
        .arg(format!("gzip -dc {} | sha256sum", file.display()))
        .output()
        .unwrap();
    let hexsum = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        format!("sha256:{}", hexsum.split_whitespace().next().unwrap()),
        reference.diff_id
    );
    let listing = run("tar", &["-tzf", file.to_str().unwrap()]);
    let names: Vec<&str> = listing.lines().collect();
    assert_eq!(
        &names[..8],
        [
            ".wh.base-file",
            "a/",
            "a/b",
            "a.b/",
            "a.b/c",
            "bin/",
            "bin/blob",
            "bin/blob-link"
        ]
    );
}

#[test]
fn headers_are_clean_and_mtimes_clamped() {
    hoist_testutil::require_root!();
    let options = DiffOptions {
        compression: Compression::Uncompressed,
        source_date_epoch: Some(1_500_000_000),
        ..Default::default()
    };
    let (d, blob) = layer(BackendChoice::Overlay, &options);
    assert_eq!(d.diff_id, d.digest, "uncompressed: one stream");
    assert_eq!(d.media_type, "application/vnd.oci.image.layer.v1.tar");
    let mut ar = tar::Archive::new(&blob[..]);
    let mut saw_link = false;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let want = if name.contains(".wh.") {
            0
        } else {
            1_500_000_000
        };
        assert_eq!(h.mtime().unwrap(), want, "clamped: {name}");
        assert_eq!(h.username_bytes(), Some(&b""[..]));
        assert_eq!(h.groupname_bytes(), Some(&b""[..]));
        assert!(h.as_ustar().is_some(), "ustar headers");
        if let Some(pax) = e.pax_extensions().unwrap() {
            for ext in pax {
                let key = ext.unwrap().key().unwrap().to_string();
                assert!(
                    !key.contains("time"),
                    "no atime/ctime/mtime PAX records: {key}"
                );
            }
        }
        if h.entry_type() == tar::EntryType::Link {
            saw_link = true;
            assert_eq!(e.path().unwrap().to_str(), Some("bin/blob-link"));
            assert_eq!(e.link_name().unwrap().unwrap().to_str(), Some("bin/blob"));
        }
        let mut sink = Vec::new();
        e.read_to_end(&mut sink).unwrap();
    }
    assert!(saw_link);
}

#[test]
fn every_compression_applies_to_the_same_tree() {
    hoist_testutil::require_root!();
    let mut diff_ids = Vec::new();
    let mut trees = Vec::new();
    for compression in [
        Compression::Gzip,
        Compression::Zstd,
        Compression::Uncompressed,
    ] {
        let (d, blob) = layer(
            BackendChoice::Overlay,
            &DiffOptions {
                compression,
                ..Default::default()
            },
        );
        assert_eq!(d.media_type, compression.media_type());
        assert_eq!(d.digest, sha(&blob));
        diff_ids.push(d.diff_id.clone());
        let (_tmp, root) = temp_root();
        let s = LocalSnapshotter::open(&root, BackendChoice::Native).unwrap();
        s.prepare("k", None).unwrap();
        let report = s
            .apply("k", &mut &blob[..], &ApplyOptions::default())
            .unwrap();
        assert_eq!(report.diff_id, d.diff_id);
        s.commit("n", "k").unwrap();
        trees.push(committed_tree(&s, "n"));
    }
    assert!(diff_ids.iter().all(|d| *d == diff_ids[0]), "{diff_ids:?}");
    assert_same_tree(&trees[0], &trees[1], "zstd");
    assert_same_tree(&trees[0], &trees[2], "uncompressed");
    assert_eq!(
        fs::read_link(Path::new("bin/cfg")).ok(),
        None,
        "sanity: relative to cwd nothing exists"
    );
    assert_eq!(trees[0]["bin/cfg"].data, "../etc/config.txt");
    assert_eq!(trees[0]["bin/blob-link"].link.as_deref(), Some("bin/blob"));
}

/// An upper dir with a metacopy or redirect (overlay mounted with other
/// options than ours) is refused with a message naming the path.
#[test]
fn foreign_overlay_state_is_refused() {
    hoist_testutil::require_root!();
    for (name, kind) in [
        ("trusted.overlay.metacopy", "file"),
        ("trusted.overlay.redirect", "dir"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        let victim = upper.join("x");
        if kind == "file" {
            write(&victim, b"");
        } else {
            fs::create_dir_all(&victim).unwrap();
        }
        run(
            "setfattr",
            &["-n", name, "-v", "/y", victim.to_str().unwrap()],
        );
        let mut out = Vec::new();
        let err = hoist_snapshotter::write_layer(
            &hoist_snapshotter::DiffSource::OverlayUpper { upper },
            &DiffOptions::default(),
            &mut out,
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains("upper/x"), "{msg}");
    }
}

/// A change deep in a directory of the parent: overlay's upper dir holds the
/// copied-up parents, and the native backend must write the same parents
/// (with the epoch clamping their fresh mtimes), so that a machine without
/// overlay (or a rootless build) makes the same layer.
#[test]
fn parents_of_a_change_are_in_the_layer_on_every_backend() {
    hoist_testutil::require_root!();
    let options = DiffOptions {
        compression: Compression::Uncompressed,
        source_date_epoch: Some(1_700_000_000),
        ..Default::default()
    };
    let make = |choice: BackendChoice| {
        let (_tmp, root) = temp_root();
        let s = LocalSnapshotter::open(&root, choice).unwrap();
        s.prepare("base-k", None).unwrap();
        with_mounted(&s, "base-k", |p| {
            write(p.join("etc/keep/deep/old"), b"old");
            write(p.join("etc/gone"), b"gone");
            write(p.join("usr/untouched/file"), b"same");
            sh(&format!(
                "find {} -mindepth 1 -exec touch -h -d @1600000000 {{}} +",
                p.display()
            ));
        });
        s.commit("base", "base-k").unwrap();
        s.prepare("k", Some("base")).unwrap();
        with_mounted(&s, "k", |p| {
            write(p.join("etc/keep/deep/new"), b"new");
            fs::remove_file(p.join("etc/gone")).unwrap();
        });
        let mut blob = Vec::new();
        let d = s.diff("k", &options, &mut blob).unwrap();
        let names: Vec<String> = tar::Archive::new(&blob[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        (d, names)
    };
    let (overlay, overlay_names) = make(BackendChoice::Overlay);
    let (native, native_names) = make(BackendChoice::Native);
    assert_eq!(
        native_names,
        [
            "etc/",
            "etc/.wh.gone",
            "etc/keep/",
            "etc/keep/deep/",
            "etc/keep/deep/new"
        ]
    );
    assert_eq!(overlay_names, native_names);
    assert_eq!(overlay.diff_id, native.diff_id);
}

/// Writing a layer reads every file without touching its atime: a file the
/// COPY linked has a ctime newer than its atime, and relatime would then
/// dirty and journal each inode the diff reads.
#[test]
fn a_diff_leaves_the_files_atimes_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let upper = tmp.path().join("upper");
    let file = upper.join("dir/f.txt");
    write(&file, b"content");
    // Older than the ctime the write just gave it: relatime would update it.
    let then = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_times(fs::FileTimes::new().set_accessed(then))
        .unwrap();
    let options = DiffOptions {
        compression: Compression::Uncompressed,
        ..Default::default()
    };
    for source in [
        hoist_snapshotter::DiffSource::OverlayUpper {
            upper: upper.clone(),
        },
        hoist_snapshotter::DiffSource::Trees {
            lower: None,
            upper: upper.clone(),
        },
    ] {
        let mut out = Vec::new();
        hoist_snapshotter::write_layer(&source, &options, &mut out).unwrap();
        assert!(
            out.windows(7).any(|w| w == b"content"),
            "{source:?}: the file's content is in the layer"
        );
        assert_eq!(
            fs::metadata(&file).unwrap().accessed().unwrap(),
            then,
            "{source:?}"
        );
    }
}
