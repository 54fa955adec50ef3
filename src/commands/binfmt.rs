//! `hoist binfmt [--install PLATFORM…]`: show which foreign platforms RUN
//! steps can execute on, and register qemu-user-static's binfmt_misc
//! handlers (with the F flag a build's sandbox needs).
//!
//! Nothing registers handlers where systemd does not run (containers, CI
//! jobs): Debian's qemu-user-static only ships `/usr/lib/binfmt.d/*.conf`
//! for systemd-binfmt. Registering is explicit, like `docker run
//! --privileged tonistiigi/binfmt --install arm64`: it changes the whole
//! kernel's behaviour, so a build never does it on its own.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use hoist_builder::engine::emulation::{self, Unusable, BINFMT_MISC};
use hoist_registry::Platform;

use crate::context::Context;

/// Where Debian's qemu-user-static puts its handler lines.
const BINFMT_D: &str = "/usr/lib/binfmt.d";

/// Platforms listed by `hoist binfmt`.
const PLATFORMS: &[&str] = &[
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
    "linux/loong64",
];

/// Show or register emulators for building other platforms
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Register qemu-user-static's handlers for these platforms (os/arch, or
    /// `all`) with the fix-binary flag; needs root
    #[arg(long, value_name = "PLATFORM", num_args = 1.., value_delimiter = ',')]
    install: Vec<String>,
}

pub fn run(_context: &Context, args: Args) -> anyhow::Result<()> {
    let dir = Path::new(BINFMT_MISC);
    if !args.install.is_empty() {
        let platforms: Vec<Platform> = if args.install.iter().any(|p| p == "all") {
            PLATFORMS
                .iter()
                .filter_map(|p| Platform::parse(p).ok())
                .collect()
        } else {
            args.install
                .iter()
                .map(|p| Platform::parse(p).map_err(|e| anyhow::anyhow!("--install: {e}")))
                .collect::<anyhow::Result<_>>()?
        };
        mount_binfmt_misc(dir)?;
        for platform in &platforms {
            install(dir, platform)?;
        }
    }
    let mut out = std::io::stdout().lock();
    for p in PLATFORMS {
        let platform = Platform::parse(p).map_err(|e| anyhow::anyhow!("{e}"))?;
        let status = match emulation::usable(&platform, dir) {
            Ok(()) if Platform::host().rank(&platform).is_some() => "native".to_string(),
            Ok(()) => "emulated".to_string(),
            Err(Unusable::NoBinfmtMisc) => "no (binfmt_misc not mounted)".to_string(),
            Err(Unusable::NoHandler) => "no".to_string(),
            Err(Unusable::NotFixBinary(h)) => format!("no ({} lacks the F flag)", h.name),
            Err(Unusable::UnknownMachine) => "unknown".to_string(),
        };
        writeln!(out, "{p:<16} {status}")?;
    }
    Ok(())
}

fn mount_binfmt_misc(dir: &Path) -> anyhow::Result<()> {
    if dir.join("register").exists() {
        return Ok(());
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "binfmt_misc", "binfmt_misc"])
        .arg(dir)
        .status()
        .context("failed to run mount")?;
    if !status.success() {
        bail!(
            "cannot mount binfmt_misc on {} (are you root?)",
            dir.display()
        );
    }
    Ok(())
}

/// Registers `/usr/lib/binfmt.d/qemu-ARCH.conf`, adding the F flag.
fn install(dir: &Path, platform: &Platform) -> anyhow::Result<()> {
    match emulation::usable(platform, dir) {
        Ok(()) => {
            eprintln!("{platform}: runs here already");
            return Ok(());
        }
        Err(Unusable::NotFixBinary(h)) => {
            // Without F the interpreter is looked up inside the build's
            // root filesystem: replace the handler.
            let path = dir.join(&h.name);
            fs::write(&path, "-1")
                .with_context(|| format!("cannot remove the handler {}", path.display()))?;
        }
        Err(_) => {}
    }
    let qemu = emulation::qemu_arch(platform);
    let conf = PathBuf::from(BINFMT_D).join(format!("qemu-{qemu}.conf"));
    let line = fs::read_to_string(&conf).with_context(|| {
        format!(
            "cannot read {} (`apt-get install qemu-user-static` provides it)",
            conf.display()
        )
    })?;
    let line = with_fix_binary(line.trim());
    fs::write(dir.join("register"), &line).with_context(|| {
        format!(
            "cannot register {} in {BINFMT_MISC}/register (are you root?)",
            conf.display()
        )
    })?;
    eprintln!("{platform}: registered {}", conf.display());
    Ok(())
}

/// `:name:type:offset:magic:mask:interpreter:flags` with `F` in its flags.
fn with_fix_binary(line: &str) -> String {
    let Some((head, flags)) = line.rsplit_once(':') else {
        return line.to_string();
    };
    if flags.contains('F') {
        line.to_string()
    } else {
        format!("{head}:{flags}F")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fix_binary_flag_is_added_once() {
        assert_eq!(
            with_fix_binary(":q:M::\\x7f:\\xff:/q:OP"),
            ":q:M::\\x7f:\\xff:/q:OPF"
        );
        assert_eq!(
            with_fix_binary(":q:M::\\x7f:\\xff:/q:OPF"),
            ":q:M::\\x7f:\\xff:/q:OPF"
        );
        assert_eq!(
            with_fix_binary(":q:M::\\x7f:\\xff:/q:"),
            ":q:M::\\x7f:\\xff:/q:F"
        );
    }
}
