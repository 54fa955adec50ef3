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
    // Compressions hoist recognises but does not read are refused by name.
    for (name, magic) in [
        ("xz", &b"\xfd7zXZ\0rest"[..]),
        ("bzip2", &b"BZh91AY&SY"[..]),
    ] {
        let file = h.path(&format!("rootfs.tar.{name}"));
        std::fs::write(&file, magic).unwrap();
        let err = h.fails(&["import", file.to_str().unwrap(), "bad"]);
        assert!(
            err.contains(&format!("{name}-compressed input is not supported")),
            "{err}"
        );
        assert!(
            err.contains(&format!("hint: decompress it first: `{name} -dc FILE")),
            "{err}"
        );
    }
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

/// A tar whose one header carries terminal escapes in its name and in its
/// size field (which is not a number): the tar reader's message quotes both.
fn hostile_tar(path: &std::path::Path) {
    let name = b"evil\x1b]0;pwned\x07\x1b[2J\n.txt";
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..108].copy_from_slice(b"0000644\0");
    h[108..116].copy_from_slice(b"0000000\0");
    h[116..124].copy_from_slice(b"0000000\0");
    h[124..136].copy_from_slice(b"\x1b[31mXXXXXXX");
    h[136..148].copy_from_slice(b"00000000000\0");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
    h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    let mut bytes = h.to_vec();
    bytes.extend_from_slice(&[0u8; 1024]);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn import_error_escapes_the_archives_control_characters() {
    let (h, before) = setup();
    let tar = h.path("hostile.tar");
    hostile_tar(&tar);
    let err = h.fails(&["import", tar.to_str().unwrap(), "bad"]);
    // What the terminal gets: the facts, escaped, and no control byte but
    // the line ends.
    assert!(!err.chars().any(|c| c.is_control() && c != '\n'), "{err:?}");
    assert_eq!(err.lines().count(), 3, "{err}");
    assert!(
        err.contains(
            "numeric field was not a number: \\u{1b}[31mXXXXXXX when getting size for evil\\u{1b}]0;pwned\\u{7}\\u{1b}[2J\\n.txt"
        ),
        "{err}"
    );
    assert_eq!(h.snapshot(), before);
}

#[test]
fn sizes_and_durations_that_do_not_fit_are_refused_naming_the_value() {
    let h = Hoist::new();
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    // A step that would leave a trace if the build started.
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    let ctx = context.to_str().unwrap();
    for (value, reason) in [
        ("99999999999g", "too large (the most is 16EiB)"),
        ("18446744073709551616", "too large (the most is 16EiB)"),
        ("-1g", "expected a number"),
        ("1e999", "expected a number"),
        ("", "expected a number"),
    ] {
        let memory = format!("--memory={value}");
        let err = h.fails(&["build", &memory, "-t", "x", ctx]);
        assert_eq!(first_line(&err), "error: invalid --memory", "{err}");
        assert!(
            err.contains(&format!("caused by: invalid size `{value}`: {reason}")),
            "{err}"
        );
        // Refused before anything ran: not even the store was created.
        assert!(!h.root.exists(), "{value}: the store was touched");
    }
    for value in ["nan", "inf", "-1", "0", "1e999"] {
        let r = h.run(&["build", &format!("--cpus={value}"), ctx]);
        assert_eq!(r.code(), 2, "{}", r.stderr);
        assert!(
            r.stderr.contains(&format!(
                "invalid value `{value}`: expected a number of CPUs from 0.01"
            )),
            "{}",
            r.stderr
        );
    }
    h.ok(&["images"]);
    let before = h.snapshot();
    let err = h.fails(&["prune", "-f", "--filter", "until=99999999999999h"]);
    assert_eq!(first_line(&err), "error: invalid --filter until=DURATION");
    assert!(
        err.contains(
            "caused by: invalid duration `99999999999999h`: too large (the most is 2562047h)"
        ),
        "{err}"
    );
    let err = h.fails(&["prune", "-f", "--filter", "until=1e999h"]);
    assert!(err.contains("invalid duration `1e999h`"), "{err}");
    let err = h.fails(&["prune", "-f", "--keep-storage", "99999999999999TB"]);
    assert_eq!(first_line(&err), "error: invalid --keep-storage");
    assert!(
        err.contains("invalid size `99999999999999TB`: too large"),
        "{err}"
    );
    assert_eq!(h.snapshot(), before);
    // The largest values that fit are taken.
    h.ok(&[
        "prune",
        "-f",
        "--filter",
        "until=2562047h",
        "--keep-storage",
        "16383PiB",
    ]);
}

/// A `docker save` archive of one image whose history says `created` and
/// `created_by`.
fn archive_with_history(path: &std::path::Path, created: &str, created_by: &str) {
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("layer.tar");
    make_tar(&layer, &[("hello", b"hi\n")]);
    let diff_id = crate::util::sha256_file(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created": created, "created_by": created_by}],
    });
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    let manifest = serde_json::json!([
        {"Config": "config.json", "RepoTags": ["hostile:1"], "Layers": ["layer.tar"]}
    ]);
    std::fs::write(dir.path().join("manifest.json"), manifest.to_string()).unwrap();
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for name in ["manifest.json", "config.json", "layer.tar"] {
        b.append_path_with_name(dir.path().join(name), name)
            .unwrap();
    }
    b.finish().unwrap();
}

#[test]
fn load_of_an_image_dated_past_year_9999_is_refused_naming_the_value() {
    let (h, before) = setup();
    for created in [
        "99999-01-01T00:00:00Z",
        "-2024-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
    ] {
        let archive = h.path("dated.tar");
        archive_with_history(&archive, created, "hostile");
        let err = h.fails(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            err.contains(&format!(
                "the image config's history entry 1 is invalid: invalid time `{created}`"
            )),
            "{err}"
        );
        assert_eq!(h.snapshot(), before);
    }
    // The same archive with a real date loads; its history, which the
    // table quotes, reaches the terminal escaped.
    let archive = h.path("dated.tar");
    archive_with_history(
        &archive,
        "2024-01-02T03:04:05.5+01:00",
        "hostile\x1b]0;title\x07\nRUN forged",
    );
    h.ok(&["load", "-i", archive.to_str().unwrap()]);
    let history = h.ok(&["history", "--no-trunc", "hostile:1"]);
    assert_eq!(history.lines().count(), 2, "{history}");
    assert!(
        history.contains("hostile\\u{1b}]0;title\\u{7}\\nRUN forged"),
        "{history}"
    );
    assert!(!history.chars().any(|c| c.is_control() && c != '\n'));
}

#[test]
fn pull_of_an_image_dated_past_year_9999_is_refused_naming_the_value() {
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    let h = Hoist::new();
    let registry = hoist_testutil::Registry::start();
    // An OCI layout whose config says year 99999, pushed with skopeo.
    let layout = h.path("layout");
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| {
        let hex = crate::util::hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let layer_path = h.path("layer.tar");
    make_tar(&layer_path, &[("hello", b"hi\n")]);
    let layer = std::fs::read(&layer_path).unwrap();
    let (layer_digest, layer_size) = put(&layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "99999-01-01T00:00:00Z",
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": "99999-01-01T00:00:00Z", "created_by": "hostile"}],
    });
    let (config_digest, config_size) = put(config.to_string().as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = put(manifest.to_string().as_bytes());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest, "size": manifest_size}],
    });
    std::fs::write(layout.join("index.json"), index.to_string()).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let target = format!("{}/hostile/dated:1", registry.addr);
    let out = std::process::Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci:{}", layout.display()))
        .arg(format!("docker://{target}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let err = h.fails(&["pull", "-q", &target]);
    assert_eq!(first_line(&err), format!("error: failed to pull {target}"));
    assert!(
        err.contains(
            "the image config's `created` is invalid: invalid time `99999-01-01T00:00:00Z`"
        ),
        "{err}"
    );
    // Not named: nothing shows it or builds on it.
    assert!(!h.ok(&["images"]).contains("hostile"));
}

#[test]
fn dockerfile_errors_quote_lines_escaped_and_refuse_oversized_mounts() {
    let h = Hoist::new();
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    let ctx = context.to_str().unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nRUNN \x1b[2Jx\r\n",
    )
    .unwrap();
    let err = h.fails(&["build", "--dry-run", ctx]);
    assert_eq!(
        err,
        "error: Dockerfile:2:1: unknown instruction \"RUNN\" (did you mean RUN?)\n2 | RUNN \\u{1b}[2Jx\n    ^\n"
    );
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nRUN --mount=type=tmpfs,target=/t,size=99999999999g true\n",
    )
    .unwrap();
    let err = h.fails(&["build", "--dry-run", ctx]);
    assert_eq!(
        first_line(&err),
        "error: Dockerfile:2:1: invalid size `99999999999g`: too large (the most is 16EiB) in --mount"
    );
}

#[test]
fn source_date_epochs_past_year_9999_are_refused_before_anything_is_read() {
    let h = Hoist::new();
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), "FROM scratch\nCOPY . /\n").unwrap();
    let ctx = context.to_str().unwrap();
    let err = h.fails(&["build", "--source-date-epoch", "99999999999999", ctx]);
    assert_eq!(
        first_line(&err),
        "error: invalid SOURCE_DATE_EPOCH (--source-date-epoch)"
    );
    assert!(
        err.contains("invalid time `99999999999999`: after 9999-12-31T23:59:59Z"),
        "{err}"
    );
    let err = h.fails(&["build", "--build-arg", "SOURCE_DATE_EPOCH=1e9", ctx]);
    assert!(
        err.contains("invalid time `1e9`: expected whole seconds since 1970"),
        "{err}"
    );
    assert!(!h.root.exists(), "the store was touched");
    let tar = h.path("rootfs.tar");
    make_tar(&tar, &[("etc/a", b"aaaa")]);
    let r = hoist_testutil::cli::run(
        h.command().env("SOURCE_DATE_EPOCH", "253402300800").args([
            "import",
            tar.to_str().unwrap(),
            "dated",
        ]),
        None,
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    assert!(
        r.stderr
            .starts_with("error: invalid SOURCE_DATE_EPOCH (environment)\n  caused by: invalid time `253402300800`: after 9999-12-31T23:59:59Z"),
        "{}",
        r.stderr
    );
    assert!(!h.ok(&["images"]).contains("dated"));
}

#[test]
fn build_progress_quotes_dockerfile_text_escaped() {
    hoist_testutil::require_root!();
    let h = Hoist::new();
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("a"), "a\n").unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY a /x\x1b[2J\n",
    )
    .unwrap();
    let r = h.run(&["build", "--progress", "plain", context.to_str().unwrap()]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    // The step line and the summary's row.
    assert_eq!(
        r.stderr.matches("COPY a /x\\u{1b}[2J").count(),
        2,
        "{}",
        r.stderr
    );
    assert!(
        !r.stderr.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        r.stderr
    );
}
