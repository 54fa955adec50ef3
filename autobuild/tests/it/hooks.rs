//! A post-receive hook installed into a bare repository queues builds on
//! `git push`.

use std::os::unix::fs::PermissionsExt;

use hoist_autobuild::BuildState;

use crate::common::*;
use crate::helper::hook_wrapper;

#[test]
fn installed_post_receive_hook_queues_a_build_on_git_push() {
    let repo = Repo::new();
    let server = TestServer::start(&config_text(repo.url(), 1, MAIN_RULE));
    let bin = tempfile::tempdir().unwrap();
    let program = hook_wrapper(bin.path());

    let hook =
        hoist_autobuild::install_hook(&repo.bare, &program, &server.url(""), "demo", Some(SECRET))
            .unwrap();
    assert_eq!(hook, repo.bare.join("hooks/post-receive"));
    let text = std::fs::read_to_string(&hook).unwrap();
    assert_eq!(
        text.lines().last().unwrap(),
        format!(
            "exec '{}' autobuild hook --server '{}' --repo 'demo' --secret '{SECRET}'",
            program.display(),
            server.url("")
        )
    );
    // It holds the secret: owner only.
    assert_eq!(
        std::fs::metadata(&hook).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let sha = repo.commit("hello", "pushed through the hook", "via hook");
    repo.push("main");
    // The hook ran during the push, so the build is queued already.
    let builds = server.builds();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let b = server.wait_final(builds[0].id);
    assert_eq!(b.state, BuildState::Succeeded, "{b:?}");
    assert_eq!((b.trigger.as_str(), b.sha.as_str()), ("hook", sha.as_str()));
    assert_eq!(b.git_ref, "refs/heads/main");
    assert_eq!(
        server.rec.builds.lock().unwrap()[0].tree["hello"],
        "pushed through the hook"
    );

    // Deleting a branch queues nothing.
    git(
        &repo.work,
        &["push", "-q", "origin", "main:refs/heads/extra"],
    );
    assert_eq!(server.builds().len(), 2);
    git(&repo.work, &["push", "-q", "origin", "--delete", "extra"]);
    assert_eq!(server.builds().len(), 2);

    assert!(matches!(
        hoist_autobuild::install_hook(bin.path(), &program, "http://x", "demo", None),
        Err(hoist_autobuild::Error::NotAGitDir(_))
    ));
}
