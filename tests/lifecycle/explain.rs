//! `hoist build --explain`: one test per reason a step runs, asserting the
//! words printed.

use super::common::{hoist, Env};

const DOCKERFILE: &str =
    "FROM busybox\nARG VERSION=1.2\nCOPY src/ /app/\nRUN echo $VERSION > /v\nRUN echo done\n";

fn explained(env: &Env, args: &[&str]) -> Vec<String> {
    let mut all = vec!["--explain"];
    all.extend_from_slice(args);
    let run = env.build(&all);
    run.assert_ok();
    run.stderr
        .lines()
        .filter_map(|l| l.strip_prefix("explain: "))
        .map(str::to_owned)
        .collect()
}

fn short(bytes: &[u8]) -> String {
    format!("blake3:{}…", &blake3::hash(bytes).to_hex()[..12])
}

fn setup() -> Env {
    let env = Env::new();
    env.dockerfile(DOCKERFILE);
    env.write("src/main.rs", "fn main() {}\n");
    env.write("src/lib.rs", "pub fn f() {}\n");
    env
}

#[test]
fn first_build_has_no_earlier_build_and_a_rebuild_is_all_cached() {
    hoist_testutil::require_root!();
    let env = setup();
    let lines = explained(&env, &[]);
    assert!(
        lines.contains(&"step 1/3 COPY src/ /app/: no earlier build of this step".to_owned()),
        "{lines:#?}"
    );
    assert!(lines.contains(&"step 3/3 RUN echo done: no earlier build of this step".to_owned()));
    assert_eq!(explained(&env, &[]), ["every step came from the cache"]);
}

#[test]
fn a_changed_context_file_is_named_with_both_digests() {
    hoist_testutil::require_root!();
    let env = setup();
    explained(&env, &[]);
    env.write("src/main.rs", "fn main() { println!(\"hi\"); }\n");
    let lines = explained(&env, &[]);
    let change = format!(
        "src/main.rs changed ({} → {})",
        short(b"fn main() {}\n"),
        short(b"fn main() { println!(\"hi\"); }\n")
    );
    assert!(
        lines.contains(&format!("step 1/3 COPY src/ /app/: {change}")),
        "{lines:#?}"
    );
    // Later steps point at the step where the change came in.
    assert!(
        lines.contains(&format!(
            "step 2/3 RUN echo $VERSION > /v: {change} (in step 1/3 COPY src/ /app/)"
        )),
        "{lines:#?}"
    );
    env.write("src/extra.rs", "\n");
    let lines = explained(&env, &[]);
    assert!(
        lines.contains(&"step 1/3 COPY src/ /app/: src/extra.rs was added".to_owned()),
        "{lines:#?}"
    );
}

#[test]
fn a_changed_build_arg_is_named_with_both_values() {
    hoist_testutil::require_root!();
    let env = setup();
    explained(&env, &[]);
    let lines = explained(&env, &["--build-arg", "VERSION=1.3"]);
    assert_eq!(
        lines,
        [
            "step 2/3 RUN echo $VERSION > /v: ARG VERSION changed from 1.2 to 1.3",
            "step 3/3 RUN echo done: ARG VERSION changed from 1.2 to 1.3",
        ]
    );
}

#[test]
fn an_edited_instruction_is_named() {
    hoist_testutil::require_root!();
    let env = setup();
    explained(&env, &[]);
    env.dockerfile(&DOCKERFILE.replace("echo done", "echo finished"));
    let lines = explained(&env, &[]);
    assert_eq!(
        lines,
        ["step 3/3 RUN echo finished: the instruction's text changed"]
    );
}

#[test]
fn a_moved_base_image_is_named_with_its_new_digest() {
    hoist_testutil::require_root!();
    let env = setup();
    explained(&env, &[]);
    // busybox:latest now points at a different image.
    let rootfs = env.scratch.path().join("rootfs");
    hoist_testutil::busybox_rootfs(&rootfs);
    std::fs::write(rootfs.join("etc/release"), "2\n").unwrap();
    let tar = env.scratch.path().join("busybox2.tar");
    let status = std::process::Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    hoist(
        env.root.path(),
        &["import", tar.to_str().unwrap(), "busybox:latest"],
        None,
    )
    .assert_ok();
    let digest = env.inspect("busybox:latest")["ManifestDigest"]
        .as_str()
        .unwrap()
        .to_owned();
    let moved = format!("base image busybox:latest moved to {}…", &digest[..19]);
    let lines = explained(&env, &[]);
    assert!(
        lines.contains(&format!("FROM busybox:latest: {moved}")),
        "{lines:#?}"
    );
    assert!(
        lines.contains(&format!("step 1/3 COPY src/ /app/: {moved}")),
        "{lines:#?}"
    );
}

#[test]
fn no_cache_filter_is_the_reason_for_its_stage() {
    hoist_testutil::require_root!();
    let env = setup();
    env.dockerfile("FROM busybox AS build\nRUN echo built > /out\n\nFROM busybox\nCOPY --from=build /out /out\n");
    explained(&env, &[]);
    let lines = explained(&env, &["--no-cache-filter", "build"]);
    assert!(
        lines.contains(
            &"step 1/1 [build] RUN echo built > /out: --no-cache-filter build".to_owned()
        ),
        "{lines:#?}"
    );
}

#[test]
fn json_progress_carries_the_reason_and_dry_run_predicts() {
    hoist_testutil::require_root!();
    let env = setup();
    explained(&env, &[]);
    env.write("src/lib.rs", "pub fn g() {}\n");
    let change = format!(
        "src/lib.rs changed ({} → {})",
        short(b"pub fn f() {}\n"),
        short(b"pub fn g() {}\n")
    );
    // Predicted, twice: a dry run records nothing.
    for _ in 0..2 {
        let run = hoist(
            env.root.path(),
            &[
                "build",
                "--dry-run",
                "--explain",
                env.context.path().to_str().unwrap(),
            ],
            None,
        );
        run.assert_ok();
        assert!(
            run.stdout.contains("FROM busybox:latest: cached\n"),
            "{}",
            run.stdout
        );
        assert!(
            run.stdout
                .contains(&format!("step 1/3 COPY src/ /app/: will run: {change}\n")),
            "{}",
            run.stdout
        );
    }
    let run = hoist(
        env.root.path(),
        &[
            "build",
            "--explain",
            "--progress",
            "json",
            env.context.path().to_str().unwrap(),
        ],
        None,
    );
    run.assert_ok();
    let events: Vec<serde_json::Value> = run
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    let explain = events
        .iter()
        .position(|v| v["event"] == "explain" && v["step"] == "step 1/3 COPY src/ /app/")
        .unwrap_or_else(|| panic!("no explain event for the COPY:\n{}", run.stderr));
    assert_eq!(
        events[explain]["reason"],
        change.as_str(),
        "{}",
        events[explain]
    );
    // It comes right before the step's `started` event.
    let next = &events[explain + 1];
    assert_eq!(next["event"], "started", "{next}");
    assert_eq!(next["vertex"], events[explain]["vertex"], "{next}");
}
