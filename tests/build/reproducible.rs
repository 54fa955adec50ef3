//! Reproducible images and provenance (issue 11): the same inputs under
//! SOURCE_DATE_EPOCH give the same digests whatever the store, the context's
//! path, the time or the parallelism; unpinned inputs are reported; the
//! provenance attestation sits beside the image without changing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::Digest as _;
use tempfile::TempDir;

use hoist_testutil::git;

use super::common::{Run, HOIST};

/// 2023-11-14T22:13:20Z
const EPOCH: i64 = 1_700_000_000;
const EPOCH_TEXT: &str = "2023-11-14T22:13:20Z";

/// Runs hoist with `envs` and without any SOURCE_DATE_EPOCH of the test's own
/// environment.
fn hoist(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut command = hoist_testutil::cli::Hoist::new(HOIST, root).command();
    command
        .args(args)
        .env_remove("SOURCE_DATE_EPOCH")
        .envs(envs.iter().copied());
    hoist_testutil::cli::run(&mut command, None)
}

fn ok(root: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let run = hoist(root, args, envs);
    run.assert_ok();
    run
}

/// One busybox tar for all stores of a test, so that their base images are
/// the same image (a tar made twice has other mtimes).
struct Base {
    dir: TempDir,
}

impl Base {
    fn new() -> Base {
        let dir = tempfile::tempdir().unwrap();
        hoist_testutil::busybox_rootfs_tar(&dir.path().join("busybox.tar"));
        Base { dir }
    }

    /// A fresh store with `busybox:latest` imported (its `created` fixed, so
    /// every store gets the same base image).
    fn store(&self) -> TempDir {
        let root = tempfile::tempdir().unwrap();
        let tar = self.dir.path().join("busybox.tar");
        ok(
            root.path(),
            &["import", tar.to_str().unwrap(), "busybox:latest"],
            &[("SOURCE_DATE_EPOCH", "1000000000")],
        );
        root
    }
}

fn inspect(root: &Path, image: &str) -> Value {
    let run = ok(root, &["inspect", image], &[]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    v[0].clone()
}

fn layer_digests(image: &Value) -> Vec<String> {
    image["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Digest"].as_str().unwrap().to_owned())
        .collect()
}

fn blob_path(root: &Path, digest: &str) -> PathBuf {
    root.join("content/blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

/// (path, mtime) of every entry of a gzip layer blob.
fn layer_mtimes(root: &Path, digest: &str) -> Vec<(String, u64)> {
    let file = fs::File::open(blob_path(root, digest)).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.path().unwrap().display().to_string(),
                e.header().mtime().unwrap(),
            )
        })
        .collect()
}

/// A multi-stage context: RUN (heredoc), COPY, COPY --from, ADD of a local
/// directory and of a local tar (unpacked), an inline file, config
/// instructions whose maps must come out sorted.
fn write_context(dir: &Path) {
    let write = |path: &str, content: &str| {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    };
    write(
        "Dockerfile",
        "FROM busybox AS build\n\
         WORKDIR /src\n\
         COPY src/ ./\n\
         RUN <<EOF\n\
         set -e\n\
         mkdir -p /out\n\
         cat a.txt b.txt > /out/joined\n\
         touch /out/stamp\n\
         EOF\n\
         \n\
         FROM busybox\n\
         COPY --from=build /out /opt/out\n\
         ADD conf /etc/app/\n\
         ADD files.tar /opt/unpacked/\n\
         COPY <<EOF /etc/app/motd\n\
         hello\n\
         EOF\n\
         RUN echo built > /built && mkdir -p /var/empty\n\
         LABEL zeta=2 alpha=1\n\
         ENV Z=1 A=2\n\
         EXPOSE 8080 443\n\
         VOLUME /data /cache\n\
         CMD [\"cat\", \"/etc/app/motd\"]\n",
    );
    write("src/a.txt", "alpha\n");
    write("src/b.txt", "beta\n");
    write("conf/app.conf", "key=value\n");
    write("conf/sub/more.conf", "more\n");
    write("tarsrc/t1.txt", "in the tar\n");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(dir.join("files.tar"))
        .arg("-C")
        .arg(dir.join("tarsrc"))
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    fs::remove_dir_all(dir.join("tarsrc")).unwrap();
}

fn build(root: &Path, context: &Path, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(args);
    all.push(context.to_str().unwrap());
    ok(root, &all, envs)
}

fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn same_inputs_give_the_same_digest_across_stores_paths_times_and_jobs() {
    hoist_testutil::require_root!();
    let base = Base::new();
    let (root_a, root_b) = (base.store(), base.store());
    let busybox = inspect(root_a.path(), "busybox");
    assert_eq!(
        busybox["ManifestDigest"],
        inspect(root_b.path(), "busybox")["ManifestDigest"],
        "precondition: both stores hold the same base image"
    );

    let dirs = tempfile::tempdir().unwrap();
    let context_a = dirs.path().join("a");
    write_context(&context_a);

    // Store A first builds without an epoch: its cached layers carry real
    // mtimes and must not be reused by the build with the epoch.
    build(root_a.path(), &context_a, &["-t", "app:plain"], &[]);
    let plain = inspect(root_a.path(), "app:plain");
    let created = plain["Config"]["created"].as_str().unwrap().to_owned();
    assert!(
        created.as_str() > "2024",
        "without an epoch, `created` is the real time: {created}"
    );
    build(
        root_a.path(),
        &context_a,
        &["-t", "app:1", "--jobs", "1"],
        &[("SOURCE_DATE_EPOCH", &EPOCH.to_string())],
    );
    let a = inspect(root_a.path(), "app:1");

    // Another store, another context path, written later, other flags.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let context_b = dirs.path().join("elsewhere/deeper/b");
    write_context(&context_b);
    build(
        root_b.path(),
        &context_b,
        &[
            "-t",
            "app:1",
            "--jobs",
            "2",
            "--source-date-epoch",
            &EPOCH.to_string(),
        ],
        &[],
    );
    let b = inspect(root_b.path(), "app:1");

    assert_eq!(a["ManifestDigest"], b["ManifestDigest"]);
    assert_eq!(a["ConfigDigest"], b["ConfigDigest"]);
    assert_eq!(layer_digests(&a), layer_digests(&b));
    let base_count = layer_digests(&busybox).len();
    for (without, with) in layer_digests(&plain)
        .iter()
        .zip(layer_digests(&a))
        .skip(base_count)
    {
        assert_ne!(
            *without, with,
            "a layer made without the epoch was reused with it"
        );
    }

    // The base layer is the base image's, untouched.
    let base_layers = layer_digests(&busybox);
    let layers = layer_digests(&a);
    assert_eq!(layers[..base_layers.len()], base_layers[..]);
    // Every layer the build wrote has its mtimes clamped to the epoch.
    let mut clamped = 0;
    for digest in &layers[base_layers.len()..] {
        for (path, mtime) in layer_mtimes(root_a.path(), digest) {
            assert!(
                mtime <= EPOCH as u64,
                "{path} in {digest} has mtime {mtime}"
            );
            clamped += usize::from(mtime == EPOCH as u64);
        }
    }
    assert!(clamped > 0, "no entry was clamped to the epoch");

    // `created` of the config and of every history entry this build added.
    let config = &a["Config"];
    assert_eq!(config["created"], EPOCH_TEXT);
    let history = config["history"].as_array().unwrap();
    let base_history = busybox["Config"]["history"].as_array().unwrap().len();
    assert!(history.len() > base_history);
    for entry in &history[base_history..] {
        assert_eq!(entry["created"], EPOCH_TEXT, "{entry}");
    }
    let env = config["config"]["Env"].as_array().unwrap();
    assert_eq!(
        env[env.len() - 2..],
        [Value::from("Z=1"), Value::from("A=2")]
    );

    // Nothing of the host in the config or the manifest. The base image's
    // own history (`hoist import` names its tar, as `docker import` does) is
    // the base's, not this build's.
    for digest in [
        a["ConfigDigest"].as_str().unwrap(),
        a["ManifestDigest"].as_str().unwrap(),
    ] {
        let mut document: Value =
            serde_json::from_slice(&fs::read(blob_path(root_a.path(), digest)).unwrap()).unwrap();
        if let Some(history) = document.get_mut("history").and_then(Value::as_array_mut) {
            history.drain(..base_history);
        }
        let text = document.to_string();
        for leak in [
            dirs.path().to_str().unwrap(),
            root_a.path().to_str().unwrap(),
            "/tmp/",
        ] {
            assert!(!text.contains(leak), "{digest} contains {leak}: {text}");
        }
        let host = hostname();
        if host.len() >= 4 {
            assert!(!text.contains(&host), "{digest} contains the hostname");
        }
    }
    let raw_config = fs::read_to_string(blob_path(
        root_a.path(),
        a["ConfigDigest"].as_str().unwrap(),
    ))
    .unwrap();
    let order = |needle: &str| raw_config.find(needle).unwrap();
    assert!(order("\"alpha\"") < order("\"zeta\""), "labels are sorted");
    assert!(
        order("\"443/tcp\"") < order("\"8080/tcp\""),
        "ports are sorted"
    );
    assert!(
        order("\"/cache\"") < order("\"/data\""),
        "volumes are sorted"
    );
}

#[test]
fn mtime_only_changes_keep_the_digest_and_a_byte_changes_it() {
    hoist_testutil::require_root!();
    let base = Base::new();
    let root = base.store();
    let context = tempfile::tempdir().unwrap();
    write_context(context.path());
    let epoch = EPOCH.to_string();
    let args = ["-t", "app", "--source-date-epoch", epoch.as_str()];
    build(root.path(), context.path(), &args, &[]);
    let first = inspect(root.path(), "app");

    // Touch every file later (mtimes only), rebuild without the cache so
    // the layers are really written again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for entry in walkdir::WalkDir::new(context.path()) {
        let entry = entry.unwrap();
        let file = fs::File::options().read(true).open(entry.path()).unwrap();
        file.set_modified(std::time::SystemTime::now()).unwrap();
    }
    let mut no_cache = args.to_vec();
    no_cache.push("--no-cache");
    build(root.path(), context.path(), &no_cache, &[]);
    let touched = inspect(root.path(), "app");
    assert_eq!(first["ManifestDigest"], touched["ManifestDigest"]);
    assert_eq!(layer_digests(&first), layer_digests(&touched));

    // One byte more in one file.
    fs::write(context.path().join("conf/app.conf"), "key=value!\n").unwrap();
    build(root.path(), context.path(), &args, &[]);
    let changed = inspect(root.path(), "app");
    assert_ne!(first["ManifestDigest"], changed["ManifestDigest"]);
    let (l1, l2) = (layer_digests(&first), layer_digests(&changed));
    // busybox, COPY --from=build, then ADD conf.
    assert_eq!(l1[..2], l2[..2], "layers before ADD conf are the same");
    assert_ne!(l1[2], l2[2], "the ADD conf layer changed");
}

#[test]
fn unpinned_inputs_warn_and_strict_mode_refuses_them() {
    hoist_testutil::require_root!();
    let base = Base::new();
    let root = base.store();
    let busybox = inspect(root.path(), "busybox");
    let digest = busybox["ManifestDigest"].as_str().unwrap();
    let context = tempfile::tempdir().unwrap();
    let dockerfile =
        "FROM busybox AS build\nRUN echo hi > /x\n\nFROM busybox\nCOPY --from=build /x /x\n";
    fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();

    let strict = hoist(
        root.path(),
        &[
            "build",
            "-t",
            "strict:1",
            "--reproducible=strict",
            context.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(strict.status.code(), Some(1), "stderr: {}", strict.stderr);
    assert!(
        strict
            .stderr
            .contains("Dockerfile:1: FROM busybox is not pinned by digest"),
        "{}",
        strict.stderr
    );
    assert!(
        strict
            .stderr
            .contains("Dockerfile:4: FROM busybox is not pinned by digest"),
        "{}",
        strict.stderr
    );
    assert!(
        !strict.stderr.contains("RUN echo"),
        "nothing ran: {}",
        strict.stderr
    );
    let listed = ok(root.path(), &["images"], &[]).stdout;
    assert!(!listed.contains("strict"), "no image was made: {listed}");

    // SOURCE_DATE_EPOCH implies warnings, and the build goes on.
    let warned = build(
        root.path(),
        context.path(),
        &["-t", "warned:1"],
        &[("SOURCE_DATE_EPOCH", "1")],
    );
    assert_eq!(
        warned
            .stderr
            .lines()
            .filter(|l| l.starts_with("WARNING: Dockerfile:") && l.contains("not pinned"))
            .count(),
        2,
        "{}",
        warned.stderr
    );
    inspect(root.path(), "warned:1");

    // Pinned by digest: strict mode builds without a word.
    let pinned = dockerfile.replace("FROM busybox", &format!("FROM busybox@{digest}"));
    fs::write(context.path().join("Dockerfile"), pinned).unwrap();
    let run = build(
        root.path(),
        context.path(),
        &["-t", "pinned:1", "--reproducible=strict"],
        &[],
    );
    assert!(!run.stderr.contains("WARNING"), "{}", run.stderr);
    inspect(root.path(), "pinned:1");
}

#[test]
fn provenance_is_an_attestation_beside_an_unchanged_image() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("git");
    let base = Base::new();
    let root = base.store();
    let busybox = inspect(root.path(), "busybox");
    let context = tempfile::tempdir().unwrap();
    write_context(context.path());
    git(context.path(), &["init", "-q"]);
    git(context.path(), &["add", "-A"]);
    git(context.path(), &["commit", "-qm", "context"]);
    let commit = git(context.path(), &["rev-parse", "HEAD"]);
    let epoch = EPOCH.to_string();
    let common = [
        "--source-date-epoch",
        epoch.as_str(),
        "--build-arg",
        "GREETING=hi",
    ];

    let mut args = vec!["-t", "plain:1"];
    args.extend(common);
    build(root.path(), context.path(), &args, &[]);
    let mut args = vec!["-t", "app:1", "--provenance"];
    args.extend(common);
    build(root.path(), context.path(), &args, &[]);
    let plain = inspect(root.path(), "plain:1");
    let app = inspect(root.path(), "app:1");

    // The image is the same; the ref points at an index holding it.
    assert_eq!(plain["ManifestDigest"], app["ManifestDigest"]);
    assert_eq!(plain["Target"]["Digest"], plain["ManifestDigest"]);
    assert_eq!(
        app["Target"]["MediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let manifest_digest = app["ManifestDigest"].as_str().unwrap();
    let index: Value = serde_json::from_slice(
        &fs::read(blob_path(
            root.path(),
            app["Target"]["Digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 2);
    assert_eq!(manifests[0]["digest"], manifest_digest);
    assert_eq!(manifests[0]["platform"]["os"], "linux");
    let attestation = &manifests[1];
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(
        attestation["annotations"]["vnd.docker.reference.digest"],
        manifest_digest
    );
    assert_eq!(attestation["platform"]["os"], "unknown");
    assert_eq!(attestation["platform"]["architecture"], "unknown");
    let attestation: Value = serde_json::from_slice(
        &fs::read(blob_path(
            root.path(),
            attestation["digest"].as_str().unwrap(),
        ))
        .unwrap(),
    )
    .unwrap();
    let layer = &attestation["layers"][0];
    assert_eq!(layer["mediaType"], "application/vnd.in-toto+json");
    assert_eq!(
        layer["annotations"]["in-toto.io/predicate-type"],
        "https://slsa.dev/provenance/v1"
    );

    // `hoist inspect --provenance` shows the statement.
    let run = ok(root.path(), &["inspect", "--provenance", "app:1"], &[]);
    let statements: Value = serde_json::from_str(&run.stdout).unwrap();
    let statement = &statements[0];
    assert_eq!(statement["_type"], "https://in-toto.io/Statement/v0.1");
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        manifest_digest.trim_start_matches("sha256:")
    );
    assert_eq!(
        statement["subject"][0]["name"],
        "pkg:docker/app@1?platform=linux%2Famd64"
            .replace("amd64", app["Architecture"].as_str().unwrap())
    );
    let predicate = &statement["predicate"];
    let definition = &predicate["buildDefinition"];
    let dockerfile = fs::read(context.path().join("Dockerfile")).unwrap();
    assert_eq!(
        definition["externalParameters"]["configSource"]["digest"]["sha256"],
        hex(&sha2::Sha256::digest(&dockerfile))
    );
    assert_eq!(
        definition["externalParameters"]["configSource"]["path"],
        "Dockerfile"
    );
    let request_args = &definition["externalParameters"]["request"]["args"];
    assert_eq!(request_args["build-arg:GREETING"], "hi");
    assert_eq!(request_args["build-arg:SOURCE_DATE_EPOCH"], epoch);
    let dependencies = definition["resolvedDependencies"].as_array().unwrap();
    let base_dependency = dependencies
        .iter()
        .find(|d| {
            d["uri"]
                .as_str()
                .is_some_and(|u| u.starts_with("pkg:docker/busybox@latest"))
        })
        .unwrap_or_else(|| panic!("no busybox in {dependencies:?}"));
    assert_eq!(
        base_dependency["digest"]["sha256"],
        busybox["ManifestDigest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
    let context_dependency = dependencies
        .iter()
        .find(|d| d["name"] == "context")
        .unwrap();
    assert_eq!(context_dependency["digest"]["gitCommit"], commit);
    assert_eq!(
        context_dependency["digest"]["sha256"]
            .as_str()
            .unwrap()
            .len(),
        64
    );
    let metadata = &predicate["runDetails"]["metadata"];
    assert_eq!(metadata["buildkit_metadata"]["vcs"]["revision"], commit);
    for time in ["startedOn", "finishedOn"] {
        let text = metadata[time].as_str().unwrap();
        assert!(
            text.len() == 20 && text.ends_with('Z') && text > "2024",
            "{time}: {text} is a real time, not the epoch"
        );
    }
    assert_eq!(
        predicate["runDetails"]["builder"]["version"]["hoist"],
        env!("CARGO_PKG_VERSION")
    );

    // With --target the predicate names it.
    let mut args = vec!["-t", "build:1", "--provenance", "--target", "build"];
    args.extend(common);
    build(root.path(), context.path(), &args, &[]);
    let run = ok(root.path(), &["inspect", "--provenance", "build:1"], &[]);
    let statements: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        statements[0]["predicate"]["buildDefinition"]["externalParameters"]["request"]["args"]
            ["target"],
        "build"
    );

    // An image without provenance says so.
    let run = hoist(root.path(), &["inspect", "--provenance", "plain:1"], &[]);
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("has no provenance attestation"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_image_with_provenance_pushes_as_an_index() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let base = Base::new();
    let root = base.store();
    let context = tempfile::tempdir().unwrap();
    fs::write(
        context.path().join("Dockerfile"),
        "FROM busybox\nRUN echo hi > /hi\n",
    )
    .unwrap();
    let name = format!("{}/repro/app:1", registry.addr);
    let config = tempfile::tempdir().unwrap();
    let auth = config.path().join("auth.json");
    let envs = [
        ("XDG_CONFIG_HOME", config.path().to_str().unwrap()),
        ("REGISTRY_AUTH_FILE", auth.to_str().unwrap()),
    ];
    build(
        root.path(),
        context.path(),
        &["-t", &name, "--provenance", "--source-date-epoch", "1"],
        &envs,
    );
    let app = inspect(root.path(), &name);
    ok(root.path(), &["push", &name], &envs);

    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{name}"))
        .output()
        .unwrap();
    assert!(raw.status.success(), "{raw:?}");
    let index: Value = serde_json::from_slice(&raw.stdout).unwrap();
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(index["manifests"][0]["digest"], app["ManifestDigest"]);
    assert_eq!(
        index["manifests"][1]["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    // The index the registry serves is the one in the store.
    let stored = fs::read(blob_path(
        root.path(),
        app["Target"]["Digest"].as_str().unwrap(),
    ))
    .unwrap();
    assert_eq!(raw.stdout, stored);
    // Pulling it back names the image (the attestation is never picked as
    // the platform's image): the digest to compare when verifying.
    let other = base.store();
    ok(other.path(), &["pull", &name], &envs);
    assert_eq!(
        inspect(other.path(), &name)["ManifestDigest"],
        app["ManifestDigest"]
    );

    // The attestation and its statement came along.
    let layout = tempfile::tempdir().unwrap();
    let copied = Command::new("skopeo")
        .args(["copy", "--all", "--src-tls-verify=false"])
        .arg(format!("docker://{name}"))
        .arg(format!("oci:{}:app", layout.path().display()))
        .output()
        .unwrap();
    assert!(copied.status.success(), "{copied:?}");
    let blob = |digest: &str| {
        fs::read(
            layout
                .path()
                .join("blobs/sha256")
                .join(digest.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let attestation: Value =
        serde_json::from_slice(&blob(index["manifests"][1]["digest"].as_str().unwrap())).unwrap();
    let statement: Value =
        serde_json::from_slice(&blob(attestation["layers"][0]["digest"].as_str().unwrap()))
            .unwrap();
    assert_eq!(statement["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(
        statement["subject"][0]["digest"]["sha256"],
        app["ManifestDigest"]
            .as_str()
            .unwrap()
            .trim_start_matches("sha256:")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_rootless_build_gives_the_same_digest_as_root() {
    hoist_testutil::require_root!();
    if !hoist_testutil::rootless::available() {
        return;
    }
    let (uid, gid) = hoist_testutil::rootless::user();
    let base = Base::new();
    let epoch = EPOCH.to_string();

    let root_store = base.store();
    let root_context = tempfile::tempdir().unwrap();
    write_context(root_context.path());
    build(
        root_store.path(),
        root_context.path(),
        &["-t", "app:1", "--source-date-epoch", &epoch],
        &[],
    );
    let as_root = inspect(root_store.path(), "app:1");

    // The user's own store and context, in a directory it can reach; hoist
    // runs in a user namespace mapping the user to root and its subordinate
    // ids to the rest (what `buildah unshare` and rootlesskit do).
    let work = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let store = work.path().join("store");
    fs::create_dir(&store).unwrap();
    std::os::unix::fs::chown(&store, Some(uid), Some(gid)).unwrap();
    // The same tar path as root's import: `hoist import` records it.
    fs::set_permissions(base.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let tar = base.dir.path().join("busybox.tar");
    let context = work.path().join("context");
    write_context(&context);
    // Inside the namespace the user is uid 0: keep it off root's real
    // `/tmp/hoist-runner-0`.
    let tmp = work.path().join("tmp");
    fs::create_dir(&tmp).unwrap();
    std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).unwrap();
    let rootless = |args: &[&str], envs: &[(&str, &str)]| -> Run {
        let mut command = hoist_testutil::rootless::command(
            Path::new(env!("CARGO_BIN_EXE_hoist")),
            work.path(),
            &tmp,
        );
        command
            .arg("--root")
            .arg(&store)
            .args(args)
            .env_remove("SOURCE_DATE_EPOCH")
            .envs(envs.iter().copied());
        hoist_testutil::cli::run(&mut command, None)
    };
    rootless(
        &["import", tar.to_str().unwrap(), "busybox:latest"],
        &[("SOURCE_DATE_EPOCH", "1000000000")],
    )
    .assert_ok();
    rootless(
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "app:1",
            "--source-date-epoch",
            &epoch,
            context.to_str().unwrap(),
        ],
        &[],
    )
    .assert_ok();
    let run = rootless(&["inspect", "app:1"], &[]);
    run.assert_ok();
    let as_user: Value = serde_json::from_str(&run.stdout).unwrap();
    let as_user = &as_user[0];
    if std::env::var_os("HOIST_KEEP_ROOTLESS").is_some() {
        eprintln!(
            "kept: root store {:?}, user store {:?}",
            root_store.keep(),
            work.keep()
        );
    }
    assert_eq!(as_user["ManifestDigest"], as_root["ManifestDigest"]);
    assert_eq!(layer_digests(as_user), layer_digests(&as_root));
}

/// The own directory (overlay upper dir) of the snapshot of `image`'s whole
/// layer chain, as the builder names it (`chain-<OCI chain id>`).
fn chain_dir(root: &Path, image: &Value) -> PathBuf {
    let mut chain: Option<String> = None;
    for diff_id in image["Config"]["rootfs"]["diff_ids"].as_array().unwrap() {
        let diff_id = diff_id.as_str().unwrap();
        chain = Some(match chain {
            None => diff_id.to_owned(),
            Some(parent) => format!(
                "sha256:{}",
                hex(&sha2::Sha256::digest(
                    format!("{parent} {diff_id}").as_bytes()
                ))
            ),
        });
    }
    let name = format!("chain-{}", chain.unwrap().trim_start_matches("sha256:"));
    let records: Value =
        serde_json::from_slice(&fs::read(root.join("snapshots/records.json")).unwrap()).unwrap();
    let id = records["snapshots"][&name]["id"]
        .as_u64()
        .unwrap_or_else(|| panic!("no snapshot {name}"));
    root.join("snapshots/snapshots")
        .join(id.to_string())
        .join("fs")
}

/// Every entry under `dir`: (type, mode, owner, mtime to the nanosecond,
/// content or link target), by relative path.
fn tree(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = std::collections::BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.unwrap();
        let meta = entry.path().symlink_metadata().unwrap();
        let rel = entry
            .path()
            .strip_prefix(dir)
            .unwrap()
            .display()
            .to_string();
        let content = if meta.is_file() {
            hex(&sha2::Sha256::digest(fs::read(entry.path()).unwrap()))
        } else if meta.file_type().is_symlink() {
            fs::read_link(entry.path()).unwrap().display().to_string()
        } else {
            String::new()
        };
        out.insert(
            rel,
            format!(
                "{:o} {}:{} {}.{:09} {content}",
                meta.mode(),
                meta.uid(),
                meta.gid(),
                meta.mtime(),
                meta.mtime_nsec()
            ),
        );
    }
    out
}

fn nlink(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().nlink()
}

/// 4 directories of 30 files, Dockerfile `dockerfile`.
fn write_tree_context(dir: &Path, dockerfile: &str) {
    for d in 0..4 {
        fs::create_dir_all(dir.join(format!("d{d}"))).unwrap();
        for f in 0..30 {
            fs::write(
                dir.join(format!("d{d}/f{f}")),
                format!("file {d} {f}\n").repeat(40),
            )
            .unwrap();
        }
    }
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
}

/// `-t app` at the tests' epoch.
const REUSE_ARGS: [&str; 4] = ["-t", "app", "--source-date-epoch", "1700000000"];

/// Two stores on one base image, and a context of 4 directories of 30
/// files copied by `COPY . /src`, built once into `warm`.
struct ReuseScene {
    _base: Base,
    warm: TempDir,
    cold: TempDir,
    context: TempDir,
}

fn reuse_scene() -> ReuseScene {
    assert_eq!(REUSE_ARGS[3], EPOCH.to_string());
    let base = Base::new();
    let (warm, cold) = (base.store(), base.store());
    let context = tempfile::tempdir().unwrap();
    write_tree_context(context.path(), "FROM busybox\nCOPY . /src\n");
    build(warm.path(), context.path(), &REUSE_ARGS, &[]);
    ReuseScene {
        _base: base,
        warm,
        cold,
        context,
    }
}

/// Issue 22's incremental COPY: a rebuild after some context files changed
/// links the unchanged files from the previous snapshot of the same COPY,
/// and the image is still exactly a cold build's.
#[test]
fn a_copy_reusing_its_previous_snapshot_gives_a_cold_builds_layer() {
    hoist_testutil::require_root!();
    use std::os::unix::fs::PermissionsExt;
    let scene = reuse_scene();
    let (warm, cold, ctx, args) = (&scene.warm, &scene.cold, scene.context.path(), REUSE_ARGS);
    let first = inspect(warm.path(), "app");
    let first_dir = chain_dir(warm.path(), &first);
    let first_tree = tree(&first_dir);

    // Changed content, an added file, a deleted one, a mode and an mtime
    // changed with the content kept.
    let mut append = fs::OpenOptions::new()
        .append(true)
        .open(ctx.join("d0/f0"))
        .unwrap();
    std::io::Write::write_all(&mut append, b"changed\n").unwrap();
    fs::write(ctx.join("d1/new"), "new\n").unwrap();
    fs::remove_file(ctx.join("d2/f2")).unwrap();
    fs::set_permissions(ctx.join("d3/f0"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::File::open(ctx.join("d3/f1"))
        .unwrap()
        .set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000))
        .unwrap();
    build(warm.path(), ctx, &args, &[]);
    let second = inspect(warm.path(), "app");
    let second_dir = chain_dir(warm.path(), &second);
    assert_ne!(first_dir, second_dir);

    // The unchanged files are the old snapshot's (one inode in both), the
    // others were written anew.
    assert_eq!(
        nlink(&second_dir.join("src/d1/f1")),
        2,
        "an unchanged file is linked"
    );
    assert_eq!(nlink(&first_dir.join("src/d2/f3")), 2);
    for fresh in ["d0/f0", "d1/new", "d3/f0", "d3/f1"] {
        assert_eq!(
            nlink(&second_dir.join("src").join(fresh)),
            1,
            "{fresh} is written anew"
        );
    }
    assert!(
        !second_dir.join("src/d2/f2").exists(),
        "a deleted file is not linked"
    );
    // The old snapshot is as it was.
    assert_eq!(tree(&first_dir), first_tree);

    // A cold build of the same context in a fresh store: the same image,
    // and the same upper dir to the nanosecond (the mtime of /src itself,
    // the time of the build, aside).
    build(cold.path(), ctx, &args, &[]);
    let fresh = inspect(cold.path(), "app");
    assert_eq!(layer_digests(&second), layer_digests(&fresh));
    assert_eq!(second["ManifestDigest"], fresh["ManifestDigest"]);
    let strip_dest_mtime = |mut t: std::collections::BTreeMap<String, String>| {
        let src = t.get_mut("src").unwrap();
        let fields: Vec<&str> = src.split(' ').collect();
        *src = format!("{} {}", fields[0], fields[1]);
        t
    };
    assert_eq!(
        strip_dest_mtime(tree(&second_dir)),
        strip_dest_mtime(tree(&chain_dir(cold.path(), &fresh)))
    );
    ok(warm.path(), &["fsck"], &[]);

    // `--no-cache` reuses nothing of an earlier snapshot either.
    fs::write(ctx.join("d0/f0"), "again\n").unwrap();
    let mut no_cache = args.to_vec();
    no_cache.push("--no-cache");
    build(warm.path(), ctx, &no_cache, &[]);
    let third_dir = chain_dir(warm.path(), &inspect(warm.path(), "app"));
    assert_ne!(third_dir, second_dir);
    assert_eq!(nlink(&third_dir.join("src/d1/f1")), 1, "copied, not linked");
}

/// Rebuilds the scene after a change to `d0/f0` once its previous snapshot
/// (`first_dir`, the warm store's) has been tampered with under `src/d2`:
/// the reuse still runs, `src/d2/f3` is copied (`why`), not linked, and the
/// layer is a cold build's.
fn rebuild_copies_d2_f3(scene: &ReuseScene, why: &str) {
    let (warm, cold, ctx, args) = (&scene.warm, &scene.cold, scene.context.path(), REUSE_ARGS);
    fs::write(ctx.join("d0/f0"), "changed\n").unwrap();
    build(warm.path(), ctx, &args, &[]);
    let second = inspect(warm.path(), "app");
    let second_dir = chain_dir(warm.path(), &second);
    assert_eq!(nlink(&second_dir.join("src/d1/f1")), 2, "the reuse ran");
    assert_eq!(nlink(&second_dir.join("src/d2/f3")), 1, "{why}");
    build(cold.path(), ctx, &args, &[]);
    assert_eq!(
        layer_digests(&second),
        layer_digests(&inspect(cold.path(), "app"))
    );
}

/// The reuse reads the previous snapshot by paths made of the context's
/// names: a symlink found on such a path there (the snapshot tampered
/// with) is never followed; the files under it are copied, not linked.
#[test]
fn a_symlink_in_the_previous_snapshot_is_not_followed_by_the_reuse() {
    hoist_testutil::require_root!();
    let scene = reuse_scene();
    let first_dir = chain_dir(scene.warm.path(), &inspect(scene.warm.path(), "app"));
    // src/d2 becomes a symlink to the same files moved beside it: were it
    // followed, each would pass every other check and be linked.
    fs::rename(first_dir.join("src/d2"), first_dir.join("src/moved")).unwrap();
    std::os::unix::fs::symlink("moved", first_dir.join("src/d2")).unwrap();
    rebuild_copies_d2_f3(&scene, "a file under the symlink is copied");
    assert_eq!(nlink(&first_dir.join("src/moved/f3")), 1);
}

/// A file of the previous snapshot carrying an extended attribute (which a
/// COPY never gives it: it came from elsewhere) is not what the COPY writes:
/// it is copied, not linked, and the layer is a cold build's.
#[test]
fn a_file_with_xattrs_in_the_previous_snapshot_is_copied_not_linked() {
    hoist_testutil::require_root!();
    let scene = reuse_scene();
    let first_dir = chain_dir(scene.warm.path(), &inspect(scene.warm.path(), "app"));
    let status = std::process::Command::new("setfattr")
        .args(["-n", "user.planted", "-v", "1"])
        .arg(first_dir.join("src/d2/f3"))
        .status()
        .unwrap();
    assert!(status.success(), "setfattr");
    rebuild_copies_d2_f3(&scene, "the file with an xattr is copied");
}

/// A reusing COPY's gzip layer takes the deflate bytes of the blocks its
/// previous layer shares with it, and is still byte for byte a cold build's
/// layer: after an edit that keeps the tar stream's offsets (most blocks
/// taken) and after one that moves them (none needs to be).
#[test]
fn a_reusing_copy_takes_unchanged_gzip_blocks_and_keeps_a_cold_builds_bytes() {
    hoist_testutil::require_root!();
    let base = Base::new();
    let warm = base.store();
    let context = tempfile::tempdir().unwrap();
    let ctx = context.path();
    // Six 700 kB files of varied text, then a small one: about 4 MiB of
    // tar, five 1 MiB gzip blocks, the small file in the last.
    for f in 0..6u32 {
        let text: String = (0..70_000u32)
            .map(|i| format!("{:09}\n", i.wrapping_mul(2_654_435_761).wrapping_add(f)))
            .collect();
        fs::write(ctx.join(format!("f{f}")), text).unwrap();
    }
    fs::write(ctx.join("z"), "version 1\n").unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nCOPY . /src\n").unwrap();
    let epoch = EPOCH.to_string();
    let args = ["-t", "app", "--source-date-epoch", epoch.as_str()];
    let log = [("HOIST_LOG", "hoist_builder::engine::ops=debug")];
    build(warm.path(), ctx, &args, &log);
    let taken = |run: &Run| -> (usize, usize) {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains("gzip blocks of the previous layer taken"))
            .unwrap_or_else(|| panic!("no block line in:\n{}", run.stderr));
        let field = |name: &str| -> usize {
            let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
            line[at..]
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        (field("taken"), field("blocks"))
    };

    // The same size: every block before the small file's is taken.
    fs::write(ctx.join("z"), "version 2\n").unwrap();
    let run = build(warm.path(), ctx, &args, &log);
    let (got, of) = taken(&run);
    assert!(
        of >= 5 && got >= of - 1,
        "{got} of {of} blocks taken\n{}",
        run.stderr
    );
    let cold = base.store();
    build(cold.path(), ctx, &args, &[]);
    assert_eq!(
        layer_digests(&inspect(warm.path(), "app")),
        layer_digests(&inspect(cold.path(), "app"))
    );

    // A first file one line longer moves every later block: whatever is
    // taken, the layer is a cold build's.
    let mut grown = fs::read_to_string(ctx.join("f0")).unwrap();
    grown.push_str(&"x".repeat(700));
    fs::write(ctx.join("f0"), grown).unwrap();
    build(warm.path(), ctx, &args, &log);
    let cold = base.store();
    build(cold.path(), ctx, &args, &[]);
    let (warm_image, cold_image) = (inspect(warm.path(), "app"), inspect(cold.path(), "app"));
    assert_eq!(layer_digests(&warm_image), layer_digests(&cold_image));
    assert_eq!(warm_image["ManifestDigest"], cold_image["ManifestDigest"]);
    ok(warm.path(), &["fsck"], &[]);
}

/// A RUN after a reusing COPY that changes a linked file changes its own
/// copy: the earlier snapshot and image keep theirs, and removing the old
/// image and pruning leaves the new one whole.
#[test]
fn a_run_changing_a_reused_file_leaves_the_older_snapshot_alone() {
    hoist_testutil::require_root!();
    let base = Base::new();
    let root = base.store();
    let context = tempfile::tempdir().unwrap();
    let ctx = context.path();
    write_tree_context(ctx, "FROM busybox\nCOPY . /src\n");
    let original = fs::read_to_string(ctx.join("d1/f1")).unwrap();
    build(root.path(), ctx, &["-t", "app:1"], &[]);
    let first = inspect(root.path(), "app:1");
    let first_dir = chain_dir(root.path(), &first);

    // Another Dockerfile (a changed context file): the COPY runs again.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM busybox\nCOPY . /src\nRUN echo appended >> /src/d1/f1 && chmod 600 /src/d2/f2\n",
    )
    .unwrap();
    build(root.path(), ctx, &["-t", "app:2"], &[]);
    assert_eq!(nlink(&first_dir.join("src/d1/f1")), 2, "the COPY reused it");
    assert_eq!(
        fs::read_to_string(first_dir.join("src/d1/f1")).unwrap(),
        original
    );
    let cat = |image: &str, path: &str| {
        let run = ok(root.path(), &["run", "--rm", image, "cat", path], &[]);
        run.stdout
    };
    assert_eq!(cat("app:1", "/src/d1/f1"), original);
    assert_eq!(cat("app:2", "/src/d1/f1"), format!("{original}appended\n"));
    let mode = |image: &str| {
        ok(
            root.path(),
            &["run", "--rm", image, "stat", "-c", "%a", "/src/d2/f2"],
            &[],
        )
        .stdout
        .trim()
        .to_owned()
    };
    assert_eq!(mode("app:1"), "644");
    assert_eq!(mode("app:2"), "600");
    ok(root.path(), &["fsck"], &[]);

    ok(root.path(), &["rmi", "app:1"], &[]);
    ok(root.path(), &["prune", "-a", "-f"], &[]);
    ok(root.path(), &["fsck"], &[]);
    let records = fs::read_dir(root.path().join("copy-reuse/v1"))
        .unwrap()
        .count();
    assert_eq!(records, 0, "the reuse records of pruned snapshots are gone");
    assert_eq!(cat("app:2", "/src/d1/f1"), format!("{original}appended\n"));
    assert_eq!(
        cat("app:2", "/src/d3/f3"),
        fs::read_to_string(ctx.join("d3/f3")).unwrap()
    );
}
