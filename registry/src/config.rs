//! Registry settings from hoist's config files: mirrors for docker.io and
//! insecure registries, in the spirit of Docker's `daemon.json`.
//!
//! ```toml
//! [registry]
//! registry-mirrors = ["https://mirror.example.com", "http://127.0.0.1:5001"]
//! insecure-registries = ["myregistry:5000", "10.0.0.0/8"]
//! ```
//!
//! `/etc/hoist/config.toml` is read first, then
//! `$XDG_CONFIG_HOME/hoist/config.toml` (`~/.config/hoist/config.toml`); a
//! key set in the later file replaces the earlier value.

use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Errors reading the config files.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("failed to read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error (it carries line and column).
        #[source]
        source: toml::de::Error,
    },
    /// A mirror is not an http(s) URL.
    #[error("invalid registry mirror `{mirror}` in {path}: {reason}")]
    Mirror {
        /// The file.
        path: PathBuf,
        /// The value.
        mirror: String,
        /// Why.
        reason: String,
    },
}

/// The `[registry]` table of a config file; absent keys leave the earlier
/// file's value in place.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RegistrySection {
    registry_mirrors: Option<Vec<String>>,
    insecure_registries: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ConfigFile {
    #[serde(default)]
    registry: RegistrySection,
}

/// The effective registry settings.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct RegistryConfig {
    /// Mirrors of docker.io, tried in order before the origin
    /// (`https://host[:port]`; a bare host means https).
    pub registry_mirrors: Vec<String>,
    /// Hosts (`host[:port]`) or CIDR ranges that may be reached over plain
    /// HTTP or TLS without verification.
    pub insecure_registries: Vec<String>,
    /// The files that were read, in order (not part of the TOML output).
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

impl RegistryConfig {
    /// The system-wide then per-user config file paths.
    pub fn default_paths() -> Vec<PathBuf> {
        hoist_untrusted::xdg::config_files()
    }

    /// Load and merge the default files ([`RegistryConfig::default_paths`]);
    /// missing files are skipped.
    pub fn load() -> Result<RegistryConfig, ConfigError> {
        Self::load_from(&Self::default_paths())
    }

    /// Load and merge `paths` in order (later keys override); missing files
    /// are skipped.
    pub fn load_from(paths: &[PathBuf]) -> Result<RegistryConfig, ConfigError> {
        let mut config = RegistryConfig::default();
        for path in paths {
            let text = match std::fs::read_to_string(path) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(source) => {
                    return Err(ConfigError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            };
            let file: ConfigFile = toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: path.clone(),
                source,
            })?;
            if let Some(mirrors) = file.registry.registry_mirrors {
                for m in &mirrors {
                    validate_mirror(m).map_err(|reason| ConfigError::Mirror {
                        path: path.clone(),
                        mirror: m.clone(),
                        reason,
                    })?;
                }
                config.registry_mirrors = mirrors;
            }
            if let Some(insecure) = file.registry.insecure_registries {
                config.insecure_registries = insecure;
            }
            config.sources.push(path.clone());
        }
        Ok(config)
    }

    /// The effective settings as a `[registry]` TOML table, with the files
    /// they came from as comments (for `hoist info`).
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        if self.sources.is_empty() {
            out.push_str("# no config file found; defaults in effect\n");
        }
        for s in &self.sources {
            out.push_str(&format!("# from {}\n", s.display()));
        }
        #[derive(Serialize)]
        struct Wrapper<'a> {
            registry: &'a RegistryConfig,
        }
        out.push_str(&toml::to_string(&Wrapper { registry: self }).unwrap_or_default());
        out
    }

    /// Mirror base URLs for `registry` (only docker.io has mirrors), in the
    /// order to try them; the origin is not included.
    pub fn mirrors_for(&self, registry: &str) -> Vec<String> {
        if registry != crate::reference::DEFAULT_REGISTRY {
            return Vec::new();
        }
        self.registry_mirrors
            .iter()
            .map(|m| {
                let m = m.trim_end_matches('/');
                if m.contains("://") {
                    m.to_string()
                } else {
                    format!("https://{m}")
                }
            })
            .collect()
    }

    /// Whether `host` (`name[:port]`) is listed as insecure (by name or by a
    /// CIDR range containing its IP literal).
    pub fn is_insecure(&self, host: &str) -> bool {
        let (name, _) = split_host_port(host);
        self.insecure_registries.iter().any(|entry| {
            let entry = entry
                .trim()
                .trim_start_matches("http://")
                .trim_start_matches("https://")
                .trim_end_matches('/');
            if entry == host {
                return true;
            }
            if let Some((net, bits)) = entry.split_once('/') {
                if let (Ok(net), Ok(bits), Ok(ip)) = (
                    net.parse::<IpAddr>(),
                    bits.parse::<u32>(),
                    name.parse::<IpAddr>(),
                ) {
                    return cidr_contains(net, bits, ip);
                }
                return false;
            }
            // A listed host without port covers every port, as Docker's
            // index lookup does for hostnames.
            !entry.contains(':') && entry == name
        })
    }

    /// Whether plain HTTP may be used for `host`: listed as insecure, or a
    /// loopback address (Docker allows 127.0.0.0/8 by default).
    pub fn allows_http(&self, host: &str) -> bool {
        is_loopback(host) || self.is_insecure(host)
    }
}

impl std::fmt::Display for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_toml())
    }
}

fn validate_mirror(m: &str) -> Result<(), String> {
    let url = if m.contains("://") {
        m.to_string()
    } else {
        format!("https://{m}")
    };
    let parsed = reqwest::Url::parse(&url).map_err(|e| e.to_string())?;
    if parsed.scheme() != "http" && parsed.scheme() != "https" {
        return Err("the scheme must be http or https".into());
    }
    if parsed.host_str().is_none() {
        return Err("no host".into());
    }
    if !matches!(parsed.path(), "" | "/") {
        return Err("a mirror URL cannot have a path".into());
    }
    Ok(())
}

/// Split `host:port`, `[v6]:port`, `host`.
pub(crate) fn split_host_port(host: &str) -> (&str, Option<&str>) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']') {
            return (addr, after.strip_prefix(':'));
        }
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (host, None),
    }
}

/// `localhost`, 127.0.0.0/8 or ::1.
pub(crate) fn is_loopback(host: &str) -> bool {
    let (name, _) = split_host_port(host);
    name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn cidr_contains(net: IpAddr, bits: u32, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_file_overrides_earlier_keys() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("system.toml");
        let user = dir.path().join("user.toml");
        std::fs::write(
            &system,
            "[registry]\nregistry-mirrors = [\"https://m1.example\"]\ninsecure-registries = [\"a:5000\"]\n",
        )
        .unwrap();
        std::fs::write(
            &user,
            "[registry]\ninsecure-registries = [\"10.0.0.0/8\", \"reg.local\"]\n",
        )
        .unwrap();
        let missing = dir.path().join("missing.toml");
        let c = RegistryConfig::load_from(&[system.clone(), user.clone(), missing]).unwrap();
        assert_eq!(c.registry_mirrors, vec!["https://m1.example"]);
        assert_eq!(c.insecure_registries, vec!["10.0.0.0/8", "reg.local"]);
        assert_eq!(c.sources, vec![system, user]);
        assert!(c.is_insecure("10.1.2.3:5000"));
        assert!(c.is_insecure("reg.local:443"));
        assert!(!c.is_insecure("a:5000"));
        assert!(!c.is_insecure("11.0.0.1"));
        assert!(c.allows_http("127.0.0.1:5000"));
        assert!(c.allows_http("localhost:5000"));
        assert!(c.allows_http("[::1]:5000"));
        assert!(!c.allows_http("example.com"));
        assert_eq!(c.mirrors_for("docker.io"), vec!["https://m1.example"]);
        assert!(c.mirrors_for("quay.io").is_empty());
        let shown = c.to_toml();
        assert!(shown.contains("[registry]"), "{shown}");
        assert!(
            shown.contains("registry-mirrors = [\"https://m1.example\"]"),
            "{shown}"
        );
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[registry]\nregistry-mirors = []\n").unwrap();
        let err = RegistryConfig::load_from(std::slice::from_ref(&f)).unwrap_err();
        assert!(err.to_string().contains("c.toml"), "{err}");
        std::fs::write(&f, "[registry]\nregistry-mirrors = [\"ftp://x\"]\n").unwrap();
        let err = RegistryConfig::load_from(std::slice::from_ref(&f)).unwrap_err();
        assert!(err.to_string().contains("ftp://x"), "{err}");
        // Other sections of the shared hoist config are not ours to judge.
        std::fs::write(&f, "[build]\nx = 1\n").unwrap();
        assert!(RegistryConfig::load_from(&[f]).is_ok());
    }
}
