use std::process::Command;

use hoist_testutil::{require_program, run_ok};

use crate::util::{tree, Hoist};

fn skopeo_inspect(target: &str) -> serde_json::Value {
    serde_json::from_str(&run_ok(Command::new("skopeo").args(["inspect", target]))).unwrap()
}

#[test]
fn oci_archive_is_read_by_skopeo_and_umoci_and_loads_back_with_the_same_digests() {
    require_program!("skopeo");
    require_program!("umoci");
    let h = Hoist::new();
    // The fixture as a directory, to compare with what umoci unpacks.
    let fixture = h.path("fixture");
    hoist_testutil::busybox_rootfs(&fixture);
    let tar = h.path("busybox.tar");
    hoist_testutil::tar_dir(&fixture, &tar);
    h.ok(&["import", tar.to_str().unwrap(), "busybox"]);
    let image = h.inspect("busybox");
    let archive = h.path("busybox-oci.tar");
    h.ok(&[
        "save",
        "--format",
        "oci",
        "busybox",
        "-o",
        archive.to_str().unwrap(),
    ]);

    let by_skopeo = skopeo_inspect(&format!("oci-archive:{}", archive.display()));
    assert_eq!(by_skopeo["Digest"], image["Target"]["Digest"]);
    assert_eq!(
        by_skopeo["Layers"],
        serde_json::json!([image["Layers"][0]["Digest"]])
    );
    let by_ref = skopeo_inspect(&format!(
        "oci-archive:{}:docker.io/library/busybox:latest",
        archive.display()
    ));
    assert_eq!(by_ref["Digest"], image["Target"]["Digest"]);
    // skopeo also reads the store itself as an OCI layout.
    let store = skopeo_inspect(&format!(
        "oci:{}:docker.io/library/busybox:latest",
        h.root.join("content").display()
    ));
    assert_eq!(store["Digest"], image["Target"]["Digest"]);

    // umoci unpacks the same files, modes and bytes as the fixture.
    let layout = h.path("layout");
    std::fs::create_dir(&layout).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&layout),
    );
    let bundle = h.path("bundle");
    let mut umoci = Command::new("umoci");
    umoci.arg("unpack");
    if !hoist_testutil::is_root() {
        umoci.arg("--rootless");
    }
    run_ok(
        umoci
            .arg("--image")
            .arg(format!(
                "{}:docker.io/library/busybox:latest",
                layout.display()
            ))
            .arg(&bundle),
    );
    let unpacked = tree(&bundle.join("rootfs"));
    let expected = tree(&fixture);
    assert!(expected.len() > 200, "the fixture has the applet links");
    assert_eq!(unpacked, expected);

    // Back into a fresh store: same manifest, config and layers.
    let fresh = Hoist::new();
    let out = fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: busybox:latest\n");
    let loaded = fresh.inspect("busybox");
    for key in ["Id", "Target", "Layers", "Manifest", "Config"] {
        assert_eq!(loaded[key], image[key], "{key}");
    }
}

#[test]
fn docker_archive_has_the_docker_save_layout_and_loads_back() {
    require_program!("skopeo");
    let h = Hoist::new();
    h.import_busybox("busybox");
    h.ok(&["tag", "busybox", "localhost:5000/tools/bb:1"]);
    let image = h.inspect("busybox");
    let archive = h.path("busybox-docker.tar");
    h.ok(&[
        "save",
        "busybox",
        "localhost:5000/tools/bb:1",
        "-o",
        archive.to_str().unwrap(),
    ]);

    let mut names: Vec<String> = tar::Archive::new(std::fs::File::open(&archive).unwrap())
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    let id_hex = &image["Id"].as_str().unwrap()[7..];
    let diff_id = image["Config"]["rootfs"]["diff_ids"][0].as_str().unwrap();
    let diff_hex = &diff_id[7..];
    let mut expected = vec![
        format!("{id_hex}.json"),
        // A directory ends in `/`, as in `docker save`'s archives.
        format!("{diff_hex}/"),
        format!("{diff_hex}/VERSION"),
        format!("{diff_hex}/layer.tar"),
        "manifest.json".to_string(),
        "repositories".to_string(),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let manifest: serde_json::Value = {
        let mut a = tar::Archive::new(std::fs::File::open(&archive).unwrap());
        let entry = a
            .entries()
            .unwrap()
            .map(Result::unwrap)
            .find(|e| e.path().unwrap().to_str() == Some("manifest.json"))
            .unwrap();
        serde_json::from_reader(entry).unwrap()
    };
    assert_eq!(
        manifest,
        serde_json::json!([{
            "Config": format!("{id_hex}.json"),
            "RepoTags": ["busybox:latest", "localhost:5000/tools/bb:1"],
            "Layers": [format!("{diff_hex}/layer.tar")],
        }])
    );
    // skopeo reads it as docker save output: the layer is the uncompressed tar.
    let by_skopeo = skopeo_inspect(&format!("docker-archive:{}", archive.display()));
    assert_eq!(by_skopeo["Layers"], serde_json::json!([diff_id]));

    let fresh = Hoist::new();
    let out = fresh.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(
        out,
        "Loaded image: busybox:latest\nLoaded image: localhost:5000/tools/bb:1\n"
    );
    let loaded = fresh.inspect("localhost:5000/tools/bb:1");
    assert_eq!(loaded["Id"], image["Id"]);
    assert_eq!(loaded["Config"], image["Config"]);
}

#[test]
fn loads_archives_written_by_skopeo_and_compressed_archives() {
    require_program!("skopeo");
    let h = Hoist::new();
    h.import_busybox("busybox");
    let id = h.inspect("busybox")["Id"].clone();
    let source = format!(
        "oci:{}:docker.io/library/busybox:latest",
        h.root.join("content").display()
    );
    for (transport, file) in [
        ("docker-archive", "sk-docker.tar"),
        ("oci-archive", "sk-oci.tar"),
    ] {
        let path = h.path(file);
        run_ok(Command::new("skopeo").args([
            "copy",
            "--quiet",
            &source,
            &format!("{transport}:{}:example.com/skopeo/bb:v1", path.display()),
        ]));
        let fresh = Hoist::new();
        let out = fresh.ok(&["load", "-i", path.to_str().unwrap()]);
        assert_eq!(
            out, "Loaded image: example.com/skopeo/bb:v1\n",
            "{transport}"
        );
        assert_eq!(
            fresh.inspect("example.com/skopeo/bb:v1")["Id"],
            id,
            "{transport}"
        );
    }
    // `hoist save | gzip` loads from stdin.
    let fresh = Hoist::new();
    let script = format!(
        "{hoist} --root {src} save busybox | gzip | {hoist} --root {dst} load",
        hoist = env!("CARGO_BIN_EXE_hoist"),
        src = h.root.display(),
        dst = fresh.root.display()
    );
    let out = run_ok(Command::new("sh").args(["-c", &script]));
    assert_eq!(out, "Loaded image: busybox:latest\n");
    assert_eq!(fresh.inspect("busybox")["Id"], id);
}

#[test]
fn an_unnamed_image_needs_load_name() {
    require_program!("skopeo");
    let h = Hoist::new();
    h.import_busybox("busybox");
    let id = h.inspect("busybox")["Id"].clone();
    let archive = h.path("unnamed.tar");
    run_ok(Command::new("skopeo").args([
        "copy",
        "--quiet",
        &format!(
            "oci:{}:docker.io/library/busybox:latest",
            h.root.join("content").display()
        ),
        &format!("oci-archive:{}", archive.display()),
    ]));
    let fresh = Hoist::new();
    let err = fresh.fails(&["load", "-i", archive.to_str().unwrap()]);
    assert!(err.starts_with("error: image sha256:"), "{err}");
    assert!(err.contains("has no name"), "{err}");
    assert!(
        err.contains("\nhint: give it one with `hoist load --name NAME[:TAG]`"),
        "{err}"
    );
    assert!(fresh.ok(&["images", "-q"]).is_empty());
    let blobs = fresh.root.join("content/blobs/sha256");
    assert_eq!(
        std::fs::read_dir(&blobs).unwrap().count(),
        0,
        "the failed load left blobs"
    );
    let out = fresh.ok(&[
        "load",
        "-i",
        archive.to_str().unwrap(),
        "--name",
        "restored:1",
    ]);
    assert_eq!(out, "Loaded image: restored:1\n");
    assert_eq!(fresh.inspect("restored:1")["Id"], id);
}
