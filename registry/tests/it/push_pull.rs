//! Push to an open registry, pull back, skip what exists, mount, platforms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use hoist_registry::{
    BlobStore, Client, ErrorKind, Platform, PullEvent, PullOptions, PushEvent, PushOptions,
    Reference, RegistryError,
};
use hoist_testutil::Registry;

use crate::require_registry;
use crate::util::*;

fn pull_events() -> (Arc<Mutex<Vec<PullEvent>>>, PullOptions) {
    let seen: Arc<Mutex<Vec<PullEvent>>> = Arc::default();
    let sink = seen.clone();
    let options = PullOptions {
        platform: None,
        events: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
    };
    (seen, options)
}

fn push_events() -> (Arc<Mutex<Vec<PushEvent>>>, PushOptions) {
    let seen: Arc<Mutex<Vec<PushEvent>>> = Arc::default();
    let sink = seen.clone();
    let options = PushOptions {
        events: Some(Arc::new(move |e| sink.lock().unwrap().push(e))),
        mount_sources: HashMap::new(),
    };
    (seen, options)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_then_pull_same_digests_and_bytes_and_second_push_uploads_nothing() {
    require_registry!();
    let reg = Registry::start();
    let image = make_image(&[1 << 20, 300 << 10], 1);
    let client = client();
    let target = Reference::parse(&format!("{}/hoist/app:v1", reg.addr)).unwrap();

    let (push_seen, push_options) = push_events();
    let pushed = client
        .push(&target, &image.manifest, image.store.clone(), &push_options)
        .await
        .unwrap();
    assert_eq!(pushed.uploaded, 4, "config + 3 layers uploaded");
    assert_eq!(pushed.existing, 0);
    assert_eq!(
        pushed.reference.digest(),
        Some(image.manifest.digest().as_ref())
    );
    let done = push_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PushEvent::BlobDone { .. }))
        .count();
    assert_eq!(done, 4);

    // Pull into a fresh layout: same manifest, same blobs, same bytes.
    let (_dir, dest) = empty_store();
    let (pull_seen, pull_options) = pull_events();
    let pulled = client
        .pull(&target, dest.clone(), &pull_options)
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest(), image.manifest.digest());
    assert_eq!(pulled.root.digest(), image.manifest.digest());
    assert_eq!(pulled.config.digest(), image.config.digest());
    assert_eq!(
        pulled
            .layers
            .iter()
            .map(|d| d.digest().to_string())
            .collect::<Vec<_>>(),
        image
            .layers
            .iter()
            .map(|d| d.digest().to_string())
            .collect::<Vec<_>>()
    );
    let mut digests = image.blob_digests();
    digests.push(image.manifest.digest().to_string());
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &digests);
    assert_eq!(ingest_files(dest.root()), 0);
    {
        let events = pull_seen.lock().unwrap();
        let finished: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                PullEvent::BlobDone { descriptor } => Some(descriptor.digest().to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(finished.len(), 4);
        // The last progress event of each blob reports all of it.
        for layer in &image.layers {
            let last = events
                .iter()
                .filter_map(|e| match e {
                    PullEvent::BlobProgress {
                        descriptor,
                        done,
                        total,
                    } if descriptor.digest() == layer.digest() => Some((*done, *total)),
                    _ => None,
                })
                .next_back()
                .unwrap();
            assert_eq!(last, (layer.size(), layer.size()));
        }
    }
    // The pulled layout is usable by others: name it and read it back.
    dest.set_ref("app:v1", &pulled.manifest).unwrap();
    assert_eq!(
        dest.get_ref("app:v1").unwrap().unwrap().digest(),
        image.manifest.digest()
    );

    // Pushing again uploads nothing: no upload session is even opened.
    let uploads_before = reg.log_lines_matching("/blobs/uploads/").len();
    assert!(uploads_before >= 4, "{}", reg.log());
    let (_, push_options) = push_events();
    let again = client
        .push(&target, &image.manifest, image.store.clone(), &push_options)
        .await
        .unwrap();
    assert_eq!((again.uploaded, again.existing), (0, 4));
    assert_eq!(
        reg.log_lines_matching("/blobs/uploads/").len(),
        uploads_before,
        "second push opened an upload"
    );
    assert_eq!(reg.log_lines_matching("PATCH /v2/").len(), 0);

    // Pulling again into the same store downloads nothing.
    let (pull_seen, pull_options) = pull_events();
    client
        .pull(&target, dest.clone(), &pull_options)
        .await
        .unwrap();
    let skipped = pull_seen
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, PullEvent::BlobSkipped { .. }))
        .count();
    assert_eq!(skipped, 4);

    // A reference pinned by digest resolves to the same manifest.
    let pinned = Reference::parse(&format!(
        "{}/hoist/app@{}",
        reg.addr,
        image.manifest.digest()
    ))
    .unwrap();
    let resolved = client.resolve(&pinned).await.unwrap();
    assert_eq!(resolved.descriptor.digest(), image.manifest.digest());
    assert_eq!(
        resolved.bytes,
        image.store.read_all(image.manifest.digest()).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_known_to_come_from_another_repository_are_mounted() {
    require_registry!();
    let reg = Registry::start();
    let image = make_image(&[200 << 10], 2);
    let client = client();
    let one = Reference::parse(&format!("{}/team/one:1", reg.addr)).unwrap();
    let two = Reference::parse(&format!("{}/team/two:1", reg.addr)).unwrap();
    client
        .push(
            &one,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let uploads_after_first = reg
        .log_lines_matching("PUT /v2/team/one/blobs/uploads/")
        .len();

    let (seen, mut options) = push_events();
    for digest in image.blob_digests() {
        options.mount_sources.insert(digest, vec![one.clone()]);
    }
    let pushed = client
        .push(&two, &image.manifest, image.store.clone(), &options)
        .await
        .unwrap();
    let blobs = image.blob_digests().len();
    assert_eq!((pushed.mounted, pushed.uploaded), (blobs, 0));
    let mounts = access_log(&reg, "mount=");
    assert_eq!(mounts.len(), blobs, "{}", reg.log());
    assert!(mounts.iter().all(|l| l.contains("\" 201 ")), "{mounts:?}");
    assert!(reg
        .log_lines_matching("PUT /v2/team/two/blobs/uploads/")
        .is_empty());
    assert_eq!(
        reg.log_lines_matching("PUT /v2/team/one/blobs/uploads/")
            .len(),
        uploads_after_first
    );
    let mounted_events: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            PushEvent::BlobMounted { from, .. } => Some(from.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(mounted_events, vec!["team/one".to_string(); blobs]);

    // The mounted repository serves the image.
    let (_dir, dest) = empty_store();
    let pulled = client
        .pull(&two, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest(), image.manifest.digest());
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_platform_index_pulls_the_right_platform() {
    require_registry!();
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(hoist_registry::OciDirStore::open(dir.path()).unwrap());
    let mut entries = Vec::new();
    let mut per_platform = HashMap::new();
    for (i, platform) in ["linux/amd64", "linux/arm64/v8", "linux/arm/v6"]
        .iter()
        .enumerate()
    {
        let layer = random_layer(100 + i as u64, 64 << 10);
        let (manifest, config, layers) = write_image(&store, &[layer], platform);
        per_platform.insert(*platform, (manifest.clone(), config, layers));
        entries.push((manifest, *platform));
    }
    let index = write_index(&store, &entries);
    let client = client();
    let target = Reference::parse(&format!("{}/multi/app:1", reg.addr)).unwrap();
    let pushed = client
        .push(&target, &index, store.clone(), &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(pushed.uploaded, 6);
    // Children were pushed by digest, the index under the tag.
    for (manifest, _) in &entries {
        assert_eq!(
            reg.log_lines_matching(&format!(
                "PUT /v2/multi/app/manifests/{}",
                manifest.digest()
            ))
            .len(),
            1
        );
    }

    for (wanted, expected) in [
        ("linux/arm64", "linux/arm64/v8"),
        ("linux/arm64/v8", "linux/arm64/v8"),
        ("linux/amd64", "linux/amd64"),
        // arm v7 runs v6 when there is no v7 (containerd's fallback).
        ("linux/arm/v7", "linux/arm/v6"),
    ] {
        let (_d, dest) = empty_store();
        let options = PullOptions {
            platform: Some(Platform::parse(wanted).unwrap()),
            events: None,
        };
        let pulled = client.pull(&target, dest.clone(), &options).await.unwrap();
        let (manifest, config, layers) = &per_platform[expected];
        assert_eq!(pulled.manifest.digest(), manifest.digest(), "{wanted}");
        assert_eq!(pulled.root.digest(), index.digest());
        assert_eq!(
            pulled.platform.as_ref().map(|p| p.to_string()),
            Some(Platform::parse(expected).unwrap().to_string())
        );
        assert!(dest.has(config.digest()));
        assert!(dest.has(layers[0].digest()));
        // Only the chosen platform's layer was downloaded.
        for (other, (_, _, other_layers)) in &per_platform {
            if *other != expected {
                assert!(
                    !dest.has(other_layers[0].digest()),
                    "{other} pulled for {wanted}"
                );
            }
        }
        assert!(dest.has(index.digest()));
    }

    // Resolving without pulling names the same manifest and stores nothing.
    let resolved = client
        .resolve_image(&target, Some(&Platform::parse("linux/arm/v7").unwrap()))
        .await
        .unwrap();
    assert_eq!(resolved.root.descriptor.digest(), index.digest());
    assert_eq!(
        resolved.manifest.descriptor.digest(),
        per_platform["linux/arm/v6"].0.digest()
    );
    assert_eq!(resolved.platform.unwrap().to_string(), "linux/arm/v6");

    let (_d, dest) = empty_store();
    let err = client
        .pull(
            &target,
            dest,
            &PullOptions {
                platform: Some(Platform::parse("linux/s390x").unwrap()),
                events: None,
            },
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, RegistryError::PlatformNotFound { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("linux/s390x") && msg.contains("linux/arm/v6"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_blobs_go_up_in_chunks() {
    require_registry!();
    let reg = Registry::start();
    let image = make_image(&[1200 << 10], 3);
    let mut opts = options(Arc::new(hoist_registry::auth::Anonymous));
    opts.monolithic_limit = 200 << 10;
    opts.chunk_size = 256 << 10;
    let client = Client::new(opts).unwrap();
    let target = Reference::parse(&format!("{}/chunky/app:1", reg.addr)).unwrap();
    client
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let patches = reg.log_lines_matching("PATCH /v2/chunky/app/blobs/uploads/");
    // 1200 KiB in 256 KiB chunks is 5 PATCHes, plus the busybox layer's.
    assert!(patches.len() >= 5, "{patches:?}");
    assert!(patches.iter().all(|l| l.contains("\" 202 ")), "{patches:?}");
    let (_dir, dest) = empty_store();
    client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_go_biggest_first_both_ways() {
    require_registry!();
    let reg = Registry::start();
    // Layers listed small, big, middle: the transfer order must not follow
    // the manifest.
    let image = make_image(&[20 << 10, 600 << 10, 200 << 10], 7);
    let mut opts = options(Arc::new(hoist_registry::auth::Anonymous));
    opts.concurrency = 1;
    let client = Client::new(opts).unwrap();
    let target = Reference::parse(&format!("{}/order/app:1", reg.addr)).unwrap();
    let (push_seen, push_options) = push_events();
    client
        .push(&target, &image.manifest, image.store.clone(), &push_options)
        .await
        .unwrap();
    let pushed: Vec<u64> = push_seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            PushEvent::BlobStarted { descriptor } => Some(descriptor.size()),
            _ => None,
        })
        .collect();
    let (_dir, dest) = empty_store();
    let (pull_seen, pull_options) = pull_events();
    client
        .pull(&target, dest.clone(), &pull_options)
        .await
        .unwrap();
    let pulled: Vec<u64> = pull_seen
        .lock()
        .unwrap()
        .iter()
        .filter_map(|e| match e {
            PullEvent::BlobStarted { descriptor } => Some(descriptor.size()),
            _ => None,
        })
        .collect();
    for sizes in [&pushed, &pulled] {
        // Config, busybox layer and three random layers.
        assert_eq!(sizes.len(), 5, "{sizes:?}");
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "{sizes:?}");
    }
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quote_the_registry() {
    require_registry!();
    let reg = Registry::start();
    let client = client();
    let missing = Reference::parse(&format!("{}/nothing/here:v9", reg.addr)).unwrap();
    let err = client.resolve(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("manifest unknown"), "{msg}");
    assert!(msg.contains("nothing/here"), "{msg}");
    let (dir, dest) = empty_store();
    assert!(client
        .pull(&missing, dest, &PullOptions::default())
        .await
        .is_err());
    assert_eq!(ingest_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_manifest_lists_and_schema2_manifests_round_trip() {
    use hoist_registry::manifest::{DOCKER_MANIFEST, DOCKER_MANIFEST_LIST};
    use hoist_registry::store::{descriptor_for, write_blob};
    require_registry!();
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(hoist_registry::OciDirStore::open(dir.path()).unwrap());
    let mut entries = Vec::new();
    let mut layers = HashMap::new();
    for (i, (os, arch, variant)) in [("linux", "amd64", ""), ("linux", "arm", "v7")]
        .iter()
        .enumerate()
    {
        let (layer_bytes, diff_id) = random_layer(200 + i as u64, 32 << 10);
        let layer = descriptor_for(
            "application/vnd.docker.image.rootfs.diff.tar.gzip",
            &layer_bytes,
        );
        write_blob(store.as_ref(), &layer, &layer_bytes).unwrap();
        let config_bytes = serde_json::to_vec(&serde_json::json!({
            "architecture": arch, "os": os, "variant": variant,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        }))
        .unwrap();
        let config = descriptor_for(
            "application/vnd.docker.container.image.v1+json",
            &config_bytes,
        );
        write_blob(store.as_ref(), &config, &config_bytes).unwrap();
        let manifest_bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": config, "layers": [layer],
        }))
        .unwrap();
        let manifest = descriptor_for(DOCKER_MANIFEST, &manifest_bytes);
        write_blob(store.as_ref(), &manifest, &manifest_bytes).unwrap();
        let mut platform = serde_json::json!({"os": os, "architecture": arch});
        if !variant.is_empty() {
            platform["variant"] = serde_json::json!(variant);
        }
        let mut entry = serde_json::to_value(&manifest).unwrap();
        entry["platform"] = platform;
        entries.push(entry);
        layers.insert(format!("{os}/{arch}"), (manifest, layer));
    }
    let list_bytes = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": DOCKER_MANIFEST_LIST, "manifests": entries,
    }))
    .unwrap();
    let list = descriptor_for(DOCKER_MANIFEST_LIST, &list_bytes);
    write_blob(store.as_ref(), &list, &list_bytes).unwrap();

    let client = client();
    let target = Reference::parse(&format!("{}/dockerish/app:1", reg.addr)).unwrap();
    client
        .push(&target, &list, store.clone(), &PushOptions::default())
        .await
        .unwrap();
    let resolved = client.resolve(&target).await.unwrap();
    assert_eq!(
        resolved.descriptor.media_type().to_string(),
        DOCKER_MANIFEST_LIST
    );
    assert_eq!(resolved.descriptor.digest(), list.digest());
    assert!(resolved.is_index());
    for (wanted, key) in [
        ("linux/amd64", "linux/amd64"),
        ("linux/arm/v7", "linux/arm"),
    ] {
        let (_d, dest) = empty_store();
        let pulled = client
            .pull(
                &target,
                dest.clone(),
                &PullOptions {
                    platform: Some(Platform::parse(wanted).unwrap()),
                    events: None,
                },
            )
            .await
            .unwrap();
        let (manifest, layer) = &layers[key];
        assert_eq!(pulled.manifest.digest(), manifest.digest());
        assert_eq!(pulled.manifest.media_type().to_string(), DOCKER_MANIFEST);
        assert_eq!(pulled.layers[0].digest(), layer.digest());
        assert_same_blobs(store.as_ref(), dest.as_ref(), &[layer.digest().to_string()]);
    }
}
