//! `hoist info`: where hoist keeps things and which settings are in effect.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use hoist_registry::{AuthFile, RegistryConfig};

use crate::context::Context;

/// Show the store, runtime and registry settings in effect
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(context: &Context, _args: Args) -> anyhow::Result<()> {
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
    writeln!(out, "Registry config:")?;
    for line in config.to_toml().lines() {
        writeln!(out, "  {line}")?;
    }
    Ok(())
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
