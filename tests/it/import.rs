use std::io::Read;

use crate::util::{make_tar, sha256_file, Hoist};

#[test]
fn import_busybox_fixture_makes_one_gzip_layer_config_and_tag() {
    let h = Hoist::new();
    let tar = h.import_busybox("busybox");
    let image = h.inspect("busybox");
    assert_eq!(
        image["Names"],
        serde_json::json!(["docker.io/library/busybox:latest"])
    );
    assert_eq!(image["RepoTags"], serde_json::json!(["busybox:latest"]));
    let config = &image["Config"];
    // The diff ID is the digest of the uncompressed tar we gave.
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([sha256_file(&tar)])
    );
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(config["os"], "linux");
    assert_eq!(
        config["history"][0]["comment"],
        format!("Imported from {}", tar.display())
    );
    let layers = image["Manifest"]["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    assert_eq!(
        image["Manifest"]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // The layer blob is the gzip of exactly the input bytes.
    let digest = layers[0]["digest"].as_str().unwrap();
    let blob = h.root.join("content/blobs/sha256").join(&digest[7..]);
    assert_eq!(sha256_file(&blob), digest);
    let mut unpacked = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&blob).unwrap())
        .read_to_end(&mut unpacked)
        .unwrap();
    assert_eq!(unpacked, std::fs::read(&tar).unwrap());
    // The store is an OCI layout naming the image by its full reference.
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.root.join("content/index.json")).unwrap()).unwrap();
    let entry = &index["manifests"][0];
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(entry["digest"], image["Target"]["Digest"]);
    assert_eq!(
        std::fs::read_to_string(h.root.join("content/oci-layout")).unwrap(),
        r#"{"imageLayoutVersion":"1.0.0"}"#
    );
    // `import` prints the image ID.
    let images = h.ok(&["images", "-q", "--no-trunc"]);
    assert_eq!(images.trim(), image["Id"].as_str().unwrap());
}

#[test]
fn import_reads_gzip_zstd_and_stdin_with_the_same_diff_id() {
    let h = Hoist::new();
    let tar = h.path("files.tar");
    make_tar(
        &tar,
        &[("etc/hello", b"hello\n"), ("bin/tool", b"#!/bin/sh\n")],
    );
    let diff_id = sha256_file(&tar);
    let gz = h.path("files.tar.gz");
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("gzip -c {} > {}", tar.display(), gz.display()))
        .status()
        .unwrap();
    assert!(status.success());
    let zst = h.path("files.tar.zst");
    std::fs::write(
        &zst,
        zstd::encode_all(std::fs::File::open(&tar).unwrap(), 3).unwrap(),
    )
    .unwrap();
    h.ok(&["import", gz.to_str().unwrap(), "a:gz"]);
    h.ok(&["import", zst.to_str().unwrap(), "a:zst"]);
    let mut child = h
        .command()
        .args(["import", "-", "a:stdin", "-m", "from a pipe"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::copy(
        &mut std::fs::File::open(&tar).unwrap(),
        child.stdin.as_mut().unwrap(),
    )
    .unwrap();
    drop(child.stdin.take());
    assert!(child.wait_with_output().unwrap().status.success());
    for tag in ["a:gz", "a:zst", "a:stdin"] {
        let image = h.inspect(tag);
        assert_eq!(
            image["Config"]["rootfs"]["diff_ids"][0],
            diff_id.as_str(),
            "{tag}"
        );
    }
    assert_eq!(
        h.inspect("a:stdin")["Config"]["history"][0]["comment"],
        "from a pipe"
    );
}

#[test]
fn changes_edit_the_config_like_docker_import() {
    let h = Hoist::new();
    let tar = h.path("f.tar");
    make_tar(&tar, &[("x", b"x")]);
    h.ok(&[
        "import",
        tar.to_str().unwrap(),
        "cfg:1",
        "-c",
        "ENTRYPOINT [\"/bin/tool\"]",
        "-c",
        "CMD --help",
        "-c",
        "ENV PATH=/bin LANG=C.UTF-8",
        "-c",
        "WORKDIR /srv",
        "-c",
        "USER 1000",
        "-c",
        "EXPOSE 8080 53/udp",
        "-c",
        "LABEL org.opencontainers.image.title=demo",
        "-c",
        "VOLUME /data",
        "-c",
        "STOPSIGNAL SIGINT",
    ]);
    let c = &h.inspect("cfg:1")["Config"]["config"];
    assert_eq!(c["Entrypoint"], serde_json::json!(["/bin/tool"]));
    assert_eq!(c["Cmd"], serde_json::json!(["/bin/sh", "-c", "--help"]));
    assert_eq!(c["Env"], serde_json::json!(["PATH=/bin", "LANG=C.UTF-8"]));
    assert_eq!(c["WorkingDir"], "/srv");
    assert_eq!(c["User"], "1000");
    assert_eq!(
        c["ExposedPorts"],
        serde_json::json!({"8080/tcp": {}, "53/udp": {}})
    );
    assert_eq!(c["Labels"]["org.opencontainers.image.title"], "demo");
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!(c["StopSignal"], "SIGINT");
    let err = h.fails(&["import", tar.to_str().unwrap(), "cfg:2", "-c", "RUNN x"]);
    assert_eq!(
        err,
        "error: invalid `--change RUNN x`\n  caused by: unknown instruction `RUNN` (supported: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME, WORKDIR)\n"
    );
}

/// A `docker save` archive whose config has fields oci-spec does not model.
fn docker_archive_with_healthcheck(h: &Hoist) -> std::path::PathBuf {
    let layer = h.path("layer.tar");
    make_tar(&layer, &[("etc/base", b"base")]);
    let layer_bytes = std::fs::read(&layer).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Cmd": ["sh"],
            "Healthcheck": {"Test": ["CMD", "true"], "Interval": 30000000000u64},
            "Shell": ["/bin/ash", "-c"],
            "OnBuild": ["RUN echo child"]
        },
        "rootfs": {"type": "layers", "diff_ids": [sha256_file(&layer)]},
        "history": [{"created_by": "docker"}]
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["withhealth:1"],
        "Layers": ["l/layer.tar"]
    }]);
    let archive = h.path("health.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    for (name, data) in [
        ("config.json", serde_json::to_vec(&config).unwrap()),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
        ("l/layer.tar", layer_bytes),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        b.append_data(&mut header, name, &data[..]).unwrap();
    }
    b.finish().unwrap();
    archive
}

#[test]
fn import_on_a_base_keeps_config_fields_oci_spec_does_not_model() {
    let h = Hoist::new();
    let archive = docker_archive_with_healthcheck(&h);
    assert_eq!(
        h.ok(&["load", "-i", archive.to_str().unwrap()]),
        "Loaded image: withhealth:1\n"
    );
    let tar = h.path("top.tar");
    make_tar(&tar, &[("top", b"top")]);
    h.ok(&[
        "import",
        "--base",
        "withhealth:1",
        tar.to_str().unwrap(),
        "child:1",
        "-c",
        "USER app",
    ]);
    let config = &h.inspect("child:1")["Config"]["config"];
    assert_eq!(
        config["Healthcheck"]["Test"],
        serde_json::json!(["CMD", "true"])
    );
    assert_eq!(config["Shell"], serde_json::json!(["/bin/ash", "-c"]));
    assert_eq!(config["OnBuild"], serde_json::json!(["RUN echo child"]));
    assert_eq!(config["User"], "app");
    assert_eq!(config["Cmd"], serde_json::json!(["sh"]));
    let layers = h.inspect("child:1")["Layers"].as_array().unwrap().len();
    assert_eq!(layers, 2);
}
