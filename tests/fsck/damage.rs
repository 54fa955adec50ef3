//! `hoist fsck` finds each kind of damage and leftover in a store a real
//! build made, in text and JSON, and `--repair` removes exactly what cannot
//! be trusted: the next build works.

use std::fs;
use std::time::{Duration, SystemTime};

use super::common::Env;
use super::util::{assert_sound, blob_names, fsck, fsck_json};

const DOCKERFILE: &str = "FROM busybox\nRUN echo one > /one\nRUN echo two > /two\n";

/// The digest of the image's last layer (the second RUN step's).
fn last_layer(env: &Env, image: &str) -> String {
    let manifest = &env.inspect(image)["Manifest"];
    let layers = manifest["layers"].as_array().unwrap();
    layers.last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn fsck_finds_each_kind_of_damage_and_repair_fixes_it() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(DOCKERFILE);
    env.build(&["-t", "app"]).assert_ok();
    let root = env.root.path();
    let text = fsck(root, &[]);
    text.assert_ok();
    assert!(text.stdout.contains("is sound"), "{}", text.stdout);
    let before = blob_names(root);

    // A corrupt blob: the last RUN layer, one byte changed.
    let layer = last_layer(&env, "app");
    let blob = root.join("content/blobs/sha256").join(&layer[7..]);
    let mut bytes = fs::read(&blob).unwrap();
    bytes[10] ^= 0xff;
    fs::write(&blob, &bytes).unwrap();
    // A deleted snapshot: the directory of the base image's chain.
    let records: serde_json::Value =
        serde_json::from_slice(&fs::read(root.join("snapshots/records.json")).unwrap()).unwrap();
    let (base, record) = records["snapshots"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(_, r)| r["parent"].is_null())
        .unwrap();
    let dir = root
        .join("snapshots/snapshots")
        .join(record["id"].as_u64().unwrap().to_string());
    fs::remove_dir_all(&dir).unwrap();
    // An ingest leftover: what a writer killed mid-blob leaves.
    let leftover = root.join("content/ingest/5eed0000aaaa");
    fs::write(&leftover, vec![7u8; 4096]).unwrap();
    fs::File::options()
        .write(true)
        .open(&leftover)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(60))
        .unwrap();
    // A lease of a process that is gone.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    let store = hoist_cache::Store::open(root).unwrap();
    store
        .db()
        .write(|tx| {
            tx.execute(
                "INSERT INTO leases VALUES ('deadlease', ?1, 1, 0, 99999999999999, 'build')",
                [pid],
            )
        })
        .unwrap();
    drop(store);

    // Text.
    let run = fsck(root, &[]);
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout, run.stderr);
    for line in [
        format!("damaged blob {layer}: content does not match its name"),
        "damaged ref docker.io/library/app:latest: layer".to_string(),
        "damaged cache record ".to_string(),
        format!("damaged snapshot {base}: its directory snapshots/"),
        "leftover ingest 5eed0000aaaa: 4096 bytes of an ingest no process is writing".to_string(),
        format!("leftover lease deadlease: held by process {pid} (build), which is gone"),
    ] {
        assert!(
            run.stdout.contains(&line),
            "no `{line}` in:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stderr.contains("is damaged: 4 problems"),
        "{}",
        run.stderr
    );
    // JSON: the same findings, and the counts per kind.
    let doc = fsck_json(root, &[]);
    assert_eq!(doc["sound"], false);
    assert_eq!(doc["unrepaired_damage"], 4);
    for (kind, damaged, leftover) in [
        ("blob", 1, 0),
        ("ref", 1, 0),
        ("cache record", 1, 0),
        ("snapshot", 1, 0),
        ("ingest", 0, 1),
        ("lease", 0, 1),
        ("index", 0, 0),
    ] {
        assert_eq!(doc["kinds"][kind]["damaged"], damaged, "{kind}: {doc}");
        assert_eq!(doc["kinds"][kind]["leftover"], leftover, "{kind}: {doc}");
    }
    // Checking changed nothing.
    assert_eq!(blob_names(root), before);

    // Repair.
    let doc = fsck_json(root, &["--repair"]);
    assert_eq!(doc["sound"], true, "{doc}");
    let findings = doc["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 6, "{doc}");
    assert!(findings.iter().all(|f| f["repaired"].is_string()), "{doc}");
    // Only the corrupt blob went: every other blob is still there.
    let after = blob_names(root);
    let expected: Vec<String> = before
        .iter()
        .filter(|b| **b != layer[7..])
        .cloned()
        .collect();
    assert_eq!(after, expected);
    assert!(!leftover.exists());
    let run = fsck(root, &[]);
    run.assert_ok();
    assert!(run.stdout.contains("is sound"), "{}", run.stdout);
    assert!(!run.stdout.contains("damaged"), "{}", run.stdout);

    // The next build works: the step whose layer was corrupt runs again,
    // the base chain's snapshot is made again from its blobs.
    let run = env.build(&["-t", "app"]);
    run.assert_ok();
    assert!(run.stderr.contains("RUN echo two"), "{}", run.stderr);
    let (run, fs_dir) = env.build_fs("app", &[]);
    run.assert_ok();
    assert_eq!(fs::read_to_string(fs_dir.join("two")).unwrap(), "two\n");
    assert_eq!(fs::read_to_string(fs_dir.join("one")).unwrap(), "one\n");
    assert_sound(root, "after the rebuild");
    let doc = fsck_json(root, &[]);
    assert_eq!(doc["findings"].as_array().unwrap().len(), 0, "{doc}");
}

#[test]
fn repair_of_a_sound_store_removes_nothing() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(DOCKERFILE);
    env.build(&["-t", "app"]).assert_ok();
    let root = env.root.path();
    let blobs = blob_names(root);
    let records = fs::read(root.join("snapshots/records.json")).unwrap();
    let index = fs::read(root.join("content/index.json")).unwrap();
    let doc = fsck_json(root, &["--repair"]);
    assert_eq!(doc["sound"], true);
    assert_eq!(doc["findings"].as_array().unwrap().len(), 0, "{doc}");
    assert!(
        doc["kinds"]["blob"]["checked"].as_u64().unwrap() >= 5,
        "{doc}"
    );
    assert_eq!(blob_names(root), blobs);
    assert_eq!(
        fs::read(root.join("snapshots/records.json")).unwrap(),
        records
    );
    assert_eq!(fs::read(root.join("content/index.json")).unwrap(), index);
    let run = env.build(&["-t", "app"]);
    run.assert_ok();
    // FROM and both RUN steps.
    assert_eq!(
        super::common::cached_steps(&run.stderr),
        3,
        "{}",
        run.stderr
    );
}

#[test]
fn fsck_and_repair_while_builds_run_find_no_damage_and_break_nothing() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\nARG N=0\nRUN head -c 2000000 /dev/urandom > /a-$N\n\
         RUN head -c 2000000 /dev/urandom > /b-$N\nRUN sleep 0.2; ls / > /list\n",
    );
    let root = env.root.path();
    for n in 0..3 {
        let arg = format!("N={n}");
        let mut child = env
            .hoist()
            .command()
            .args([
                "build",
                "--progress",
                "plain",
                "-t",
                "app",
                "--build-arg",
                &arg,
            ])
            .arg(env.context.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut checks = 0;
        while child.try_wait().unwrap().is_none() {
            let repair = if checks % 2 == 0 {
                &["--repair"][..]
            } else {
                &[][..]
            };
            let doc = fsck_json(root, repair);
            assert_eq!(doc["sound"], true, "fsck during build {n}: {doc:#}");
            let findings = doc["findings"].as_array().unwrap();
            assert!(
                findings.is_empty(),
                "a running build's work is neither damage nor leftover: {doc:#}"
            );
            checks += 1;
        }
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "build {n} beside fsck: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(checks > 0);
        let (_, fs_dir) = env.build_fs("app", &["--build-arg", &arg]);
        assert!(fs_dir.join(format!("b-{n}")).exists());
    }
    assert_sound(root, "after the builds");
}
