//! A misbehaving network between hoist and the registry: dropped
//! connections, injected 500 and 429, corrupted bytes, a registry that dies
//! mid-blob.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_registry::{
    BlobStore, Client, ErrorKind, PullEvent, PullOptions, PushEvent, PushOptions, Reference,
    RegistryError, RetryPolicy,
};
use hoist_testutil::Registry;

use crate::require_registry;
use crate::util::*;

fn patient_client() -> Client {
    let mut opts = options(Arc::new(hoist_registry::auth::Anonymous));
    opts.retry = RetryPolicy {
        max_attempts: 8,
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(100),
    };
    // Requests must fit in what one proxied connection may carry.
    opts.monolithic_limit = 256 << 10;
    opts.chunk_size = 256 << 10;
    opts.read_timeout = Duration::from_secs(5);
    Client::new(opts).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_and_pull_survive_dropped_connections_500s_and_429s() {
    require_registry!();
    let reg = Registry::start();
    let proxy = FaultProxy::start(
        &reg.addr,
        ProxySettings {
            schedule: Box::new(|n| match n % 4 {
                0 => Fault::Pass,
                1 => Fault::Drop,
                2 => Fault::Status500,
                _ => Fault::Status429,
            }),
            // Every connection is recycled after 3 MB, so faults keep
            // coming; a fresh one can carry any single upload session.
            budget: 3_000_000,
            drop_after: 150_000,
            kill_after: None,
            on_kill: None,
            request_filter: None,
        },
    );
    let image = make_image(&[2 << 20, 600 << 10, 100 << 10], 20);
    let client = patient_client();
    let target = Reference::parse(&format!("{}/faulty/app:1", proxy.addr)).unwrap();

    let retries: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = retries.clone();
    let push_options = PushOptions {
        events: Some(Arc::new(move |e| {
            if let PushEvent::Retrying(n) = e {
                sink.lock().unwrap().push(n.error);
            }
        })),
        ..PushOptions::default()
    };
    let pushed = client
        .push(&target, &image.manifest, image.store.clone(), &push_options)
        .await
        .unwrap();
    assert_eq!(pushed.uploaded, image.blob_digests().len());
    let push_retries = retries.lock().unwrap().len();

    // A new client has no pooled connections: the pull meets faults too.
    let client = patient_client();
    let (dir, dest) = empty_store();
    let sink = retries.clone();
    let pull_options = PullOptions {
        platform: None,
        events: Some(Arc::new(move |e| {
            if let PullEvent::Retrying(n) = e {
                sink.lock().unwrap().push(n.error);
            }
        })),
    };
    let pulled = client
        .pull(&target, dest.clone(), &pull_options)
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest(), image.manifest.digest());
    let mut digests = image.blob_digests();
    digests.push(image.manifest.digest().to_string());
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &digests);
    assert_eq!(ingest_files(dir.path()), 0);

    let (e500, e429, dropped) = proxy.faults();
    assert!(
        e500 > 0 && e429 > 0 && dropped > 0,
        "faults: {e500} {e429} {dropped}"
    );
    let retries = retries.lock().unwrap().clone();
    assert!(push_retries > 0, "push never retried");
    assert!(retries.len() > push_retries, "pull never retried");
    assert!(
        retries.iter().any(|e| e.contains("injected failure")),
        "{retries:?}"
    );
    assert!(
        retries.iter().any(|e| e.contains("slow down")),
        "{retries:?}"
    );
    // What reached the registry is intact: a direct pull matches too.
    let direct = Reference::parse(&format!("{}/faulty/app:1", reg.addr)).unwrap();
    let resolved = client.resolve(&direct).await.unwrap();
    assert_eq!(resolved.descriptor.digest(), image.manifest.digest());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_gone_mid_blob_is_a_clear_error_and_leaves_no_blob() {
    require_registry!();
    let reg = Registry::start();
    let image = make_image(&[3 << 20], 21);
    let client = patient_client();
    let direct = Reference::parse(&format!("{}/dying/app:1", reg.addr)).unwrap();
    client
        .push(
            &direct,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();

    // Kill the registry itself once 1 MB of answers went through.
    let registry = Arc::new(Mutex::new(Some(reg)));
    let victim = registry.clone();
    let proxy = FaultProxy::start(
        direct.registry(),
        ProxySettings {
            schedule: Box::new(|_| Fault::Pass),
            budget: u64::MAX,
            drop_after: u64::MAX,
            kill_after: Some(1 << 20),
            on_kill: Some(Box::new(move || {
                drop(victim.lock().unwrap().take());
            })),
            request_filter: None,
        },
    );
    let mut opts = options(Arc::new(hoist_registry::auth::Anonymous));
    opts.retry.max_attempts = 3;
    let client = Client::new(opts).unwrap();
    let target = Reference::parse(&format!("{}/dying/app:1", proxy.addr)).unwrap();
    let (dir, dest) = empty_store();
    let err = client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(
        registry.lock().unwrap().is_none(),
        "the registry was not killed"
    );
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("fetch blob sha256:"), "{msg}");
    assert!(msg.contains(&proxy.addr), "{msg}");
    // No partial blob: neither under blobs/ nor left in ingest/.
    let big = image.layers.last().unwrap();
    assert!(!dest.has(big.digest()));
    assert!(!dest.has(image.manifest.digest()));
    assert_eq!(ingest_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupted_bytes_are_a_fatal_digest_mismatch() {
    require_registry!();
    let reg = Registry::start();
    let image = make_image(&[1 << 20], 22);
    let client = patient_client();
    let direct = Reference::parse(&format!("{}/corrupt/app:1", reg.addr)).unwrap();
    client
        .push(
            &direct,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let proxy = FaultProxy::start(
        &reg.addr,
        ProxySettings {
            schedule: Box::new(|_| Fault::Corrupt),
            budget: u64::MAX,
            drop_after: u64::MAX,
            kill_after: None,
            on_kill: None,
            request_filter: None,
        },
    );
    let target = Reference::parse(&format!("{}/corrupt/app:1", proxy.addr)).unwrap();
    let (dir, dest) = empty_store();
    let err = client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap_err();
    assert!(proxy.stats.corrupted.load(Ordering::SeqCst) > 0);
    let RegistryError::DigestMismatch { expected, .. } = &err else {
        panic!("expected a digest mismatch, got {err}");
    };
    assert_eq!(err.kind(), ErrorKind::Integrity);
    let digest: oci_spec::image::Digest = expected.parse().unwrap();
    assert!(image.blob_digests().contains(expected), "{err}");
    assert!(!dest.has(&digest), "a corrupted blob was stored");
    assert!(!dest.has(image.manifest.digest()));
    assert_eq!(ingest_files(dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_chunked_upload_resumes_from_the_registry_range() {
    require_registry!();
    let reg = Registry::start();
    // The third PATCH is answered 500 before it reaches the registry.
    let patches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = patches.clone();
    let proxy = FaultProxy::start(
        &reg.addr,
        ProxySettings {
            request_filter: Some(Box::new(move |line| {
                if line.starts_with("PATCH ") && counter.fetch_add(1, Ordering::SeqCst) == 2 {
                    Fault::Status500
                } else {
                    Fault::Pass
                }
            })),
            ..ProxySettings::default()
        },
    );
    let mut opts = options(Arc::new(hoist_registry::auth::Anonymous));
    opts.monolithic_limit = 0;
    opts.chunk_size = 128 << 10;
    opts.concurrency = 1;
    // A connection per request, so the proxy sees every request line.
    opts.max_idle_connections = 0;
    let client = Client::new(opts).unwrap();
    let image = make_image(&[1 << 20], 23);
    let target = Reference::parse(&format!("{}/resume/app:1", proxy.addr)).unwrap();
    client
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(proxy.stats.injected_500.load(Ordering::SeqCst), 1);
    // The client asked the session where it stood, and went on in it: one
    // upload session per blob, none restarted.
    let status = access_log(&reg, "GET /v2/resume/app/blobs/uploads/");
    assert_eq!(status.len(), 1, "{status:?}");
    assert!(status[0].contains("\" 204 "), "{status:?}");
    let sessions = access_log(&reg, "POST /v2/resume/app/blobs/uploads/");
    assert_eq!(sessions.len(), image.blob_digests().len(), "{sessions:?}");
    let (_d, dest) = empty_store();
    client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_download_cut_mid_body_resumes_with_a_range_request() {
    require_registry!();
    let reg = Registry::start();
    let image = make_image(&[1 << 20], 24);
    let direct = Reference::parse(&format!("{}/ranged/app:1", reg.addr)).unwrap();
    client()
        .push(
            &direct,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    // The first download of the big layer is cut after ~300 KB.
    let big = image.layers.last().unwrap().digest().to_string();
    let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = cut.clone();
    let wanted = format!("GET /v2/ranged/app/blobs/{big} ");
    let proxy = FaultProxy::start(
        &reg.addr,
        ProxySettings {
            drop_after: 300_000,
            request_filter: Some(Box::new(move |line| {
                if line.starts_with(&wanted) && !flag.swap(true, Ordering::SeqCst) {
                    Fault::Drop
                } else {
                    Fault::Pass
                }
            })),
            ..ProxySettings::default()
        },
    );
    let mut opts = options(Arc::new(hoist_registry::auth::Anonymous));
    opts.max_idle_connections = 0;
    let client = Client::new(opts).unwrap();
    let retries: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = retries.clone();
    let pull_options = PullOptions {
        platform: None,
        events: Some(Arc::new(move |e| {
            if let PullEvent::Retrying(n) = e {
                sink.lock().unwrap().push(n.action);
            }
        })),
    };
    let target = Reference::parse(&format!("{}/ranged/app:1", proxy.addr)).unwrap();
    let (_d, dest) = empty_store();
    client
        .pull(&target, dest.clone(), &pull_options)
        .await
        .unwrap();
    assert!(cut.load(Ordering::SeqCst));
    assert_eq!(proxy.stats.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(*retries.lock().unwrap(), vec![format!("fetch blob {big}")]);
    let gets = access_log(&reg, &format!("GET /v2/ranged/app/blobs/{big} "));
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert!(
        gets[1].contains("\" 206 "),
        "the second GET was not a range: {gets:?}"
    );
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());
}
