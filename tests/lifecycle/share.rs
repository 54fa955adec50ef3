//! `--cache-to type=local` / `--cache-from type=local`: a fresh store that
//! imports the cache runs no step and makes the same image.

use super::common::{hoist, Env};

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
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoist"))
            .arg("--root")
            .arg(root)
            .args(["import", tar.to_str().unwrap(), "busybox:latest"])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    import(env.root.path());
    let cache = env.scratch.path().join("cache");
    let to = format!("type=local,dest={}", cache.display());
    let build = |root: &std::path::Path, cache_flag: &str, spec: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hoist"))
            .arg("--root")
            .arg(root)
            .args([
                "build",
                "--progress",
                "plain",
                "-t",
                "app",
                cache_flag,
                spec,
            ])
            .arg(env.context.path())
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        stderr
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
