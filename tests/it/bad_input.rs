//! Bad input: one clear line, exit 1, and an unchanged store.

use crate::util::{make_tar, Hoist};

/// A store holding busybox, and its snapshot.
fn setup() -> (Hoist, (std::collections::BTreeMap<String, String>, String)) {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let snapshot = h.snapshot();
    (h, snapshot)
}

fn first_line(stderr: &str) -> &str {
    stderr.lines().next().unwrap_or("")
}

#[test]
fn corrupt_tar_is_refused() {
    let (h, before) = setup();
    let tar = h.path("corrupt.tar");
    make_tar(&tar, &[("etc/a", b"aaaa"), ("etc/b", b"bbbb")]);
    // Damage the second header's checksum field.
    let mut bytes = std::fs::read(&tar).unwrap();
    bytes[1024 + 148..1024 + 156].copy_from_slice(b"garbage!");
    std::fs::write(&tar, bytes).unwrap();
    let err = h.fails(&["import", tar.to_str().unwrap(), "bad"]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to import `{}`", tar.display())
    );
    assert!(
        err.contains("caused by: the input is not a valid tar archive"),
        "{err}"
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn truncated_gzip_is_refused() {
    let (h, before) = setup();
    let tar = h.path("busybox.tar");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &std::fs::read(&tar).unwrap()).unwrap();
    let gz = gz.finish().unwrap();
    let truncated = h.path("truncated.tar.gz");
    std::fs::write(&truncated, &gz[..gz.len() / 2]).unwrap();
    let err = h.fails(&["import", truncated.to_str().unwrap(), "bad"]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to import `{}`", truncated.display())
    );
    assert!(err.contains("truncated or corrupt"), "{err}");
    assert_eq!(h.snapshot(), before);
    // Cut right after the tar data: only the gzip trailer is missing.
    std::fs::write(&truncated, &gz[..gz.len() - 4]).unwrap();
    let err = h.fails(&["import", truncated.to_str().unwrap(), "bad"]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to import `{}`", truncated.display())
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn not_a_tar_and_escaping_paths_are_refused() {
    let (h, before) = setup();
    let text = h.path("notes.txt");
    std::fs::write(&text, "just some text\n".repeat(100)).unwrap();
    let err = h.fails(&["import", text.to_str().unwrap(), "bad"]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to import `{}`", text.display())
    );
    let empty = h.path("empty");
    std::fs::write(&empty, "").unwrap();
    let err = h.fails(&["import", empty.to_str().unwrap(), "bad"]);
    assert!(err.contains("the input is empty"), "{err}");
    let escaping = h.path("escape.tar");
    let mut raw = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    // set_path refuses `..`; write the name bytes directly.
    header.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../evil\0\0");
    header.set_cksum();
    raw.append(&header, &b"x"[..]).unwrap();
    std::fs::write(&escaping, raw.into_inner().unwrap()).unwrap();
    let err = h.fails(&["import", escaping.to_str().unwrap(), "bad"]);
    assert!(err.contains("climbs out of the root"), "{err}");
    assert_eq!(h.snapshot(), before);
}

#[test]
fn unknown_image_is_refused_with_a_hint() {
    let (h, before) = setup();
    for args in [
        vec!["inspect", "nope"],
        vec!["history", "nope"],
        vec!["rmi", "nope"],
        vec!["tag", "nope", "other"],
        vec!["save", "nope", "-o", "/dev/null"],
    ] {
        let err = h.fails(&args);
        assert_eq!(
            first_line(&err),
            "error: no such image: `nope:latest`",
            "{args:?}"
        );
        assert!(
            err.contains("\nhint: `hoist images` lists the images"),
            "{err}"
        );
    }
    let err = h.fails(&["inspect", "Bad_Name"]);
    assert_eq!(
        first_line(&err),
        "error: invalid reference format: repository name `library/Bad_Name` must be lowercase"
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn save_to_an_unwritable_path_is_refused() {
    let (h, before) = setup();
    for path in ["/proc/hoist-test.tar", "/nonexistent-dir/out.tar"] {
        let err = h.fails(&["save", "busybox", "-o", path]);
        assert_eq!(
            first_line(&err),
            format!("error: failed to create `{path}`")
        );
        assert!(!std::path::Path::new(path).exists());
    }
    // A failure while writing (the image is damaged) leaves no partial file.
    let out = h.path("out.tar");
    let layer = h.inspect("busybox")["Layers"][0]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let blob = h.root.join("content/blobs/sha256").join(&layer[7..]);
    let saved = std::fs::read(&blob).unwrap();
    std::fs::remove_file(&blob).unwrap();
    let err = h.fails(&["save", "busybox", "-o", out.to_str().unwrap()]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to write `{}`", out.display())
    );
    assert!(err.contains(&format!("blob {layer} not found")), "{err}");
    assert_eq!(
        std::fs::read_dir(h.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("out.tar"))
            .count(),
        0
    );
    std::fs::write(&blob, saved).unwrap();
    assert_eq!(h.snapshot(), before);
}

#[test]
fn load_of_a_file_that_is_not_an_image_archive_is_refused() {
    let (h, before) = setup();
    // A valid tar, but a root filesystem, not an image archive.
    let rootfs = h.path("busybox.tar");
    let err = h.fails(&["load", "-i", rootfs.to_str().unwrap()]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to load `{}`", rootfs.display())
    );
    assert!(err.contains("caused by: not an image archive: it has neither `manifest.json` (docker save) nor `index.json` (OCI image layout)"), "{err}");
    assert_eq!(h.snapshot(), before);
    let text = h.path("text");
    std::fs::write(&text, "hello\n").unwrap();
    let err = h.fails(&["load", "-i", text.to_str().unwrap()]);
    assert_eq!(
        first_line(&err),
        format!("error: failed to load `{}`", text.display())
    );
    // An OCI archive whose blob was tampered with.
    let archive = h.path("oci.tar");
    h.ok(&[
        "save",
        "--format",
        "oci",
        "busybox",
        "-o",
        archive.to_str().unwrap(),
    ]);
    let fresh = Hoist::new();
    let mut bytes = std::fs::read(&archive).unwrap();
    let config = h.inspect("busybox")["ConfigDigest"].as_str().unwrap()[7..].to_string();
    let at = bytes
        .windows(10)
        .position(|w| w == b"\"rootfs\":{")
        .unwrap();
    bytes[at + 1] = b'R';
    std::fs::write(&archive, bytes).unwrap();
    let err = fresh.fails(&["load", "-i", archive.to_str().unwrap()]);
    assert!(err.contains("digest mismatch: expected sha256:"), "{err}");
    assert!(!fresh
        .root
        .join("content/blobs/sha256")
        .join(config)
        .exists());
    assert_eq!(
        std::fs::read_dir(fresh.root.join("content/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn usage_errors_exit_2() {
    let h = Hoist::new();
    let r = h.run(&["images", "--bogus"]);
    assert_eq!(r.code(), 2);
    assert!(
        r.stderr.starts_with("error: unexpected argument '--bogus'"),
        "{}",
        r.stderr
    );
}
