//! Garbage collection against a real store on disk (no root needed): the
//! size target holds, roots and leases are kept, least recently used goes
//! first.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use hoist_cache::gc::disk_usage;
use hoist_cache::{Descriptor, GcOptions, MediaType, NewCacheRecord, Store};

fn blob(store: &Store, seed: u8, len: usize) -> String {
    // Incompressible-ish bytes so sizes on disk are predictable.
    let bytes: Vec<u8> = (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2_654_435_761)
                .rotate_left(seed as u32) as u8
                ^ seed
        })
        .collect();
    store.content().put(&bytes).unwrap().digest.to_string()
}

fn tag(store: &Store, name: &str, layer: &str) {
    let config = store
        .content()
        .put(b"{\"rootfs\":{\"diff_ids\":[]}}")
        .unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config.digest.to_string(), "size": config.size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": layer, "size": 1}],
    });
    let bytes = serde_json::to_vec(&manifest).unwrap();
    let m = store.content().put(&bytes).unwrap();
    store
        .set_ref(
            name,
            &Descriptor::new(MediaType::ImageManifest, m.size, m.digest),
        )
        .unwrap();
}

fn record(store: &Store, key: &str, blobs: &[&str], lease: Option<&hoist_cache::Lease>) {
    store
        .put_cache_record(
            &NewCacheRecord {
                key: key.into(),
                final_key: key.into(),
                output: b"{}".to_vec(),
                blobs: blobs.iter().map(|b| b.to_string()).collect(),
                description: format!("RUN {key}"),
                ..NewCacheRecord::default()
            },
            lease,
        )
        .unwrap();
}

fn present(store: &Store, digest: &str) -> bool {
    store.content().contains(&digest.parse().unwrap())
}

#[test]
fn size_target_evicts_least_recently_used_and_keeps_tagged_images() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let image_layer = blob(&store, 1, 200_000);
    tag(&store, "docker.io/library/app:1", &image_layer);
    let mut layers = Vec::new();
    for n in 0..5u8 {
        let layer = blob(&store, 10 + n, 200_000);
        // Each record also names the image's layer (a chain built on it).
        record(&store, &format!("k{n}"), &[&image_layer, &layer], None);
        layers.push(layer);
        std::thread::sleep(std::time::Duration::from_millis(3));
    }
    // k0 used most recently: it must outlive k1..k4.
    store.use_cache_record("k0", None).unwrap().unwrap();
    let before = disk_usage(dir.path());
    let target = before - 500_000;
    let report = store
        .collect_garbage(
            &GcOptions {
                keep_storage: Some(target),
                ..GcOptions::default()
            },
            &[],
        )
        .unwrap();
    let after = disk_usage(dir.path());
    assert!(after <= target, "{after} > {target}");
    assert_eq!(report.usage_after, after);
    let removed: Vec<&str> = report
        .removed
        .iter()
        .filter(|r| r.kind == "cache record")
        .map(|r| r.id.as_str())
        .collect();
    assert_eq!(removed, ["k1", "k2", "k3"], "{report:#?}");
    assert!(present(&store, &image_layer));
    assert!(present(&store, &layers[0]) && present(&store, &layers[4]));
    assert!(!present(&store, &layers[1]));
}

#[test]
fn leases_protect_what_a_build_uses_and_makes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let used = blob(&store, 1, 50_000);
    let other = blob(&store, 2, 50_000);
    record(&store, "used", &[&used], None);
    record(&store, "other", &[&other], None);
    // Old content, as far as file times go.
    for digest in [&used, &other] {
        let path = store.content().blob_path(&digest.parse().unwrap()).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        std::fs::File::open(path)
            .unwrap()
            .set_modified(old)
            .unwrap();
    }
    let lease = store.create_lease("build").unwrap();
    // The build reads one record and writes a new blob it has not recorded yet.
    store
        .use_cache_record("used", Some(&lease))
        .unwrap()
        .unwrap();
    let fresh = blob(&store, 3, 50_000);
    let all = GcOptions {
        all: true,
        ..GcOptions::default()
    };
    let report = store.collect_garbage(&all, &[]).unwrap();
    assert!(present(&store, &used), "{report:#?}");
    assert!(present(&store, &fresh), "{report:#?}");
    assert!(!present(&store, &other), "{report:#?}");
    assert!(report.in_use >= 1);
    // Once released, nothing protects them.
    store.release_lease(&lease).unwrap();
    store.collect_garbage(&all, &[]).unwrap();
    assert!(!present(&store, &used));
    assert!(!present(&store, &fresh));
    assert!(store.list_cache_records().unwrap().is_empty());
}

#[test]
fn a_writer_refreshing_a_blob_keeps_it_from_a_collection() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let digest = blob(&store, 4, 10_000);
    let path = store.content().blob_path(&digest.parse().unwrap()).unwrap();
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let lease = store.create_lease("build").unwrap();
    // The build produces the same bytes again: the existing blob is refreshed.
    let again = blob(&store, 4, 10_000);
    assert_eq!(again, digest);
    let report = store
        .collect_garbage(
            &GcOptions {
                all: true,
                ..GcOptions::default()
            },
            &[],
        )
        .unwrap();
    assert!(present(&store, &digest), "{report:#?}");
    store.release_lease(&lease).unwrap();
}

/// A cache mount a step holds (its `.lock` flocked, as the builder does)
/// survives `prune --all`; an idle one and its lock file go.
#[test]
fn prune_all_removes_idle_cache_mounts_and_keeps_one_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mounts = dir.path().join(hoist_cache::gc::CACHE_MOUNTS_DIR);
    for stem in ["idle", "busy"] {
        std::fs::create_dir_all(mounts.join(stem)).unwrap();
        std::fs::write(mounts.join(stem).join("data"), vec![7u8; 50_000]).unwrap();
        std::fs::write(mounts.join(format!("{stem}.lock")), b"").unwrap();
    }
    // A staging directory being filled is not a cache mount yet.
    std::fs::create_dir_all(mounts.join("new.new-1")).unwrap();
    // util-linux flock holds the lock from another process, as a build
    // step's lease would; wait until it has it.
    let mut holder = std::process::Command::new("flock")
        .args([
            "-s",
            mounts.join("busy.lock").to_str().unwrap(),
            "sleep",
            "30",
        ])
        .spawn()
        .unwrap();
    while std::process::Command::new("flock")
        .args([
            "-n",
            "-x",
            mounts.join("busy.lock").to_str().unwrap(),
            "true",
        ])
        .status()
        .unwrap()
        .success()
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let report = store
        .collect_garbage(
            &GcOptions {
                all: true,
                ..GcOptions::default()
            },
            &[],
        )
        .unwrap();
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(!mounts.join("idle").exists());
    assert!(!mounts.join("idle.lock").exists());
    assert!(mounts.join("busy/data").exists());
    assert!(mounts.join("new.new-1").exists());
    assert!(report.in_use >= 1, "{report:?}");
}
