//! Per-registry TLS material as Docker and containers/image lay it out:
//! a `certs.d/HOST[:PORT]/` directory whose `*.crt` files are extra CA roots
//! and whose `*.cert`/`*.key` pairs are client certificates.
//!
//! The roots are searched in containers/image's order and the first one
//! holding a directory for the host wins (c/image's `dockerCertDir`):
//! `$XDG_CONFIG_HOME/containers/certs.d` (`~/.config/…`),
//! `/etc/containers/certs.d`, `/etc/docker/certs.d` (Docker's only one).
//! `SSL_CERT_FILE`/`SSL_CERT_DIR` are read by rustls-native-certs in place
//! of the system bundle; these add to whatever that gives.

use std::path::{Path, PathBuf};

/// Reading a certs.d directory failed; the path names the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or the directory could not be read.
    #[error("failed to read {}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A `.crt`, `.cert` or `.key` file is not what it should be.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
}

/// The certs.d roots searched, first match wins.
pub fn certs_d_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    if let Some(dir) = hoist_untrusted::xdg::config_home() {
        roots.push(dir.join("containers/certs.d"));
    }
    roots.push(PathBuf::from("/etc/containers/certs.d"));
    roots.push(PathBuf::from("/etc/docker/certs.d"));
    roots
}

/// `root/HOST[:PORT]` for every root, whether it exists or not: what
/// `hoist info` lists for a host.
pub fn candidate_dirs(host: &str) -> Vec<PathBuf> {
    certs_d_roots()
        .into_iter()
        .filter_map(|root| host_dir(&root, host))
        .collect()
}

/// The directory that applies to `host` (`registry.example:5000`), if any.
pub fn certs_dir_for(host: &str) -> Option<PathBuf> {
    candidate_dirs(host).into_iter().find(|d| d.is_dir())
}

/// `root/host`, refusing a host that would leave the root (`..`, `/`).
fn host_dir(root: &Path, host: &str) -> Option<PathBuf> {
    let plain = !host.is_empty()
        && host != "."
        && host != ".."
        && !host.contains('/')
        && !host.contains('\0');
    plain.then(|| root.join(host))
}

/// What a certs.d directory holds, loaded.
#[derive(Clone)]
pub struct HostTls {
    /// The directory it came from.
    pub dir: PathBuf,
    /// `*.crt`: CA roots, added to the default ones.
    pub roots: Vec<reqwest::Certificate>,
    /// The first `*.cert` (by name) with its `*.key`: the client identity.
    pub identity: Option<reqwest::Identity>,
    /// The files read, for messages and `hoist info`.
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for HostTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostTls")
            .field("dir", &self.dir)
            .field("roots", &self.roots.len())
            .field("identity", &self.identity.is_some())
            .field("files", &self.files)
            .finish()
    }
}

impl HostTls {
    /// Load `dir`. As Docker: a `.cert` without its `.key` (or the reverse)
    /// is an error naming both, other files are ignored.
    pub fn load(dir: &Path) -> Result<HostTls, TlsError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| TlsError::Read { path, source }
        };
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err(dir))?
            .map(|e| e.map(|e| e.path()).map_err(read_err(dir)))
            .collect::<Result<_, _>>()?;
        names.sort();
        let mut tls = HostTls {
            dir: dir.to_path_buf(),
            roots: Vec::new(),
            identity: None,
            files: Vec::new(),
        };
        for path in &names {
            match path.extension().and_then(|e| e.to_str()) {
                Some("crt") => {
                    let pem = std::fs::read(path).map_err(read_err(path))?;
                    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                        TlsError::Invalid {
                            path: path.clone(),
                            message: format!("not a PEM certificate bundle: {e}"),
                        }
                    })?;
                    if certs.is_empty() {
                        return Err(TlsError::Invalid {
                            path: path.clone(),
                            message: "no PEM certificate in it".into(),
                        });
                    }
                    tls.roots.extend(certs);
                    tls.files.push(path.clone());
                }
                Some("cert") => {
                    let key = path.with_extension("key");
                    if !key.is_file() {
                        return Err(TlsError::Invalid {
                            path: path.clone(),
                            message: format!(
                                "client certificate without its key {} (CA certificates \
                                 must end in .crt)",
                                key.display()
                            ),
                        });
                    }
                    if tls.identity.is_some() {
                        continue;
                    }
                    let mut pem = std::fs::read(path).map_err(read_err(path))?;
                    pem.push(b'\n');
                    pem.extend(std::fs::read(&key).map_err(read_err(&key))?);
                    let identity =
                        reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::Invalid {
                            path: path.clone(),
                            message: format!(
                                "not a PEM client certificate and key (with {}): {e}",
                                key.display()
                            ),
                        })?;
                    tls.identity = Some(identity);
                    tls.files.push(path.clone());
                    tls.files.push(key);
                }
                Some("key") => {
                    let cert = path.with_extension("cert");
                    if !cert.is_file() {
                        return Err(TlsError::Invalid {
                            path: path.clone(),
                            message: format!(
                                "client key without its certificate {}",
                                cert.display()
                            ),
                        });
                    }
                }
                _ => {}
            }
        }
        Ok(tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_cannot_name_a_directory_outside_the_root() {
        let root = Path::new("/etc/docker/certs.d");
        assert_eq!(
            host_dir(root, "registry.example:5000"),
            Some(root.join("registry.example:5000"))
        );
        for bad in ["", ".", "..", "a/../../etc", "/etc"] {
            assert_eq!(host_dir(root, bad), None, "{bad}");
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.cert"), "x").unwrap();
        let err = HostTls::load(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("client.cert: client certificate without its key"),
            "{err}"
        );
        assert!(err.contains("client.key"), "{err}");
    }

    #[test]
    fn a_crt_that_is_not_pem_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), "not a certificate").unwrap();
        let err = HostTls::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.crt: no PEM certificate"), "{err}");
    }
}
