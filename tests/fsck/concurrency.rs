//! Many builds on one store: eight `hoist build`s (four of different
//! Dockerfiles, four of the same one) while `hoist prune -a` runs in a loop
//! and `hoist images` is polled; and two builds computing the same step at
//! the same moment. Every build succeeds, every image reads back whole,
//! `hoist fsck` finds nothing, and a step computed twice at once leaves one
//! cache record.
//!
//! No timing: the RUN steps that must overlap meet at a TCP rendezvous the
//! test holds (each step connects and waits for `go`, which the test sends
//! once all have connected), so they run at the same time however slow the
//! machine is.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;

use super::common::{hoist, Env, HOIST};
use super::util::fsck_json;

/// The RUN line that waits at the rendezvous on `port`, then writes
/// `bytes` random bytes to `/r` (so that two computations of the step
/// differ, and a mix-up of their layers shows).
fn rendezvous_step(port: u16, bytes: usize) -> String {
    format!(
        "RUN until nc 127.0.0.1 {port} </dev/null 2>/dev/null | grep -q go; do sleep 0.1; done; \
         head -c {bytes} /dev/urandom > /r && sha256sum /r > /r.sum\n"
    )
}

/// Accepts `n` connections on `listener`, runs `meanwhile` (the steps
/// behind them are all running), then answers `go` to each.
fn release_when_all_wait(
    listener: TcpListener,
    n: usize,
    meanwhile: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let waiting: Vec<TcpStream> = (0..n).map(|_| listener.accept().unwrap().0).collect();
        meanwhile();
        for mut w in waiting {
            // A step's nc may have given up and retried; it reconnects.
            let _ = w.write_all(b"go\n");
        }
        // Late retries of a step that missed its `go` get one too.
        listener.set_nonblocking(true).unwrap();
        for _ in 0..50 {
            match listener.accept() {
                Ok((mut w, _)) => {
                    let _ = w.write_all(b"go\n");
                }
                Err(_) => thread::sleep(std::time::Duration::from_millis(100)),
            }
        }
    })
}

/// `hoist build -t TAG CONTEXT` in the background, host network (for the
/// rendezvous), output collected.
fn spawn_build(root: &Path, context: &Path, tag: &str) -> Child {
    Command::new(HOIST)
        .arg("--root")
        .arg(root)
        .args(["build", "--progress", "plain", "--network", "host"])
        .args(["--allow", "network.host", "-t", tag])
        .arg(context)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ok(child: Child, what: &str) -> String {
    wait_all(vec![child], what).remove(0)
}

/// Waits for every build; the first that fails kills the others (one
/// waiting at the rendezvous would wait for ever) and fails the test with
/// its output. Returns each build's stderr.
fn wait_all(children: Vec<Child>, what: &str) -> Vec<String> {
    let mut children: Vec<(Child, thread::JoinHandle<String>)> = children
        .into_iter()
        .map(|mut c| {
            let mut stderr = c.stderr.take().unwrap();
            let mut stdout = c.stdout.take().unwrap();
            thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
            let reader = thread::spawn(move || {
                let mut s = String::new();
                let _ = stderr.read_to_string(&mut s);
                s
            });
            (c, reader)
        })
        .collect();
    let mut done = vec![false; children.len()];
    while done.iter().any(|d| !d) {
        for i in 0..children.len() {
            if done[i] {
                continue;
            }
            if let Some(status) = children[i].0.try_wait().unwrap() {
                done[i] = true;
                if !status.success() {
                    for (c, _) in &mut children {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    let (_, reader) = children.swap_remove(i);
                    panic!("{what} {i} failed ({status}):\n{}", reader.join().unwrap());
                }
            }
        }
        thread::sleep(std::time::Duration::from_millis(100));
    }
    children
        .into_iter()
        .map(|(_, reader)| reader.join().unwrap())
        .collect()
}

/// The image's files as `hoist save` writes them (docker format, layers
/// applied in order, whiteouts ignored: these images have none):
/// path → content. Reading it needs the config and every layer blob.
fn files_of(root: &Path, scratch: &Path, image: &str) -> BTreeMap<String, Vec<u8>> {
    let tar = scratch.join(format!("{}.tar", image.replace([':', '/'], "-")));
    hoist(root, &["save", "-o", tar.to_str().unwrap(), image], None).assert_ok();
    let mut entries: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut archive = tar::Archive::new(std::fs::File::open(&tar).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        entries.insert(name, bytes);
    }
    std::fs::remove_file(&tar).unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(&entries["manifest.json"]).unwrap();
    let config = manifest[0]["Config"].as_str().unwrap();
    let config: serde_json::Value = serde_json::from_slice(&entries[config]).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    assert_eq!(
        layers.len(),
        config["rootfs"]["diff_ids"].as_array().unwrap().len(),
        "{image}: layers against diff_ids"
    );
    let mut files = BTreeMap::new();
    for layer in layers {
        let bytes = &entries[layer.as_str().unwrap()];
        let mut layer = tar::Archive::new(&bytes[..]);
        for entry in layer.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut content = Vec::new();
            entry.read_to_end(&mut content).unwrap();
            files.insert(name.trim_start_matches("./").to_string(), content);
        }
    }
    files
}

/// `/r` and the checksum the step took of it agree: the layer holds what
/// the step wrote, whole.
fn assert_step_output_whole(files: &BTreeMap<String, Vec<u8>>, image: &str) -> Vec<u8> {
    let r = files
        .get("r")
        .unwrap_or_else(|| panic!("{image}: no /r in {:?}", files.keys()));
    let sum = String::from_utf8_lossy(&files["r.sum"]).into_owned();
    assert_eq!(
        sum.split_whitespace().next().unwrap(),
        hoist_testutil::sha256_hex(r),
        "{image}: /r is not what the step wrote"
    );
    r.clone()
}

fn assert_fsck_clean(root: &Path, what: &str) {
    let doc = fsck_json(root, &[]);
    assert_eq!(doc["sound"], true, "{what}: {doc:#}");
    let findings = doc["findings"].as_array().unwrap();
    assert!(findings.is_empty(), "{what}: fsck reports {doc:#}");
}

/// Cache records whose step description contains `needle`, read from the
/// store's database (what `hoist du -v` lists).
fn records_of_step(root: &Path, needle: &str) -> usize {
    let db = rusqlite::Connection::open(root.join("meta.db")).unwrap();
    db.query_row(
        "SELECT count(*) FROM build_cache WHERE instr(description, ?1) > 0",
        [needle],
        |r| r.get::<_, i64>(0),
    )
    .unwrap() as usize
}

#[test]
fn eight_builds_share_a_store_while_prune_loops_and_images_is_polled() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let root = env.root.path().to_path_buf();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Four identical builds meet at the rendezvous: the same step computed
    // four times at once. The four others differ from each other and from
    // them (their first step), and do not wait.
    let same = format!(
        "FROM busybox\nRUN echo same > /id\n{}COPY f /f\n",
        rendezvous_step(port, 200_000)
    );
    let contexts: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    for (i, dir) in contexts.iter().enumerate() {
        let dockerfile = if i < 4 {
            format!(
                "FROM busybox\nRUN echo distinct-{i} > /id\n\
                 RUN head -c 200000 /dev/urandom > /r && sha256sum /r > /r.sum\nCOPY f /f\n"
            )
        } else {
            same.clone()
        };
        std::fs::write(dir.path().join("Dockerfile"), dockerfile).unwrap();
        let f = if i < 4 {
            format!("file {i}")
        } else {
            "file same".into()
        };
        std::fs::write(dir.path().join("f"), f).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let prunes = Arc::new(AtomicUsize::new(0));
    let polls = Arc::new(AtomicUsize::new(0));
    let pruner = {
        let (stop, prunes, root) = (stop.clone(), prunes.clone(), root.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let run = hoist(&root, &["prune", "-a", "-f"], None);
                assert_eq!(run.code(), 0, "prune -a failed:\n{}", run.stderr);
                prunes.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let poller = {
        let (stop, polls, root) = (stop.clone(), polls.clone(), root.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let run = hoist(&root, &["images", "--format", "json"], None);
                assert_eq!(run.code(), 0, "hoist images failed:\n{}", run.stderr);
                for line in run.stdout.lines() {
                    let image: serde_json::Value = serde_json::from_str(line)
                        .unwrap_or_else(|e| panic!("{e}: {line:?} of\n{}", run.stdout));
                    assert!(image["Digest"].as_str().is_some(), "{line}");
                }
                polls.fetch_add(1, Ordering::SeqCst);
            }
        })
    };

    // While the four steps run, two whole prunes and a poll: what they
    // hold (leases, snapshots, base blobs) must survive `prune -a`.
    let rendezvous = {
        let (prunes, polls) = (prunes.clone(), polls.clone());
        release_when_all_wait(listener, 4, move || {
            let (p, q) = (prunes.load(Ordering::SeqCst), polls.load(Ordering::SeqCst));
            while prunes.load(Ordering::SeqCst) < p + 2 || polls.load(Ordering::SeqCst) < q + 1 {
                thread::sleep(std::time::Duration::from_millis(50));
            }
        })
    };
    let builds: Vec<Child> = contexts
        .iter()
        .enumerate()
        .map(|(i, dir)| spawn_build(&root, dir.path(), &format!("c:{i}")))
        .collect();
    let logs = wait_all(builds, "build");
    rendezvous.join().unwrap();
    // At least one full prune and one poll ran beside the builds.
    while prunes.load(Ordering::SeqCst) < 1 || polls.load(Ordering::SeqCst) < 1 {
        thread::sleep(std::time::Duration::from_millis(50));
    }
    stop.store(true, Ordering::SeqCst);
    pruner.join().expect("the prune loop failed");
    poller.join().expect("the images poll failed");
    eprintln!(
        "eight builds: {} prune -a and {} images polls beside them",
        prunes.load(Ordering::SeqCst),
        polls.load(Ordering::SeqCst)
    );

    for (i, log) in logs.iter().enumerate() {
        let image = format!("c:{i}");
        let files = files_of(&root, env.scratch.path(), &image);
        let id = if i < 4 {
            format!("distinct-{i}\n")
        } else {
            "same\n".into()
        };
        assert_eq!(
            String::from_utf8_lossy(&files["id"]),
            id,
            "{image}: /id\n{}",
            log
        );
        let f = if i < 4 {
            format!("file {i}")
        } else {
            "file same".into()
        };
        assert_eq!(String::from_utf8_lossy(&files["f"]), f, "{image}: /f");
        assert_step_output_whole(&files, &image);
        assert!(files.contains_key("bin/busybox"), "{image}: no base layer");
    }
    assert_fsck_clean(&root, "after eight builds beside prune -a");
    // The store still builds.
    let _ = wait_ok(
        spawn_build(&root, contexts[0].path(), "c:0-again"),
        "a build after",
    );
    assert_fsck_clean(&root, "after the next build");
}

#[test]
fn two_builds_computing_one_step_at_once_leave_one_record_and_two_sound_images() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let root = env.root.path();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    env.dockerfile(&format!(
        "FROM busybox\n{}RUN echo after > /after\n",
        rendezvous_step(port, 300_000)
    ));
    let rendezvous = release_when_all_wait(listener, 2, || ());
    let a = spawn_build(root, env.context.path(), "twin:a");
    let b = spawn_build(root, env.context.path(), "twin:b");
    let logs = wait_all(vec![a, b], "twin build");
    let (log_a, log_b) = (&logs[0], &logs[1]);
    rendezvous.join().unwrap();
    // Neither found the step in the cache: both computed it.
    for log in [log_a, log_b] {
        let summary = log
            .lines()
            .find(|l| l.contains("] RUN until nc") && !l.starts_with('#'))
            .unwrap_or_else(|| panic!("no summary line of the step:\n{log}"));
        assert!(
            summary.contains(" done "),
            "a build took the step from the cache:\n{log}"
        );
    }

    assert_eq!(
        records_of_step(root, "nc 127.0.0.1"),
        1,
        "cache records of the step computed twice at once"
    );
    assert_eq!(records_of_step(root, "echo after"), 1);
    let ra = assert_step_output_whole(&files_of(root, env.scratch.path(), "twin:a"), "twin:a");
    let rb = assert_step_output_whole(&files_of(root, env.scratch.path(), "twin:b"), "twin:b");
    assert_eq!(ra.len(), 300_000);
    assert_eq!(rb.len(), 300_000);
    assert_fsck_clean(root, "after the twin builds");

    // The one record is one of the two results, whole: a third build takes
    // it from the cache and gets the same bytes as one of them.
    let c = spawn_build(root, env.context.path(), "twin:c");
    let log_c = wait_ok(c, "build c");
    assert!(
        log_c.contains("3 cached, 0 run"),
        "the third build ran a step:\n{log_c}"
    );
    let rc = assert_step_output_whole(&files_of(root, env.scratch.path(), "twin:c"), "twin:c");
    assert!(rc == ra || rc == rb, "the cached /r is neither build's");
    assert_fsck_clean(root, "after the cached build");
}
