//! Signed push payloads of each provider queue and complete a build of the
//! exact commit they name.

use hoist_autobuild::{BuildState, Provider};
use serde_json::{json, Value};

use crate::common::*;

/// A push payload as `provider` sends it, for `git_ref` at `sha`.
pub fn payload(provider: Provider, git_ref: &str, sha: &str, message: &str) -> Value {
    match provider {
        Provider::Bitbucket => {
            let (kind, name) = match git_ref.strip_prefix("refs/tags/") {
                Some(n) => ("tag", n),
                None => ("branch", git_ref.trim_start_matches("refs/heads/")),
            };
            json!({"push": {"changes": [{
                "old": null,
                "new": {"type": kind, "name": name,
                        "target": {"type": "commit", "hash": sha, "message": message}}
            }]}})
        }
        Provider::GitLab => json!({
            "object_kind": "push", "ref": git_ref, "before": "0".repeat(40), "after": sha,
            "checkout_sha": sha, "commits": [{"id": sha, "message": message}]
        }),
        Provider::GitHub | Provider::Gitea => json!({
            "ref": git_ref, "before": "0".repeat(40), "after": sha, "deleted": false,
            "head_commit": {"id": sha, "message": message}
        }),
    }
}

fn event_name(provider: Provider, git_ref: &str) -> &'static str {
    match provider {
        Provider::GitHub | Provider::Gitea => "push",
        Provider::Bitbucket => "repo:push",
        Provider::GitLab if git_ref.starts_with("refs/tags/") => "Tag Push Hook",
        Provider::GitLab => "Push Hook",
    }
}

/// Send a signed webhook; (status, JSON body).
pub fn send_hook(
    server: &TestServer,
    provider: Provider,
    repo: &str,
    event: &str,
    body: &[u8],
    secret: &str,
) -> (u16, Value) {
    let r = server
        .client()
        .post(server.url(&format!("/hooks/{}/{repo}", provider.name())))
        .header(provider.event_header(), event)
        .header(provider.signature_header(), provider.sign(secret, body))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

pub fn push_hook(
    server: &TestServer,
    provider: Provider,
    git_ref: &str,
    sha: &str,
    msg: &str,
) -> (u16, Value) {
    let body = serde_json::to_vec(&payload(provider, git_ref, sha, msg)).unwrap();
    send_hook(
        server,
        provider,
        "demo",
        event_name(provider, git_ref),
        &body,
        SECRET,
    )
}

fn provider_builds_the_pushed_commit(provider: Provider) {
    let repo = Repo::new();
    // Two commits: the hook names the first, so the checkout must be that
    // exact commit and not the branch tip.
    let first = repo.commit("hello", "first content", "first");
    repo.commit("hello", "second content", "second");
    repo.push("main");
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));

    let (status, body) = push_hook(&server, provider, "refs/heads/main", &first, "first");
    assert_eq!(status, 202, "{body}");
    let ids = queued_ids(&body);
    assert_eq!(ids.len(), 1, "{body}");
    let b = server.wait_final(ids[0]);
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(b.sha, first);
    assert_eq!(b.git_ref, "refs/heads/main");
    assert_eq!(b.trigger, provider.name());
    assert_eq!(b.message, "first");
    assert_eq!(b.tags, vec!["127.0.0.1:5000/demo:main"]);
    assert_eq!(b.pushed, vec!["127.0.0.1:5000/demo:main"]);

    let recorded = server.rec.builds.lock().unwrap().clone();
    assert_eq!(recorded.len(), 1);
    let r = &recorded[0];
    assert_eq!(r.sha, first);
    assert_eq!((r.id, r.git_ref.as_str()), (b.id, "refs/heads/main"));
    assert_eq!(r.tree["hello"], "first content");
    assert_eq!(r.tree["Dockerfile"], "FROM scratch\nCOPY hello /hello\n");
    assert_eq!(r.tree.len(), 2, "{:?}", r.tree.keys());
    assert_eq!(r.build_args["VERSION"], format!("main-{}", &first[..7]));
    assert_eq!(b.digest.as_deref(), Some(digest_of(&r.dockerfile).as_str()));

    // The log is stored and served.
    let log = std::fs::read_to_string(
        server
            .store
            .path()
            .join(format!("autobuild/logs/{}.log", b.id)),
    )
    .unwrap();
    assert!(
        log.contains(&format!("checking out refs/heads/main {first}")),
        "{log}"
    );
    assert!(log.contains("test build function ran"), "{log}");
    let page = server.page(&format!("/builds/{}", b.id));
    assert!(page.contains("test build function ran"), "{page}");
}

#[test]
fn github_push_builds_the_pushed_commit() {
    provider_builds_the_pushed_commit(Provider::GitHub);
}

#[test]
fn bitbucket_push_builds_the_pushed_commit() {
    provider_builds_the_pushed_commit(Provider::Bitbucket);
}

#[test]
fn gitlab_push_builds_the_pushed_commit() {
    provider_builds_the_pushed_commit(Provider::GitLab);
}

#[test]
fn gitea_push_builds_the_pushed_commit() {
    provider_builds_the_pushed_commit(Provider::Gitea);
}

#[test]
fn tag_push_maps_through_a_rule_with_a_regex_group() {
    let repo = Repo::new();
    let sha = repo.commit("hello", "release", "release 1.2");
    git(&repo.work, &["tag", "v1.2"]);
    repo.push("v1.2");
    let rules = format!(
        "{MAIN_RULE}[[repo.rule]]\nsource = \"tag\"\nmatch = '^v([0-9]+)\\.([0-9]+)$'\n\
         tag = '127.0.0.1:5000/demo:{{\\1}}.{{\\2}}-{{short_sha}}'\npush = false\n"
    );
    let server = TestServer::start(&config_text(repo.url(), 1, &rules));
    let (status, body) = push_hook(&server, Provider::GitHub, "refs/tags/v1.2", &sha, "r");
    assert_eq!(status, 202, "{body}");
    let b = server.wait_final(queued_ids(&body)[0]);
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!(
        b.tags,
        vec![format!("127.0.0.1:5000/demo:1.2-{}", &sha[..7])]
    );
    assert!(b.pushed.is_empty());
    assert_eq!(
        server.rec.builds.lock().unwrap()[0].tree["hello"],
        "release"
    );

    // A tag no rule matches queues nothing.
    let (status, body) = push_hook(&server, Provider::GitHub, "refs/tags/nightly", &sha, "r");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["skipped"][0]["reason"], "no build rule matches");
    assert_eq!(server.builds().len(), 1);
}
