//! The status page in headless Chromium: its DOM lists the builds with their
//! states. With HOIST_AUTOBUILD_SCREENSHOT=FILE it also saves a screenshot
//! (how docs/autobuild-status.png was made).

use std::process::Command;

use hoist_autobuild::{BuildState, Provider};

use crate::common::*;
use crate::webhooks::push_hook;

fn chromium(args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    hoist_testutil::run_ok(
        Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--window-size=1400,800",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .args(args),
    )
}

#[test]
fn status_page_lists_builds_in_headless_chromium() {
    hoist_testutil::require_program!("chromium");
    let repo = Repo::new();
    let good = repo.commit("hello", "v1", "Add the greeting <b>bold</b>");
    repo.push("main");
    git(&repo.work, &["checkout", "-q", "-b", "broken"]);
    std::fs::write(repo.work.join("FAIL"), "").unwrap();
    let bad = repo.commit("hello", "v2", "Break the build");
    repo.push("broken");
    git(&repo.work, &["checkout", "-q", "-b", "slow"]);
    let slow = repo.commit("hello", "v3", "A slow one");
    repo.push("slow");
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));

    let (_, a) = push_hook(
        &server,
        Provider::GitHub,
        "refs/heads/main",
        &good,
        "Add the greeting <b>bold</b>",
    );
    let (_, b) = push_hook(
        &server,
        Provider::Gitea,
        "refs/heads/broken",
        &bad,
        "Break the build",
    );
    let ok = server.wait_final(queued_ids(&a)[0]);
    let failed = server.wait_final(queued_ids(&b)[0]);
    assert_eq!(
        (ok.state, failed.state),
        (BuildState::Succeeded, BuildState::Failed)
    );
    assert_eq!(failed.error.as_deref(), Some("FAIL file present"));
    server.rec.gate.close();
    let (_, c) = push_hook(
        &server,
        Provider::GitLab,
        "refs/heads/slow",
        &slow,
        "A slow one",
    );
    let running = queued_ids(&c)[0];
    wait_until("the slow build to start", || {
        server
            .rec
            .started
            .lock()
            .unwrap()
            .contains(&running)
            .then_some(())
    });
    let (_, d) = push_hook(
        &server,
        Provider::Bitbucket,
        "refs/heads/main",
        &good,
        "Add the greeting <b>bold</b>",
    );
    let queued = queued_ids(&d)[0];

    let dom = chromium(&["--dump-dom", &server.url("/")]);
    for (id, state) in [
        (ok.id, "succeeded"),
        (failed.id, "failed"),
        (running, "running"),
        (queued, "queued"),
    ] {
        assert!(
            dom.contains(&format!("<tr id=\"build-{id}\" data-state=\"{state}\">")),
            "build {id} {state} missing: {dom}"
        );
    }
    // The payload's markup is text in the DOM, not an element.
    assert!(
        dom.contains("Add the greeting &lt;b&gt;bold&lt;/b&gt;"),
        "{dom}"
    );
    assert!(!dom.contains("<b>bold</b>"));

    if let Ok(file) = std::env::var("HOIST_AUTOBUILD_SCREENSHOT") {
        chromium(&[&format!("--screenshot={file}"), &server.url("/")]);
    }
}
