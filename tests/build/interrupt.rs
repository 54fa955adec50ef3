//! Ctrl-C: SIGINT to a `hoist build` in the middle of a RUN stops it cleanly.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::common::{hoist, spawn_build, Env, Spawned};

/// Processes whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) {
                found.push(format!("{name}: {cmdline}"));
            }
        }
    }
    found
}

/// Everything that says what the store holds: refs and images, cache records,
/// snapshots, and scratch space of builds.
fn store_state(root: &Path) -> (String, usize, BTreeSet<String>, String, usize) {
    let images = hoist(root, &["images", "--digests", "--no-trunc"], None);
    images.assert_ok();
    let images = images.stdout;
    let db = rusqlite::Connection::open(root.join("meta.db")).unwrap();
    let records: usize = db
        .query_row("SELECT COUNT(*) FROM build_cache", [], |row| row.get(0))
        .unwrap();
    let snapshots: BTreeSet<String> = std::fs::read_dir(root.join("snapshots/snapshots"))
        .map(|dir| {
            dir.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    // The committed and active snapshots (not the id counter, which moves on
    // for the removed active snapshot of the cancelled step).
    let snapshot_records = std::fs::read(root.join("snapshots/records.json"))
        .map(|bytes| {
            let records: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            records["snapshots"].to_string()
        })
        .unwrap_or_default();
    let scratch = std::fs::read_dir(root.join("tmp"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    (images, records, snapshots, snapshot_records, scratch)
}

#[test]
fn sigint_during_a_run_cancels_cleanly_with_status_130() {
    hoist_testutil::require_root!();
    let env = Env::new();
    // Warm the cache for the base image, so that the cancelled build would
    // add nothing that belongs to a completed step.
    env.dockerfile("FROM busybox\nRUN echo warm > /warm\n");
    env.build(&["-t", "warm:1"]).assert_ok();

    let marker = format!("hoist-sigint-test-{}", std::process::id());
    env.dockerfile(&format!(
        "FROM busybox\nRUN echo warm > /warm\nRUN sleep 60 && echo {marker} > /never\n"
    ));
    let before = store_state(env.root.path());

    let Spawned {
        mut child,
        lines: receiver,
        reader,
    } = spawn_build(&env, "cancelled:1");

    // Wait until the step runs: its sandboxed shell is visible in /proc.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    while processes_with(&marker).is_empty() {
        while let Ok(line) = receiver.try_recv() {
            seen.push(line);
        }
        assert!(
            Instant::now() < deadline,
            "the RUN step never started:\n{}",
            seen.join("\n")
        );
        assert!(child.try_wait().unwrap().is_none(), "{}", seen.join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // Our own child, not reaped yet: the pid is still its.
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = child.wait().unwrap();
    reader.join().unwrap();
    seen.extend(receiver.try_iter());
    let stderr = seen.join("\n");

    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("CANCELED"), "{stderr}");
    assert!(stderr.contains("build summary (cancelled):"), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .unwrap_or("")
            .contains("build cancelled"),
        "{stderr}"
    );
    assert_eq!(processes_with(&marker), Vec::<String>::new(), "{stderr}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let root = env.root.path().to_str().unwrap();
    assert!(
        !mounts.contains(root),
        "mounts left under the store:\n{mounts}"
    );
    let after = store_state(env.root.path());
    assert_eq!(after.0, before.0, "refs and images");
    assert_eq!(after.1, before.1, "cache records");
    assert_eq!(after.2, before.2, "snapshots");
    assert_eq!(after.3, before.3, "snapshot records");
    assert_eq!(after.4, before.4, "scratch directories");
    assert!(!hoist(env.root.path(), &["inspect", "cancelled:1"], None)
        .status
        .success());

    // The store still works: a new build runs and its file is there.
    env.dockerfile("FROM busybox\nRUN echo warm > /warm\nRUN echo after > /after\n");
    let (run, fs) = env.build_fs("after:1", &[]);
    run.assert_ok();
    assert_eq!(
        std::fs::read_to_string(fs.join("after")).unwrap(),
        "after\n"
    );
    assert_eq!(std::fs::read_to_string(fs.join("warm")).unwrap(), "warm\n");
}
