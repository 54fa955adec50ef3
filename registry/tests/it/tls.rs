//! A registry serving TLS with a self-signed certificate on loopback: hoist
//! reaches it over https without verification, as Docker does for
//! 127.0.0.0/8 (https is tried before plain http).

use std::sync::Arc;

use hoist_registry::{Client, PullOptions, PushOptions, Reference};
use hoist_testutil::Registry;

use crate::require_registry;
use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_signed_tls_on_loopback_is_used_without_verification() {
    require_registry!();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    // Indented: these lines continue testutil's `http:` section.
    let reg = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n",
        cert_path.display(),
        key_path.display()
    ));
    let image = make_image(&[64 << 10], 50);
    let target = Reference::parse(&format!("{}/secure/app:1", reg.addr)).unwrap();
    let client = client();
    client
        .push(
            &target,
            &image.manifest,
            image.store.clone(),
            &PushOptions::default(),
        )
        .await
        .unwrap();
    let resolved = client.resolve(&target).await.unwrap();
    assert!(
        resolved.endpoint().starts_with("https://"),
        "{}",
        resolved.endpoint()
    );
    let (_d, dest) = empty_store();
    client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_same_blobs(image.store.as_ref(), dest.as_ref(), &image.blob_digests());
    // The registry really spoke TLS: plain HTTP is answered with a 400.
    let plain = reqwest::get(format!("http://{}/v2/", reg.addr))
        .await
        .unwrap();
    assert_eq!(plain.status(), 400);

    // `localhost` is loopback too, and is no more verified than 127.0.0.1.
    let by_name = Reference::parse(&format!(
        "localhost:{}/secure/app:1",
        reg.addr.rsplit_once(':').unwrap().1
    ))
    .unwrap();
    let resolved = Client::new(options(Arc::new(hoist_registry::auth::Anonymous)))
        .unwrap()
        .resolve(&by_name)
        .await
        .unwrap();
    assert_eq!(resolved.descriptor.digest(), image.manifest.digest());
}
