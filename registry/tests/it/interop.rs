//! Tools nobody here wrote read what hoist pushed, and hoist pulls what
//! they pushed: skopeo inspect/copy.

use std::process::Command;

use hoist_registry::{BlobStore, OciDirStore, PullOptions, PushOptions, Reference};
use hoist_testutil::Registry;

use crate::require_registry;
use crate::util::*;

fn skopeo(args: &[&str]) -> String {
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skopeo_reads_what_hoist_pushed() {
    require_registry!();
    hoist_testutil::require_program!("skopeo");
    let reg = Registry::start();
    let image = make_image(&[200 << 10], 30);
    let target = Reference::parse(&format!("{}/interop/app:1", reg.addr)).unwrap();
    client()
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let src = format!("docker://{}/interop/app:1", reg.addr);

    let inspect: serde_json::Value =
        serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &src])).unwrap();
    assert_eq!(inspect["Digest"], image.manifest.digest().to_string());
    assert_eq!(inspect["Architecture"], "amd64");
    assert_eq!(inspect["Os"], "linux");
    let layers: Vec<String> = inspect["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = image
        .layers
        .iter()
        .map(|l| l.digest().to_string())
        .collect();
    assert_eq!(layers, expected);
    let raw = skopeo(&["inspect", "--raw", "--tls-verify=false", &src]);
    assert_eq!(
        raw.as_bytes(),
        image.store.read_all(image.manifest.digest()).unwrap()
    );

    // skopeo copies it out into an OCI layout byte for byte.
    let out = tempfile::tempdir().unwrap();
    let dest = format!("oci:{}:copied", out.path().display());
    skopeo(&["copy", "--src-tls-verify=false", &src, &dest]);
    let copied = OciDirStore::open(out.path()).unwrap();
    let mut digests = image.blob_digests();
    digests.push(image.manifest.digest().to_string());
    assert_same_blobs(image.store.as_ref(), &copied, &digests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hoist_pulls_what_skopeo_pushed_from_an_oci_archive() {
    require_registry!();
    hoist_testutil::require_program!("skopeo");
    let reg = Registry::start();
    let image = make_image(&[150 << 10], 31);
    image.store.set_ref("v1", &image.manifest).unwrap();
    // An oci-archive is a tar of the layout.
    let archive_dir = tempfile::tempdir().unwrap();
    let archive = archive_dir.path().join("image.tar");
    let status = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(image.store.root())
        .args(["oci-layout", "index.json", "blobs"])
        .status()
        .unwrap();
    assert!(status.success());
    let dest = format!("docker://{}/fromskopeo/app:v1", reg.addr);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}:v1", archive.display()),
        &dest,
    ]);

    // And once converted to Docker's v2 schema 2 format by skopeo.
    let docker_dest = format!("docker://{}/fromskopeo/docker:v1", reg.addr);
    skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}:v1", archive.display()),
        &docker_dest,
    ]);
    let docker = Reference::parse(&format!("{}/fromskopeo/docker:v1", reg.addr)).unwrap();
    let (_d2, docker_store) = empty_store();
    let pulled = client()
        .pull(&docker, docker_store.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(
        pulled.manifest.media_type().to_string(),
        hoist_registry::manifest::DOCKER_MANIFEST
    );
    assert_eq!(
        pulled.config.media_type().to_string(),
        "application/vnd.docker.container.image.v1+json"
    );
    assert_same_blobs(
        image.store.as_ref(),
        docker_store.as_ref(),
        &image
            .layers
            .iter()
            .map(|d| d.digest().to_string())
            .collect::<Vec<_>>(),
    );

    let target = Reference::parse(&format!("{}/fromskopeo/app:v1", reg.addr)).unwrap();
    let (dir, store) = empty_store();
    let pulled = client()
        .pull(&target, store.clone(), &PullOptions::default())
        .await
        .unwrap();
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
    assert_same_blobs(image.store.as_ref(), store.as_ref(), &image.blob_digests());
    assert!(store.has(pulled.manifest.digest()));
    assert_eq!(ingest_files(dir.path()), 0);
}
