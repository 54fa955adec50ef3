//! The PostgreSQL queue against a real PostgreSQL (Debian's `postgresql`,
//! started by hoist-testutil): migrations, claims by several workers,
//! supersede, leases, streamed logs; receivers and worker processes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use hoist_autobuild::pg::{PgError, PgQueue};
use hoist_autobuild::queue::NewBuild;
use hoist_autobuild::{BuildRecord, BuildState, Provider};
use hoist_testutil::postgres::Postgres;

use crate::common::*;
use crate::helper::command;
use crate::webhooks::push_hook;

fn new(git_ref: &str, sha: &str) -> NewBuild {
    NewBuild {
        repo: "demo".into(),
        git_ref: git_ref.into(),
        sha: sha.into(),
        trigger: "test".into(),
        message: String::new(),
    }
}

#[test]
fn a_fresh_database_is_initialised_once_and_a_newer_schema_is_refused() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.fresh_database("fresh");
    // Four processes' worth of first opens at once: one migration.
    let opened: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            std::thread::spawn(move || PgQueue::open(&url).map(|q| q.schema_version().unwrap()))
        })
        .collect();
    for t in opened {
        assert_eq!(t.join().unwrap().unwrap(), 1);
    }
    assert_eq!(
        pg.psql("fresh", "SELECT count(*) FROM autobuild_migrations"),
        "1\n"
    );
    let q = PgQueue::open(&url).unwrap();
    let e = q.enqueue(&new("refs/heads/main", "a")).unwrap();
    assert_eq!(q.get(e.id).unwrap().unwrap().state, BuildState::Queued);

    pg.psql(
        "fresh",
        "INSERT INTO autobuild_migrations (version) VALUES (99)",
    );
    let err = PgQueue::open(&url).unwrap_err();
    assert!(
        matches!(
            err,
            PgError::TooNew {
                found: 99,
                known: 1
            }
        ),
        "{err}"
    );

    // The client speaks no TLS: a URL that demands it is refused.
    assert!(PgQueue::open(&format!("{url}?sslmode=require")).is_err());

    // A wrong password never shows in the error.
    let bad = format!(
        "postgres://hoist:hunter2@127.0.0.1:{}/nosuchdb",
        hoist_testutil::free_port()
    );
    let err = PgQueue::open(&bad).unwrap_err().to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("nosuchdb"), "{err}");
}

#[test]
fn workers_claim_each_build_once_supersede_holds_and_expired_leases_requeue() {
    let Some(pg) = Postgres::start() else { return };
    let url = pg.fresh_database("claims");
    // Two "machines": separate connection pools.
    let a = Arc::new(PgQueue::open(&url).unwrap());
    let b = Arc::new(PgQueue::open(&url).unwrap());

    // Supersede across processes: queued older commits of a ref give way.
    let first = a.enqueue(&new("refs/heads/main", "1")).unwrap();
    let second = b.enqueue(&new("refs/heads/main", "2")).unwrap();
    assert_eq!(second.superseded, vec![first.id]);
    let old = a.get(first.id).unwrap().unwrap();
    assert_eq!(
        (old.state, old.superseded_by),
        (BuildState::Superseded, Some(second.id))
    );

    // A running build is never superseded, and its ref does not build twice.
    let running = a.claim_next("wa", "ta").unwrap().unwrap();
    assert_eq!(
        (running.id, running.worker.as_deref()),
        (second.id, Some("wa"))
    );
    let third = b.enqueue(&new("refs/heads/main", "3")).unwrap();
    assert!(third.superseded.is_empty());
    assert!(
        b.claim_next("wb", "tb").unwrap().is_none(),
        "main is building"
    );

    // 40 builds over 10 other refs, claimed by 8 threads over both pools.
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let q = if i % 2 == 0 { &a } else { &b };
        ids.insert(
            q.enqueue(&new(&format!("refs/heads/r{}", i % 10), &format!("s{i}")))
                .unwrap()
                .id,
        );
    }
    let claimers: Vec<_> = (0..8)
        .map(|t| {
            let q = Arc::clone(if t % 2 == 0 { &a } else { &b });
            std::thread::spawn(move || {
                let (name, token) = (format!("w{t}"), format!("t{t}"));
                let mut got = Vec::new();
                while let Some(r) = q.claim_next(&name, &token).unwrap() {
                    got.push((r.id, r.git_ref.clone()));
                    assert!(q.finish(r.id, Some(&token), Ok(("sha256:x", &[]))).unwrap());
                }
                got
            })
        })
        .collect();
    let mut claimed: Vec<(i64, String)> = Vec::new();
    for t in claimers {
        claimed.extend(t.join().unwrap());
    }
    let claimed_ids: Vec<i64> = claimed.iter().map(|(id, _)| *id).collect();
    let unique: BTreeSet<i64> = claimed_ids.iter().copied().collect();
    assert_eq!(unique.len(), claimed_ids.len(), "a build was claimed twice");
    // Everything not superseded ran; the superseded never did.
    let all = a.list(None, 1000).unwrap();
    for r in all.iter().filter(|r| ids.contains(&r.id)) {
        match r.state {
            BuildState::Succeeded => assert!(unique.contains(&r.id)),
            BuildState::Superseded => assert!(!unique.contains(&r.id)),
            s => panic!("build #{} is {s:?}", r.id),
        }
    }

    // Leases: `ta` keeps its heartbeat, a second claim does not.
    assert!(a
        .finish(running.id, Some("ta"), Ok(("sha256:y", &[])))
        .unwrap());
    let live = b.claim_next("wb", "tb").unwrap().unwrap();
    assert_eq!(live.id, third.id);
    let dead_build = a.enqueue(&new("refs/heads/dead", "d")).unwrap();
    let dead = a.claim_next("gone", "tdead").unwrap().unwrap();
    assert_eq!(dead.id, dead_build.id);
    // The dead worker's heartbeat is a minute old (the database's clock).
    pg.psql(
        "claims",
        &format!(
            "UPDATE autobuild_builds SET heartbeat_at = heartbeat_at - 60000 WHERE id = {}",
            dead.id
        ),
    );
    assert_eq!(b.heartbeat("tb").unwrap(), vec![live.id]);
    let r = a.requeue_expired(Duration::from_secs(30)).unwrap();
    assert_eq!(r.interrupted.len(), 1, "{r:?}");
    let (interrupted, copy) = r.interrupted[0];
    assert_eq!(interrupted, dead.id);
    let rec = a.get(dead.id).unwrap().unwrap();
    assert_eq!(rec.state, BuildState::Interrupted);
    assert!(rec.error.unwrap().contains("`gone`"));
    let copy = a.get(copy.unwrap()).unwrap().unwrap();
    assert_eq!(
        (
            copy.state,
            copy.attempt,
            copy.retry_of,
            copy.trigger.as_str()
        ),
        (BuildState::Queued, 2, Some(dead.id), "requeue")
    );
    // The dead worker coming back cannot record a result any more.
    assert!(!a
        .finish(dead.id, Some("tdead"), Ok(("sha256:z", &[])))
        .unwrap());
    assert_eq!(a.get(live.id).unwrap().unwrap().state, BuildState::Running);

    // Logs: chunks at offsets, read from any offset, a resent chunk once.
    b.append_log(live.id, 0, b"hello ").unwrap();
    b.append_log(live.id, 6, b"world\n").unwrap();
    b.append_log(live.id, 6, b"world\n").unwrap();
    assert_eq!(a.read_log(live.id, 0).unwrap(), b"hello world\n");
    assert_eq!(a.read_log(live.id, 8).unwrap(), b"rld\n");
    assert_eq!(a.read_log(live.id, 12).unwrap(), b"");

    // A stopping worker hands its build back: queued again, log restarted.
    assert_eq!(b.hand_back("tb").unwrap(), vec![live.id]);
    let back = a.get(live.id).unwrap().unwrap();
    assert_eq!((back.state, back.worker), (BuildState::Queued, None));
    assert_eq!(a.read_log(live.id, 0).unwrap(), b"");

    // An older commit never runs after a newer one of its ref: handed back
    // or expired while a newer build was queued, it gives way.
    let again = a.claim_next("wc", "tc").unwrap().unwrap();
    assert_eq!(again.id, live.id);
    let newer = a.enqueue(&new("refs/heads/main", "4")).unwrap();
    assert!(newer.superseded.is_empty(), "#{} is running", live.id);
    assert_eq!(a.hand_back("tc").unwrap(), vec![live.id]);
    let gave_way = a.get(live.id).unwrap().unwrap();
    assert_eq!(
        (gave_way.state, gave_way.superseded_by),
        (BuildState::Superseded, Some(newer.id))
    );
    // (The dead worker's requeued copy is older: it runs first.)
    let first = a.claim_next("wd", "td").unwrap().unwrap();
    assert_eq!(first.id, copy.id);
    assert!(a
        .finish(first.id, Some("td"), Ok(("sha256:c", &[])))
        .unwrap());
    let stale = a.claim_next("wd", "td").unwrap().unwrap();
    assert_eq!(stale.id, newer.id);
    let newest = a.enqueue(&new("refs/heads/main", "5")).unwrap();
    pg.psql(
        "claims",
        &format!(
            "UPDATE autobuild_builds SET heartbeat_at = heartbeat_at - 60000 WHERE id = {}",
            stale.id
        ),
    );
    let r = b.requeue_expired(Duration::from_secs(30)).unwrap();
    assert_eq!(r.interrupted, vec![(stale.id, None)]);
    let rec = a.get(stale.id).unwrap().unwrap();
    assert!(
        rec.error
            .unwrap()
            .contains(&format!("#{} is newer", newest.id)),
        "not requeued behind the newer commit"
    );
}

#[test]
fn a_database_restart_is_survived_by_connecting_again() {
    let Some(mut pg) = Postgres::start() else {
        return;
    };
    let url = pg.fresh_database("restart");
    let q = PgQueue::open(&url).unwrap();
    let e = q.enqueue(&new("refs/heads/main", "a")).unwrap();
    pg.stop();
    assert!(q.get(e.id).is_err(), "the database is down");
    pg.start_again();
    // The broken connection was dropped: the next call connects anew.
    assert_eq!(q.get(e.id).unwrap().unwrap().sha, "a");
    let claimed = q.claim_next("w", "t").unwrap().unwrap();
    assert_eq!(claimed.id, e.id);
}

/// The backend pids holding the base-watching advisory lock.
fn watch_lock_holders(pg: &Postgres) -> Vec<String> {
    pg.psql(
        "cluster",
        &format!(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
             AND ((classid::bigint << 32) | objid::bigint) = {}",
            hoist_autobuild::pg::WATCH_LOCK
        ),
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn one_receiver_at_a_time_watches_base_images_and_another_takes_over() {
    let Some(c) = cluster("30s") else { return };
    let text = c.config_text.replace(
        "[[repo.rule]]",
        "watch_base = true\npoll_interval = \"1h\"\n[[repo.rule]]",
    );
    let receiver = |rec| {
        TestServer::start_with(
            &text,
            tempfile::tempdir().unwrap(),
            Arc::clone(&rec),
            Arc::new(recording_executor(rec)),
            Some(hoist_registry::Client::new(Default::default()).unwrap()),
        )
    };
    let a = receiver(Arc::new(Recorder::default()));
    let first = wait_until("a receiver to be elected", || {
        let h = watch_lock_holders(&c._pg);
        (h.len() == 1).then_some(h)
    });
    let b = receiver(Arc::new(Recorder::default()));
    // b stands by while a holds the lock; a's end hands it to b.
    assert_eq!(watch_lock_holders(&c._pg), first);
    drop(a);
    let second = wait_until("the other receiver to take over", || {
        let h = watch_lock_holders(&c._pg);
        (h.len() == 1 && h != first).then_some(h)
    });
    assert_ne!(first, second);
    drop(b);
    wait_until("the lock to be released", || {
        watch_lock_holders(&c._pg).is_empty().then_some(())
    });
}

/// Kills a helper process when a failed assertion unwinds the test.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn signal(&self, sig: &str) {
        let status = std::process::Command::new("kill")
            .args([sig, &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.0.wait().unwrap()
    }
}

fn start_worker(dir: &Path, config: &Path, name: &str, drain_ms: u64) -> Proc {
    start_worker_with(dir, config, name, drain_ms, 1)
}

fn start_worker_with(
    dir: &Path,
    config: &Path,
    name: &str,
    drain_ms: u64,
    concurrency: usize,
) -> Proc {
    let root = dir.join(format!("store-{name}"));
    Proc(
        command("worker")
            .env("HOIST_HELPER_CONCURRENCY", concurrency.to_string())
            .env("HOIST_HELPER_CONFIG", config)
            .env("HOIST_HELPER_ROOT", &root)
            .env("HOIST_HELPER_DIR", dir)
            .env("HOIST_HELPER_NAME", name)
            .env("HOIST_HELPER_DRAIN_MS", drain_ms.to_string())
            .env_remove("HOIST_AUTOBUILD_QUEUE")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// `start`/`done` lines of the workers: (kind, build id, worker).
fn events(dir: &Path) -> Vec<(String, i64, String)> {
    std::fs::read_to_string(dir.join("events"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_string(), f[1].parse().unwrap(), f[3].to_string())
        })
        .collect()
}

struct Cluster {
    _pg: Postgres,
    dir: tempfile::TempDir,
    config: PathBuf,
    config_text: String,
    repo: Repo,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // A failed test shows what the workers said.
        if std::thread::panicking() {
            for e in std::fs::read_dir(self.dir.path()).unwrap().flatten() {
                if e.path().extension().is_some_and(|x| x == "log") || e.file_name() == "events" {
                    let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                    eprintln!("--- {}:\n{text}", e.path().display());
                }
            }
        }
    }
}

fn cluster(lease: &str) -> Option<Cluster> {
    let pg = Postgres::start()?;
    let url = pg.fresh_database("cluster");
    let repo = Repo::new();
    let dir = tempfile::tempdir().unwrap();
    let config_text = format!(
        "{}[queue]\nurl = {url:?}\nlease = {lease:?}\n",
        config_text(repo.url(), 1, MAIN_RULE)
    );
    let config = dir.path().join("autobuild.toml");
    std::fs::write(&config, &config_text).unwrap();
    Some(Cluster {
        _pg: pg,
        dir,
        config,
        config_text,
        repo,
    })
}

#[test]
fn receivers_queue_and_three_workers_build_each_push_once() {
    let Some(c) = cluster("30s") else { return };
    let dir = c.dir.path();
    // Ten branches, three commits each, pushed.
    let mut commits: Vec<(String, String)> = Vec::new();
    for i in 0..10 {
        let branch = format!("b{i}");
        git(&c.repo.work, &["checkout", "-q", "-B", &branch, "main"]);
        for n in 0..3 {
            let sha = c
                .repo
                .commit("file", &format!("{branch}-{n}"), &format!("{branch} {n}"));
            commits.push((format!("refs/heads/{branch}"), sha));
        }
        c.repo.push(&branch);
    }
    let receiver = TestServer::start(&c.config_text);
    let second = TestServer::start(&c.config_text);
    std::fs::write(dir.join("block"), "").unwrap();
    let workers: Vec<Proc> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| start_worker(dir, &c.config, n, 60_000))
        .collect();
    // Thirty webhook pushes, in commit order per ref, over both receivers.
    for (i, (git_ref, sha)) in commits.iter().enumerate() {
        let server = if i % 2 == 0 { &receiver } else { &second };
        let (status, body) = push_hook(server, Provider::GitHub, git_ref, sha, "push");
        assert_eq!(status, 202, "{body}");
    }
    // Every worker holds one build before any finishes: the work spreads.
    wait_until("three workers to start a build each", || {
        let started: BTreeSet<String> = events(dir).into_iter().map(|e| e.2).collect();
        (started.len() == 3).then_some(())
    });
    assert!(
        receiver.rec.started.lock().unwrap().is_empty(),
        "a receiver built"
    );
    std::fs::remove_file(dir.join("block")).unwrap();
    let all = wait_until("every build to end", || {
        let b = receiver.builds();
        (b.len() == 30 && b.iter().all(|b| b.state.is_final())).then_some(b)
    });
    let ev = events(dir);
    let mut runs: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (kind, id, worker) in &ev {
        if kind == "start" {
            runs.entry(*id).or_default().push(worker.clone());
        }
    }
    let mut per_ref: BTreeMap<&str, Vec<&BuildRecord>> = BTreeMap::new();
    for b in &all {
        per_ref.entry(b.git_ref.as_str()).or_default().push(b);
        match b.state {
            BuildState::Succeeded => {
                let on = runs
                    .get(&b.id)
                    .unwrap_or_else(|| panic!("#{} never ran", b.id));
                assert_eq!(on.len(), 1, "build #{} ran on {on:?}", b.id);
                assert_eq!(b.worker.as_deref(), Some(on[0].as_str()));
            }
            BuildState::Superseded => assert!(!runs.contains_key(&b.id)),
            s => panic!("build #{} is {s:?}: {:?}", b.id, b.error),
        }
    }
    // The newest commit of every ref was built.
    for (git_ref, sha) in commits.iter().skip(2).step_by(3) {
        assert!(
            per_ref[git_ref.as_str()]
                .iter()
                .any(|b| b.sha == *sha && b.state == BuildState::Succeeded),
            "{git_ref} {sha} not built"
        );
    }
    let workers_used: BTreeSet<&str> = all.iter().filter_map(|b| b.worker.as_deref()).collect();
    assert!(workers_used.len() >= 2, "{workers_used:?}");
    // The second receiver's page lists every build, with its worker.
    let page = second.page("/");
    for b in all.iter().take(30) {
        assert!(
            page.contains(&format!("id=\"build-{}\"", b.id)),
            "#{}",
            b.id
        );
    }
    assert!(page.contains("on w1") || page.contains("on w2") || page.contains("on w3"));
    // A build's log streamed from its worker is served by any receiver.
    let done = all
        .iter()
        .find(|b| b.state == BuildState::Succeeded)
        .unwrap();
    let log = second.page(&format!("/builds/{}", done.id));
    assert!(
        log.contains(&format!(
            "worker {} runs build {}",
            done.worker.as_deref().unwrap(),
            done.id
        )),
        "{log}"
    );
    for w in workers {
        w.signal("-TERM");
        assert!(w.wait().success());
    }
}

#[test]
fn a_sigkilled_workers_build_completes_on_another_and_sigterm_hands_back() {
    let Some(c) = cluster("3s") else { return };
    let dir = c.dir.path();
    let receiver = TestServer::start(&c.config_text);
    let sha = c.repo.commit("file", "one", "one");
    c.repo.push("main");
    std::fs::write(dir.join("block"), "").unwrap();
    let w1 = start_worker(dir, &c.config, "w1", 60_000);
    let (status, body) = push_hook(&receiver, Provider::GitHub, "refs/heads/main", &sha, "m");
    assert_eq!(status, 202, "{body}");
    let id = queued_ids(&body)[0];
    wait_until("w1 to start the build", || {
        events(dir)
            .contains(&("start".into(), id, "w1".into()))
            .then_some(())
    });
    // Streamed while it runs: the receiver shows the running build's log.
    wait_until("the running build's log on the receiver", || {
        let page = receiver.page(&format!("/builds/{id}"));
        page.contains(&format!("worker w1 runs build {id}"))
            .then_some(())
    });
    w1.signal("-KILL");
    let _ = w1.wait();
    let w2 = start_worker(dir, &c.config, "w2", 60_000);
    let interrupted = wait_until("the lease to expire", || {
        let b = receiver.wait_final(id);
        (b.state == BuildState::Interrupted).then_some(b)
    });
    assert_eq!(interrupted.worker.as_deref(), Some("w1"));
    assert!(interrupted.error.as_deref().unwrap().contains("`w1`"));
    let copy = wait_until("the requeued copy", || {
        receiver
            .builds()
            .into_iter()
            .find(|b| b.retry_of == Some(id))
    });
    wait_until("w2 to start the copy", || {
        events(dir)
            .contains(&("start".into(), copy.id, "w2".into()))
            .then_some(())
    });
    std::fs::remove_file(dir.join("block")).unwrap();
    let done = receiver.wait_final(copy.id);
    assert_eq!(
        (done.state, done.worker.as_deref(), done.attempt),
        (BuildState::Succeeded, Some("w2"), 2)
    );
    let builds = receiver.builds();
    assert_eq!(builds.len(), 2, "one record of the interruption, one copy");
    assert_eq!(
        events(dir).iter().filter(|e| e.0 == "done").count(),
        1,
        "the build ran to its end once"
    );

    // SIGTERM with a build running past the drain timeout: handed back.
    std::fs::write(dir.join("block"), "").unwrap();
    w2.signal("-TERM");
    assert!(w2.wait().success());
    let w3 = start_worker(dir, &c.config, "w3", 200);
    let sha2 = c.repo.commit("file", "two", "two");
    c.repo.push("main");
    let (_, body) = push_hook(&receiver, Provider::GitHub, "refs/heads/main", &sha2, "m");
    let id2 = queued_ids(&body)[0];
    wait_until("w3 to start", || {
        events(dir)
            .contains(&("start".into(), id2, "w3".into()))
            .then_some(())
    });
    w3.signal("-TERM");
    assert!(w3.wait().success());
    let back = receiver.builds().into_iter().find(|b| b.id == id2).unwrap();
    assert_eq!((back.state, back.worker), (BuildState::Queued, None));
    let log = std::fs::read_to_string(dir.join("w3.log")).unwrap();
    assert!(log.contains(&format!("handed_back: [{id2}]")), "{log}");
    // SIGTERM with a build running within the drain timeout: it finishes.
    let w4 = start_worker(dir, &c.config, "w4", 600_000);
    wait_until("w4 to start", || {
        events(dir)
            .contains(&("start".into(), id2, "w4".into()))
            .then_some(())
    });
    w4.signal("-TERM");
    std::fs::remove_file(dir.join("block")).unwrap();
    assert!(w4.wait().success());
    let done = receiver.wait_final(id2);
    assert_eq!(
        (done.state, done.worker.as_deref()),
        (BuildState::Succeeded, Some("w4"))
    );
    let log = std::fs::read_to_string(dir.join("w4.log")).unwrap();
    assert!(log.contains("finished: 1, handed_back: []"), "{log}");
}

#[test]
fn a_database_restart_under_a_running_build_loses_nothing() {
    let Some(mut c) = cluster("3s") else { return };
    let dir = c.dir.path().to_path_buf();
    let receiver = TestServer::start(&c.config_text);
    let sha = c.repo.commit("file", "one", "one");
    c.repo.push("main");
    std::fs::write(dir.join("block"), "").unwrap();
    let w1 = start_worker(&dir, &c.config, "w1", 60_000);
    let (status, body) = push_hook(&receiver, Provider::GitHub, "refs/heads/main", &sha, "m");
    assert_eq!(status, 202, "{body}");
    let id = queued_ids(&body)[0];
    wait_until("w1 to start the build", || {
        events(&dir)
            .contains(&("start".into(), id, "w1".into()))
            .then_some(())
    });
    // The database goes away under the running build and comes back.
    c._pg.stop();
    let (status, _) = push_hook(&receiver, Provider::GitHub, "refs/heads/dev", &sha, "m");
    assert_eq!(status, 500, "a push while the database is down is refused");
    c._pg.start_again();
    std::fs::remove_file(dir.join("block")).unwrap();
    let done = receiver.wait_final(id);
    assert_eq!(
        (done.state, done.worker.as_deref()),
        (BuildState::Succeeded, Some("w1")),
        "{done:?}"
    );
    assert_eq!(receiver.builds().len(), 1, "nothing requeued");
    let log = receiver.page(&format!("/builds/{id}"));
    assert!(log.contains(&format!("worker w1 runs build {id}")), "{log}");
    w1.signal("-TERM");
    assert!(w1.wait().success());
}

#[test]
fn a_worker_with_concurrency_two_runs_two_refs_at_once_but_never_one_ref_twice() {
    let Some(c) = cluster("30s") else { return };
    let dir = c.dir.path().to_path_buf();
    let receiver = TestServer::start(&c.config_text);
    git(&c.repo.work, &["checkout", "-q", "-B", "x", "main"]);
    let x1 = c.repo.commit("file", "x1", "x1");
    let x2 = c.repo.commit("file", "x2", "x2");
    c.repo.push("x");
    git(&c.repo.work, &["checkout", "-q", "-B", "y", "main"]);
    let y1 = c.repo.commit("file", "y1", "y1");
    c.repo.push("y");
    std::fs::write(dir.join("block"), "").unwrap();
    let w = start_worker_with(&dir, &c.config, "w", 60_000, 2);
    let push = |git_ref: &str, sha: &str| {
        let (status, body) = push_hook(&receiver, Provider::GitHub, git_ref, sha, "m");
        assert_eq!(status, 202, "{body}");
        queued_ids(&body)[0]
    };
    let started = |id: i64| events(&dir).iter().any(|e| e.0 == "start" && e.1 == id);
    let first = push("refs/heads/x", &x1);
    wait_until("x1 to start", || started(first).then_some(()));
    // x2 queued while x1 runs (not superseding it), then y1: the free slot
    // passes over x2 (its ref is building) and takes y1.
    let second = push("refs/heads/x", &x2);
    let other = push("refs/heads/y", &y1);
    wait_until("y1 to start beside x1", || started(other).then_some(()));
    assert!(!started(second), "x built twice at once");
    std::fs::remove_file(dir.join("block")).unwrap();
    for id in [first, second, other] {
        let b = receiver.wait_final(id);
        assert_eq!(
            (b.state, b.worker.as_deref()),
            (BuildState::Succeeded, Some("w"))
        );
    }
    let ev = events(&dir);
    let pos = |kind: &str, id: i64| ev.iter().position(|e| e.0 == kind && e.1 == id).unwrap();
    assert!(pos("done", first) < pos("start", second), "{ev:?}");
    w.signal("-TERM");
    assert!(w.wait().success());
}
