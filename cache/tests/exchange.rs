//! The cache artifact: staged in a store (for a registry push), read back
//! in another store holding its blobs, and the inline records document.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use hoist_cache::exchange::{CACHE_ARTIFACT_TYPE, CACHE_RECORDS_MEDIA_TYPE};
use hoist_cache::{NewCacheRecord, Store};

fn record(store: &Store, key: &str, blobs: &[&str]) {
    store
        .put_cache_record(
            &NewCacheRecord {
                key: key.into(),
                final_key: format!("final-{key}"),
                output: br#"{"layers":[]}"#.to_vec(),
                blobs: blobs.iter().map(|b| b.to_string()).collect(),
                description: format!("RUN {key}"),
                step: format!("step {key}"),
                preimage: Some(br#"{"op":"run"}"#.to_vec()),
            },
            None,
        )
        .unwrap();
}

fn put(store: &Store, bytes: &[u8]) -> String {
    store.content().put(bytes).unwrap().digest.to_string()
}

#[test]
fn a_staged_artifact_names_only_the_chosen_records_and_their_blobs() {
    let a_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path()).unwrap();
    let (l1, l2) = (put(&a, b"layer one"), put(&a, b"layer two"));
    record(&a, "k1", &[&l1]);
    record(&a, "k2", &[&l1, &l2]);
    record(&a, "k3", &[&l2]);
    let (artifact, report) = a
        .stage_cache_artifact(&["k1".to_string(), "k2".to_string()])
        .unwrap();
    assert_eq!(report.records, 2);
    let manifest: serde_json::Value = serde_json::from_slice(
        &a.content()
            .read_blob(&artifact.digest.parse().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["artifactType"], CACHE_ARTIFACT_TYPE);
    assert_eq!(manifest["config"]["mediaType"], CACHE_RECORDS_MEDIA_TYPE);
    let layers: Vec<&str> = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    let mut want = vec![l1.as_str(), l2.as_str()];
    want.sort();
    assert_eq!(layers, want);
    assert!(artifact.blobs.contains(&l1) && artifact.blobs.contains(&l2));

    // Store B receives the blobs (as a pull would) and imports the manifest.
    let b_dir = tempfile::tempdir().unwrap();
    let b = Store::open(b_dir.path()).unwrap();
    for digest in artifact.blobs.iter().chain([&artifact.digest]) {
        let bytes = a.content().read_blob(&digest.parse().unwrap()).unwrap();
        b.content().put(&bytes).unwrap();
    }
    let report = b.import_cache_manifest(&artifact.digest).unwrap();
    assert_eq!(report.records, 2);
    let mut keys: Vec<(String, String, Vec<String>)> = b
        .list_cache_records()
        .unwrap()
        .into_iter()
        .map(|r| {
            // The store keeps a record's blobs as a set (the output holds
            // the layer order).
            let mut blobs = r.blobs;
            blobs.sort();
            (r.key, r.final_key, blobs)
        })
        .collect();
    keys.sort();
    let mut both = vec![l1.clone(), l2.clone()];
    both.sort();
    assert_eq!(
        keys,
        vec![
            ("k1".into(), "final-k1".into(), vec![l1.clone()]),
            ("k2".into(), "final-k2".into(), both),
        ]
    );
    // Importing again adds nothing.
    assert_eq!(
        b.import_cache_manifest(&artifact.digest).unwrap().records,
        0
    );
}

#[test]
fn inline_records_import_only_where_the_blobs_are() {
    let a_dir = tempfile::tempdir().unwrap();
    let a = Store::open(a_dir.path()).unwrap();
    let (l1, l2) = (put(&a, b"layer one"), put(&a, b"layer two"));
    record(&a, "k1", &[&l1]);
    record(&a, "k2", &[&l2]);
    let document = a
        .cache_records_document(&["k1".to_string(), "k2".to_string()])
        .unwrap();
    assert_eq!(document["records"].as_array().unwrap().len(), 2);

    let b_dir = tempfile::tempdir().unwrap();
    let b = Store::open(b_dir.path()).unwrap();
    put(&b, b"layer one");
    let report = b.import_cache_records(&document).unwrap();
    assert_eq!(report.records, 1, "k2's blob is missing in B");
    let rows = b.list_cache_records().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key, "k1");
    assert_eq!(rows[0].description, "RUN k1");
    assert_eq!(rows[0].preimage.as_deref(), Some(&br#"{"op":"run"}"#[..]));
}

#[test]
fn a_manifest_that_is_not_a_cache_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let digest = put(
        &store,
        br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json"}}"#,
    );
    let err = store.import_cache_manifest(&digest).unwrap_err();
    assert!(
        err.to_string().contains("not a hoist cache manifest"),
        "{err}"
    );
}
