//! Real builds: the server with [`ImageBuilder`] (hoist-builder over the
//! checkout, pushes through hoist-registry) against the CNCF registry on
//! 127.0.0.1; images checked from the outside with skopeo.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use hoist_autobuild::{BuildRecord, BuildState, ImageBuilder, Provider};
use hoist_registry::{AuthFile, Client, ClientOptions};
use hoist_testutil::sha256_digest as sha256;
use hoist_testutil::Registry;
use serde_json::Value;

use crate::common::*;
use crate::webhooks::push_hook;

fn write_blob(layout: &Path, bytes: &[u8]) -> Value {
    let digest = sha256(bytes);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(layout.join("blobs/sha256").join(hex), bytes).unwrap();
    serde_json::json!({ "digest": digest, "size": bytes.len() })
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A tar of `files` (path, content), made with the system tar.
fn tar_of(files: &[(&str, &str)]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
    let out = Command::new("tar")
        .args(["--sort=name", "--numeric-owner", "--owner=0", "--group=0"])
        .args(["--mtime=@0", "-cf", "-", "-C"])
        .arg(dir.path())
        .arg(".")
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Push a busybox image (plus one layer per `extra` file) to `target`
/// (`host:port/name:tag`) with skopeo from an OCI layout made here; returns
/// the manifest digest the registry serves.
pub fn push_base(target: &str, extra: &[(&str, &str)], authfile: Option<&Path>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let layout = tmp.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let rootfs = tmp.path().join("rootfs.tar");
    hoist_testutil::busybox_rootfs_tar(&rootfs);
    let mut tars = vec![std::fs::read(&rootfs).unwrap()];
    if !extra.is_empty() {
        tars.push(tar_of(extra));
    }
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for t in &tars {
        diff_ids.push(sha256(t));
        let mut d = write_blob(&layout, &gzip(t));
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip".into();
        layers.push(d);
    }
    let config = serde_json::json!({
        "architecture": arch(), "os": "linux",
        "config": { "Cmd": ["sh"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    });
    let mut config_d = write_blob(&layout, &serde_json::to_vec(&config).unwrap());
    config_d["mediaType"] = "application/vnd.oci.image.config.v1+json".into();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_d, "layers": layers,
    });
    let mut manifest_d = write_blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    manifest_d["mediaType"] = "application/vnd.oci.image.manifest.v1+json".into();
    manifest_d["annotations"] =
        serde_json::json!({ "org.opencontainers.image.ref.name": "latest" });
    std::fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({ "schemaVersion": 2, "manifests": [manifest_d] }))
            .unwrap(),
    )
    .unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let mut c = Command::new("skopeo");
    c.args(["copy", "-q", "--dest-tls-verify=false"]);
    if let Some(a) = authfile {
        c.arg("--dest-authfile").arg(a);
    }
    hoist_testutil::run_ok(
        c.arg(format!("oci:{}:latest", layout.display()))
            .arg(format!("docker://{target}")),
    );
    inspect(target, authfile).expect("the base image was pushed")["Digest"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `skopeo inspect` of `image`; None when the registry does not have it.
pub fn inspect(image: &str, authfile: Option<&Path>) -> Option<Value> {
    let mut c = Command::new("skopeo");
    c.args(["inspect", "--tls-verify=false"]);
    if let Some(a) = authfile {
        c.arg("--authfile").arg(a);
    }
    let out = c.arg(format!("docker://{image}")).output().unwrap();
    out.status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).unwrap())
}

/// Copy `image` out of the registry and return the files of its top layer.
fn top_layer_files(
    image: &str,
    authfile: Option<&Path>,
) -> std::collections::BTreeMap<String, String> {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = Command::new("skopeo");
    c.args(["copy", "-q", "--src-tls-verify=false"]);
    if let Some(a) = authfile {
        c.arg("--src-authfile").arg(a);
    }
    hoist_testutil::run_ok(
        c.arg(format!("docker://{image}"))
            .arg(format!("oci:{}:x", tmp.path().display())),
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
    let blob = |d: &str| {
        std::fs::read(
            tmp.path()
                .join("blobs/sha256")
                .join(d.trim_start_matches("sha256:")),
        )
        .unwrap()
    };
    let manifest: Value =
        serde_json::from_slice(&blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let top = blob(layers.last().unwrap()["digest"].as_str().unwrap());
    let reader: Box<dyn std::io::Read> = if top.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::GzDecoder::new(&top[..]))
    } else {
        Box::new(&top[..])
    };
    let mut files = std::collections::BTreeMap::new();
    for e in tar::Archive::new(reader).entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            files.insert(e.path().unwrap().to_string_lossy().to_string(), s);
        }
    }
    files
}

fn client(auth_file: Option<&Path>) -> Client {
    let mut options = ClientOptions::default();
    if let Some(path) = auth_file {
        options.credentials = Arc::new(AuthFile::at(path));
    }
    Client::new(options).unwrap()
}

/// A server whose builds are real, over a fresh store.
pub fn real_server(config: &str, auth_file: Option<&Path>) -> TestServer {
    let store = tempfile::tempdir().unwrap();
    let cache = Arc::new(hoist_builder::Store::open(store.path()).unwrap());
    let builder = ImageBuilder::new(cache, client(auth_file));
    TestServer::start_with(
        config,
        store,
        Arc::new(Recorder::default()),
        Arc::new(builder.executor()),
        Some(client(auth_file)),
    )
}

/// Commit `files` (path, content) in the work clone; the new sha.
pub fn commit_files(repo: &Repo, files: &[(&str, &str)], message: &str) -> String {
    for (path, content) in files {
        std::fs::write(repo.work.join(path), content).unwrap();
    }
    repo.commit_all(message)
}

fn real_config(url: &str, registry: &str, extra_repo_keys: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nconcurrency = 1\n[[repo]]\nname = \"demo\"\nurl = {url:?}\n\
         secret = \"{SECRET}\"\nbuild_args = {{ VERSION = \"{{sourceref}}-{{short_sha}}\" }}\n\
         {extra_repo_keys}\n\
         [[repo.rule]]\nsource = \"branch\"\nmatch = \".*\"\ntag = \"{registry}/demo:{{sourceref}}\"\npush = true\n\
         [[repo.rule]]\nsource = \"tag\"\nmatch = '^v([0-9]+)\\.([0-9]+)$'\n\
         tag = '{registry}/demo:{{\\1}}.{{\\2}}-{{short_sha}}'\npush = true\n"
    )
}

// No RUN: the test binary cannot be the runner's sandbox init (the CLI's
// tests build with RUN through the hoist binary).
const DOCKERFILE: &str = "FROM {BASE}\nARG VERSION\nLABEL version=$VERSION\nCOPY hello /hello\n";

fn dockerfile(base: &str) -> String {
    DOCKERFILE.replace("{BASE}", base)
}

fn assert_pushed(b: &BuildRecord, image: &str, creds: Option<&Path>) {
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    let seen = inspect(image, creds).unwrap_or_else(|| panic!("{image} is not in the registry"));
    assert_eq!(seen["Digest"].as_str(), b.digest.as_deref(), "{seen}");
}

fn provider_push_builds_and_pushes(provider: Provider) {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let (registry, auth_dir) = if provider == Provider::GitLab {
        // Credentials come from a docker config file.
        let registry = Registry::start_basic_auth("builder", "pa55");
        let dir = tempfile::tempdir().unwrap();
        let auth = Command::new("base64")
            .arg("-w0")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(b"builder:pa55")?;
                c.wait_with_output()
            })
            .unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::json!({"auths": {registry.addr.clone(): {
                "auth": String::from_utf8(auth.stdout).unwrap()}}})
            .to_string(),
        )
        .unwrap();
        (registry, Some(dir))
    } else {
        (Registry::start(), None)
    };
    let authfile = auth_dir.as_ref().map(|d| d.path().join("config.json"));
    let creds = authfile.as_deref();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    push_base(&base, &[], creds);
    let repo = Repo::new();
    let branch = format!("from-{}", provider.name());
    git(&repo.work, &["checkout", "-q", "-b", &branch]);
    let sha = commit_files(
        &repo,
        &[
            ("Dockerfile", &dockerfile(&base)),
            ("hello", &format!("hello from {}\n", provider.name())),
        ],
        "a commit <script>alert(1)</script>",
    );
    repo.push(&branch);
    let server = real_server(&real_config(repo.url(), &reg, ""), creds);

    let (status, body) = push_hook(
        &server,
        provider,
        &format!("refs/heads/{branch}"),
        &sha,
        "a commit <script>alert(1)</script>",
    );
    assert_eq!(status, 202, "{body}");
    let b = server.wait_final(queued_ids(&body)[0]);
    let image = format!("{reg}/demo:{branch}");
    let log = server.page(&format!("/builds/{}", b.id));
    assert_pushed(&b, &image, creds);
    assert_eq!(b.tags, vec![image.clone()]);
    assert_eq!(b.pushed, vec![image.clone()]);
    assert_eq!(b.trigger, provider.name());
    // What the image holds: the pushed commit's file, and the build arg
    // substituted from the ref and the commit (in a label).
    let files = top_layer_files(&image, creds);
    assert_eq!(
        files.get("hello").map(String::as_str),
        Some(format!("hello from {}\n", provider.name()).as_str()),
        "{files:?}"
    );
    let seen = inspect(&image, creds).unwrap();
    assert_eq!(
        seen["Labels"]["version"].as_str(),
        Some(format!("{branch}-{}", &sha[..7]).as_str()),
        "{seen}"
    );
    // The log has the build's steps and the push; the page escapes the
    // payload's message.
    assert!(log.contains("COPY hello /hello"), "{log}");
    assert!(log.contains("naming to"), "{log}");
    assert!(log.contains(&format!("pushing {image}")), "{log}");
    let page = server.page("/");
    assert!(!page.contains("<script>alert(1)"), "{page}");
    assert!(page.contains("&lt;script&gt;alert(1)"), "{page}");

    // A wrong signature: 401, nothing queued, nothing pushed.
    let body = serde_json::to_vec(&crate::webhooks::payload(
        provider,
        "refs/heads/evil",
        &sha,
        "x",
    ))
    .unwrap();
    let (status, _) = crate::webhooks::send_hook(
        &server,
        provider,
        "demo",
        match provider {
            Provider::Bitbucket => "repo:push",
            Provider::GitLab => "Push Hook",
            _ => "push",
        },
        &body,
        "wrong secret",
    );
    assert_eq!(status, 401);
    assert_eq!(server.builds().len(), 1);
    assert!(inspect(&format!("{reg}/demo:evil"), creds).is_none());
}

#[test]
fn github_push_builds_and_pushes() {
    provider_push_builds_and_pushes(Provider::GitHub);
}

#[test]
fn bitbucket_push_builds_and_pushes() {
    provider_push_builds_and_pushes(Provider::Bitbucket);
}

#[test]
fn gitlab_push_builds_and_pushes_with_docker_config_credentials() {
    provider_push_builds_and_pushes(Provider::GitLab);
}

#[test]
fn gitea_push_builds_and_pushes() {
    provider_push_builds_and_pushes(Provider::Gitea);
}

/// `POST /trigger/demo` with `body` (none for `Value::Null`).
fn trigger(server: &TestServer, body: Value) -> (u16, Value) {
    let mut request = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET);
    if !body.is_null() {
        request = request.json(&body);
    }
    let r = request.send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn layer_count(image: &str) -> usize {
    inspect(image, None).unwrap()["Layers"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn trigger_url_builds_and_a_new_base_image_rebuilds_a_watching_repo() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = Registry::start();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    let first_base = push_base(&base, &[], None);
    let repo = Repo::new();
    let sha = commit_files(
        &repo,
        &[("Dockerfile", &dockerfile(&base)), ("hello", "watched\n")],
        "watch me",
    );
    repo.push("main");
    let server = real_server(
        &real_config(
            repo.url(),
            &reg,
            "watch_base = true\npoll_interval = \"1s\"",
        ),
        None,
    );

    // The trigger URL with no body builds the remote's HEAD branch.
    let (status, body) = trigger(&server, Value::Null);
    assert_eq!(status, 202, "{body}");
    let b = server.wait_final(queued_ids(&body)[0]);
    let image = format!("{reg}/demo:main");
    assert_pushed(&b, &image, None);
    assert_eq!(
        (b.trigger.as_str(), b.sha.as_str()),
        ("trigger", sha.as_str())
    );
    assert_eq!(layer_count(&image), 2, "busybox + COPY");
    let log = server.page(&format!("/builds/{}", b.id));
    assert!(
        log.contains(&format!("base image {base}: ")) && log.contains(&first_base),
        "{log}"
    );

    // A new base image in the registry: the watcher rebuilds and pushes.
    let second_base = push_base(&base, &[("etc/base-version", "2\n")], None);
    assert_ne!(first_base, second_base);
    let rebuilt = wait_until("a build triggered by the base image", || {
        server
            .builds()
            .into_iter()
            .find(|r| r.trigger.starts_with("base:"))
    });
    let rebuilt = server.wait_final(rebuilt.id);
    assert_eq!(rebuilt.trigger, format!("base:{base}"));
    assert_eq!(
        rebuilt.message,
        format!("base image {base} changed to {second_base}")
    );
    assert_eq!(
        (rebuilt.git_ref.as_str(), rebuilt.sha.as_str()),
        ("refs/heads/main", sha.as_str())
    );
    assert_pushed(&rebuilt, &image, None);
    assert_ne!(rebuilt.digest, b.digest);
    assert_eq!(layer_count(&image), 3, "new base layer + COPY");
    assert_eq!(
        top_layer_files(&image, None)
            .get("hello")
            .map(String::as_str),
        Some("watched\n")
    );
    // The base is checked every second; nothing changed since, so no
    // further base build is queued.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let base_builds = server
        .builds()
        .into_iter()
        .filter(|r| r.trigger.starts_with("base:"))
        .count();
    assert_eq!(base_builds, 1, "{:?}", server.builds());
}

#[test]
fn on_base_change_rebase_puts_the_image_on_the_new_base_without_building() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = Registry::start();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    push_base(&base, &[], None);
    let repo = Repo::new();
    commit_files(
        &repo,
        &[("Dockerfile", &dockerfile(&base)), ("hello", "kept\n")],
        "rebase me",
    );
    repo.push("main");
    let server = real_server(
        &real_config(
            repo.url(),
            &reg,
            "watch_base = true\npoll_interval = \"1s\"\non_base_change = \"rebase\"",
        ),
        None,
    );
    let (status, body) = trigger(&server, Value::Null);
    assert_eq!(status, 202, "{body}");
    let first = server.wait_final(queued_ids(&body)[0]);
    let image = format!("{reg}/demo:main");
    assert_pushed(&first, &image, None);
    let layers_of = |image: &str| -> Vec<String> {
        inspect(image, None).unwrap()["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect()
    };
    let before = layers_of(&image);
    assert_eq!(before.len(), 2, "busybox + COPY");

    // A new base: the watcher queues a rebase, which swaps the base layers
    // under the image's own, byte for byte, and runs no step.
    let second_base = push_base(&base, &[("etc/base-version", "2\n")], None);
    let queued = wait_until("a rebase queued by the base image", || {
        server
            .builds()
            .into_iter()
            .find(|r| r.trigger.starts_with("rebase:"))
    });
    let rebased = server.wait_final(queued.id);
    assert_eq!(rebased.trigger, format!("rebase:{base}"));
    assert_pushed(&rebased, &image, None);
    let after = layers_of(&image);
    assert_eq!(
        after.len(),
        3,
        "the new base's two layers + the same COPY layer"
    );
    assert_eq!(after.last(), before.last(), "the image's own layer is kept");
    assert!(!before.contains(&after[1]), "the new base's own layer");
    assert_eq!(
        top_layer_files(&image, None)
            .get("hello")
            .map(String::as_str),
        Some("kept\n")
    );
    let log = server.page(&format!("/builds/{}", rebased.id));
    assert!(log.contains("rebased onto"), "{log}");
    assert!(log.contains("layer(s) of the image kept"), "{log}");
    assert!(
        !log.contains("[stage-0 1/1] COPY"),
        "a rebase runs no step:\n{log}"
    );
    assert!(
        log.contains(&second_base),
        "the pulled base is named: {log}"
    );
}

#[test]
fn tag_push_builds_through_a_regex_rule_and_pushes() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = Registry::start();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    push_base(&base, &[], None);
    let repo = Repo::new();
    let sha = commit_files(
        &repo,
        &[("Dockerfile", &dockerfile(&base)), ("hello", "release\n")],
        "release 2.7",
    );
    git(&repo.work, &["tag", "-a", "v2.7", "-m", "v2.7"]);
    repo.push("v2.7");
    let server = real_server(&real_config(repo.url(), &reg, ""), None);
    // The trigger URL with a tag name (annotated: peeled to its commit).
    let (status, body) = trigger(&server, serde_json::json!({ "ref": "v2.7" }));
    assert_eq!(status, 202, "{body}");
    let b = server.wait_final(queued_ids(&body)[0]);
    let image = format!("{reg}/demo:2.7-{}", &sha[..7]);
    assert_pushed(&b, &image, None);
    assert_eq!(b.git_ref, "refs/tags/v2.7");
    assert_eq!(b.sha, sha);
    let seen = inspect(&image, None).unwrap();
    assert_eq!(seen["Labels"]["version"], "v2.7-".to_string() + &sha[..7]);
}

#[test]
fn a_never_built_watching_repo_takes_its_bases_from_head_and_rebuilds_on_change() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = Registry::start();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    let first_base = push_base(&base, &[], None);
    let repo = Repo::new();
    // Multi-stage with an ARG in FROM: the bases are what the frontend asks.
    let sha = commit_files(
        &repo,
        &[
            (
                "Dockerfile",
                &format!(
                    "ARG BASE={base}\nFROM $BASE AS build\nCOPY hello /hello\n\
                     FROM build\nLABEL stage=final\n"
                ),
            ),
            ("hello", "discovered\n"),
        ],
        "multi-stage",
    );
    repo.push("main");
    let server = real_server(
        &real_config(
            repo.url(),
            &reg,
            "watch_base = true\npoll_interval = \"1s\"",
        ),
        None,
    );
    let store = hoist_builder::Store::open(server.store.path()).unwrap();
    let baseline = wait_until("the baseline from the HEAD Dockerfile", || {
        let bases = hoist_autobuild::queue::bases(store.db(), "demo").unwrap();
        (!bases.is_empty()).then_some(bases)
    });
    assert_eq!(
        baseline.into_iter().collect::<Vec<_>>(),
        vec![(base.clone(), first_base.clone())]
    );
    assert!(server.builds().is_empty(), "the baseline builds nothing");

    let second_base = push_base(&base, &[("etc/base-version", "2\n")], None);
    let b = wait_until("a base build", || server.builds().into_iter().next());
    let b = server.wait_final(b.id);
    assert_eq!(b.trigger, format!("base:{base}"));
    assert_eq!(b.sha, sha);
    assert_pushed(&b, &format!("{reg}/demo:main"), None);
    let bases = hoist_autobuild::queue::bases(store.db(), "demo").unwrap();
    assert_eq!(bases.get(&base), Some(&second_base));
}

#[test]
fn a_broken_dockerfile_fails_with_its_error_and_pushes_nothing() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = Registry::start();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    push_base(&base, &[], None);
    let repo = Repo::new();
    git(&repo.work, &["checkout", "-q", "-b", "broken"]);
    commit_files(
        &repo,
        &[(
            "Dockerfile",
            &format!("FROM {base}\nCOPY missing-file /x\n"),
        )],
        "broken",
    );
    repo.push("broken");
    let server = real_server(&real_config(repo.url(), &reg, ""), None);
    let (status, body) = trigger(&server, serde_json::json!({ "ref": "broken" }));
    assert_eq!(status, 202, "{body}");
    let b = server.wait_final(queued_ids(&body)[0]);
    assert_eq!(b.state, BuildState::Failed, "{b:?}");
    let error = b.error.clone().unwrap();
    assert!(error.contains("missing-file"), "{error}");
    assert!(b.digest.is_none() && b.pushed.is_empty(), "{b:?}");
    assert!(inspect(&format!("{reg}/demo:broken"), None).is_none());
    let log = server.page(&format!("/builds/{}", b.id));
    assert!(log.contains("build failed"), "{log}");
}

#[test]
fn two_refs_queued_together_with_concurrency_2_both_build() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = Registry::start();
    let reg = registry.addr.clone();
    let base = format!("{reg}/base:latest");
    push_base(&base, &[], None);
    let repo = Repo::new();
    let mut shas = Vec::new();
    for branch in ["left", "right"] {
        git(&repo.work, &["checkout", "-q", "-B", branch, "main"]);
        shas.push(commit_files(
            &repo,
            &[
                ("Dockerfile", &dockerfile(&base)),
                ("hello", &format!("{branch}\n")),
            ],
            branch,
        ));
        repo.push(branch);
    }
    let config = real_config(repo.url(), &reg, "").replace("concurrency = 1", "concurrency = 2");
    let server = real_server(&config, None);
    let ids: Vec<i64> = ["left", "right"]
        .iter()
        .map(|r| {
            let (status, body) = trigger(&server, serde_json::json!({ "ref": r }));
            assert_eq!(status, 202, "{body}");
            queued_ids(&body)[0]
        })
        .collect();
    for (id, branch) in ids.iter().zip(["left", "right"]) {
        let b = server.wait_final(*id);
        let image = format!("{reg}/demo:{branch}");
        assert_pushed(&b, &image, None);
        assert_eq!(
            top_layer_files(&image, None)
                .get("hello")
                .map(String::as_str),
            Some(format!("{branch}\n").as_str())
        );
    }
}
