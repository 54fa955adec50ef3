//! SIGKILL of the server with builds queued and one running: after a restart
//! every build completes exactly once and the running one is requeued.

use std::process::{Child, Stdio};

use hoist_autobuild::{BuildRecord, BuildState};
use serde_json::json;

use crate::common::*;
use crate::helper::command;

/// Kills the server child when a failed assertion unwinds the test.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path, config: &std::path::Path, root: &std::path::Path) -> Reaper {
    Reaper(
        command("serve")
            .env("HOIST_HELPER_CONFIG", config)
            .env("HOIST_HELPER_ROOT", root)
            .env("HOIST_HELPER_DIR", dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("server.log")).unwrap())
            .spawn()
            .unwrap(),
    )
}

fn events(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("events"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn sigkill_with_builds_queued_and_running_loses_nothing() {
    let repo = Repo::new();
    let mut shas = Vec::new();
    for branch in ["b1", "b2", "b3"] {
        git(&repo.work, &["checkout", "-q", "-B", branch, "main"]);
        shas.push(repo.commit("hello", branch, branch));
        repo.push(branch);
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let port = hoist_testutil::free_port();
    let config = dir.path().join("autobuild.toml");
    std::fs::write(
        &config,
        config_text(repo.url(), 1, MAIN_RULE).replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::blocking::Client::new();
    let up = || {
        wait_until("the server to listen", || {
            client
                .get(format!("{base}/api/builds"))
                .send()
                .ok()
                .map(|_| ())
        })
    };

    std::fs::write(dir.path().join("block"), "").unwrap();
    let mut server = start(dir.path(), &config, &root);
    up();
    let mut ids = Vec::new();
    for (branch, sha) in ["b1", "b2", "b3"].iter().zip(&shas) {
        let r = client
            .post(format!("{base}/trigger/demo"))
            .header("x-hoist-token", SECRET)
            .json(&json!({"ref": format!("refs/heads/{branch}"), "sha": sha}))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 202);
        ids.push(queued_ids(&r.json().unwrap())[0]);
    }
    wait_until("the first build to start", || {
        events(dir.path())
            .contains(&format!("start {} {}", ids[0], shas[0]))
            .then_some(())
    });
    let states: Vec<BuildState> = api_builds(&client, &base)
        .iter()
        .rev()
        .map(|b| b.state)
        .collect();
    assert_eq!(
        states,
        [BuildState::Running, BuildState::Queued, BuildState::Queued]
    );

    server.0.kill().unwrap(); // SIGKILL
    server.0.wait().unwrap();
    std::fs::remove_file(dir.path().join("block")).unwrap();
    let mut server = start(dir.path(), &config, &root);
    up();

    let all = wait_until("every build to finish", || {
        let all = api_builds(&client, &base);
        (all.len() == 4 && all.iter().all(|b| b.state.is_final())).then_some(all)
    });
    let by_id = |id: i64| -> &BuildRecord { all.iter().find(|b| b.id == id).unwrap() };
    let interrupted = by_id(ids[0]);
    assert_eq!(interrupted.state, BuildState::Interrupted);
    let requeued = all.iter().find(|b| b.retry_of == Some(ids[0])).unwrap();
    assert_eq!(
        (
            requeued.state,
            requeued.attempt,
            requeued.trigger.as_str(),
            requeued.sha.as_str()
        ),
        (BuildState::Succeeded, 2, "requeue", shas[0].as_str())
    );
    assert_eq!(by_id(ids[1]).state, BuildState::Succeeded);
    assert_eq!(by_id(ids[2]).state, BuildState::Succeeded);

    // Every commit was built to the end exactly once; one at a time.
    let ev = events(dir.path());
    for sha in &shas {
        let done = ev
            .iter()
            .filter(|e| e.starts_with("done") && e.ends_with(sha.as_str()))
            .count();
        assert_eq!(done, 1, "{sha}: {ev:?}");
    }
    assert_eq!(ev[0], format!("start {} {}", ids[0], shas[0]));
    for pair in ev[1..].chunks(2) {
        let (s, d) = (&pair[0], &pair[1]);
        assert_eq!(s.replacen("start", "done", 1), *d, "{ev:?}");
    }
    assert_eq!(ev.len(), 7, "{ev:?}");

    // SIGTERM stops the server gracefully.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = server.0.wait().unwrap();
    assert!(
        exit.success(),
        "{exit:?}: {}",
        std::fs::read_to_string(dir.path().join("server.log")).unwrap()
    );
}
