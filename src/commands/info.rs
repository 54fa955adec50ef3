//! `hoist info`: where hoist keeps things and which settings are in effect.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use hoist_registry::{AuthFile, RegistryConfig};

use crate::context::Context;

/// Show the store, runtime and registry settings in effect
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Also show the TLS files (certs.d directory) used for this registry
    /// host (`registry.example:5000`)
    #[arg(long, value_name = "HOST")]
    registry: Option<String>,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let config = RegistryConfig::load().context("failed to read the registry configuration")?;
    let auth_file = AuthFile::default_path();
    let mut out = std::io::stdout().lock();
    writeln!(out, "Store root: {}", context.root.display())?;
    writeln!(out, "Snapshotter: {}", snapshotter())?;
    writeln!(out, "Runtimes found: {}", runtimes())?;
    let state = if auth_file.exists() {
        "exists"
    } else {
        "not created yet"
    };
    writeln!(out, "Auth file: {} ({state})", auth_file.display())?;
    writeln!(out, "Credentials read from (first match wins):")?;
    for file in hoist_registry::AuthChain::discover().files() {
        let state = if file.path().exists() {
            "exists"
        } else {
            "missing"
        };
        writeln!(out, "  {} ({state})", file.path().display())?;
    }
    writeln!(out, "Registry config:")?;
    for line in config.to_toml().lines() {
        writeln!(out, "  {line}")?;
    }
    tls(&mut out, args.registry.as_deref())?;
    let proxy = hoist_registry::proxy::ProxySettings::from_env();
    if proxy.is_empty() {
        writeln!(out, "Proxies: none")?;
    } else {
        writeln!(
            out,
            "Proxies (loopback always direct; RUN steps get them too):"
        )?;
        for line in proxy.describe() {
            writeln!(out, "  {}", escape(&line))?;
        }
    }
    Ok(())
}

/// The certs.d roots and the directories present in them; for `host`, the
/// one that applies and its files.
fn tls(out: &mut impl Write, host: Option<&str>) -> anyhow::Result<()> {
    let roots = hoist_registry::tls::certs_d_roots();
    writeln!(
        out,
        "Registry TLS (certs.d, the first root with a HOST[:PORT] directory wins):"
    )?;
    for root in &roots {
        let mut hosts: Vec<String> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| escape(&e.file_name().to_string_lossy()))
            .collect();
        hosts.sort();
        let listed = if hosts.is_empty() {
            "no host directories".to_string()
        } else {
            hosts.join(", ")
        };
        writeln!(out, "  {}: {listed}", root.display())?;
    }
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        let value = std::env::var_os(var)
            .map(|v| escape(&v.to_string_lossy()))
            .unwrap_or_else(|| "not set (system roots)".into());
        writeln!(out, "  {var}: {value}")?;
    }
    let Some(host) = host else {
        return Ok(());
    };
    let shown = escape(host);
    match hoist_registry::tls::certs_dir_for(host) {
        Some(dir) => {
            let tls = hoist_registry::tls::HostTls::load(&dir)
                .with_context(|| format!("the certs.d directory of {shown} is unusable"))?;
            let files: Vec<String> = tls
                .files
                .iter()
                .filter_map(|f| f.file_name())
                .map(|n| escape(&n.to_string_lossy()))
                .collect();
            writeln!(
                out,
                "certs.d for {shown}: {} ({})",
                dir.display(),
                if files.is_empty() {
                    "no certificates: verified with the default roots".into()
                } else {
                    files.join(", ")
                }
            )?;
        }
        None => {
            let looked: Vec<String> = hoist_registry::tls::candidate_dirs(host)
                .iter()
                .map(|d| d.display().to_string())
                .collect();
            writeln!(
                out,
                "certs.d for {shown}: none (looked for {})",
                looked.join(", ")
            )?;
        }
    }
    Ok(())
}

fn escape(text: &str) -> String {
    hoist_cache::text::escape_except(text, &[]).into_owned()
}

/// overlay when the kernel offers it, else the copying fallback.
fn snapshotter() -> &'static str {
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    if filesystems
        .lines()
        .any(|l| l.split_whitespace().last() == Some("overlay"))
    {
        "overlay"
    } else {
        "native (no overlay filesystem in this kernel)"
    }
}

/// External OCI runtimes on PATH (hoist's own sandbox needs none).
fn runtimes() -> String {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let found: Vec<&str> = ["crun", "runc"]
        .into_iter()
        .filter(|name| std::env::split_paths(&path).any(|dir| is_executable(&dir.join(name))))
        .collect();
    if found.is_empty() {
        "none (built-in sandbox)".to_string()
    } else {
        format!("built-in sandbox; external: {}", found.join(", "))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
