//! Round trips with tools nobody here wrote: umoci unpacks hoist's layers,
//! hoist applies buildah's layers; the trees must match.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use hoist_snapshotter::{ApplyOptions, BackendChoice, DiffOptions, LocalSnapshotter, Snapshotter};
use sha2::{Digest, Sha256};

use crate::util::*;

/// Content exercising every kind of entry and attribute.
fn rich_tree(p: &Path) {
    write(p.join("etc/hostname"), b"hoist\n");
    write(p.join("etc/deep/a/b/c.conf"), b"x=1\n");
    write(p.join("usr/bin/tool"), b"#!/bin/sh\necho tool\n");
    chmod(p.join("usr/bin/tool"), 0o755);
    write(p.join("usr/bin/ping"), b"\x7fELF not really");
    run(
        "setcap",
        &["cap_net_raw+ep", p.join("usr/bin/ping").to_str().unwrap()],
    );
    chmod(p.join("usr/bin/ping"), 0o4755);
    fs::hard_link(p.join("usr/bin/tool"), p.join("usr/bin/tool-link")).unwrap();
    symlink("tool", p.join("usr/bin/alias")).unwrap();
    symlink("/etc/hostname", p.join("abs-link")).unwrap();
    std::os::unix::fs::lchown(p.join("etc/hostname"), Some(1000), Some(1000)).unwrap();
    fs::create_dir_all(p.join("var/empty")).unwrap();
    write(p.join("var/old/1"), b"1");
    write(p.join("var/old/2"), b"2");
    write(p.join("replace-me"), b"file");
    sh(&format!(
        "cd {} && mkfifo run.fifo && mknod dev-null c 1 3",
        p.display()
    ));
}

fn rich_change(p: &Path) {
    fs::remove_file(p.join("etc/hostname")).unwrap();
    fs::remove_dir_all(p.join("var/old")).unwrap();
    write(p.join("var/old/3"), b"3");
    fs::remove_file(p.join("replace-me")).unwrap();
    write(p.join("replace-me/now-a-dir"), b"d");
    write(p.join("etc/deep/a/b/c.conf"), b"x=2\n");
}

fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").unwrap())
}

fn put_blob(layout: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(bytes)));
    fs::write(blob_path(layout, &digest), bytes).unwrap();
    (digest, bytes.len())
}

#[test]
fn umoci_unpacks_hoist_layers_like_hoist_applies_them() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("umoci");
    let tmp = tempfile::tempdir().unwrap();
    let s = LocalSnapshotter::open(tmp.path().join("root"), BackendChoice::Overlay).unwrap();
    let mut layers = Vec::new();
    let mut parent: Option<String> = None;
    for (i, f) in [rich_tree as fn(&Path), rich_change].iter().enumerate() {
        let key = format!("k{i}");
        s.prepare(&key, parent.as_deref()).unwrap();
        with_mounted(&s, &key, f);
        let mut blob = Vec::new();
        let d = s.diff(&key, &DiffOptions::default(), &mut blob).unwrap();
        layers.push((d, blob));
        let name = format!("n{i}");
        s.commit(&name, &key).unwrap();
        parent = Some(name);
    }

    // A minimal OCI image layout around the two layers.
    let layout = tmp.path().join("layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(d, _)| d.diff_id.clone()).collect::<Vec<_>>()},
    });
    let (config_digest, config_size) = put_blob(&layout, config.to_string().as_bytes());
    let mut layer_descs = Vec::new();
    for (d, blob) in &layers {
        let (digest, size) = put_blob(&layout, blob);
        assert_eq!(digest, d.digest);
        layer_descs
            .push(serde_json::json!({"mediaType": d.media_type, "digest": digest, "size": size}));
    }
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": layer_descs,
    });
    let (manifest_digest, manifest_size) = put_blob(&layout, manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "tag"},
        }],
    });
    fs::write(layout.join("index.json"), index.to_string()).unwrap();

    let bundle = tmp.path().join("bundle");
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:tag", layout.display()),
            bundle.to_str().unwrap(),
        ],
    );
    let umoci_tree = tree(&bundle.join("rootfs"));

    // hoist's own apply, on the native backend (a full tree, like umoci's).
    let n = LocalSnapshotter::open(tmp.path().join("native"), BackendChoice::Native).unwrap();
    let mut parent: Option<String> = None;
    for (i, (_, blob)) in layers.iter().enumerate() {
        let key = format!("a{i}");
        n.prepare(&key, parent.as_deref()).unwrap();
        n.apply(&key, &mut &blob[..], &ApplyOptions::default())
            .unwrap();
        let name = format!("c{i}");
        n.commit(&name, &key).unwrap();
        parent = Some(name);
    }
    let hoist_tree = committed_tree(&n, "c1");
    assert_same_tree(&umoci_tree, &hoist_tree, "umoci unpack vs hoist apply");
    // And both equal what the snapshot showed.
    assert_same_tree(
        &committed_tree(&s, "n1"),
        &hoist_tree,
        "snapshot vs hoist apply",
    );
    assert!(hoist_tree["usr/bin/ping"]
        .xattrs
        .iter()
        .any(|(k, _)| k == "security.capability"));
    assert_eq!(hoist_tree["usr/bin/ping"].mode, 0o4755);
}

/// Unmounts whatever is still mounted below `dir` (buildah's storage).
fn unmount_below(dir: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = std::process::Command::new("umount").arg(&p).status();
    }
}

struct Buildah {
    dir: tempfile::TempDir,
}

impl Buildah {
    fn run(&self, args: &[&str]) -> String {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("run");
        let mut all = vec![
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "overlay",
        ];
        all.extend_from_slice(args);
        run("buildah", &all).trim().to_string()
    }
}

impl Drop for Buildah {
    fn drop(&mut self) {
        let root = self.dir.path().join("root");
        let runroot = self.dir.path().join("run");
        let base = [
            "--root",
            root.to_str().unwrap(),
            "--runroot",
            runroot.to_str().unwrap(),
            "--storage-driver",
            "overlay",
        ];
        for args in [&["umount", "-a"][..], &["rm", "-a"], &["rmi", "-a", "-f"]] {
            let _ = std::process::Command::new("buildah")
                .args(base)
                .args(args)
                .output();
        }
        unmount_below(self.dir.path());
    }
}

#[test]
fn hoist_applies_buildah_layers_like_buildah_mounts_them() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("buildah");
    let b = Buildah {
        dir: tempfile::tempdir().unwrap(),
    };
    let c1 = b.run(&["from", "scratch"]);
    let p1 = PathBuf::from(b.run(&["mount", &c1]));
    rich_tree(&p1);
    b.run(&["commit", "-q", &c1, "img1"]);
    let c2 = b.run(&["from", "img1"]);
    let p2 = PathBuf::from(b.run(&["mount", &c2]));
    rich_change(&p2);
    // A replaced dir: buildah's overlay driver writes an opaque marker.
    fs::remove_dir_all(p2.join("etc/deep")).unwrap();
    write(p2.join("etc/deep/fresh"), b"fresh");
    b.run(&["commit", "-q", &c2, "img2"]);
    let layout = b.dir.path().join("oci");
    b.run(&[
        "push",
        "-q",
        "img2",
        &format!("oci:{}:latest", layout.display()),
    ]);
    let expected = tree(&p2);

    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&layout, manifest_digest)).unwrap()).unwrap();
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(&fs::read(blob_path(&layout, config_digest)).unwrap()).unwrap();
    let layers: Vec<PathBuf> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| blob_path(&layout, l["digest"].as_str().unwrap()))
        .collect();
    assert_eq!(layers.len(), 2);
    let second = crate::conformance::layer_paths(&fs::read(&layers[1]).unwrap());
    assert!(
        second.contains(&"etc/deep/.wh..wh..opq".to_string()),
        "{second:?}"
    );
    assert!(
        second.contains(&"etc/.wh.hostname".to_string()),
        "{second:?}"
    );

    for choice in [BackendChoice::Overlay, BackendChoice::Native] {
        let tmp = tempfile::tempdir().unwrap();
        let s = LocalSnapshotter::open(tmp.path().join("root"), choice).unwrap();
        let mut parent: Option<String> = None;
        for (i, layer) in layers.iter().enumerate() {
            let key = format!("k{i}");
            s.prepare(&key, parent.as_deref()).unwrap();
            let report = s
                .apply(
                    &key,
                    &mut fs::File::open(layer).unwrap(),
                    &ApplyOptions::default(),
                )
                .unwrap();
            assert!(report.warnings.is_empty(), "{:?}", report.warnings);
            assert_eq!(
                report.diff_id,
                config["rootfs"]["diff_ids"][i].as_str().unwrap(),
                "diff_id computed while applying"
            );
            let name = format!("n{i}");
            s.commit(&name, &key).unwrap();
            parent = Some(name);
        }
        assert_same_tree(&expected, &committed_tree(&s, "n1"), &format!("{choice:?}"));
    }
}

/// GNU tar's own formats (GNU long names and base-256 numbers; POSIX PAX
/// with xattrs and fractional times) apply to the tree they were made from.
#[test]
fn gnu_tar_archives_apply_to_the_same_tree() {
    hoist_testutil::require_root!();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    rich_tree(&src);
    let long_dir = "directory-with-a-long-name/".repeat(6);
    write(src.join(&long_dir).join("file"), b"long path");
    symlink(format!("../{}", "x".repeat(150)), src.join("long-link")).unwrap();
    run(
        "setfattr",
        &[
            "-n",
            "user.note",
            "-v",
            "kept",
            src.join("etc/hostname").to_str().unwrap(),
        ],
    );
    std::os::unix::fs::lchown(src.join("usr/bin/tool"), Some(3_000_000), Some(3_000_001)).unwrap();
    let expected = tree(&src);
    for format in ["gnu", "posix"] {
        let archive = tmp.path().join(format!("{format}.tar.gz"));
        run(
            "tar",
            &[
                &format!("--format={format}"),
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "-czf",
                archive.to_str().unwrap(),
                "-C",
                src.to_str().unwrap(),
                ".",
            ],
        );
        let dst = tmp.path().join(format!("dst-{format}"));
        fs::create_dir(&dst).unwrap();
        let target = hoist_snapshotter::ApplyTarget {
            root: dst.clone(),
            whiteouts: hoist_snapshotter::WhiteoutStyle::Delete,
            lowers: Vec::new(),
        };
        let report = hoist_snapshotter::apply_layer(
            &target,
            &mut fs::File::open(&archive).unwrap(),
            &ApplyOptions::default(),
        )
        .unwrap();
        assert!(
            report.warnings.is_empty(),
            "{format}: {:?}",
            report.warnings
        );
        assert_same_tree(&expected, &tree(&dst), format);
    }
}
