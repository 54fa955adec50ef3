//! Trigger URL, supersede and one-build-per-ref.

use hoist_autobuild::{BuildState, Provider};
use serde_json::json;

use crate::common::*;
use crate::webhooks::push_hook;

#[test]
fn trigger_url_builds_the_head_branch_or_a_named_ref() {
    let repo = Repo::new();
    let tip = repo.commit("hello", "tip", "tip");
    repo.push("main");
    git(&repo.work, &["checkout", "-q", "-b", "feature"]);
    let feature = repo.commit("hello", "feature", "feature");
    repo.push("feature");
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));

    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET)
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let b = server.wait_final(queued_ids(&r.json().unwrap())[0]);
    assert_eq!(
        (b.state, b.trigger.as_str()),
        (BuildState::Succeeded, "trigger")
    );
    assert_eq!(
        (b.git_ref.as_str(), b.sha.as_str()),
        ("refs/heads/main", tip.as_str())
    );

    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("authorization", format!("Bearer {SECRET}"))
        .json(&json!({"ref": "feature"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let b = server.wait_final(queued_ids(&r.json().unwrap())[0]);
    assert_eq!(
        (b.git_ref.as_str(), b.sha.as_str()),
        ("refs/heads/feature", feature.as_str())
    );
    let rec = server.rec.builds.lock().unwrap().clone();
    assert_eq!(rec[1].tree["hello"], "feature");

    let r = server
        .client()
        .post(server.url("/trigger/demo"))
        .header("x-hoist-token", SECRET)
        .json(&json!({"ref": "nosuch"}))
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let answer: serde_json::Value = r.json().unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("no such branch or tag"),
        "{answer}"
    );

    // retry (as `hoist autobuild retry` does, through the store) queues a copy.
    let e = hoist_autobuild::retry(server.store.path(), b.id).unwrap();
    let again = server.wait_final(e.id);
    assert_eq!(
        (again.retry_of, again.trigger.as_str()),
        (Some(b.id), "retry")
    );
    assert_eq!(again.state, BuildState::Succeeded);
    let list = hoist_autobuild::list(server.store.path(), Some("demo"), 10).unwrap();
    assert_eq!(list.iter().map(|b| b.id).collect::<Vec<_>>(), vec![3, 2, 1]);
    let chunk = hoist_autobuild::read_log(server.store.path(), again.id, 0).unwrap();
    assert!(chunk.finished);
    assert!(String::from_utf8_lossy(&chunk.data).contains("trigger retry"));
}

#[test]
fn a_newer_commit_supersedes_a_queued_older_one_and_a_ref_never_builds_twice() {
    let repo = Repo::new();
    let a = git(&repo.work, &["rev-parse", "HEAD"]);
    let b = repo.commit("hello", "b", "b");
    let c = repo.commit("hello", "c", "c");
    repo.push("main");
    // Two build slots, so only the one-build-per-ref rule keeps B and C waiting.
    let server = TestServer::start(&config_text(repo.url(), 2, MAIN_RULE));
    server.rec.gate.close();

    let (_, first) = push_hook(&server, Provider::GitHub, "refs/heads/main", &a, "a");
    let first = queued_ids(&first)[0];
    wait_until("build A to start", || {
        server
            .rec
            .started
            .lock()
            .unwrap()
            .contains(&first)
            .then_some(())
    });
    let (_, second) = push_hook(&server, Provider::GitHub, "refs/heads/main", &b, "b");
    let second = queued_ids(&second)[0];
    let (status, third) = push_hook(&server, Provider::GitHub, "refs/heads/main", &c, "c");
    assert_eq!(status, 202);
    assert_eq!(third["queued"][0]["superseded"], json!([second]));
    let third = queued_ids(&third)[0];
    // B's record says it was superseded by C, before anything more ran.
    let bs: hoist_autobuild::BuildRecord = server
        .client()
        .get(server.url(&format!("/api/builds/{second}")))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (bs.state, bs.superseded_by),
        (BuildState::Superseded, Some(third))
    );
    assert_eq!(*server.rec.started.lock().unwrap(), vec![first]);

    server.rec.gate.open();
    assert_eq!(server.wait_final(first).state, BuildState::Succeeded);
    assert_eq!(server.wait_final(third).state, BuildState::Succeeded);
    let built: Vec<String> = server
        .rec
        .builds
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.sha.clone())
        .collect();
    assert_eq!(built, vec![a, c]);
    assert_eq!(*server.rec.overlaps.lock().unwrap(), 0);
}

#[test]
fn a_second_server_on_the_same_store_is_refused() {
    let repo = Repo::new();
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));
    let config = hoist_autobuild::Config::parse(
        &config_text(repo.url(), 1, MAIN_RULE),
        std::path::Path::new("t.toml"),
    )
    .unwrap();
    let executor = std::sync::Arc::new(recording_executor(Default::default()));
    let err = hoist_autobuild::Service::open(config, server.store.path(), executor)
        .err()
        .expect("a second service must be refused");
    assert!(
        matches!(err, hoist_autobuild::Error::AlreadyServing(ref p) if p.ends_with("autobuild/server.lock")),
        "{err}"
    );
}
