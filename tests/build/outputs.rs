//! Outputs and metadata: tags, --iidfile, --metadata-file, archives, dry runs.

use std::fs;

use super::common::{hoist, Env};

#[test]
fn tags_iidfile_metadata_and_archives() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("f.txt", "f\n");
    env.dockerfile("FROM busybox\nCOPY f.txt /f.txt\nCMD [\"cat\", \"/f.txt\"]\n");
    let iid = env.scratch.path().join("iid");
    let meta = env.scratch.path().join("meta.json");
    let oci = env.scratch.path().join("img.oci.tar");
    let tar_out = env.scratch.path().join("fs.tar");
    let run = env.build(&[
        "-t",
        "one:1",
        "-t",
        "example.com/two:latest",
        "--iidfile",
        iid.to_str().unwrap(),
        "--metadata-file",
        meta.to_str().unwrap(),
        "-o",
        "type=image",
        "-o",
        &format!("type=oci,dest={}", oci.display()),
        "-o",
        &format!("type=tar,dest={}", tar_out.display()),
    ]);
    run.assert_ok();
    let id = fs::read_to_string(&iid).unwrap();
    let inspect = env.inspect("one:1");
    assert_eq!(inspect["Id"], id.as_str());
    assert_eq!(env.inspect("example.com/two:latest")["Id"], id.as_str());
    let metadata: serde_json::Value = serde_json::from_slice(&fs::read(&meta).unwrap()).unwrap();
    assert_eq!(metadata["containerimage.config.digest"], id.as_str());
    assert_eq!(metadata["containerimage.digest"], inspect["ManifestDigest"]);
    // The OCI archive has an index.json naming the manifest.
    let mut archive = tar::Archive::new(fs::File::open(&oci).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.trim_start_matches("./") == "index.json"),
        "{names:?}"
    );
    // The tar export holds the files.
    let mut archive = tar::Archive::new(fs::File::open(&tar_out).unwrap());
    let mut found = false;
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            == "f.txt"
        {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
            assert_eq!(s, "f\n");
            found = true;
        }
    }
    assert!(found, "f.txt in the tar export");
}

#[test]
fn quiet_prints_only_the_id_and_dry_run_prints_the_plan() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo hi\n");
    let plan = env.build(&["--dry-run", "--format", "json"]);
    plan.assert_ok();
    let graph: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(graph["vertices"].as_array().unwrap().len() >= 2);
    assert!(
        !plan.stderr.contains("DONE"),
        "nothing ran: {}",
        plan.stderr
    );
    let quiet = hoist(
        env.root.path(),
        &["build", "-q", env.context.path().to_str().unwrap()],
        None,
    );
    quiet.assert_ok();
    assert!(
        quiet.stdout.trim().starts_with("sha256:"),
        "{}",
        quiet.stdout
    );
    assert_eq!(quiet.stdout.lines().count(), 1);
    // buildx's `--progress quiet` is the same, with nothing on stderr.
    let progress_quiet = hoist(
        env.root.path(),
        &[
            "build",
            "--progress",
            "quiet",
            env.context.path().to_str().unwrap(),
        ],
        None,
    );
    progress_quiet.assert_ok();
    assert_eq!(progress_quiet.stdout, quiet.stdout);
    assert_eq!(progress_quiet.stderr, "", "{}", progress_quiet.stderr);
}

#[test]
fn dockerfile_from_stdin_and_build_args_and_dockerignore() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("keep.txt", "keep\n");
    env.write("secret.txt", "secret\n");
    env.write(".dockerignore", "secret.txt\n");
    let dockerfile = "FROM busybox\nARG WHO=nobody\nRUN echo $WHO > /who\nCOPY . /ctx/\n";
    let dest = env.scratch.path().join("out");
    let run = hoist(
        env.root.path(),
        &[
            "build",
            "-f",
            "-",
            "--build-arg",
            "WHO=alice",
            "-o",
            &format!("type=local,dest={}", dest.display()),
            env.context.path().to_str().unwrap(),
        ],
        Some(dockerfile.as_bytes()),
    );
    run.assert_ok();
    assert_eq!(fs::read_to_string(dest.join("who")).unwrap(), "alice\n");
    assert!(dest.join("ctx/keep.txt").is_file());
    assert!(
        !dest.join("ctx/secret.txt").exists(),
        ".dockerignore applies"
    );
}

/// The digest the registry serves for `name`, `None` when it has none.
fn registry_digest(name: &str) -> Option<String> {
    let out = std::process::Command::new("skopeo")
        .args(["inspect", "--tls-verify=false", "--format", "{{.Digest}}"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn push_and_registry_outputs_push_as_buildx_does() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo pushed > /pushed\n");
    let config = tempfile::tempdir().unwrap();
    let build = |args: &[&str]| {
        let mut command = env.hoist().command();
        command
            .args(["build", "--progress", "plain"])
            .args(args)
            .arg(env.context.path())
            .env("XDG_CONFIG_HOME", config.path())
            .env("REGISTRY_AUTH_FILE", config.path().join("auth.json"));
        hoist_testutil::cli::run(&mut command, None)
    };
    let name = |n: &str| format!("{}/push/{n}:1", registry.addr);
    let stored = |n: &str| -> String {
        env.inspect(n)["Target"]["Digest"]
            .as_str()
            .unwrap()
            .to_owned()
    };

    // `--push`: every tag, after naming it in the store.
    let a = name("a");
    let run = build(&["-t", &a, "--push"]);
    run.assert_ok();
    assert!(
        run.stderr.contains(&format!("pushing {a}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1: digest: sha256:"), "{}", run.stderr);
    assert_eq!(registry_digest(&a), Some(stored(&a)));

    // `-o type=image,name=…,push=true`: the names, besides the tags.
    let (b, c) = (name("b"), name("c"));
    build(&["-o", &format!("type=image,name={b},name={c},push=true")]).assert_ok();
    assert_eq!(registry_digest(&b), Some(stored(&b)));
    assert_eq!(registry_digest(&c), Some(stored(&c)));

    // `-o type=registry` is `type=image,push=true`.
    let d = name("d");
    build(&["-o", &format!("type=registry,name={d}")]).assert_ok();
    assert_eq!(registry_digest(&d), Some(stored(&d)));

    // `push=false` names without pushing.
    let e = name("e");
    build(&["-o", &format!("type=image,name={e},push=false")]).assert_ok();
    assert!(!stored(&e).is_empty());
    assert_eq!(registry_digest(&e), None);

    // A key the type does not take is refused before anything is built,
    // naming the keys it takes.
    let f = name("f");
    let run = build(&["-o", &format!("type=registry,name={f},dest=x")]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("invalid --output key `dest` for type=registry: it takes name"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("RUN echo"), "{}", run.stderr);
    assert_eq!(registry_digest(&f), None);

    // A push needs a name, as buildx says.
    for args in [&["--push"][..], &["-o", "type=registry"][..]] {
        let run = build(args);
        assert_eq!(run.code(), 1, "{}", run.stderr);
        assert!(run.stderr.contains("-t NAME"), "{}", run.stderr);
        assert!(!run.stderr.contains("RUN echo"), "{}", run.stderr);
    }
}

#[test]
fn push_platform_pushes_one_manifest_of_an_index() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo one > /one\n");
    let config = tempfile::tempdir().unwrap();
    let hoist = |args: &[&str]| {
        let mut command = env.hoist().command();
        command
            .args(args)
            .env("XDG_CONFIG_HOME", config.path())
            .env("REGISTRY_AUTH_FILE", config.path().join("auth.json"));
        hoist_testutil::cli::run(&mut command, None)
    };
    let name = format!("{}/push/indexed:1", registry.addr);
    // With provenance the name points at an index: the image and its
    // attestation.
    let context = env.context.path().to_str().unwrap().to_owned();
    hoist(&[
        "build",
        "--progress",
        "plain",
        "-t",
        &name,
        "--provenance",
        &context,
    ])
    .assert_ok();
    let inspected = env.inspect(&name);
    let manifest = inspected["ManifestDigest"].as_str().unwrap().to_owned();
    assert_ne!(inspected["Target"]["Digest"], manifest.as_str(), "an index");

    let host = hoist_registry::Platform::host().to_string();
    let run = hoist(&["push", "--platform", &host, &name]);
    run.assert_ok();
    assert!(
        run.stdout.contains(&format!("digest: {manifest}")),
        "{}",
        run.stdout
    );
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    let served: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        served["mediaType"], "application/vnd.oci.image.manifest.v1+json",
        "one platform's manifest, not the index: {served}"
    );
    assert_eq!(registry_digest(&name), Some(manifest));

    let run = hoist(&["push", "--platform", "linux/s390x", &name]);
    assert_ne!(run.code(), 0);
    assert!(
        run.stderr.contains("has no linux/s390x image in the store") && run.stderr.contains(&host),
        "{}",
        run.stderr
    );
}

#[test]
fn annotations_reach_the_image_manifest_beside_the_base_ones() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo hi > /hi\n");
    env.build(&[
        "-t",
        "annotated:1",
        "--annotation",
        "org.opencontainers.image.title=app",
        "--annotation",
        "manifest:com.example.build=42",
    ])
    .assert_ok();
    let digest = env.inspect("annotated:1")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let blob = env
        .root
        .path()
        .join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let manifest: serde_json::Value = serde_json::from_slice(&fs::read(blob).unwrap()).unwrap();
    let annotations = &manifest["annotations"];
    assert_eq!(annotations["org.opencontainers.image.title"], "app");
    assert_eq!(annotations["com.example.build"], "42");
    // The base the build records is still there.
    assert!(
        annotations["org.opencontainers.image.base.digest"].is_string(),
        "{manifest}"
    );
    // A type buildx does not know is refused, naming it (the others:
    // tests/build/multiplatform.rs).
    let run = env.build(&["--annotation", "indexes:a=b"]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("unknown annotation type `indexes`"),
        "{}",
        run.stderr
    );
}
