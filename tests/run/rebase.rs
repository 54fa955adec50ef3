//! `hoist rebase`: `app` built on `base:1`, moved onto `base:2`.

use serde_json::Value;

use super::common::{Env, Run};

const EPOCH: &str = "1700000000";

/// `base:1` and `base:2` (busybox plus a marker file, an ENV and a label
/// each; base:2 has one layer more), then `app` on base:1: a COPY-only
/// image with a CMD that shows both files. All under SOURCE_DATE_EPOCH.
fn setup() -> Env {
    let env = Env::new();
    env.write("base1.txt", "base one\n");
    env.write("base2.txt", "base two\n");
    env.write("extra.txt", "extra\n");
    env.write("app.txt", "the app\n");
    env.dockerfile("FROM busybox\nCOPY base1.txt /marker\nENV BASE=1 KEEP=k\nLABEL base=1\n");
    build(&env, "base:1");
    env.dockerfile(
        "FROM busybox\nCOPY base2.txt /marker\nCOPY extra.txt /extra\nENV BASE=2 KEEP=k\nLABEL base=2\n",
    );
    build(&env, "base:2");
    env.dockerfile(APP);
    build(&env, "app:1");
    env
}

const APP: &str =
    "FROM base:1\nCOPY app.txt /app.txt\nENV APP=1\nCMD [\"cat\", \"/marker\", \"/app.txt\"]\n";

fn build(env: &Env, tag: &str) {
    env.build(&["--source-date-epoch", EPOCH, "-t", tag])
        .assert_ok();
}

fn hoist(env: &Env, args: &[&str]) -> Run {
    env.hoist().run(args)
}

fn layers(env: &Env, image: &str) -> Vec<String> {
    env.inspect(image)["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["Digest"].as_str().unwrap().to_owned())
        .collect()
}

fn diff_ids(env: &Env, image: &str) -> Vec<Value> {
    env.config(image)["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn rebase_swaps_the_base_layers_and_keeps_the_images_own() {
    hoist_testutil::require_root!();
    let env = setup();
    let out = hoist(
        &env,
        &[
            "rebase", "app:1", "--from", "base:1", "--to", "base:2", "-t", "app:2",
        ],
    );
    out.assert_ok();
    assert!(out.stderr.contains("were not run again"), "{}", out.stderr);
    assert!(out.stdout.contains("Rebased: app:2"), "{}", out.stdout);

    // base:2's layers, then app's own, the very same blobs.
    let (base1, base2, app) = (
        layers(&env, "base:1"),
        layers(&env, "base:2"),
        layers(&env, "app:1"),
    );
    assert_eq!(base2.len(), base1.len() + 1);
    let mut want = base2.clone();
    want.extend(app[base1.len()..].iter().cloned());
    assert_eq!(layers(&env, "app:2"), want);
    let mut want_ids = diff_ids(&env, "base:2");
    want_ids.extend(diff_ids(&env, "app:1")[base1.len()..].iter().cloned());
    assert_eq!(diff_ids(&env, "app:2"), want_ids);

    // What app inherited unchanged follows the new base; its own stays.
    let config = env.config("app:2");
    let vars: Vec<&str> = config["config"]["Env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(vars.contains(&"BASE=2"), "{vars:?}");
    assert!(vars.contains(&"APP=1"), "{vars:?}");
    assert!(!vars.contains(&"BASE=1"), "{vars:?}");
    assert_eq!(config["config"]["Labels"]["base"], "2");
    assert_eq!(config["config"]["Cmd"][0], "cat");
    // History: base:2's entries, then app's own.
    let history = |image: &str| env.config(image)["history"].as_array().unwrap().clone();
    let (h1, h2, happ, hnew) = (
        history("base:1"),
        history("base:2"),
        history("app:1"),
        history("app:2"),
    );
    assert_eq!(hnew.len(), h2.len() + happ.len() - h1.len());
    assert_eq!(hnew[..h2.len()], h2[..]);
    assert_eq!(hnew[h2.len()..], happ[h1.len()..]);
    // The new base is recorded.
    let manifest = &env.inspect("app:2")["Manifest"];
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        env.inspect("base:2")["ManifestDigest"]
    );
    // app:1 is untouched.
    assert_eq!(layers(&env, "app:1"), app);

    // Running it shows base:2's marker and app's file.
    let run = hoist(&env, &["run", "app:2"]);
    run.assert_ok();
    assert_eq!(run.stdout, "base two\nthe app\n");
    let run = hoist(&env, &["run", "app:2", "cat", "/extra"]);
    assert_eq!(run.stdout, "extra\n");
}

#[test]
fn rebase_equals_a_rebuild_under_the_same_source_date_epoch() {
    hoist_testutil::require_root!();
    let env = setup();
    env.hoist()
        .command()
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .args([
            "rebase",
            "app:1",
            "--from",
            "base:1",
            "--to",
            "base:2",
            "-t",
            "app:rebased",
        ])
        .status()
        .unwrap();
    env.dockerfile(&APP.replace("base:1", "base:2"));
    build(&env, "app:rebuilt");
    assert_eq!(diff_ids(&env, "app:rebased"), diff_ids(&env, "app:rebuilt"));
    assert_eq!(layers(&env, "app:rebased"), layers(&env, "app:rebuilt"));
    // And a rebase is itself reproducible.
    let again = hoist(
        &env,
        &[
            "rebase",
            "app:1",
            "--from",
            "base:1",
            "--to",
            "base:2",
            "-t",
            "app:again",
            "--source-date-epoch",
            EPOCH,
        ],
    );
    again.assert_ok();
    assert_eq!(
        env.inspect("app:again")["Target"]["Digest"],
        env.inspect("app:rebased")["Target"]["Digest"]
    );
}

#[test]
fn a_wrong_from_is_refused_and_nothing_is_named() {
    hoist_testutil::require_root!();
    let env = setup();
    let before = env.inspect("app:1")["Target"].clone();
    let out = hoist(
        &env,
        &["rebase", "app:1", "--from", "base:2", "--to", "base:1"],
    );
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr
            .contains("the old base is not the base of this image"),
        "{}",
        out.stderr
    );
    assert_eq!(env.inspect("app:1")["Target"], before);
}

#[test]
fn the_recorded_base_stands_for_from_and_provenance_names_all_three() {
    hoist_testutil::require_root!();
    let env = setup();
    let manifest = &env.inspect("app:1")["Manifest"];
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.name"],
        "docker.io/library/base:1"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.base.digest"],
        env.inspect("base:1")["ManifestDigest"]
    );
    // No --from: the recorded base. The image's own name is replaced.
    let out = hoist(&env, &["rebase", "app:1", "--to", "base:2", "--provenance"]);
    out.assert_ok();
    assert_eq!(hoist(&env, &["run", "app:1"]).stdout, "base two\nthe app\n");
    let provenance = hoist(&env, &["inspect", "--provenance", "app:1"]);
    provenance.assert_ok();
    let text = provenance.stdout;
    assert!(text.contains("urn:hoist:rebase:v1"), "{text}");
    let from = env.inspect("base:1")["Target"]["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let to = env.inspect("base:2")["Target"]["Digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(text.contains(&from) && text.contains(&to), "{text}");
    // Rebasing again from the recorded base (now base:2) back to base:1.
    hoist(&env, &["rebase", "app:1", "--to", "base:1"]).assert_ok();
    assert_eq!(hoist(&env, &["run", "app:1"]).stdout, "base one\nthe app\n");
}

#[test]
fn without_to_the_recorded_name_is_pulled_again() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    let registry = hoist_testutil::Registry::start();
    let env = setup();
    let base = format!("{}/base:stable", registry.addr);
    hoist(&env, &["tag", "base:1", &base]).assert_ok();
    hoist(&env, &["push", &base]).assert_ok();
    let app = format!("{}/app:r", registry.addr);
    env.dockerfile(&APP.replace("base:1", &base));
    build(&env, &app);
    // The base moves on in the registry; the store still has the old one.
    let other = tempfile::tempdir().unwrap();
    let elsewhere = hoist_testutil::cli::Hoist::new(super::common::HOIST, other.path());
    let tar = env.scratch.path().join("b2.tar");
    let tar = tar.to_str().unwrap();
    hoist(&env, &["save", "-o", tar, "base:2"]).assert_ok();
    elsewhere.run(&["load", "-i", tar]).assert_ok();
    elsewhere.run(&["tag", "base:2", &base]).assert_ok();
    elsewhere.run(&["push", &base]).assert_ok();

    let out = hoist(&env, &["rebase", &app, "--push"]);
    out.assert_ok();
    assert!(out.stderr.contains("Pulling from"), "{}", out.stderr);
    assert_eq!(hoist(&env, &["run", &app]).stdout, "base two\nthe app\n");
    // Pushed: another store pulls the rebased image.
    elsewhere.run(&["pull", &app]).assert_ok();
    assert_eq!(elsewhere.run(&["run", &app]).stdout, "base two\nthe app\n");
}
