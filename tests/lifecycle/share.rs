//! `--cache-to type=local` / `--cache-from type=local`: a fresh store that
//! imports the cache runs no step and makes the same image.

use hoist_testutil::cli::Hoist;

use super::common::{hoist, Env, HOIST};

const MULTI_STAGE: &str = "FROM busybox AS build\nRUN head -c 100000 /dev/urandom > /out\n\
                           FROM busybox\nCOPY --from=build /out /out\nRUN echo hi > /hi\n";

/// The image's config without creation times (the build stamps `now`).
fn config_without_times(env: &Env, store: &std::path::Path, image: &str) -> serde_json::Value {
    let run = hoist(store, &["inspect", image], None);
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let mut config = v[0]["Config"].clone();
    let _ = env;
    if let Some(o) = config.as_object_mut() {
        o.remove("created");
        o.remove("history");
    }
    serde_json::json!({"layers": v[0]["Layers"], "config": config})
}

fn blobs(store: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store.join("content/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_fresh_store_importing_a_local_cache_runs_no_step() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(MULTI_STAGE);
    // Both stores get busybox from the same archive with the same creation
    // time, so their base image digests (part of every key) agree.
    let tar = env.scratch.path().join("busybox.tar");
    let import = |root: &std::path::Path| {
        hoist_epoch(root, &["import", tar.to_str().unwrap(), "busybox:latest"]);
    };
    import(env.root.path());
    let cache = env.scratch.path().join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let context = env.context.path().to_str().unwrap();
    let build = |root: &std::path::Path, cache_flag: &str, spec: &str| {
        hoist_epoch(
            root,
            &[
                "build",
                "--progress",
                "plain",
                "-t",
                "app",
                cache_flag,
                spec,
                context,
            ],
        )
    };
    build(env.root.path(), "--cache-to", &to);
    assert!(cache.join("index.json").is_file());

    // Store B: the same base image (same archive), nothing else.
    let b = tempfile::tempdir().unwrap();
    import(b.path());
    let base_a = env.inspect("busybox:latest")["Id"].clone();
    let run = hoist(b.path(), &["inspect", "busybox:latest"], None);
    let base_b: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(base_a, base_b[0]["Id"], "the two imports differ");
    let from = format!("type=local,src={}", cache.display());
    let stderr = build(b.path(), "--cache-from", &from);
    assert!(
        !stderr.contains(" DONE "),
        "a step ran in the store that imported the cache:\n{stderr}"
    );
    assert_eq!(
        config_without_times(&env, env.root.path(), "app"),
        config_without_times(&env, b.path(), "app")
    );
    // With SOURCE_DATE_EPOCH the two images are the same image.
    let digest = |root: &std::path::Path| {
        let run = hoist(root, &["inspect", "app"], None);
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        (v[0]["Id"].clone(), v[0]["ManifestDigest"].clone())
    };
    assert_eq!(digest(env.root.path()), digest(b.path()));
    // mode=min (the default) exported only what the final image needs: the
    // build stage's own layer never reached store B.
    let a_blobs = blobs(env.root.path());
    let b_blobs = blobs(b.path());
    let build_stage_only: Vec<&String> = a_blobs.iter().filter(|d| !b_blobs.contains(d)).collect();
    assert!(
        !build_stage_only.is_empty(),
        "store B holds every blob of store A: {b_blobs:?}"
    );

    // Exporting again replaces the cache's contents.
    env.dockerfile("FROM busybox\nRUN echo other > /o\n");
    env.build(&["--cache-to", &to]).assert_ok();
    let left = std::fs::read_dir(cache.join("blobs/sha256"))
        .unwrap()
        .count();
    // Base layer, the new layer, the records document and the manifest.
    assert_eq!(left, 4, "stale cache entries were kept");
}

/// Runs hoist with SOURCE_DATE_EPOCH set (both stores' images and base
/// imports agree) and returns stderr, asserting success.
fn hoist_epoch(root: &std::path::Path, args: &[&str]) -> String {
    hoist_env(root, args, &[])
}

fn hoist_env(root: &std::path::Path, args: &[&str], env: &[(&str, &std::path::Path)]) -> String {
    let out = Hoist::new(HOIST, root)
        .command()
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "hoist {args:?} failed:\n{stderr}");
    stderr
}

fn image_digest(root: &std::path::Path) -> (serde_json::Value, serde_json::Value) {
    let run = hoist(root, &["inspect", "app"], None);
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    (v[0]["Id"].clone(), v[0]["ManifestDigest"].clone())
}

#[test]
fn a_fresh_store_importing_a_registry_cache_runs_no_step() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    env.dockerfile(MULTI_STAGE);
    let tar = env.scratch.path().join("busybox.tar");
    let tar = tar.to_str().unwrap();
    let context = env.context.path().to_str().unwrap().to_string();
    let cache_ref = format!("{}/cache:latest", registry.addr);
    let build = |root: &std::path::Path, flag: &str, spec: &str| {
        hoist_epoch(
            root,
            &[
                "build",
                "--progress",
                "plain",
                "-t",
                "app",
                flag,
                spec,
                &context,
            ],
        )
    };

    hoist_epoch(env.root.path(), &["import", tar, "busybox:latest"]);
    let stderr = build(
        env.root.path(),
        "--cache-to",
        &format!("type=registry,ref={cache_ref}"),
    );
    assert!(
        stderr.contains(&format!("exporting cache to {cache_ref}")),
        "{stderr}"
    );

    // The registry holds the artifact: a manifest whose config is the
    // records document and whose layers are the final image's layers.
    let raw = hoist_testutil::run_ok(
        std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{cache_ref}")),
    );
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["artifactType"], "application/vnd.hoist.cache.v1");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.hoist.cache.records.v1+json"
    );
    let layers: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_string())
        .collect();
    let image = env.inspect("app");
    let image_layers: Vec<String> = image["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Digest"].as_str().unwrap().to_string())
        .collect();
    // mode=min: exactly the blobs the final image holds (the base layer
    // and the two layers of the final stage), not the build stage's.
    let mut sorted = image_layers.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(layers, sorted, "the cache's layers are not the image's");

    // Store B: the same base image, then the build with --cache-from.
    let b = tempfile::tempdir().unwrap();
    hoist_epoch(b.path(), &["import", tar, "busybox:latest"]);
    let stderr = build(
        b.path(),
        "--cache-from",
        &format!("type=registry,ref={cache_ref}"),
    );
    // The base layer came with store B's own busybox: it was not
    // downloaded again.
    // (Downloaded: the records document and the final stage's two layers.)
    assert!(
        stderr.contains(&format!("importing cache from {cache_ref}: "))
            && stderr.contains(" records, 3 blobs downloaded, 1 already here"),
        "{stderr}"
    );
    assert!(
        !stderr.contains(" DONE "),
        "a step ran in the store that imported the cache:\n{stderr}"
    );
    assert!(stderr.contains("CACHED"), "{stderr}");
    assert_eq!(image_digest(env.root.path()), image_digest(b.path()));
    // Only what the final image needs came down: the build stage's layer
    // stayed in store A.
    let b_blobs = blobs(b.path());
    for layer in &image_layers {
        let hex = layer.trim_start_matches("sha256:");
        assert!(b_blobs.iter().any(|b| b == hex), "{layer} missing in B");
    }
    let a_blobs = blobs(env.root.path());
    assert!(
        a_blobs.iter().any(|d| !b_blobs.contains(d)),
        "store B holds every blob of store A"
    );

    // Exporting again replaces the tag: the cache names only the new
    // build's blobs.
    env.dockerfile("FROM busybox\nRUN echo other > /o\n");
    build(
        env.root.path(),
        "--cache-to",
        &format!("type=registry,ref={cache_ref}"),
    );
    let raw = std::process::Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{cache_ref}"))
        .output()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).unwrap();
    let new_layers = manifest["layers"].as_array().unwrap();
    assert_eq!(
        new_layers.len(),
        2,
        "stale cache entries were kept: {manifest}"
    );
    let new_image = env.inspect("app");
    let new_image_layers: Vec<&serde_json::Value> = new_image["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["Digest"])
        .collect();
    for l in new_layers {
        assert!(
            new_image_layers.contains(&&l["digest"]),
            "{l} is not a layer of the new image"
        );
    }

    // A ref that does not exist yet is an empty cache, not an error.
    let c = tempfile::tempdir().unwrap();
    hoist_epoch(c.path(), &["import", tar, "busybox:latest"]);
    let stderr = build(
        c.path(),
        "--cache-from",
        &format!("type=registry,ref={}/nothing:here", registry.addr),
    );
    assert!(stderr.contains("not found (empty cache)"), "{stderr}");

    // An image without an inline cache is refused.
    let image_ref = format!("{}/app:1", registry.addr);
    hoist(env.root.path(), &["tag", "app", &image_ref], None).assert_ok();
    hoist(env.root.path(), &["push", "-q", &image_ref], None).assert_ok();
    let d = tempfile::tempdir().unwrap();
    let out = Hoist::new(HOIST, d.path())
        .command()
        .args([
            "build",
            "--cache-from",
            &format!("type=registry,ref={image_ref}"),
            &context,
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is an image without an inline cache"),
        "{stderr}"
    );
}

#[test]
fn an_inline_cache_travels_in_the_image_config() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("skopeo");
    let registry = hoist_testutil::Registry::start();
    let env = Env::new();
    env.dockerfile(MULTI_STAGE);
    let tar = env.scratch.path().join("busybox.tar");
    let tar = tar.to_str().unwrap();
    let context = env.context.path().to_str().unwrap().to_string();
    let image_ref = format!("{}/app:inline", registry.addr);
    hoist_epoch(env.root.path(), &["import", tar, "busybox:latest"]);
    hoist_epoch(
        env.root.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            &image_ref,
            "--cache-to",
            "type=inline",
            &context,
        ],
    );
    hoist(env.root.path(), &["push", "-q", &image_ref], None).assert_ok();
    let raw = hoist_testutil::run_ok(
        std::process::Command::new("skopeo")
            .args(["inspect", "--config", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{image_ref}")),
    );
    let config: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let records = config["hoist.cache.v1"]["records"].as_array().unwrap();
    assert!(!records.is_empty(), "{config}");
    // The rest of the config is an ordinary image config.
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 3);

    let b = tempfile::tempdir().unwrap();
    hoist_epoch(b.path(), &["import", tar, "busybox:latest"]);
    let stderr = hoist_epoch(
        b.path(),
        &[
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            "--cache-from",
            &format!("type=registry,ref={image_ref}"),
            &context,
        ],
    );
    assert!(!stderr.contains(" DONE "), "a step ran:\n{stderr}");
    let layers = |root: &std::path::Path, image: &str| {
        let run = hoist(root, &["inspect", image], None);
        run.assert_ok();
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v[0]["Layers"].clone()
    };
    assert_eq!(layers(env.root.path(), &image_ref), layers(b.path(), "app"));
}

#[test]
fn a_mode_max_registry_cache_behind_a_login() {
    hoist_testutil::require_root!();
    let registry = hoist_testutil::Registry::start_basic_auth("cache", "s3cret");
    let env = Env::new();
    env.dockerfile(MULTI_STAGE);
    let tar = env.scratch.path().join("busybox.tar");
    let tar = tar.to_str().unwrap();
    let context = env.context.path().to_str().unwrap().to_string();
    let cache_ref = format!("{}/team/cache:max", registry.addr);
    let docker_config = tempfile::tempdir().unwrap();
    let vars = [("DOCKER_CONFIG", docker_config.path())];
    hoist_env(
        env.root.path(),
        &["login", "-u", "cache", "-p", "s3cret", &registry.addr],
        &vars,
    );
    hoist_epoch(env.root.path(), &["import", tar, "busybox:latest"]);
    let spec = format!("type=registry,ref={cache_ref},mode=max");
    let args = |flag: &'static str, spec: &str| -> Vec<String> {
        [
            "build",
            "--progress",
            "plain",
            "-t",
            "app",
            flag,
            spec,
            &context,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let to = args("--cache-to", &spec);
    let to: Vec<&str> = to.iter().map(String::as_str).collect();
    hoist_env(env.root.path(), &to, &vars);

    // Store B, logged in too, imports the mode=max cache.
    let b = tempfile::tempdir().unwrap();
    hoist_epoch(b.path(), &["import", tar, "busybox:latest"]);
    let from = args("--cache-from", &format!("type=registry,ref={cache_ref}"));
    let from: Vec<&str> = from.iter().map(String::as_str).collect();
    let stderr = hoist_env(b.path(), &from, &vars);
    assert!(!stderr.contains(" DONE "), "a step ran:\n{stderr}");
    assert_eq!(image_digest(env.root.path()), image_digest(b.path()));
    let b_blobs = blobs(b.path());
    let image_layers: Vec<String> = env.inspect("app")["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["Digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    let a_layers: Vec<String> = blobs(env.root.path())
        .into_iter()
        .filter(|d| !b_blobs.contains(d))
        .collect();
    // What A has and B lacks is metadata (manifests, configs), never a
    // layer of a cached step.
    for d in &a_layers {
        assert!(!image_layers.contains(d));
    }
    let raw = hoist_testutil::run_ok(
        std::process::Command::new("skopeo")
            .args([
                "inspect",
                "--raw",
                "--tls-verify=false",
                "--creds",
                "cache:s3cret",
            ])
            .arg(format!("docker://{cache_ref}")),
    );
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    let cached: Vec<String> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            l["digest"]
                .as_str()
                .unwrap()
                .trim_start_matches("sha256:")
                .to_string()
        })
        .collect();
    // An intermediate stage's RUN leaves a snapshot, not a blob, so even
    // mode=max names only blobs the final image holds.
    assert_eq!(cached.len(), image_layers.len(), "{manifest}");
    for d in &cached {
        assert!(b_blobs.contains(d), "{d} of the cache is not in store B");
    }

    // Without the login the registry refuses, and the build says so.
    let c = tempfile::tempdir().unwrap();
    let empty = tempfile::tempdir().unwrap();
    let out = Hoist::new(HOIST, c.path())
        .command()
        .args(&from)
        .env("DOCKER_CONFIG", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("failed to pull the cache from {cache_ref}")),
        "{stderr}"
    );
    assert!(
        stderr.to_lowercase().contains("unauthorized") || stderr.contains("401"),
        "{stderr}"
    );
}
