//! The cache: unchanged rebuilds, touched mtimes, one changed file.

use std::fs;

use super::common::{cached_steps, done_steps, Env};

const DOCKERFILE: &str = "FROM busybox\n\
    COPY a.txt /a.txt\n\
    RUN cat /a.txt > /a.copy\n\
    COPY b.txt /b.txt\n\
    RUN cat /b.txt > /b.copy\n";

fn setup() -> Env {
    let env = Env::new();
    env.write("a.txt", "a\n");
    env.write("b.txt", "b\n");
    env.dockerfile(DOCKERFILE);
    env
}

#[test]
fn unchanged_rebuild_is_fully_cached() {
    hoist_testutil::require_root!();
    let env = setup();
    let first = env.build(&["-t", "c:1"]);
    first.assert_ok();
    assert_eq!(cached_steps(&first.stderr), 0, "{}", first.stderr);
    let second = env.build(&["-t", "c:2"]);
    second.assert_ok();
    assert_eq!(done_steps(&second.stderr), 0, "{}", second.stderr);
    assert!(cached_steps(&second.stderr) >= 4, "{}", second.stderr);
    assert_eq!(
        env.config("c:1")["rootfs"],
        env.config("c:2")["rootfs"],
        "the same layers"
    );
}

#[test]
fn touching_mtimes_stays_cached() {
    hoist_testutil::require_root!();
    let env = setup();
    env.build(&[]).assert_ok();
    for f in ["a.txt", "b.txt", "Dockerfile"] {
        let file = fs::File::options()
            .write(true)
            .open(env.context.path().join(f))
            .unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH)
            .unwrap();
    }
    let again = env.build(&[]);
    again.assert_ok();
    assert_eq!(done_steps(&again.stderr), 0, "{}", again.stderr);
}

#[test]
fn changing_one_file_reruns_from_the_copy_that_selects_it() {
    hoist_testutil::require_root!();
    let env = setup();
    env.build(&[]).assert_ok();
    env.write("b.txt", "B changed\n");
    let again = env.build(&["-t", "c:3", "-o", "type=image"]);
    again.assert_ok();
    let stderr = &again.stderr;
    let step = |text: &str| -> String {
        // The status line after the step's name line.
        let lines: Vec<&str> = stderr.lines().collect();
        let i = lines
            .iter()
            .position(|l| l.contains(text))
            .unwrap_or_else(|| panic!("no step {text} in\n{stderr}"));
        let n = lines[i].split(' ').next().unwrap().to_owned();
        lines[i + 1..]
            .iter()
            .find(|l| {
                l.starts_with(&format!("{n} ")) && (l.ends_with("CACHED") || l.contains(" DONE "))
            })
            .unwrap()
            .to_string()
    };
    assert!(step("COPY a.txt").ends_with("CACHED"), "{stderr}");
    assert!(step("RUN cat /a.txt").ends_with("CACHED"), "{stderr}");
    assert!(step("COPY b.txt").contains(" DONE "), "{stderr}");
    assert!(step("RUN cat /b.txt").contains(" DONE "), "{stderr}");
}

#[test]
fn no_cache_reruns_everything() {
    hoist_testutil::require_root!();
    let env = setup();
    env.build(&[]).assert_ok();
    let again = env.build(&["--no-cache"]);
    again.assert_ok();
    assert_eq!(cached_steps(&again.stderr), 0, "{}", again.stderr);
    assert!(done_steps(&again.stderr) >= 4, "{}", again.stderr);
}

#[test]
fn no_cache_filter_reruns_only_that_stage_and_json_progress_is_one_object_per_line() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox AS base\n\
         RUN echo base > /base\n\
         FROM base AS final\n\
         RUN echo final > /final\n",
    );
    env.build(&[]).assert_ok();
    let run = super::common::hoist(
        env.root.path(),
        &[
            "build",
            "--progress",
            "json",
            "--no-cache-filter",
            "final",
            env.context.path().to_str().unwrap(),
        ],
        None,
    );
    run.assert_ok();
    let events = run.json_events();
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "started")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        started.iter().any(|n| n.contains("echo final")),
        "{started:?}"
    );
    assert!(
        !started.iter().any(|n| n.contains("echo base")),
        "{started:?}"
    );
    assert!(events
        .iter()
        .any(|e| e["event"] == "cached" && e["name"].as_str().unwrap().contains("echo base")));
    assert!(events.iter().any(|e| e["event"] == "finished"));
}
