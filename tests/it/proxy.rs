//! `HTTP_PROXY`/`HTTPS_PROXY`/`NO_PROXY` for registries, `ADD` URLs and
//! remote contexts, through a real proxy (Debian's tinyproxy) that counts
//! the requests it relays; and RUN steps getting them as Docker's
//! predefined build args.

use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hoist_testutil::{require_program, Registry};

use crate::util::{Hoist, Run};

/// tinyproxy on 127.0.0.1, logging every request it relays; killed on drop.
struct Proxy {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proxy {
    fn start() -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let port = hoist_testutil::free_port();
        let log = dir.path().join("tinyproxy.log");
        let config = dir.path().join("tinyproxy.conf");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 50\nAllow 127.0.0.1\n\
                 LogLevel Info\nLogFile \"{}\"\nPidFile \"{}\"\n",
                log.display(),
                dir.path().join("tinyproxy.pid").display()
            ),
        )
        .unwrap();
        let child = Command::new("tinyproxy")
            .arg("-d")
            .arg("-c")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy (Debian package tinyproxy)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tinyproxy did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Proxy {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        }
    }

    /// Requests relayed to `host` (`ip:port`) so far.
    fn requests_to(&self, host: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Request (file descriptor") && l.contains(host))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nothing listens on: a proxy there refuses every connection.
fn dead_proxy() -> String {
    format!("http://127.0.0.1:{}", hoist_testutil::free_port())
}

/// The host's own address: loopback is never proxied, so the registry the
/// proxy relays to listens here.
fn host_ip() -> Option<IpAddr> {
    hoist_testutil::net::host_ipv4().map(IpAddr::V4)
}

/// `hoist ARGS` with exactly the given proxy variables and a config that
/// lists `insecure` as an insecure (plain HTTP) registry.
fn run(h: &Hoist, args: &[&str], insecure: &str, vars: &[(&str, &str)]) -> Run {
    let config = h.path("config");
    std::fs::create_dir_all(config.join("hoist")).unwrap();
    std::fs::write(
        config.join("hoist/config.toml"),
        format!("[registry]\ninsecure-registries = [\"{insecure}\"]\n"),
    )
    .unwrap();
    let mut command = h.command();
    command
        .env("XDG_CONFIG_HOME", &config)
        .env("REGISTRY_AUTH_FILE", h.path("auth.json"))
        .args(args);
    for name in hoist_registry_proxy_names() {
        command.env_remove(name);
    }
    for (k, v) in vars {
        command.env(k, v);
    }
    hoist_testutil::cli::run(&mut command, None)
}

fn hoist_registry_proxy_names() -> [&'static str; 10] {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "FTP_PROXY",
        "ftp_proxy",
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
}

fn assert_ok(r: &Run, what: &str) {
    assert_eq!(
        r.code(),
        0,
        "{what}:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
}

fn sha256_file(path: &Path) -> String {
    crate::util::sha256_file(path)
}

#[test]
fn pulls_add_urls_and_remote_contexts_go_through_the_proxy() {
    require_program!("docker-registry");
    require_program!("tinyproxy");
    let Some(ip) = host_ip() else {
        hoist_testutil::cannot_run("this test needs a non-loopback IPv4 address");
        return;
    };
    let registry = Registry::start_at(ip, "");
    let host = registry.addr.clone();
    let proxy = Proxy::start();

    // Seed the registry directly (no proxy variables at all).
    let h = Hoist::new();
    h.import_busybox("busybox");
    // A tarball context: a tar holding a Dockerfile, pushed as a layer.
    let context_tar = h.path("context.tar");
    crate::util::make_tar(
        &context_tar,
        &[(
            "Dockerfile",
            b"FROM scratch\nCOPY Dockerfile /from-remote-context\n",
        )],
    );
    h.ok(&["import", context_tar.to_str().unwrap(), "context:1"]);
    for (local, remote) in [
        ("busybox", "proxied/busybox:1"),
        ("context:1", "proxied/context:1"),
    ] {
        let target = format!("{host}/{remote}");
        h.ok(&["tag", local, &target]);
        assert_ok(&run(&h, &["push", &target], &host, &[]), "seed push");
    }
    let context_layer = h.inspect("context:1")["Layers"][0]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    let busybox_layer = h.inspect("busybox")["Layers"][0]["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(proxy.requests_to(&host), 0);

    let via_proxy = [("HTTP_PROXY", proxy.url.as_str())];
    let dead = dead_proxy();
    let via_dead = [("HTTP_PROXY", dead.as_str())];
    let image = format!("{host}/proxied/busybox:1");

    // `hoist info` shows what applies, without the proxy's password.
    let r = run(
        &h,
        &["info"],
        &host,
        &[
            ("HTTPS_PROXY", "http://me:hunter2@proxy.example:3128"),
            ("no_proxy", "internal"),
        ],
    );
    assert_ok(&r, "info");
    assert!(
        r.stdout
            .contains("  HTTPS_PROXY=http://me:***@proxy.example:3128\n  NO_PROXY=internal\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("hunter2"), "{}", r.stdout);

    // A dead proxy makes the pull fail: nothing goes around it.
    let fresh = Hoist::new();
    let r = run(&fresh, &["pull", &image], &host, &via_dead);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(fresh.ok(&["images", "-q"]).is_empty());

    // Through tinyproxy: the pull works and every request was relayed.
    let r = run(&fresh, &["pull", &image], &host, &via_proxy);
    assert_ok(&r, "pull through the proxy");
    let relayed = proxy.requests_to(&host);
    assert!(
        relayed >= 3,
        "ping, manifest, blobs: {relayed} requests relayed"
    );

    // NO_PROXY naming the registry: direct, even with a dead proxy.
    let direct = Hoist::new();
    let r = run(
        &direct,
        &["pull", &image],
        &host,
        &[via_dead[0], ("NO_PROXY", &ip.to_string())],
    );
    assert_ok(&r, "pull with NO_PROXY");
    // Loopback is never proxied (as Go's httpproxy, Docker's rule).
    let local = Registry::start();
    let r = run(
        &direct,
        &["tag", &image, &format!("{}/l:1", local.addr)],
        &host,
        &[],
    );
    assert_ok(&r, "tag");
    let r = run(
        &direct,
        &["push", &format!("{}/l:1", local.addr)],
        &host,
        &via_dead,
    );
    assert_ok(&r, "push to loopback with a dead proxy");
    assert_eq!(proxy.requests_to(&host), relayed);

    // ADD of a URL: the blob URL of the registry serves the layer's bytes.
    let before = proxy.requests_to(&host);
    let url = format!("http://{host}/v2/proxied/busybox/blobs/{busybox_layer}");
    std::fs::write(
        fresh.path("Dockerfile"),
        format!("FROM scratch\nADD {url} /layer.tar.gz\n"),
    )
    .unwrap();
    let out = fresh.path("out");
    let r = run(
        &fresh,
        &[
            "build",
            "--progress",
            "plain",
            "-o",
            &format!("type=local,dest={}", out.display()),
            fresh.path("").to_str().unwrap(),
        ],
        &host,
        &via_proxy,
    );
    assert_ok(&r, "ADD through the proxy");
    assert_eq!(sha256_file(&out.join("layer.tar.gz")), busybox_layer);
    assert!(proxy.requests_to(&host) > before, "ADD was not relayed");

    // A tarball context by URL.
    let before = proxy.requests_to(&host);
    let url = format!("http://{host}/v2/proxied/context/blobs/{context_layer}");
    let out = fresh.path("out-context");
    let r = run(
        &fresh,
        &[
            "build",
            "-o",
            &format!("type=local,dest={}", out.display()),
            &url,
        ],
        &host,
        &via_proxy,
    );
    assert_ok(&r, "remote context through the proxy");
    assert!(out.join("from-remote-context").is_file());
    assert!(
        proxy.requests_to(&host) > before,
        "the context download was not relayed"
    );
    let r = run(
        &fresh,
        &[
            "build",
            "-o",
            &format!("type=local,dest={}", out.display()),
            &url,
        ],
        &host,
        &via_dead,
    );
    assert_eq!(
        r.code(),
        1,
        "a dead proxy must fail the context download: {}",
        r.stderr
    );
}

/// A TLS registry (private CA in certs.d) through `HTTPS_PROXY`: the
/// proxy relays a CONNECT tunnel and the certificate is still verified
/// end to end.
#[test]
fn an_https_registry_is_reached_through_a_connect_tunnel() {
    require_program!("docker-registry");
    require_program!("tinyproxy");
    require_program!("openssl");
    let Some(ip) = host_ip() else {
        hoist_testutil::cannot_run("this test needs a non-loopback IPv4 address");
        return;
    };
    let pki = crate::private_registry::Pki::for_ip(Some(ip));
    let registry = pki.registry_at(ip);
    let host = registry.addr.clone();
    let proxy = Proxy::start();
    let h = Hoist::new();
    h.import_busybox("busybox");
    let certs = h.path("config/containers/certs.d").join(&host);
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(pki.path("ca.crt"), certs.join("ca.crt")).unwrap();
    let image = format!("{host}/tunnel/busybox:1");
    h.ok(&["tag", "busybox", &image]);

    let dead = dead_proxy();
    let r = run(
        &h,
        &["push", &image],
        "none.invalid",
        &[("HTTPS_PROXY", &dead)],
    );
    assert_eq!(r.code(), 1, "a dead proxy must fail the push: {}", r.stdout);
    // HTTP_PROXY does not apply to https URLs.
    let r = run(
        &h,
        &["push", &image],
        "none.invalid",
        &[("HTTP_PROXY", &dead)],
    );
    assert_ok(&r, "push with only HTTP_PROXY set");
    assert_eq!(proxy.requests_to(&host), 0);

    let fresh = Hoist::new();
    let r = run(
        &fresh,
        &["pull", &image],
        "none.invalid",
        &[
            ("HTTPS_PROXY", &proxy.url),
            ("XDG_CONFIG_HOME", h.path("config").to_str().unwrap()),
        ],
    );
    assert_ok(&r, "pull through the CONNECT tunnel");
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("Request (file descriptor")
                && l.contains(&format!("CONNECT {host}"))),
        "no CONNECT {host} in the proxy's log:\n{log}"
    );
}

/// RUN steps get the proxy variables of hoist's environment as Docker's
/// predefined build args: in the step's environment, not in the image's
/// config or history, not in the cache key.
#[test]
fn run_steps_get_proxy_variables_outside_the_cache_key_and_history() {
    hoist_testutil::require_root!();
    let h = Hoist::new();
    h.import_busybox("busybox");
    std::fs::write(
        h.path("Dockerfile"),
        "FROM busybox\nENV no_proxy=from-env\nRUN echo \"$HTTP_PROXY|$https_proxy|$no_proxy|$FTP_PROXY\" > /proxy.txt\n",
    )
    .unwrap();
    let build = |vars: &[(&str, &str)], extra: &[&str], out: &str| {
        let dest = h.path(out);
        let mut args = vec!["build", "--progress", "plain"];
        args.extend_from_slice(extra);
        let dest_arg = format!("type=local,dest={}", dest.display());
        args.extend(["-o", &dest_arg]);
        let context = h.path("");
        args.push(context.to_str().unwrap());
        let r = run(&h, &args, "none.invalid", vars);
        assert_ok(&r, "build");
        (r, dest)
    };
    let (r, out) = build(
        &[
            ("HTTP_PROXY", "http://proxy.example:3128"),
            ("https_proxy", "http://s:3129"),
            ("no_proxy", "x"),
        ],
        &["--build-arg", "FTP_PROXY=ftp://arg:21"],
        "one",
    );
    // ENV of the stage wins over the environment; --build-arg is passed too.
    assert_eq!(
        std::fs::read_to_string(out.join("proxy.txt")).unwrap(),
        "http://proxy.example:3128|http://s:3129|from-env|ftp://arg:21\n",
        "{}",
        r.stderr
    );
    // Another proxy: the step is cached (not part of the key).
    let (r, _) = build(
        &[("HTTP_PROXY", "http://elsewhere:8080")],
        &["--build-arg", "FTP_PROXY=ftp://arg:21"],
        "two",
    );
    assert!(
        r.stderr.contains("> /proxy.txt\n#2 CACHED\n"),
        "{}",
        r.stderr
    );
    // Neither the history nor the config mention a proxy (-o local stores
    // no image: build it into the store).
    let r = run(
        &h,
        &["build", "-t", "proxied", h.path("").to_str().unwrap()],
        "none.invalid",
        &[("HTTP_PROXY", "http://proxy.example:3128")],
    );
    assert_ok(&r, "build into the store");
    let history = h.ok(&["history", "--no-trunc", "proxied"]);
    let config = h.ok(&["inspect", "proxied"]);
    for text in [&history, &config] {
        assert!(
            !text.contains("proxy.example") && !text.contains("arg:21"),
            "{text}"
        );
    }
}
