//! `hoist build --build-context NAME=VALUE` (buildx's named contexts): a
//! directory, `docker-image://`, `oci-layout://` or a git URL replaces the
//! image or stage called NAME in `FROM` and `--from`; it is part of the cache
//! key and of the provenance; a bad value is refused before anything runs.

use std::fs;
use std::path::Path;

use hoist_testutil::git;
use serde_json::Value;

use super::common::{cached_steps, done_steps, Env};

/// `hoist build --progress plain -t TAG ARGS CONTEXT` run in `cwd`, with the
/// image's filesystem exported to `<scratch>/fs-TAG`; returns (stderr, fs).
fn build_in(env: &Env, cwd: &Path, tag: &str, args: &[&str]) -> (String, std::path::PathBuf) {
    let dest = env.scratch.path().join(format!("fs-{tag}"));
    let _ = fs::remove_dir_all(&dest);
    let mut command = env.hoist().command();
    command
        .current_dir(cwd)
        .args([
            "build",
            "--progress",
            "plain",
            "-t",
            tag,
            "-o",
            "type=image",
        ])
        .arg("-o")
        .arg(format!("type=local,dest={}", dest.display()))
        .args(args)
        .arg(env.context.path());
    let run = hoist_testutil::cli::run(&mut command, None);
    run.assert_ok();
    (run.stderr.clone(), dest)
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn a_directory_replaces_an_image_and_a_stage() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let rootfs = env.scratch.path().join("rootfs");
    hoist_testutil::busybox_rootfs(&rootfs);
    fs::write(rootfs.join("marker"), "from the named directory\n").unwrap();

    // `FROM docker.io/library/alpine:3.18` is the context `alpine:3.18`
    // (names normalise as BuildKit's), given as a path relative to the
    // current directory; the store has no alpine, so nothing is pulled.
    env.dockerfile("FROM docker.io/library/alpine:3.18\nRUN cat /marker > /ran && pwd > /pwd\n");
    let (stderr, fs_dir) = build_in(
        &env,
        env.scratch.path(),
        "img",
        &["--build-context", "alpine:3.18=./rootfs"],
    );
    assert!(!stderr.contains("Pulling"), "{stderr}");
    assert_eq!(read(&fs_dir.join("ran")), "from the named directory\n");
    assert_eq!(read(&fs_dir.join("pwd")), "/\n");
    // The directory's files are one layer, the RUN another; no base image.
    let inspect = env.inspect("img");
    assert_eq!(inspect["Layers"].as_array().unwrap().len(), 2, "{inspect}");
    assert_eq!(env.config("img")["config"]["WorkingDir"], "/");
    // That layer's history line is worded as BuildKit's exporter words it.
    assert_eq!(
        env.config("img")["history"][0]["created_by"],
        "local source for alpine:3.18"
    );

    // A stage of the name is replaced whole: its instructions never run.
    env.dockerfile("FROM busybox AS base\nRUN exit 1\nFROM base\nRUN cat /marker > /ran\n");
    let (_, fs_dir) = build_in(
        &env,
        env.scratch.path(),
        "stage",
        &["--build-context", &format!("base={}", rootfs.display())],
    );
    assert_eq!(read(&fs_dir.join("ran")), "from the named directory\n");
}

#[test]
fn copy_from_a_directory_follows_its_dockerignore_and_the_cache() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let files = env.scratch.path().join("files");
    fs::create_dir_all(&files).unwrap();
    fs::write(files.join("a.txt"), "one\n").unwrap();
    fs::write(files.join("secret.txt"), "never copied\n").unwrap();
    fs::write(files.join(".dockerignore"), "secret.txt\n").unwrap();
    // A link out of the directory is resolved inside it.
    std::os::unix::fs::symlink("/etc/hostname", files.join("escape")).unwrap();
    env.dockerfile(
        "FROM busybox\nCOPY --from=files / /files/\n\
         RUN --mount=from=files,target=/m cat /m/a.txt > /mounted\n",
    );
    let named = format!("files={}", files.display());
    let args = ["--build-context", named.as_str()];
    let (_, fs_dir) = build_in(&env, env.scratch.path(), "copy", &args);
    assert_eq!(read(&fs_dir.join("files/a.txt")), "one\n");
    assert_eq!(read(&fs_dir.join("mounted")), "one\n");
    assert!(!fs_dir.join("files/secret.txt").exists());
    assert_eq!(
        fs::read_link(fs_dir.join("files/escape")).unwrap(),
        Path::new("/etc/hostname")
    );
    fs::write(
        env.scratch.path().join("escape.Dockerfile"),
        "FROM scratch\nCOPY --from=files escape /x\n",
    )
    .unwrap();
    let run = env.build(&[
        "-f",
        env.scratch
            .path()
            .join("escape.Dockerfile")
            .to_str()
            .unwrap(),
        "--build-context",
        &named,
    ]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("\"/escape\": not found"),
        "{}",
        run.stderr
    );

    // Unchanged: every step comes from the cache.
    let (stderr, _) = build_in(&env, env.scratch.path(), "copy", &args);
    assert!(!stderr.contains(" DONE "), "{stderr}");
    assert!(cached_steps(&stderr) >= 2, "{stderr}");
    // An ignored file changing changes nothing either.
    fs::write(files.join("secret.txt"), "still never copied\n").unwrap();
    let (stderr, _) = build_in(&env, env.scratch.path(), "copy", &args);
    assert!(!stderr.contains(" DONE "), "{stderr}");

    // A changed file reruns the steps reading it, and `--explain` names it.
    fs::write(files.join("a.txt"), "two\n").unwrap();
    let explained = [&args[..], &["--explain"]].concat();
    let (stderr, fs_dir) = build_in(&env, env.scratch.path(), "copy", &explained);
    assert!(
        stderr.contains("explain: step 1/2 COPY --from=files / /files/: a.txt changed"),
        "{stderr}"
    );
    // The context is read again, the COPY and the RUN rerun.
    assert_eq!(done_steps(&stderr), 3, "{stderr}");
    assert_eq!(read(&fs_dir.join("files/a.txt")), "two\n");
    assert_eq!(read(&fs_dir.join("mounted")), "two\n");
}

#[test]
fn docker_image_and_oci_layout_contexts() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    let pushed = format!("{}/lib/bb:1", registry.addr);
    env.hoist().ok(&["tag", "busybox", &pushed]);
    env.hoist().ok(&["push", "-q", &pushed]);

    // A fresh store: the named image is pulled as a base would be.
    let fresh = Env::new();
    fresh.hoist().ok(&["rmi", "busybox"]);
    fresh.dockerfile("FROM alpine\nRUN echo ok > /ok\n");
    let (stderr, fs_dir) = build_in(
        &fresh,
        fresh.scratch.path(),
        "img",
        &[
            "--build-context",
            &format!("alpine=docker-image://{pushed}"),
        ],
    );
    assert!(stderr.contains("Pulling from lib/bb"), "{stderr}");
    assert_eq!(read(&fs_dir.join("ok")), "ok\n");
    assert!(fs_dir.join("bin/busybox").is_file());

    // An OCI layout (as skopeo writes one, tagged v1) read from its
    // directory, into a store that has no busybox.
    let archive = env.scratch.path().join("bb.tar");
    env.hoist().ok(&[
        "save",
        "--format",
        "oci",
        "-o",
        archive.to_str().unwrap(),
        "busybox",
    ]);
    let layout = env.scratch.path().join("layout");
    hoist_testutil::run_ok(
        std::process::Command::new("skopeo")
            .arg("copy")
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("oci:{}:v1", layout.display())),
    );
    let empty = Env::new();
    empty.hoist().ok(&["rmi", "busybox"]);
    empty.dockerfile("FROM scratch\nCOPY --from=bb /bin/busybox /bb\n");
    for value in [
        format!("oci-layout://{}:v1", layout.display()),
        format!(
            "oci-layout://{}@{}",
            layout.display(),
            serde_json::from_str::<Value>(&read(&layout.join("index.json"))).unwrap()["manifests"]
                [0]["digest"]
                .as_str()
                .unwrap()
        ),
    ] {
        let (stderr, fs_dir) = build_in(
            &empty,
            empty.scratch.path(),
            "oci",
            &["--build-context", &format!("bb={value}")],
        );
        assert!(!stderr.contains("Pulling"), "{stderr}");
        assert!(fs_dir.join("bb").is_file(), "{stderr}");
    }

    // A hostile layout: the manifest's blob is a link out of the layout,
    // then bytes that are not what its digest says. Both are refused naming
    // the blob, and the store gains no image.
    let index: Value = serde_json::from_str(&read(&layout.join("index.json"))).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let blob = layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"));
    let target = env.scratch.path().join("outside");
    fs::copy(&blob, &target).unwrap();
    fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&target, &blob).unwrap();
    let value = format!("bb=oci-layout://{}:v1", layout.display());
    let run = empty.build(&["-t", "hostile", "--build-context", &value]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("cannot read blob {digest}")),
        "{}",
        run.stderr
    );
    fs::remove_file(&blob).unwrap();
    fs::write(&blob, b"{}").unwrap();
    let run = empty.build(&["-t", "hostile", "--build-context", &value]);
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(
        run.stderr
            .contains(&format!("blob {digest} does not match its digest")),
        "{}",
        run.stderr
    );
    assert!(empty.hoist().ok(&["images", "-q"]).lines().count() == 1);
}

#[test]
fn a_git_repository_context() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("git");
    let env = Env::new();
    let repo = hoist_testutil::git::GitRepo::init(env.scratch.path(), "repo.git");
    fs::create_dir_all(repo.work.join("sub")).unwrap();
    fs::write(repo.work.join("sub/file.txt"), "from git\n").unwrap();
    fs::write(repo.work.join("top.txt"), "top\n").unwrap();
    repo.commit_all("one");
    repo.push("main");
    git(&repo.bare, &["tag", "v1", "main"]);
    env.dockerfile("FROM busybox\nCOPY --from=src / /src/\n");
    let url = format!("file://{}#v1:sub", repo.bare.display());
    let (_, fs_dir) = build_in(
        &env,
        env.scratch.path(),
        "git",
        &["--build-context", &format!("src={url}")],
    );
    assert_eq!(read(&fs_dir.join("src/file.txt")), "from git\n");
    assert!(!fs_dir.join("src/top.txt").exists());
}

#[test]
fn an_http_context_is_the_file_context_not_extracted() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let served = env.scratch.path().join("www");
    fs::create_dir_all(&served).unwrap();
    let tarball = b"\x1f\x8b not really extracted";
    fs::write(served.join("files.tar.gz"), tarball).unwrap();
    let base = super::remote::serve(served);
    env.dockerfile("FROM busybox\nCOPY --from=dl /context /got\n");
    let (_, fs_dir) = build_in(
        &env,
        env.scratch.path(),
        "http",
        &["--build-context", &format!("dl={base}/files.tar.gz")],
    );
    assert_eq!(fs::read(fs_dir.join("got")).unwrap(), tarball);
}

#[test]
fn provenance_records_the_named_contexts() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let files = env.scratch.path().join("files");
    fs::create_dir_all(&files).unwrap();
    fs::write(files.join("a.txt"), "one\n").unwrap();
    env.dockerfile("FROM busybox\nCOPY --from=files a.txt /a.txt\n");
    build_in(
        &env,
        env.scratch.path(),
        "prov",
        &["--provenance", "--build-context", "files=./files"],
    );
    let statements: Value =
        serde_json::from_str(&env.hoist().ok(&["inspect", "--provenance", "prov"])).unwrap();
    let definition = &statements[0]["predicate"]["buildDefinition"];
    let request = &definition["externalParameters"]["request"];
    assert_eq!(request["args"]["context:files"], "local:files", "{request}");
    assert!(
        request["locals"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "files"})),
        "{request}"
    );
    let dependency = definition["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "files")
        .unwrap_or_else(|| panic!("{definition}"))
        .clone();
    let first = dependency["digest"]["sha256"].as_str().unwrap().to_owned();
    assert_eq!(first.len(), 64);

    // Another content is another digest.
    fs::write(files.join("a.txt"), "two\n").unwrap();
    build_in(
        &env,
        env.scratch.path(),
        "prov",
        &["--provenance", "--build-context", "files=./files"],
    );
    let statements: Value =
        serde_json::from_str(&env.hoist().ok(&["inspect", "--provenance", "prov"])).unwrap();
    let digest = statements[0]["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "files")
        .unwrap()["digest"]["sha256"]
        .clone();
    assert_ne!(digest, first.as_str());
}

#[test]
fn bad_names_and_values_are_refused_before_building() {
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo should-not-run\n");
    for (value, expected) in [
        (
            "nonsense",
            "invalid --build-context `nonsense`: expected NAME=VALUE",
        ),
        ("Base=/", "invalid --build-context name `Base`"),
        ("base=/no/such/dir", "not a directory"),
        ("base=ftp://host/x", "unsupported context source `ftp`"),
        (
            "base=docker-image://Bad..ref",
            "invalid --build-context base=`docker-image://Bad..ref`",
        ),
        ("base=oci-layout:///no/such/layout", "not a directory"),
        ("a\u{1b}[2J=/", "a\\u{1b}[2J"),
    ] {
        let run = env.build(&["-t", "refused", "--build-context", value]);
        assert_eq!(run.code(), 1, "{value}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{value}: {}", run.stderr);
        assert!(!run.stderr.contains('\u{1b}'), "{}", run.stderr);
        assert!(!run.stderr.contains("should-not-run"), "{}", run.stderr);
    }
    let images = env.hoist().ok(&["images", "-q"]);
    assert_eq!(images.lines().count(), 1, "{images}");
}
