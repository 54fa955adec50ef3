//! Layer compression and media types of the outputs (`-o …,compression=,
//! compression-level=, force-compression=, oci-mediatypes=`), checked
//! through the registry, skopeo, umoci and a second hoist store.

use std::fs;
use std::path::Path;
use std::process::Command;

use hoist_testutil::run_ok;
use serde_json::Value;

use super::common::{hoist, Env, Run};

const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A build of the context with a private config dir (no credentials of
/// the machine's), at a fixed time: two builds of the same input make the
/// same image, whatever second they run in.
fn build(env: &Env, config: &Path, args: &[&str]) -> Run {
    let mut command = env.hoist().command();
    command
        .args([
            "build",
            "--progress",
            "plain",
            "--source-date-epoch",
            "1700000000",
        ])
        .args(args)
        .arg(env.context.path())
        .env("XDG_CONFIG_HOME", config)
        .env("REGISTRY_AUTH_FILE", config.join("auth.json"));
    hoist_testutil::cli::run(&mut command, None)
}

/// The manifest the registry serves for `name`, as skopeo reads it.
fn registry_manifest(name: &str) -> Value {
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false", "--raw"])
            .arg(format!("docker://{name}")),
    );
    serde_json::from_str(&raw).unwrap()
}

fn layer_types(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["mediaType"].as_str().unwrap().to_owned())
        .collect()
}

fn layer_digests(manifest: &Value) -> Vec<String> {
    manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// Another store holding the busybox image of `env`'s store (saved and
/// loaded): a build there is a cold build on the same base.
fn store_with_busybox_of(env: &Env) -> tempfile::TempDir {
    let saved = env.scratch.path().join("busybox.tar");
    env.hoist().ok(&[
        "save",
        "--format",
        "oci",
        "busybox",
        "-o",
        saved.to_str().unwrap(),
    ]);
    let other = tempfile::tempdir().unwrap();
    hoist(other.path(), &["load", "-i", saved.to_str().unwrap()], None).assert_ok();
    other
}

/// The magic bytes of a blob in a directory skopeo's `dir:` transport
/// wrote (which keeps blobs as they are).
fn magic(dir: &Path, digest: &str) -> Vec<u8> {
    let path = dir.join(digest.trim_start_matches("sha256:"));
    fs::read(path).unwrap()[..4].to_vec()
}

#[test]
fn zstd_and_uncompressed_layers_are_pushed_pulled_back_and_read_by_skopeo_and_umoci() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    hoist_testutil::require_program!("umoci");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    let config = tempfile::tempdir().unwrap();
    env.dockerfile("FROM busybox\nRUN echo made > /made && seq 1 20000 > /numbers\n");
    build(&env, config.path(), &["-t", "plain:1"]).assert_ok();
    let gzip_layers = layer_digests(&env.inspect("plain:1")["Manifest"]);

    for (compression, media_type, zstd_magic) in
        [("zstd", OCI_ZSTD, true), ("uncompressed", OCI_TAR, false)]
    {
        let name = format!("{}/compression/{compression}:1", registry.addr);
        build(
            &env,
            config.path(),
            &[
                "-o",
                &format!("type=registry,name={name},compression={compression}"),
            ],
        )
        .assert_ok();

        // The registry holds the converted layer; the base layer keeps its
        // gzip blob (no force-compression), as with BuildKit.
        let manifest = registry_manifest(&name);
        assert_eq!(layer_types(&manifest), [OCI_GZIP, media_type], "{manifest}");
        let digests = layer_digests(&manifest);
        assert_eq!(digests[0], gzip_layers[0], "the base layer is untouched");
        assert_ne!(digests[1], gzip_layers[1], "the RUN layer is converted");

        // skopeo copies it out, checking every digest on the way.
        let layout = env.scratch.path().join(format!("skopeo-{compression}"));
        run_ok(
            Command::new("skopeo")
                .args(["copy", "--src-tls-verify=false"])
                .arg(format!("docker://{name}"))
                .arg(format!("dir:{}", layout.display())),
        );
        let blob = magic(&layout, &digests[1]);
        assert_eq!(blob == [0x28, 0xb5, 0x2f, 0xfd], zstd_magic, "{blob:?}");
        assert_ne!(blob[..2], [0x1f, 0x8b], "not gzip");

        // Pulled back into another store: the same manifest, and its files.
        let other = tempfile::tempdir().unwrap();
        let pulled = hoist(other.path(), &["pull", "-q", &name], None);
        pulled.assert_ok();
        let inspect =
            hoist_testutil::cli::Hoist::new(super::common::HOIST, other.path()).inspect(&name);
        assert_eq!(
            inspect["Target"]["Digest"].as_str(),
            Some(
                run_ok(
                    Command::new("skopeo")
                        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
                        .arg(format!("docker://{name}"))
                )
                .trim()
            )
        );
        let files = env.scratch.path().join(format!("files-{compression}"));
        let context = tempfile::tempdir().unwrap();
        fs::write(context.path().join("Dockerfile"), format!("FROM {name}\n")).unwrap();
        let run = hoist(
            other.path(),
            &[
                "build",
                "-o",
                &format!("type=local,dest={}", files.display()),
                context.path().to_str().unwrap(),
            ],
            None,
        );
        run.assert_ok();
        assert_eq!(fs::read_to_string(files.join("made")).unwrap(), "made\n");
        assert!(files.join("bin/busybox").is_file());

        // umoci unpacks the OCI archive of the same output.
        let archive = env.scratch.path().join(format!("{compression}.oci.tar"));
        build(
            &env,
            config.path(),
            &[
                "-t",
                "local/compressed:1",
                "-o",
                &format!(
                    "type=oci,dest={},compression={compression}",
                    archive.display()
                ),
            ],
        )
        .assert_ok();
        let extracted = env.scratch.path().join(format!("oci-{compression}"));
        fs::create_dir(&extracted).unwrap();
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(&archive)
                .arg("-C")
                .arg(&extracted),
        );
        let index: Value =
            serde_json::from_slice(&fs::read(extracted.join("index.json")).unwrap()).unwrap();
        let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
        assert_eq!(
            manifest_digest,
            inspect["Target"]["Digest"].as_str().unwrap(),
            "the archive and the registry hold the same converted image"
        );
        // skopeo reads the archive's layout, checking the digests.
        run_ok(
            Command::new("skopeo")
                .arg("copy")
                .arg(format!(
                    "oci:{}:docker.io/local/compressed:1",
                    extracted.display()
                ))
                .arg(format!(
                    "dir:{}",
                    env.scratch
                        .path()
                        .join(format!("dir-{compression}"))
                        .display()
                )),
        );
        if compression == "zstd" && !umoci_reads_zstd() {
            // Debian 12's umoci 0.4.7 knows tar and tar+gzip layers only;
            // it refuses the media type, not the blob.
            eprintln!("umoci before 0.5 cannot unpack zstd layers: not unpacked with umoci");
            continue;
        }
        let bundle = env.scratch.path().join(format!("bundle-{compression}"));
        run_ok(
            Command::new("umoci")
                .arg("unpack")
                .arg("--image")
                .arg(format!(
                    "{}:docker.io/local/compressed:1",
                    extracted.display()
                ))
                .arg(&bundle),
        );
        let rootfs = bundle.join("rootfs");
        assert_eq!(fs::read_to_string(rootfs.join("made")).unwrap(), "made\n");
        assert_eq!(
            fs::read_to_string(rootfs.join("numbers"))
                .unwrap()
                .lines()
                .count(),
            20000
        );
    }
}

/// Whether the installed umoci unpacks zstd layers (0.5 and later).
fn umoci_reads_zstd() -> bool {
    let version = run_ok(Command::new("umoci").arg("--version"));
    // `umoci version 0.4.7+ds-3+b7`
    let number = version.split_whitespace().nth(2).unwrap_or_default();
    let mut parts = number
        .split(['.', '+', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (0, 5)
}

#[test]
fn force_compression_recompresses_the_base_layer_reproducibly() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let config = tempfile::tempdir().unwrap();
    env.write("f.txt", "f\n");
    env.dockerfile("FROM busybox\nCOPY f.txt /f.txt\n");
    let base = env.inspect("busybox")["Manifest"].clone();
    let base_layer = layer_digests(&base)[0].clone();

    build(
        &env,
        config.path(),
        &["-o", "type=image,name=kept:1,compression=zstd"],
    )
    .assert_ok();
    let kept = env.inspect("kept:1");
    assert_eq!(layer_types(&kept["Manifest"]), [OCI_GZIP, OCI_ZSTD]);
    assert_eq!(layer_digests(&kept["Manifest"])[0], base_layer);

    let forced = |name: &str| {
        build(
            &env,
            config.path(),
            &[
                "-o",
                &format!("type=image,name={name},compression=zstd,force-compression=true"),
            ],
        )
        .assert_ok();
        env.inspect(name)
    };
    let first = forced("forced:1");
    assert_eq!(layer_types(&first["Manifest"]), [OCI_ZSTD, OCI_ZSTD]);
    assert_ne!(layer_digests(&first["Manifest"])[0], base_layer);
    // Same files, same config (diff_ids), so the image ID stays.
    assert_eq!(first["Id"], kept["Id"]);
    // Reproducible, and the second export reuses the converted blobs.
    let second = forced("forced:2");
    assert_eq!(second["Manifest"], first["Manifest"]);

    // Another store with the same base and context converts to the very
    // same bytes.
    let other = store_with_busybox_of(&env);
    let context = tempfile::tempdir().unwrap();
    fs::write(context.path().join("f.txt"), "f\n").unwrap();
    fs::write(
        context.path().join("Dockerfile"),
        "FROM busybox\nCOPY f.txt /f.txt\n",
    )
    .unwrap();
    hoist(
        other.path(),
        &[
            "build",
            "--source-date-epoch",
            "1700000000",
            "-o",
            "type=image,name=forced:1,compression=zstd,force-compression=true",
            context.path().to_str().unwrap(),
        ],
        None,
    )
    .assert_ok();
    let there = hoist_testutil::cli::Hoist::new(super::common::HOIST, other.path());
    assert_eq!(there.inspect("forced:1")["Manifest"], first["Manifest"]);

    // gzip at another level than the steps' converts the built layer only.
    build(
        &env,
        config.path(),
        &[
            "-o",
            "type=image,name=gzip9:1,compression=gzip,compression-level=9",
        ],
    )
    .assert_ok();
    let gzip9 = env.inspect("gzip9:1");
    let plain_layers = {
        build(&env, config.path(), &["-t", "plain:1"]).assert_ok();
        layer_digests(&env.inspect("plain:1")["Manifest"])
    };
    let layers = layer_digests(&gzip9["Manifest"]);
    assert_eq!(layers[0], plain_layers[0]);
    assert_ne!(layers[1], plain_layers[1]);
    assert_eq!(layer_types(&gzip9["Manifest"]), [OCI_GZIP, OCI_GZIP]);
}

#[test]
fn oci_mediatypes_false_gives_docker_media_types_except_for_zstd() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    let config = tempfile::tempdir().unwrap();
    env.write("f.txt", "f\n");
    env.dockerfile("FROM busybox\nCOPY f.txt /f.txt\n");

    // Named in the store in the asked format; `hoist push` pushes that.
    let name = format!("{}/mediatypes/docker:1", registry.addr);
    build(
        &env,
        config.path(),
        &[
            "-o",
            &format!("type=image,name={name},oci-mediatypes=false"),
        ],
    )
    .assert_ok();
    let mut push = env.hoist().command();
    push.args(["push", &name])
        .env("XDG_CONFIG_HOME", config.path())
        .env("REGISTRY_AUTH_FILE", config.path().join("auth.json"));
    hoist_testutil::cli::run(&mut push, None).assert_ok();
    let manifest = registry_manifest(&name);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.docker.distribution.manifest.v2+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.docker.container.image.v1+json"
    );
    assert_eq!(
        layer_types(&manifest),
        ["application/vnd.docker.image.rootfs.diff.tar.gzip"; 2]
    );
    // skopeo reads it as a Docker image.
    let inspect: Value = serde_json::from_str(&run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{name}")),
    ))
    .unwrap();
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2);

    // zstd has no Docker media type: OCI ones, with a warning, as BuildKit.
    let name = format!("{}/mediatypes/zstd:1", registry.addr);
    let run = build(
        &env,
        config.path(),
        &[
            "-o",
            &format!("type=registry,name={name},compression=zstd,oci-mediatypes=false"),
        ],
    );
    run.assert_ok();
    assert!(
        run.stderr
            .contains("warning: oci-mediatypes=false is overridden for zstd"),
        "{}",
        run.stderr
    );
    let manifest = registry_manifest(&name);
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(layer_types(&manifest), [OCI_GZIP, OCI_ZSTD]);

    // `--push` with an image output pushes that output, in its format.
    let name = format!("{}/mediatypes/pushed:1", registry.addr);
    build(
        &env,
        config.path(),
        &[
            "-t",
            &name,
            "--push",
            "-o",
            "type=image,compression=uncompressed",
        ],
    )
    .assert_ok();
    assert_eq!(layer_types(&registry_manifest(&name)), [OCI_GZIP, OCI_TAR]);
    assert_eq!(
        layer_types(&env.inspect(&name)["Manifest"]),
        [OCI_GZIP, OCI_TAR]
    );
}

#[test]
fn a_bad_compression_value_is_refused_naming_it() {
    let env = Env::new();
    let config = tempfile::tempdir().unwrap();
    env.dockerfile("FROM busybox\nRUN echo never\n");
    for (output, named) in [
        ("type=image,compression=brotli", "compression=`brotli`"),
        (
            "type=oci,dest=x.tar,compression=zstd,compression-level=99",
            "compression-level=`99`",
        ),
        (
            "type=image,force-compression=maybe",
            "force-compression=`maybe`",
        ),
    ] {
        let run = build(&env, config.path(), &["-o", output]);
        assert_eq!(run.code(), 1, "{}", run.stderr);
        assert!(run.stderr.contains(named), "{}", run.stderr);
        assert!(!run.stderr.contains("RUN echo"), "{}", run.stderr);
    }
    assert!(!env.scratch.path().join("x.tar").exists());
}

#[test]
fn steps_write_the_asked_compression_and_a_cached_layer_is_converted_back() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let config = tempfile::tempdir().unwrap();
    env.dockerfile("FROM busybox\nRUN seq 1 50000 > /numbers\n");
    // A gzip build in another store of the same base: the reference.
    let other = store_with_busybox_of(&env);
    let gzip_build = |root: &Path, name: &str| {
        hoist(
            root,
            &[
                "build",
                "--source-date-epoch",
                "1700000000",
                "-t",
                name,
                env.context.path().to_str().unwrap(),
            ],
            None,
        )
        .assert_ok();
        hoist_testutil::cli::Hoist::new(super::common::HOIST, root).inspect(name)["Manifest"]
            .clone()
    };
    let reference = gzip_build(other.path(), "ref:1");

    // Every output asks for zstd: the RUN step writes zstd itself (its
    // summary shows the zstd layer; nothing is converted).
    let run = build(
        &env,
        config.path(),
        &["-o", "type=image,name=z:1,compression=zstd"],
    );
    run.assert_ok();
    let zstd = env.inspect("z:1")["Manifest"].clone();
    assert_eq!(layer_types(&zstd), [OCI_GZIP, OCI_ZSTD]);
    // Conversions are kept as cache records `layer sha256:… as FORMAT`.
    let conversions = |format: &str| {
        env.hoist()
            .ok(&["du", "-v"])
            .lines()
            .filter(|l| l.contains(&format!(" as {format}")))
            .count()
    };
    assert_eq!(conversions("zstd"), 0, "the step wrote zstd itself");

    // A default build finds the zstd layer in the cache and gets the gzip
    // layer a gzip step writes: the very image of the other store.
    let again = gzip_build(env.root.path(), "g:1");
    assert_eq!(again, reference);
    assert_eq!(layer_types(&again), [OCI_GZIP, OCI_GZIP]);
    assert_eq!(conversions("gzip"), 1);
    // And zstd again, from the cache: the same zstd image.
    build(
        &env,
        config.path(),
        &["-o", "type=image,name=z:2,compression=zstd"],
    )
    .assert_ok();
    assert_eq!(env.inspect("z:2")["Manifest"], zstd);
}

#[test]
fn a_provenance_index_takes_the_steps_compression_and_refuses_a_conversion() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let config = tempfile::tempdir().unwrap();
    env.write("f.txt", "p\n");
    env.dockerfile("FROM busybox\nCOPY f.txt /f.txt\n");
    build(
        &env,
        config.path(),
        &["--provenance", "-o", "type=image,name=p:1,compression=zstd"],
    )
    .assert_ok();
    let inspect = env.inspect("p:1");
    assert_eq!(
        inspect["Target"]["MediaType"], "application/vnd.oci.image.index.v1+json",
        "{inspect}"
    );
    assert_eq!(layer_types(&inspect["Manifest"]), [OCI_GZIP, OCI_ZSTD]);

    // Recompressing the base layer would change the manifest the
    // attestation names: refused, saying what works.
    let run = build(
        &env,
        config.path(),
        &[
            "--provenance",
            "-o",
            "type=image,name=p:2,compression=zstd,force-compression=true",
        ],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("provenance attestation cannot be converted"),
        "{}",
        run.stderr
    );
}

/// A build stage whose RUN the image does not hold: only a file of it is
/// copied into the last stage.
const STAGE_ONLY_COPIED_FROM: &str = "FROM busybox AS build\nRUN seq 1 50000 > /numbers\n\
     FROM busybox\nCOPY --from=build /numbers /n\n";

/// `hoist build --progress plain` of the context in `root` with `args`;
/// returns whether the `RUN seq` step came from the cache.
fn run_cached(root: &Path, context: &Path, args: &[&str]) -> bool {
    let mut all = vec![
        "build",
        "--source-date-epoch",
        "1700000000",
        "--progress",
        "plain",
    ];
    all.extend_from_slice(args);
    all.push(context.to_str().unwrap());
    let run = hoist(root, &all, None);
    run.assert_ok();
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert!(
        lines.iter().any(|l| l.contains("RUN seq")),
        "{}",
        run.stderr
    );
    lines
        .windows(2)
        .any(|w| w[0].contains("RUN seq") && w[1].ends_with(" CACHED"))
}

/// The store's blobs that are zstd frames and plain tars, by digest.
fn zstd_and_tar_blobs(root: &Path) -> (Vec<String>, Vec<String>) {
    let (mut zstd, mut tar) = (Vec::new(), Vec::new());
    for entry in fs::read_dir(root.join("content/blobs/sha256")).unwrap() {
        let entry = entry.unwrap();
        let bytes = fs::read(entry.path()).unwrap();
        let digest = format!("sha256:{}", entry.file_name().to_string_lossy());
        if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            zstd.push(digest);
        } else if bytes.get(257..262) == Some(b"ustar") {
            tar.push(digest);
        }
    }
    (zstd, tar)
}

#[test]
fn a_stage_only_copied_from_keeps_no_blob_and_its_image_later_is_a_cold_builds() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(STAGE_ONLY_COPIED_FROM);
    let conversions = |root: &Path, format: &str| {
        hoist(root, &["du", "-v"], None)
            .assert_ok()
            .stdout
            .lines()
            .filter(|l| l.contains(&format!(" as {format}")))
            .count()
    };
    let build_in = |root: &Path, args: &[&str]| {
        let mut all = vec!["build", "--source-date-epoch", "1700000000"];
        all.extend_from_slice(args);
        all.push(env.context.path().to_str().unwrap());
        hoist(root, &all, None).assert_ok();
    };
    let manifest = |root: &Path, name: &str| {
        hoist_testutil::cli::Hoist::new(super::common::HOIST, root).inspect(name)["Manifest"]
            .clone()
    };

    // The image holds the last stage's layers only: the `build` stage's
    // RUN layer is its snapshot alone, no blob of any kind, and the image is
    // all gzip.
    build_in(env.root.path(), &["-t", "app:1"]);
    assert_eq!(
        layer_types(&manifest(env.root.path(), "app:1")),
        [OCI_GZIP, OCI_GZIP]
    );
    assert_eq!(conversions(env.root.path(), "gzip"), 0);
    assert_eq!(
        zstd_and_tar_blobs(env.root.path()),
        (vec![], vec![]),
        "a blob of the build stage's RUN"
    );

    // The stage as the target: its RUN comes from the cache, its layer is
    // written from the snapshot (a plain tar named by its diff_id) and
    // converted once, and the image is the one a cold build of that target
    // makes in another store.
    assert!(
        run_cached(
            env.root.path(),
            env.context.path(),
            &["--target", "build", "-t", "build:1"]
        ),
        "the RUN ran again"
    );
    let warm = manifest(env.root.path(), "build:1");
    assert_eq!(layer_types(&warm), [OCI_GZIP, OCI_GZIP]);
    assert_eq!(conversions(env.root.path(), "gzip"), 1);
    let config =
        hoist_testutil::cli::Hoist::new(super::common::HOIST, env.root.path()).inspect("build:1");
    let run_diff_id = config["Config"]["rootfs"]["diff_ids"][1]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        zstd_and_tar_blobs(env.root.path()),
        (vec![], vec![run_diff_id]),
    );
    let other = store_with_busybox_of(&env);
    build_in(other.path(), &["--target", "build", "-t", "build:1"]);
    assert_eq!(warm, manifest(other.path(), "build:1"));
    // An attestation names the manifest: the conversion comes before it.
    build_in(
        env.root.path(),
        &["--target", "build", "--provenance", "-t", "build:2"],
    );

    // With a cache export, every step compresses as the image's layers
    // do: the exported cache holds no zstd blob.
    let cache = env.scratch.path().join("cache");
    build_in(
        other.path(),
        &[
            "--no-cache",
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
            "-t",
            "app:2",
        ],
    );
    let blobs: Vec<_> = fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(blobs.iter().any(|b| b.starts_with(&[0x1f, 0x8b])));
    assert!(
        !blobs
            .iter()
            .any(|b| b.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])),
        "a zstd blob in the exported cache"
    );
    assert_eq!(conversions(other.path(), "gzip"), 0);
}

#[test]
fn a_linked_copy_in_a_stage_only_copied_from_keeps_its_blob() {
    hoist_testutil::require_root!();
    let env = Env::new();
    // `COPY --link` makes its layer on nothing and stacks it on the stage:
    // a chain no step committed, made from the layer's blob.
    env.dockerfile(
        "FROM busybox AS build\nRUN seq 1 3 > /a\nCOPY --link f /f\n\
         RUN cat /a /f > /both\n\
         FROM busybox\nCOPY --from=build /both /both\n",
    );
    fs::write(env.context.path().join("f"), "linked\n").unwrap();
    let root = env.root.path();
    hoist(
        root,
        &["build", "-t", "app:1", env.context.path().to_str().unwrap()],
        None,
    )
    .assert_ok();
    let out = hoist(root, &["run", "--rm", "app:1", "cat", "/both"], None);
    out.assert_ok();
    assert_eq!(out.stdout, "1\n2\n3\nlinked\n");
    let (zstd, _) = zstd_and_tar_blobs(root);
    assert_eq!(zstd.len(), 1, "the linked layer's blob, in zstd: {zstd:?}");
}

#[test]
fn a_layer_kept_without_blob_whose_snapshot_is_gone_is_made_again() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(STAGE_ONLY_COPIED_FROM);
    let root = env.root.path();
    assert!(!run_cached(root, env.context.path(), &["-t", "app:1"]));
    // The snapshots go (the base image's chain, everything built on it,
    // removed by `hoist fsck --repair`); the cache records stay.
    let records: Value =
        serde_json::from_slice(&fs::read(root.join("snapshots/records.json")).unwrap()).unwrap();
    let base = records["snapshots"]
        .as_object()
        .unwrap()
        .values()
        .find(|r| r["parent"].is_null())
        .unwrap();
    fs::remove_dir_all(
        root.join("snapshots/snapshots")
            .join(base["id"].as_u64().unwrap().to_string()),
    )
    .unwrap();
    hoist(root, &["fsck", "--repair"], None).assert_ok();

    // The RUN kept no blob to make its snapshot from: its record is a miss,
    // it runs again, and the image is a cold build's.
    assert!(!run_cached(
        root,
        env.context.path(),
        &["--target", "build", "-t", "build:1"]
    ));
    let other = store_with_busybox_of(&env);
    assert!(!run_cached(
        other.path(),
        env.context.path(),
        &["--target", "build", "-t", "build:1"]
    ));
    let manifest = |root: &Path| {
        hoist_testutil::cli::Hoist::new(super::common::HOIST, root).inspect("build:1")["Manifest"]
            .clone()
    };
    assert_eq!(manifest(root), manifest(other.path()));
    // And now it is found again.
    assert!(run_cached(root, env.context.path(), &["-t", "app:2"]));
}
