//! `hoist pull`, `push`, `login`, `logout` and `info` against the real CNCF
//! distribution registry on 127.0.0.1.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use hoist_testutil::{require_program, Registry};

use crate::util::{hex, Hoist, Run};

/// Run hoist with an auth file and config dir of this test only (set on
/// the child, never on the test process), optionally feeding stdin.
fn run_env(h: &Hoist, args: &[&str], envs: &[(&str, &Path)], stdin: Option<&str>) -> Run {
    let mut cmd = h.command();
    cmd.env("REGISTRY_AUTH_FILE", h.path("auth.json"))
        .env("XDG_CONFIG_HOME", h.path("config"))
        .env_remove("DOCKER_CONFIG")
        .args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    hoist_testutil::cli::run(&mut cmd, Some(stdin.unwrap_or_default().as_bytes()))
}

fn ok(h: &Hoist, args: &[&str]) -> Run {
    let r = run_env(h, args, &[], None);
    assert_eq!(
        r.code(),
        0,
        "hoist {args:?} failed:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    r
}

/// Entries of a tar archive: path → sha256 of the bytes.
fn tar_listing(path: &Path) -> BTreeMap<String, String> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    let mut out = BTreeMap::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.insert(name, hex(&bytes));
    }
    out
}

/// Per-layer status lines of a push or pull (`<12 hex>: status`).
fn layer_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| {
            l.split_once(": ")
                .is_some_and(|(id, _)| id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn push_then_pull_gives_the_same_image_and_repeats_upload_nothing() {
    require_program!("docker-registry");
    require_program!("skopeo");
    let registry = Registry::start();
    let h = Hoist::new();
    h.import_busybox("busybox");
    let image = h.inspect("busybox");
    let layers = image["Layers"].as_array().unwrap().len();
    let target = format!("{}/demo:1", registry.addr);
    ok(&h, &["tag", "busybox", &target]);

    let push = ok(&h, &["push", &target]);
    let manifest_digest = image["Target"]["Digest"].as_str().unwrap().to_string();
    let size = image["Target"]["Size"].as_u64().unwrap();
    assert_eq!(
        push.stdout,
        format!("1: digest: {manifest_digest} size: {size}\n")
    );
    assert!(
        push.stderr.contains(&format!(
            "The push refers to repository [{}/demo]",
            registry.addr
        )),
        "{}",
        push.stderr
    );
    let lines = layer_lines(&push.stderr);
    assert_eq!(lines.len(), layers, "{}", push.stderr);
    assert!(lines.iter().all(|l| l.ends_with(": Pushed")), "{lines:?}");

    // skopeo reads what was pushed.
    let out = hoist_testutil::run_ok(
        Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{target}")),
    );
    let by_skopeo: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(by_skopeo["Digest"], manifest_digest.as_str());
    let layer_digests: Vec<&serde_json::Value> = image["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["Digest"])
        .collect();
    let skopeo_layers: Vec<&serde_json::Value> =
        by_skopeo["Layers"].as_array().unwrap().iter().collect();
    assert_eq!(skopeo_layers, layer_digests);

    // Pushing again uploads nothing: every layer already exists.
    let uploads_before = registry
        .log_lines_matching("PUT /v2/demo/blobs/uploads")
        .len();
    let again = ok(&h, &["push", &target]);
    let lines = layer_lines(&again.stderr);
    assert_eq!(lines.len(), layers, "{}", again.stderr);
    assert!(
        lines.iter().all(|l| l.ends_with(": Layer already exists")),
        "{lines:?}"
    );
    assert_eq!(
        registry
            .log_lines_matching("PUT /v2/demo/blobs/uploads")
            .len(),
        uploads_before
    );

    // Another repository of the same registry: the layers are mounted.
    let other = format!("{}/other/demo:2", registry.addr);
    ok(&h, &["tag", "busybox", &other]);
    let mounted = ok(&h, &["push", &other]);
    let lines = layer_lines(&mounted.stderr);
    assert_eq!(lines.len(), layers, "{}", mounted.stderr);
    assert!(
        lines.iter().all(|l| l.ends_with(": Mounted from demo")),
        "{lines:?}"
    );
    assert!(!registry.log_lines_matching("mount=").is_empty());

    // Pull into a fresh store: same manifest, same files.
    let fresh = Hoist::new();
    let pull = ok(&fresh, &["pull", &target]);
    assert_eq!(
        pull.stdout,
        format!(
            "Digest: {manifest_digest}\nStatus: Downloaded newer image for {target}\n{target}\n"
        )
    );
    let lines = layer_lines(&pull.stderr);
    assert!(
        lines.iter().any(|l| l.ends_with(": Download complete")),
        "{}",
        pull.stderr
    );
    let pulled = fresh.inspect(&target);
    assert_eq!(pulled["Target"]["Digest"], manifest_digest.as_str());
    assert_eq!(pulled["Id"], image["Id"]);
    let saved = h.path("pushed.tar");
    let saved_fresh = fresh.path("pulled.tar");
    ok(&h, &["save", &target, "-o", saved.to_str().unwrap()]);
    ok(
        &fresh,
        &["save", &target, "-o", saved_fresh.to_str().unwrap()],
    );
    let listing = tar_listing(&saved);
    assert!(listing.len() > 2, "{listing:?}");
    assert_eq!(tar_listing(&saved_fresh), listing);

    // Pulling again: nothing downloaded, image up to date.
    let again = ok(&fresh, &["pull", "-q", &target]);
    assert_eq!(again.stdout, format!("{target}\n"));
    assert!(again.stderr.is_empty(), "{}", again.stderr);
    let again = ok(&fresh, &["pull", &target]);
    assert!(
        again
            .stdout
            .contains(&format!("Status: Image is up to date for {target}")),
        "{}",
        again.stdout
    );
    assert!(
        layer_lines(&again.stderr)
            .iter()
            .all(|l| l.ends_with(": Already exists")),
        "{}",
        again.stderr
    );
}

#[test]
fn push_needs_a_registry_name_in_the_store() {
    let h = Hoist::new();
    h.import_busybox("busybox");
    let r = run_env(&h, &["push", "127.0.0.1:1/nothing:here"], &[], None);
    assert_eq!(r.code(), 1);
    assert!(
        r.stderr
            .contains("an image does not exist locally with the tag: 127.0.0.1:1/nothing:here"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("hint: name the image for the registry first: `hoist tag IMAGE 127.0.0.1:1/nothing:here`"), "{}", r.stderr);
}

#[test]
fn login_writes_config_json_and_push_then_works() {
    require_program!("docker-registry");
    require_program!("htpasswd");
    let registry = Registry::start_basic_auth("alice", "s3cret");
    let h = Hoist::new();
    h.import_busybox("busybox");
    let target = format!("{}/private:1", registry.addr);
    ok(&h, &["tag", "busybox", &target]);

    // Anonymous push: the registry's own words.
    let r = run_env(&h, &["push", &target], &[], None);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(r.stderr.contains("authentication required"), "{}", r.stderr);

    // A wrong password: refused with the registry's message, nothing written.
    let r = run_env(
        &h,
        &["login", "-u", "alice", "--password-stdin", &registry.addr],
        &[],
        Some("wrong\n"),
    );
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(r.stderr.contains("authentication required"), "{}", r.stderr);
    assert!(!h.path("auth.json").exists());

    let r = run_env(
        &h,
        &["login", "-u", "alice", "--password-stdin", &registry.addr],
        &[],
        Some("s3cret\n"),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(r.stdout, "Login Succeeded\n");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path("auth.json")).unwrap()).unwrap();
    assert_eq!(
        config["auths"][registry.addr.as_str()]["auth"],
        "YWxpY2U6czNjcmV0"
    );

    let push = ok(&h, &["push", &target]);
    assert!(
        push.stdout.starts_with("1: digest: sha256:"),
        "{}",
        push.stdout
    );

    // DOCKER_CONFIG is honoured too when REGISTRY_AUTH_FILE is not set.
    let docker_dir = h.path("docker");
    let mut cmd = h.command();
    cmd.env_remove("REGISTRY_AUTH_FILE")
        .env("DOCKER_CONFIG", &docker_dir)
        .env("XDG_CONFIG_HOME", h.path("config"))
        .args(["login", "-u", "alice", "-p", "s3cret", &registry.addr]);
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--password-stdin"));
    assert!(docker_dir.join("config.json").is_file());

    let r = ok(&h, &["logout", &registry.addr]);
    assert_eq!(
        r.stdout,
        format!("Removing login credentials for {}\n", registry.addr)
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path("auth.json")).unwrap()).unwrap();
    assert!(
        config["auths"].get(registry.addr.as_str()).is_none(),
        "{config}"
    );
    let r = ok(&h, &["logout", &registry.addr]);
    assert_eq!(r.stdout, format!("Not logged in to {}\n", registry.addr));
}

#[test]
fn info_shows_store_auth_file_and_registry_config() {
    let h = Hoist::new();
    let dir = h.path("config/hoist");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.toml"),
        "[registry]\nregistry-mirrors = [\"https://mirror.example:5000\"]\ninsecure-registries = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let r = ok(&h, &["info"]);
    assert!(
        r.stdout
            .contains(&format!("Store root: {}", h.root.display())),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains(&format!(
            "Auth file: {} (not created yet)",
            h.path("auth.json").display()
        )),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("https://mirror.example:5000"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("10.0.0.0/8"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains(&format!("# from {}", dir.join("config.toml").display())),
        "{}",
        r.stdout
    );
}

#[test]
fn pulling_a_missing_tag_quotes_the_registry_and_stores_nothing() {
    require_program!("docker-registry");
    let registry = Registry::start();
    let h = Hoist::new();
    let name = format!("{}/demo:missing", registry.addr);
    let r = run_env(&h, &["pull", &name], &[], None);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(r.stdout.is_empty(), "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!("error: failed to pull {name}")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("manifest unknown"), "{}", r.stderr);
    let images = h.ok(&["images", "-q"]);
    assert!(images.trim().is_empty(), "{images}");
}

/// `hoist build` pulls a base image the store lacks, keeps using the stored
/// one afterwards, and with `--pull` fetches the one the tag moved to.
#[test]
fn build_pulls_missing_base_images_and_pull_flag_refreshes_them() {
    hoist_testutil::require_root!();
    require_program!("docker-registry");
    let registry = Registry::start();
    let publisher = Hoist::new();
    publisher.import_busybox("busybox");
    let base = format!("{}/base:1", registry.addr);
    ok(&publisher, &["tag", "busybox", &base]);
    let first = ok(&publisher, &["push", &base]);
    let digest_of = |push: &Run| {
        push.stdout
            .split("digest: ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .to_string()
    };
    let first_digest = digest_of(&first);

    let h = Hoist::new();
    let context = h.path("ctx");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        format!("FROM {base}\nCOPY hello /hello\n"),
    )
    .unwrap();
    std::fs::write(context.join("hello"), "hi\n").unwrap();
    let ctx = context.to_str().unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec!["build", "--progress", "plain", "-t", "app"];
        args.extend_from_slice(extra);
        args.push(ctx);
        ok(&h, &args)
    };

    let built = build(&[]);
    assert!(
        built.stderr.contains("1: Pulling from base"),
        "{}",
        built.stderr
    );
    assert!(
        built
            .stderr
            .contains(&format!("FROM {base}@{first_digest}")),
        "{}",
        built.stderr
    );
    let images = ok(&h, &["images", "--format", "json"]).stdout;
    assert!(
        images.contains(&format!("{}/base", registry.addr)),
        "{images}"
    );

    // The tag moves to another image (same files, another config).
    let tar = publisher.path("busybox.tar");
    publisher.ok(&[
        "import",
        tar.to_str().unwrap(),
        &base,
        "--change",
        "ENV MOVED=1",
    ]);
    let second_digest = digest_of(&ok(&publisher, &["push", &base]));
    assert_ne!(first_digest, second_digest);

    // Present in the store: used as it is, nothing pulled.
    let again = build(&[]);
    assert!(!again.stderr.contains("Pulling from"), "{}", again.stderr);
    assert!(again.stderr.contains(&first_digest), "{}", again.stderr);
    // --pull asks the registry and builds on the moved tag.
    let pulled = build(&["--pull"]);
    assert!(
        pulled.stderr.contains("1: Pulling from base"),
        "{}",
        pulled.stderr
    );
    assert!(
        pulled
            .stderr
            .contains(&format!("FROM {base}@{second_digest}")),
        "{}",
        pulled.stderr
    );
}
