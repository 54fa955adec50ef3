//! Registries and token servers that do not play fair: credentials stay
//! where they belong, bodies are read with a cap, quoted text is escaped.

use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hoist_registry::{BlobStore, Client, ErrorKind, PullOptions, Reference};
use hoist_testutil::Registry;

use crate::require_registry;
use crate::util::*;

/// A tiny_http server on `ip` answering with `respond` on its own thread
/// until dropped.
struct Hostile {
    addr: String,
    server: Arc<tiny_http::Server>,
}

impl Hostile {
    fn start(ip: &str, respond: impl Fn(tiny_http::Request) + Send + Sync + 'static) -> Hostile {
        let server = Arc::new(tiny_http::Server::http(format!("{ip}:0")).unwrap());
        let addr = server.server_addr().to_ip().unwrap().to_string();
        let s = Arc::clone(&server);
        let respond = Arc::new(respond);
        std::thread::spawn(move || {
            for request in s.incoming_requests() {
                // One thread per request: a client that stops reading a
                // huge body must not hold up the next request.
                let respond = Arc::clone(&respond);
                std::thread::spawn(move || respond(request));
            }
        });
        Hostile { addr, server }
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

/// The URLs a server was asked for, with the `Authorization` each carried.
type Seen = Arc<Mutex<Vec<(String, Option<String>)>>>;

fn header(name: &str, value: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes(name.as_bytes(), value.as_bytes()).unwrap()
}

fn authorization(request: &tiny_http::Request) -> Option<String> {
    request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_string())
}

/// `len` bytes of `x`, streamed (never held by the server).
fn endless(
    status: u16,
    len: usize,
    headers: Vec<tiny_http::Header>,
) -> tiny_http::Response<impl Read> {
    tiny_http::Response::new(
        tiny_http::StatusCode(status),
        headers,
        std::io::repeat(b'x').take(len as u64),
        Some(len),
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_not_sent_to_an_http_realm_of_an_https_registry() {
    require_registry!();
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    let cert = params.self_signed(&key).unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    // The registry speaks TLS; the realm its challenge names is plain http.
    let tokens = TokenServer::start("bob", "hunter2");
    assert!(tokens.realm.starts_with("http://"), "{}", tokens.realm);
    let reg = Registry::start_with(&format!(
        "  tls:\n    certificate: {}\n    key: {}\n{}",
        cert_path.display(),
        key_path.display(),
        tokens.registry_yaml()
    ));
    let target = Reference::parse(&format!("{}/tok/app:1", reg.addr)).unwrap();

    let with_credentials =
        Client::new(options(static_credentials(&reg.addr, "bob", "hunter2"))).unwrap();
    let err = with_credentials.resolve(&target).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{text}");
    assert!(
        text.contains(&format!("token realm `{}`", tokens.realm))
            && text.contains("refusing to send the credentials"),
        "{text}"
    );
    assert!(
        tokens.requests.lock().unwrap().is_empty(),
        "the token server was asked: {:?}",
        tokens.requests.lock().unwrap()
    );

    // Without credentials there is nothing to leak: the anonymous token is
    // fetched and the registry answers (the tag does not exist).
    let err = client().resolve(&target).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    assert_eq!(tokens.requests.lock().unwrap().len(), 1);
    assert_eq!(
        tokens
            .issued_authenticated
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_redirect_to_another_host_carries_no_authorization() {
    // The image the first server serves: a manifest, a config, one layer.
    let (_d, src) = empty_store();
    let (manifest, config, layers) = write_image(&src, &[random_layer(7, 4096)], "linux/amd64");
    let blob = |d: &oci_spec::image::Descriptor| src.read_all(d.digest()).unwrap();
    let manifest_bytes = blob(&manifest);
    let blobs: Vec<(String, Vec<u8>)> = std::iter::once(&config)
        .chain(&layers)
        .map(|d| (d.digest().to_string(), blob(d)))
        .collect();

    // The second server: blob storage on another port (reqwest treats
    // another port as another host, as browsers treat it as another origin).
    let seen_by_storage: Seen = Arc::default();
    let storage = {
        let seen = Arc::clone(&seen_by_storage);
        let blobs = blobs.clone();
        Hostile::start("127.0.0.1", move |request| {
            let url = request.url().to_string();
            seen.lock()
                .unwrap()
                .push((url.clone(), authorization(&request)));
            let body = blobs
                .iter()
                .find(|(d, _)| url.ends_with(d.as_str()))
                .map(|(_, b)| b.clone());
            let _ = match body {
                Some(b) => request.respond(tiny_http::Response::from_data(b)),
                None => request.respond(tiny_http::Response::empty(404)),
            };
        })
    };

    // The registry: basic auth on everything, blobs redirected to storage.
    let basic = hoist_registry::Credential::new("alice", "s3cret").basic_header();
    let seen_by_registry: Seen = Arc::default();
    let registry = {
        let seen = Arc::clone(&seen_by_registry);
        let basic = basic.clone();
        let storage_addr = storage.addr.clone();
        let manifest_bytes = manifest_bytes.clone();
        let manifest_digest = manifest.digest().to_string();
        Hostile::start("127.0.0.1", move |request| {
            let url = request.url().to_string();
            let auth = authorization(&request);
            seen.lock().unwrap().push((url.clone(), auth.clone()));
            if auth.as_deref() != Some(basic.as_str()) {
                let _ = request.respond(
                    tiny_http::Response::empty(401)
                        .with_header(header("WWW-Authenticate", "Basic realm=\"test\"")),
                );
                return;
            }
            let _ = if url == "/v2/" {
                request.respond(tiny_http::Response::empty(200))
            } else if url.contains("/manifests/") {
                request.respond(
                    tiny_http::Response::from_data(manifest_bytes.clone())
                        .with_header(header(
                            "Content-Type",
                            "application/vnd.oci.image.manifest.v1+json",
                        ))
                        .with_header(header("Docker-Content-Digest", &manifest_digest)),
                )
            } else if let Some((_, digest)) = url.rsplit_once("/blobs/") {
                request.respond(tiny_http::Response::empty(307).with_header(header(
                    "Location",
                    &format!("http://{storage_addr}/storage/{digest}"),
                )))
            } else {
                request.respond(tiny_http::Response::empty(404))
            };
        })
    };

    let client = Client::new(options(static_credentials(
        &registry.addr,
        "alice",
        "s3cret",
    )))
    .unwrap();
    let target = Reference::parse(&format!("{}/redir/app:1", registry.addr)).unwrap();
    let (_d2, dest) = empty_store();
    let pulled = client
        .pull(&target, dest.clone(), &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest(), manifest.digest());
    let digests: Vec<String> = blobs.iter().map(|(d, _)| d.clone()).collect();
    assert_same_blobs(src.as_ref(), dest.as_ref(), &digests);

    // The registry got the credentials on its blob requests...
    let registry_seen = seen_by_registry.lock().unwrap().clone();
    assert!(
        registry_seen
            .iter()
            .any(|(u, a)| u.contains("/blobs/") && a.as_deref() == Some(basic.as_str())),
        "{registry_seen:?}"
    );
    // ...and the storage host every blob, without them.
    let storage_seen = seen_by_storage.lock().unwrap().clone();
    assert_eq!(storage_seen.len(), blobs.len(), "{storage_seen:?}");
    for (url, auth) in &storage_seen {
        assert_eq!(auth, &None, "{url} got an Authorization header");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_error_and_token_bodies_are_not_read_whole() {
    const HUGE: usize = 64 << 20;
    // A registry answering every manifest request with a 64 MiB error body.
    let registry = Hostile::start("127.0.0.1", |request| {
        let _ = if request.url() == "/v2/" {
            request.respond(tiny_http::Response::empty(200))
        } else {
            request.respond(endless(400, HUGE, vec![]))
        };
    });
    let target = Reference::parse(&format!("{}/big/error:1", registry.addr)).unwrap();
    let started = Instant::now();
    let err = client().resolve(&target).await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("400 bad request (error body longer than 65536 bytes, not read)"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );

    // A token server answering with a 64 MiB "token".
    let token_server = Hostile::start("127.0.0.1", |request| {
        let _ = request.respond(endless(
            200,
            HUGE,
            vec![header("Content-Type", "application/json")],
        ));
    });
    let realm = format!("http://{}/token", token_server.addr);
    let registry = Hostile::start("127.0.0.1", move |request| {
        let _ = request.respond(tiny_http::Response::empty(401).with_header(header(
            "WWW-Authenticate",
            &format!("Bearer realm=\"{realm}\",service=\"s\""),
        )));
    });
    let target = Reference::parse(&format!("{}/big/token:1", registry.addr)).unwrap();
    let started = Instant::now();
    let err = client().resolve(&target).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{text}");
    assert!(
        text.contains("token response from http://")
            && text.contains("is longer than 1048576 bytes"),
        "{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_error_text_is_quoted_with_control_characters_escaped() {
    let registry = Hostile::start("127.0.0.1", |request| {
        let _ = if request.url() == "/v2/" {
            request.respond(tiny_http::Response::empty(200))
        } else {
            request.respond(
                tiny_http::Response::from_string(
                    r#"{"errors":[{"code":"DENIED","message":"no \u001b[2J\u001b]0;pwned\u0007 way\nok"}]}"#,
                )
                .with_status_code(403),
            )
        };
    });
    let target = Reference::parse(&format!("{}/esc/app:1", registry.addr)).unwrap();
    let err = client().resolve(&target).await.unwrap_err();
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Denied, "{text}");
    assert!(
        text.contains(r"denied: no \u{1b}[2J\u{1b}]0;pwned\u{7} way\nok"),
        "{text}"
    );
    assert!(!text.chars().any(|c| c.is_control()), "{text:?}");
}
