//! Registries in other people's infrastructure: TLS from a private CA
//! through certs.d directories and `SSL_CERT_FILE`, client certificates.
//! The registry is Debian's docker-registry serving TLS with a CA this test
//! makes with the openssl CLI.

use std::path::{Path, PathBuf};
use std::process::Command;

use hoist_testutil::{require_program, Registry};

use crate::util::{Hoist, Run};

/// A CA, and a server and a client certificate it signed (for 127.0.0.1).
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Pki {
        Self::for_ip(None)
    }

    /// The server certificate also names `ip` (a registry on a host address).
    pub fn for_ip(ip: Option<std::net::IpAddr>) -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.ca("ca");
        let extra = ip.map(|ip| format!(",IP:{ip}")).unwrap_or_default();
        pki.leaf(
            "server",
            "ca",
            &format!("subjectAltName=IP:127.0.0.1{extra}\nextendedKeyUsage=serverAuth"),
        );
        pki.leaf("client", "ca", "extendedKeyUsage=clientAuth");
        // A second CA that signed nothing here: trusting it must not do.
        pki.ca("other");
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        hoist_testutil::run_ok(
            Command::new("openssl")
                .current_dir(self.dir.path())
                .args(args),
        );
    }

    fn ca(&self, name: &str) {
        self.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=hoist test {name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    fn leaf(&self, name: &str, ca: &str, extensions: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), extensions).unwrap();
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.crt"),
        ]);
    }

    /// docker-registry's `http.tls`, optionally demanding a client
    /// certificate signed by our CA.
    fn registry(&self, client_certs: bool) -> Registry {
        Registry::start_with(&self.tls_yaml(client_certs))
    }

    /// A TLS registry listening on `ip`.
    pub fn registry_at(&self, ip: std::net::IpAddr) -> Registry {
        Registry::start_at(ip, &self.tls_yaml(false))
    }

    fn tls_yaml(&self, client_certs: bool) -> String {
        let mut yaml = format!(
            "  tls:\n    certificate: {}\n    key: {}\n",
            self.path("server.crt").display(),
            self.path("server.key").display()
        );
        if client_certs {
            yaml += &format!(
                "    clientcas:\n      - {}\n",
                self.path("ca.crt").display()
            );
        }
        yaml
    }
}

/// `hoist ARGS` with this test's config home (where
/// `containers/certs.d` is looked for) and no inherited TLS variables.
fn run(h: &Hoist, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut command = h.command();
    command
        .env("XDG_CONFIG_HOME", h.path("config"))
        .env("REGISTRY_AUTH_FILE", h.path("auth.json"))
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    hoist_testutil::cli::run(&mut command, None)
}

fn ok(h: &Hoist, args: &[&str], env: &[(&str, &Path)]) -> Run {
    let r = run(h, args, env);
    assert_eq!(
        r.code(),
        0,
        "hoist {args:?}:\nstdout: {}\nstderr: {}",
        r.stdout,
        r.stderr
    );
    r
}

/// `$XDG_CONFIG_HOME/containers/certs.d/HOST/` of this test, emptied.
fn certs_dir(h: &Hoist, host: &str) -> PathBuf {
    let dir = h.path("config/containers/certs.d").join(host);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_private_ca_in_certs_d_is_trusted_with_verification_on() {
    require_program!("docker-registry");
    require_program!("openssl");
    let pki = Pki::new();
    let registry = pki.registry(false);
    let h = Hoist::new();
    h.import_busybox("busybox");
    let target = format!("{}/private/busybox:1", registry.addr);
    ok(&h, &["tag", "busybox", &target], &[]);

    // The CA in certs.d: push and pull over verified TLS.
    let dir = certs_dir(&h, &registry.addr);
    std::fs::copy(pki.path("ca.crt"), dir.join("ca.crt")).unwrap();
    let push = ok(&h, &["push", &target], &[]);
    assert!(
        push.stdout.starts_with("1: digest: sha256:"),
        "{}",
        push.stdout
    );
    let config = h.path("config");
    let with_config: &[(&str, &Path)] = &[("XDG_CONFIG_HOME", &config)];
    let fresh = Hoist::new();
    let pull = ok(&fresh, &["pull", &target], with_config);
    assert!(
        pull.stdout.ends_with(&format!("{target}\n")),
        "{}",
        pull.stdout
    );
    let log = registry.log();
    assert!(log.contains("GET /v2/private/busybox/manifests/1"), "{log}");

    // Verification is on: a certs.d directory trusting another CA fails,
    // naming the certificate problem; nothing falls back to plain HTTP.
    let dir = certs_dir(&h, &registry.addr);
    std::fs::copy(pki.path("other.crt"), dir.join("ca.crt")).unwrap();
    let other = Hoist::new();
    let r = run(&other, &["pull", &target], with_config);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(
        r.stderr.to_lowercase().contains("certificate"),
        "{}",
        r.stderr
    );
    assert!(other.ok(&["images", "-q"]).is_empty());

    // `hoist info --registry HOST` names the directory that applies.
    let info = ok(&h, &["info", "--registry", &registry.addr], &[]);
    let expected = h.path("config/containers/certs.d").join(&registry.addr);
    assert!(
        info.stdout.contains(&format!(
            "certs.d for {}: {} (ca.crt)",
            registry.addr,
            expected.display()
        )),
        "{}",
        info.stdout
    );
}

#[test]
fn ssl_cert_file_replaces_the_system_roots() {
    require_program!("docker-registry");
    require_program!("openssl");
    let pki = Pki::new();
    let registry = pki.registry(false);
    let h = Hoist::new();
    h.import_busybox("busybox");
    let target = format!("{}/busybox:1", registry.addr);
    ok(&h, &["tag", "busybox", &target], &[]);
    // An empty certs.d directory turns verification on for this loopback
    // registry without adding a root: the CA must come from SSL_CERT_FILE.
    certs_dir(&h, &registry.addr);
    let r = run(&h, &["push", &target], &[]);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(
        r.stderr.to_lowercase().contains("certificate"),
        "{}",
        r.stderr
    );
    ok(
        &h,
        &["push", &target],
        &[("SSL_CERT_FILE", &pki.path("ca.crt"))],
    );
}

#[test]
fn a_registry_requiring_client_certificates_gets_the_certs_d_pair() {
    require_program!("docker-registry");
    require_program!("openssl");
    let pki = Pki::new();
    let registry = pki.registry(true);
    let h = Hoist::new();
    h.import_busybox("busybox");
    let target = format!("{}/mtls:1", registry.addr);
    ok(&h, &["tag", "busybox", &target], &[]);
    let dir = certs_dir(&h, &registry.addr);
    std::fs::copy(pki.path("ca.crt"), dir.join("ca.crt")).unwrap();

    // Without a client certificate the handshake is refused.
    let r = run(&h, &["push", &target], &[]);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(r.stderr.contains("failed to ping"), "{}", r.stderr);

    // A key without its certificate is named, as Docker does.
    std::fs::copy(pki.path("client.key"), dir.join("client.key")).unwrap();
    let r = run(&h, &["push", &target], &[]);
    assert_eq!(r.code(), 1, "{}", r.stdout);
    assert!(
        r.stderr.contains(&format!(
            "{}: client key without its certificate {}",
            dir.join("client.key").display(),
            dir.join("client.cert").display()
        )),
        "{}",
        r.stderr
    );

    std::fs::copy(pki.path("client.crt"), dir.join("client.cert")).unwrap();
    let push = ok(&h, &["push", &target], &[]);
    assert!(
        push.stdout.starts_with("1: digest: sha256:"),
        "{}",
        push.stdout
    );
    let info = ok(&h, &["info", "--registry", &registry.addr], &[]);
    assert!(
        info.stdout.contains("(ca.crt, client.cert, client.key)"),
        "{}",
        info.stdout
    );
}

/// podman's `$XDG_RUNTIME_DIR/containers/auth.json` is read, before
/// Docker's `config.json` (containers/image's order); `hoist login` says
/// which file it wrote and that podman's hides it.
#[test]
fn podmans_auth_file_is_read_before_dockers() {
    require_program!("docker-registry");
    require_program!("htpasswd");
    let registry = Registry::start_basic_auth("alice", "s3cret");
    let h = Hoist::new();
    h.import_busybox("busybox");
    let target = format!("{}/podman:1", registry.addr);
    h.ok(&["tag", "busybox", &target]);
    let (runtime, home) = (h.path("run-user"), h.path("home"));
    // base64 of `alice:s3cret` and of `alice:wrong`.
    let auth = |encoded: &str| {
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{encoded}\"}}}}}}",
            registry.addr
        )
    };
    std::fs::create_dir_all(runtime.join("containers")).unwrap();
    std::fs::create_dir_all(home.join(".docker")).unwrap();
    std::fs::write(
        runtime.join("containers/auth.json"),
        auth("YWxpY2U6czNjcmV0"),
    )
    .unwrap();
    std::fs::write(home.join(".docker/config.json"), auth("YWxpY2U6d3Jvbmc=")).unwrap();
    let hoist = |args: &[&str], stdin: Option<&[u8]>| {
        let mut command = h.command();
        command
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("DOCKER_CONFIG")
            .env("XDG_RUNTIME_DIR", &runtime)
            .env("XDG_CONFIG_HOME", h.path("config"))
            .env("HOME", &home)
            .args(args);
        hoist_testutil::cli::run(&mut command, stdin)
    };
    let r = hoist(&["push", &target], None);
    assert_eq!(r.code(), 0, "podman's file must answer first: {}", r.stderr);

    let info = hoist(&["info"], None);
    let podman = runtime.join("containers/auth.json");
    let docker = home.join(".docker/config.json");
    assert!(
        info.stdout.contains(&format!(
            "Credentials read from (first match wins):\n  {} (exists)\n  {} (missing)\n  {} (exists)\n",
            podman.display(),
            h.path("config/containers/auth.json").display(),
            docker.display()
        )),
        "{}",
        info.stdout
    );

    // Login writes Docker's file, says so, and warns that podman's entry
    // is read first.
    let r = hoist(
        &["login", "-u", "alice", "--password-stdin", &registry.addr],
        Some(b"s3cret\n"),
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_eq!(r.stdout, "Login Succeeded\n");
    assert!(
        r.stderr.contains(&format!(
            "Credentials saved in {} (base64, not encrypted)",
            docker.display()
        )),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains(&format!(
            "warning: {} also has credentials for {} and is read first",
            podman.display(),
            registry.addr
        )),
        "{}",
        r.stderr
    );
    // Without podman's entry, Docker's file (now right) answers.
    std::fs::remove_file(&podman).unwrap();
    let r = hoist(&["push", &target], None);
    assert_eq!(r.code(), 0, "{}", r.stderr);
}
