//! Platforms (`os/arch[/variant]`) and picking one from an image index with
//! containerd's rules: names normalized (`aarch64` → `arm64`, `armhf` →
//! `arm/v7`, arm64's `v8` is the default variant), and a preference order
//! of compatible platforms (arm v8 > v7 > v6 > v5; amd64 v3 > v2 > v1).

use std::fmt;

/// A normalized platform.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Platform {
    /// `linux`, `windows`, …
    pub os: String,
    /// GOARCH spelling: `amd64`, `arm64`, `arm`, `386`, …
    pub architecture: String,
    /// CPU variant (`v7`, `v8`, …); empty when it is the architecture's
    /// default (arm64's `v8`, amd64's `v1`).
    pub variant: String,
}

/// A platform string that cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid platform `{0}` (expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7)")]
pub struct PlatformError(pub String);

impl Platform {
    /// Build and normalize.
    pub fn new(os: &str, architecture: &str, variant: &str) -> Platform {
        let (architecture, variant) = normalize_arch(architecture, variant);
        Platform {
            os: normalize_os(os),
            architecture,
            variant,
        }
    }

    /// Parse `os/arch[/variant]` (as `--platform` takes it); an architecture
    /// alone (`arm64`) means linux.
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let bad = || PlatformError(text.to_string());
        let parts: Vec<&str> = text.trim().split('/').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad());
        }
        match parts.as_slice() {
            [arch] if !is_known_os(arch) => Ok(Platform::new("linux", arch, "")),
            [os] => Ok(Platform::new(os, host_arch().0, host_arch().1)),
            [os, arch] => Ok(Platform::new(os, arch, "")),
            [os, arch, variant] => Ok(Platform::new(os, arch, variant)),
            _ => Err(bad()),
        }
    }

    /// The host's platform, as Docker would default it.
    pub fn host() -> Platform {
        let (arch, variant) = host_arch();
        Platform::new(std::env::consts::OS, arch, variant)
    }

    /// Platforms that can run on this one, most preferred first (containerd's
    /// `platforms.Only`: arm64 also runs arm v8…v5; arm v7 runs v6 and v5;
    /// amd64 v3 runs v2 and v1; amd64 runs 386 last).
    pub fn compatible(&self) -> Vec<Platform> {
        let mut out = Vec::new();
        let plat = |arch: &str, variant: &str| Platform {
            os: self.os.clone(),
            architecture: arch.to_string(),
            variant: variant.to_string(),
        };
        match self.architecture.as_str() {
            "arm" => {
                let level = arm_level(&self.variant).unwrap_or(7);
                for v in (5..=level).rev() {
                    out.push(plat("arm", &format!("v{v}")));
                }
            }
            "arm64" => {
                out.push(self.clone());
                if !self.variant.is_empty() {
                    out.push(plat("arm64", ""));
                }
                for v in (5..=8).rev() {
                    out.push(plat("arm", &format!("v{v}")));
                }
            }
            "amd64" => {
                let level = self
                    .variant
                    .strip_prefix('v')
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(1);
                for v in (2..=level).rev() {
                    out.push(plat("amd64", &format!("v{v}")));
                }
                out.push(plat("amd64", ""));
                out.push(plat("386", ""));
            }
            _ => out.push(self.clone()),
        }
        out
    }

    /// How well `candidate` (from an index) suits this platform: lower is
    /// better, `None` means it cannot run here.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        self.compatible().iter().position(|p| p == candidate)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if !self.variant.is_empty() {
            write!(f, "/{}", self.variant)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref().unwrap_or(""),
        )
    }
}

fn is_known_os(s: &str) -> bool {
    matches!(
        s,
        "linux" | "windows" | "darwin" | "freebsd" | "netbsd" | "openbsd" | "solaris" | "illumos"
    )
}

fn arm_level(variant: &str) -> Option<u32> {
    variant.strip_prefix('v')?.parse().ok()
}

fn normalize_os(os: &str) -> String {
    let os = os.to_ascii_lowercase();
    match os.as_str() {
        "macos" => "darwin".to_string(),
        _ => os,
    }
}

/// containerd's `normalizeArch`.
fn normalize_arch(arch: &str, variant: &str) -> (String, String) {
    let arch = arch.to_ascii_lowercase();
    let variant = variant.to_ascii_lowercase();
    match arch.as_str() {
        "i386" | "386" | "x86" | "i686" => ("386".into(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".into(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".into(),
                _ => variant,
            };
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), "v7".into()),
        "armel" => ("arm".into(), "v6".into()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".into(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".into(), variant)
        }
        "powerpc64le" => ("ppc64le".into(), variant),
        _ => (arch, variant),
    }
}

fn host_arch() -> (&'static str, &'static str) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", ""),
        "arm" => ("arm", "v7"),
        "x86" => ("386", ""),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", ""),
        "s390x" => ("s390x", ""),
        "riscv64" => ("riscv64", ""),
        "loongarch64" => ("loong64", ""),
        other => (other, ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn normalization_follows_containerd() {
        assert_eq!(p("linux/aarch64").to_string(), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), p("linux/arm64"));
        assert_eq!(p("linux/arm").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armhf").to_string(), "linux/arm/v7");
        assert_eq!(p("linux/armel").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/x86_64").to_string(), "linux/amd64");
        assert_eq!(p("linux/amd64/v1").to_string(), "linux/amd64");
        assert_eq!(p("arm64").to_string(), "linux/arm64");
        assert!(Platform::parse("linux//v7").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }

    #[test]
    fn arm_falls_back_to_older_variants() {
        let v7 = p("linux/arm/v7");
        assert_eq!(v7.rank(&p("linux/arm/v7")), Some(0));
        assert_eq!(v7.rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(v7.rank(&p("linux/arm/v5")), Some(2));
        assert_eq!(v7.rank(&p("linux/arm/v8")), None);
        let arm64 = p("linux/arm64");
        assert_eq!(arm64.rank(&p("linux/arm64/v8")), Some(0));
        assert!(arm64.rank(&p("linux/arm/v7")).is_some());
        assert_eq!(arm64.rank(&p("linux/amd64")), None);
        let amd64 = p("linux/amd64");
        assert_eq!(amd64.rank(&p("linux/amd64")), Some(0));
        assert_eq!(amd64.rank(&p("linux/386")), Some(1));
        assert_eq!(amd64.rank(&p("linux/amd64/v2")), None);
        assert_eq!(p("linux/amd64/v3").rank(&p("linux/amd64/v2")), Some(1));
        assert_eq!(amd64.rank(&p("windows/amd64")), None);
    }
}
