//! Test helpers: images made in an OCI layout, a client tuned for tests, a
//! fault-injecting TCP proxy and a JWT token server.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hoist_registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use hoist_registry::store::{descriptor_for, write_blob};
use hoist_registry::{
    BlobStore, Client, ClientOptions, CredentialProvider, OciDirStore, Platform, RegistryConfig,
    RetryPolicy,
};
use oci_spec::image::{Descriptor, Digest};
use sha2::{Digest as _, Sha256};

/// An image written into an OCI layout by the test.
pub struct TestImage {
    /// Keeps the layout alive for the test's duration.
    pub _dir: tempfile::TempDir,
    pub store: Arc<OciDirStore>,
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl TestImage {
    /// All blob digests (config + layers).
    pub fn blob_digests(&self) -> Vec<String> {
        std::iter::once(&self.config)
            .chain(&self.layers)
            .map(|d| d.digest().to_string())
            .collect()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A gzip tar holding one file of `size` pseudo-random bytes (seeded, so
/// layers differ between seeds and repeat within one).
pub fn random_layer(seed: u64, size: usize) -> (Vec<u8>, String) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; size];
    rng.fill(&mut data);
    let mut tar = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(size as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_cksum();
    tar.append_data(&mut header, format!("data-{seed}.bin"), &data[..])
        .unwrap();
    let tar = tar.into_inner().unwrap();
    gzip_with_diff_id(&tar)
}

/// The busybox root filesystem as a gzip layer (made once per test
/// process: compressing it in a debug build takes a while).
pub fn busybox_layer() -> (Vec<u8>, String) {
    static LAYER: std::sync::OnceLock<(Vec<u8>, String)> = std::sync::OnceLock::new();
    LAYER
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let tar_path = dir.path().join("rootfs.tar");
            hoist_testutil::busybox_rootfs_tar(&tar_path);
            let tar = std::fs::read(tar_path).unwrap();
            gzip_with_diff_id(&tar)
        })
        .clone()
}

fn gzip_with_diff_id(tar: &[u8]) -> (Vec<u8>, String) {
    let diff_id = format!("sha256:{}", sha256_hex(tar));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    (gz.finish().unwrap(), diff_id)
}

/// Write an image made of `layers` (gzip bytes + diff id) for `platform`
/// into `store`.
pub fn write_image(
    store: &OciDirStore,
    layers: &[(Vec<u8>, String)],
    platform: &str,
) -> (Descriptor, Descriptor, Vec<Descriptor>) {
    let p = Platform::parse(platform).unwrap();
    let mut layer_descs = Vec::new();
    for (bytes, _) in layers {
        let d = descriptor_for("application/vnd.oci.image.layer.v1.tar+gzip", bytes);
        write_blob(store, &d, bytes).unwrap();
        layer_descs.push(d);
    }
    let mut config = serde_json::json!({
        "architecture": p.architecture,
        "os": p.os,
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|(_, d)| d.clone()).collect::<Vec<_>>()},
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "hoist test"})).collect::<Vec<_>>(),
    });
    if !p.variant.is_empty() {
        config["variant"] = serde_json::json!(p.variant);
    }
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let config_desc = descriptor_for("application/vnd.oci.image.config.v1+json", &config_bytes);
    write_blob(store, &config_desc, &config_bytes).unwrap();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc,
        "layers": layer_descs,
    });
    let manifest_bytes = serde_json::to_vec(&manifest).unwrap();
    let manifest_desc = descriptor_for(OCI_MANIFEST, &manifest_bytes);
    write_blob(store, &manifest_desc, &manifest_bytes).unwrap();
    (manifest_desc, config_desc, layer_descs)
}

/// A fresh layout with one image: busybox plus random layers of the
/// given sizes.
pub fn make_image(random_sizes: &[usize], seed: u64) -> TestImage {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(OciDirStore::open(dir.path().join("layout")).unwrap());
    let mut layers = vec![busybox_layer()];
    for (i, size) in random_sizes.iter().enumerate() {
        layers.push(random_layer(seed * 1000 + i as u64, *size));
    }
    let (manifest, config, layers) = write_image(&store, &layers, "linux/amd64");
    TestImage {
        _dir: dir,
        store,
        manifest,
        config,
        layers,
    }
}

/// Write an index of `entries` (manifest descriptors with platforms).
pub fn write_index(store: &OciDirStore, entries: &[(Descriptor, &str)]) -> Descriptor {
    let manifests: Vec<serde_json::Value> = entries
        .iter()
        .map(|(d, platform)| {
            let p = Platform::parse(platform).unwrap();
            let mut v = serde_json::to_value(d).unwrap();
            let mut plat = serde_json::json!({"os": p.os, "architecture": p.architecture});
            if !p.variant.is_empty() {
                plat["variant"] = serde_json::json!(p.variant);
            }
            v["platform"] = plat;
            v
        })
        .collect();
    let index =
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    let bytes = serde_json::to_vec(&index).unwrap();
    let d = descriptor_for(OCI_INDEX, &bytes);
    write_blob(store, &d, &bytes).unwrap();
    d
}

/// Options for tests: quick retries, the given credentials.
pub fn options(credentials: Arc<dyn CredentialProvider>) -> ClientOptions {
    ClientOptions {
        config: RegistryConfig::default(),
        credentials,
        retry: RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(20),
        ..ClientOptions::default()
    }
}

pub fn client() -> Client {
    Client::new(options(Arc::new(hoist_registry::auth::Anonymous))).unwrap()
}

/// A new empty layout.
pub fn empty_store() -> (tempfile::TempDir, Arc<OciDirStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(OciDirStore::open(dir.path()).unwrap());
    (dir, store)
}

/// Assert that `dest` holds exactly the bytes `src` holds for `digests`.
pub fn assert_same_blobs(src: &dyn BlobStore, dest: &dyn BlobStore, digests: &[String]) {
    for d in digests {
        let digest: Digest = d.parse().unwrap();
        assert!(dest.has(&digest), "blob {d} missing after pull");
        let a = src.read_all(&digest).unwrap();
        let b = dest.read_all(&digest).unwrap();
        assert_eq!(a.len(), b.len(), "size of {d}");
        assert!(a == b, "bytes of {d} differ");
        assert_eq!(format!("sha256:{}", sha256_hex(&b)), *d);
    }
}

/// Files left in a layout's `ingest/` directory.
pub fn ingest_files(layout: &Path) -> usize {
    std::fs::read_dir(layout.join("ingest"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// What the proxy does to one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward untouched (but close after `budget` bytes).
    Pass,
    /// Answer `500` without asking the registry.
    Status500,
    /// Answer `429` with `Retry-After: 0`.
    Status429,
    /// Forward, then cut the connection after some bytes.
    Drop,
    /// Forward, flipping one response byte after 200 KB.
    Corrupt,
}

#[derive(Default)]
pub struct ProxyStats {
    pub connections: AtomicUsize,
    pub injected_500: AtomicUsize,
    pub injected_429: AtomicUsize,
    pub dropped: AtomicUsize,
    pub corrupted: AtomicUsize,
}

type Schedule = Box<dyn Fn(usize) -> Fault + Send + Sync>;

/// A TCP proxy on 127.0.0.1 in front of `upstream` that misbehaves on
/// schedule. `kill_after` (total response bytes) makes it call
/// `on_kill` once and refuse to forward anything after.
pub struct FaultProxy {
    pub addr: String,
    pub stats: Arc<ProxyStats>,
    stop: Arc<AtomicBool>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

pub struct ProxySettings {
    pub schedule: Schedule,
    /// Bytes a connection may carry (both ways) before the proxy cuts it.
    pub budget: u64,
    /// Bytes after which a `Drop` connection is cut.
    pub drop_after: u64,
    /// Total response bytes after which everything stops.
    pub kill_after: Option<u64>,
    pub on_kill: Option<Box<dyn FnOnce() + Send>>,
    /// When set, the first request line of every connection (`PATCH
    /// /v2/… HTTP/1.1`) is read first and this decides its fate instead of
    /// `schedule` (clients that open a connection per request make this a
    /// per-request schedule).
    pub request_filter: Option<RequestFilter>,
}

pub type RequestFilter = Box<dyn Fn(&str) -> Fault + Send + Sync>;

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            schedule: Box::new(|_| Fault::Pass),
            budget: u64::MAX,
            drop_after: u64::MAX,
            kill_after: None,
            on_kill: None,
            request_filter: None,
        }
    }
}

impl FaultProxy {
    pub fn start(upstream: &str, settings: ProxySettings) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stats = Arc::new(ProxyStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let streams: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let upstream = upstream.to_string();
        let shared = Arc::new(Shared {
            schedule: settings.schedule,
            budget: settings.budget,
            drop_after: settings.drop_after,
            kill_after: settings.kill_after,
            on_kill: Mutex::new(settings.on_kill),
            request_filter: settings.request_filter,
            response_bytes: AtomicU64::new(0),
            stop: stop.clone(),
            stats: stats.clone(),
            streams: streams.clone(),
        });
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                if shared.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                shared.stats.connections.fetch_add(1, Ordering::SeqCst);
                let shared = shared.clone();
                let upstream = upstream.clone();
                std::thread::spawn(move || handle(n, client, &upstream, &shared));
            }
        });
        FaultProxy {
            addr,
            stats,
            stop,
            streams,
        }
    }

    pub fn faults(&self) -> (usize, usize, usize) {
        (
            self.stats.injected_500.load(Ordering::SeqCst),
            self.stats.injected_429.load(Ordering::SeqCst),
            self.stats.dropped.load(Ordering::SeqCst),
        )
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        // Wake the accept loop so its thread ends.
        let _ = TcpStream::connect(&self.addr);
    }
}

struct Shared {
    schedule: Schedule,
    budget: u64,
    drop_after: u64,
    kill_after: Option<u64>,
    on_kill: Mutex<Option<Box<dyn FnOnce() + Send>>>,
    request_filter: Option<RequestFilter>,
    response_bytes: AtomicU64,
    stop: Arc<AtomicBool>,
    stats: Arc<ProxyStats>,
    streams: Arc<Mutex<Vec<TcpStream>>>,
}

impl Shared {
    fn kill(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for s in self.streams.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        if let Some(f) = self.on_kill.lock().unwrap().take() {
            f();
        }
    }
}

fn handle(n: usize, mut client: TcpStream, upstream: &str, shared: &Arc<Shared>) {
    if shared.stop.load(Ordering::SeqCst) {
        return;
    }
    // Bytes of the request already read (to be forwarded first).
    let mut head = Vec::new();
    let fault = match &shared.request_filter {
        Some(filter) => {
            client
                .set_read_timeout(Some(Duration::from_millis(500)))
                .ok();
            let mut buf = [0u8; 4096];
            while !head.windows(2).any(|w| w == b"\r\n") {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            client.set_read_timeout(None).ok();
            let text = String::from_utf8_lossy(&head);
            filter(text.lines().next().unwrap_or(""))
        }
        None => (shared.schedule)(n),
    };
    match fault {
        Fault::Status500 | Fault::Status429 => {
            // Read the request head (a TLS probe has none: give up soon).
            client
                .set_read_timeout(Some(Duration::from_millis(500)))
                .ok();
            let mut head = std::mem::take(&mut head);
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(k) => head.extend_from_slice(&buf[..k]),
                }
            }
            let (status, extra, body) = if fault == Fault::Status500 {
                shared.stats.injected_500.fetch_add(1, Ordering::SeqCst);
                (
                    "500 Internal Server Error",
                    "",
                    r#"{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}"#,
                )
            } else {
                shared.stats.injected_429.fetch_add(1, Ordering::SeqCst);
                (
                    "429 Too Many Requests",
                    "Retry-After: 0\r\n",
                    r#"{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}"#,
                )
            };
            let _ = write!(
                client,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = client.flush();
            let _ = client.shutdown(Shutdown::Write);
            // Drain what the client still sends so it reads our answer
            // instead of a reset.
            client
                .set_read_timeout(Some(Duration::from_millis(200)))
                .ok();
            while matches!(client.read(&mut buf), Ok(k) if k > 0) {}
        }
        Fault::Pass | Fault::Drop | Fault::Corrupt => {
            let Ok(mut server) = TcpStream::connect(upstream) else {
                return;
            };
            if !head.is_empty() && server.write_all(&head).is_err() {
                return;
            }
            let limit = if fault == Fault::Drop {
                shared.drop_after
            } else {
                shared.budget
            };
            if fault == Fault::Corrupt {
                shared.stats.corrupted.fetch_add(1, Ordering::SeqCst);
            }
            {
                let mut list = shared.streams.lock().unwrap();
                list.push(client.try_clone().unwrap());
                list.push(server.try_clone().unwrap());
            }
            let carried = Arc::new(AtomicU64::new(0));
            let cut = Arc::new(AtomicBool::new(false));
            let up = {
                let (c, s) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let (carried, cut, shared) = (carried.clone(), cut.clone(), shared.clone());
                std::thread::spawn(move || pump(c, s, false, limit, fault, &carried, &cut, &shared))
            };
            pump(server, client, true, limit, fault, &carried, &cut, shared);
            let _ = up.join();
            if cut.load(Ordering::SeqCst) && fault != Fault::Pass {
                shared.stats.dropped.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    response: bool,
    limit: u64,
    fault: Fault,
    carried: &AtomicU64,
    cut: &AtomicBool,
    shared: &Shared,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut sent_here = 0u64;
    let mut corrupted = false;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        let before = carried.fetch_add(n as u64, Ordering::SeqCst);
        let mut n = n;
        if before + n as u64 > limit {
            // Forward part of this read, then cut both ways.
            n = limit.saturating_sub(before) as usize;
            let _ = to.write_all(&buf[..n]);
            cut.store(true, Ordering::SeqCst);
            break;
        }
        if response && fault == Fault::Corrupt && !corrupted && sent_here + n as u64 > 200_000 {
            let at = (200_000 - sent_here.min(200_000)) as usize;
            buf[at.min(n - 1)] ^= 0xff;
            corrupted = true;
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        sent_here += n as u64;
        if response {
            let total = shared.response_bytes.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if shared.kill_after.is_some_and(|k| total >= k) {
                shared.kill();
                break;
            }
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// A token server signing ES256 JWTs with a certificate the test made,
/// as distribution's `auth.token` expects.
pub struct TokenServer {
    pub realm: String,
    pub cert_path: std::path::PathBuf,
    /// Tokens issued to requests with valid credentials.
    pub issued_authenticated: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<String>>>,
    server: Arc<tiny_http::Server>,
    _dir: tempfile::TempDir,
}

pub const TOKEN_SERVICE: &str = "hoist-test-registry";
pub const TOKEN_ISSUER: &str = "hoist-test-issuer";
/// The identity (refresh) token the token server accepts.
pub const REFRESH_TOKEN: &str = "refresh-me-please";

impl TokenServer {
    /// Accepts `user`/`password` (basic auth) and grants what is asked;
    /// without credentials grants pull only.
    pub fn start(user: &str, password: &str) -> TokenServer {
        use base64::Engine as _;
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["hoist-test-token".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("token.crt");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(cert.der());
        let encoding =
            jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let realm = format!("http://{}/token", server.server_addr().to_ip().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let issued_authenticated = Arc::new(AtomicUsize::new(0));
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        {
            let server = server.clone();
            let issued = issued.clone();
            let issued_authenticated = issued_authenticated.clone();
            let requests = requests.clone();
            std::thread::spawn(move || {
                for mut request in server.incoming_requests() {
                    let url = request.url().to_string();
                    requests.lock().unwrap().push(url.clone());
                    let auth = request
                        .headers()
                        .iter()
                        .find(|h| h.field.equiv("Authorization"))
                        .map(|h| h.value.as_str().to_string());
                    let mut authenticated = auth.as_deref() == Some(expected.as_str());
                    let mut scopes: Vec<String> = Vec::new();
                    let mut refused = auth.is_some() && !authenticated;
                    if *request.method() == tiny_http::Method::Post {
                        // The OAuth2 refresh-token flow: a form body.
                        let mut body = String::new();
                        let _ = request.as_reader().read_to_string(&mut body);
                        requests.lock().unwrap().push(format!("POST {body}"));
                        let mut refresh = None;
                        for pair in body.split('&') {
                            match pair.split_once('=') {
                                Some(("refresh_token", v)) => refresh = Some(percent_decode(v)),
                                Some(("scope", v)) => {
                                    scopes.extend(percent_decode(v).split(' ').map(str::to_string))
                                }
                                _ => {}
                            }
                        }
                        authenticated = refresh.as_deref() == Some(REFRESH_TOKEN);
                        refused = !authenticated;
                    } else {
                        let query = url.split_once('?').map(|(_, q)| q).unwrap_or("");
                        for pair in query.split('&') {
                            if let Some(("scope", v)) = pair.split_once('=') {
                                scopes.push(percent_decode(v));
                            }
                        }
                    }
                    if refused {
                        let _ = request.respond(
                            tiny_http::Response::from_string(
                                r#"{"errors":[{"code":"UNAUTHORIZED","message":"wrong user name or password"}]}"#,
                            )
                            .with_status_code(401),
                        );
                        continue;
                    }
                    let mut access = Vec::new();
                    for v in scopes.into_iter().filter(|s| !s.is_empty()) {
                        // repository:NAME:actions (NAME may hold ':' only with
                        // a port, which repositories don't have).
                        let mut parts = v.splitn(3, ':');
                        let (Some(kind), Some(name), Some(actions)) =
                            (parts.next(), parts.next(), parts.next())
                        else {
                            continue;
                        };
                        let actions: Vec<&str> = actions
                            .split(',')
                            .filter(|a| authenticated || *a == "pull")
                            .collect();
                        access.push(
                            serde_json::json!({"type": kind, "name": name, "actions": actions}),
                        );
                    }
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let n = issued.fetch_add(1, Ordering::SeqCst);
                    if authenticated {
                        issued_authenticated.fetch_add(1, Ordering::SeqCst);
                    }
                    let claims = serde_json::json!({
                        "iss": TOKEN_ISSUER,
                        "sub": if authenticated { "tester" } else { "" },
                        "aud": TOKEN_SERVICE,
                        "exp": now + 300,
                        "nbf": now - 10,
                        "iat": now,
                        "jti": format!("token-{n}-{}", fastrand::u64(..)),
                        "access": access,
                    });
                    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                    header.x5c = Some(vec![x5c.clone()]);
                    let token = jsonwebtoken::encode(&header, &claims, &encoding).unwrap();
                    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                    let _ = request.respond(
                        tiny_http::Response::from_string(body).with_header(
                            "Content-Type: application/json"
                                .parse::<tiny_http::Header>()
                                .unwrap(),
                        ),
                    );
                }
            });
        }
        TokenServer {
            realm,
            cert_path,
            issued_authenticated,
            requests,
            server,
            _dir: dir,
        }
    }

    /// The registry config section pointing at this server.
    pub fn registry_yaml(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {TOKEN_SERVICE}\n    issuer: {TOKEN_ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.cert_path.display()
        )
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.server.unblock();
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let h = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Credentials as a map for [`hoist_registry::StaticCredentials`].
pub fn static_credentials(host: &str, user: &str, password: &str) -> Arc<dyn CredentialProvider> {
    let mut map = HashMap::new();
    map.insert(
        host.to_string(),
        hoist_registry::Credential::new(user, password),
    );
    Arc::new(hoist_registry::StaticCredentials(map))
}

/// Lines of the registry's access log (not its structured log) holding
/// `needle`.
pub fn access_log(reg: &hoist_testutil::Registry, needle: &str) -> Vec<String> {
    reg.log_lines_matching(needle)
        .into_iter()
        .filter(|l| l.starts_with("127.0.0.1 - "))
        .collect()
}
