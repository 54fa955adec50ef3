//! Running RUN steps of a stage whose platform is not the host's.
//!
//! hoist does no emulation of its own: the kernel's `binfmt_misc` runs a
//! foreign ELF binary through the interpreter registered for its machine
//! (Debian's `qemu-user-static`: `/usr/bin/qemu-aarch64-static`, …), as
//! BuildKit and Buildah rely on it. A handler is usable inside a build's
//! sandbox only with the `F` (fix-binary) flag: the kernel then opens the
//! interpreter when the handler is registered, instead of looking its path
//! up in the container's root filesystem at every exec, where it is not.
//!
//! Before such a step runs, [`check`] looks for an enabled handler with `F`
//! whose magic matches an ELF header of the platform's machine, and fails
//! with one message naming the platform and the fix otherwise.

use std::fs;
use std::path::Path;

use hoist_registry::Platform;

/// Where the kernel lists registered handlers.
pub const BINFMT_MISC: &str = "/proc/sys/fs/binfmt_misc";

/// ELF identification of a platform's executables: (class: 1 = 32-bit,
/// 2 = 64-bit; data: 1 = little endian, 2 = big endian; `e_machine`).
fn elf_identity(platform: &Platform) -> Option<(u8, u8, u16)> {
    Some(match platform.architecture.as_str() {
        "386" => (1, 1, 3),
        "amd64" => (2, 1, 62),
        "arm" => (1, 1, 40),
        "arm64" => (2, 1, 183),
        "ppc64le" => (2, 1, 21),
        "ppc64" => (2, 2, 21),
        "s390x" => (2, 2, 22),
        "riscv64" => (2, 1, 243),
        "mips64le" => (2, 1, 8),
        "mips64" => (2, 2, 8),
        "mipsle" => (1, 1, 8),
        "mips" => (1, 2, 8),
        "loong64" => (2, 1, 258),
        _ => return None,
    })
}

/// qemu's name for a platform's architecture (`qemu-aarch64-static`,
/// `/usr/lib/binfmt.d/qemu-aarch64.conf`).
pub fn qemu_arch(platform: &Platform) -> String {
    match platform.architecture.as_str() {
        "amd64" => "x86_64",
        "arm64" => "aarch64",
        "386" => "i386",
        "mips64le" => "mips64el",
        "mipsle" => "mipsel",
        "loong64" => "loongarch64",
        other => other,
    }
    .to_string()
}

/// The first 20 bytes of an executable ELF file of the platform.
fn elf_header(platform: &Platform) -> Option<[u8; 20]> {
    let (class, data, machine) = elf_identity(platform)?;
    let mut h = [0u8; 20];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[6] = 1;
    let (e_type, e_machine) = if data == 1 {
        (2u16.to_le_bytes(), machine.to_le_bytes())
    } else {
        (2u16.to_be_bytes(), machine.to_be_bytes())
    };
    h[16..18].copy_from_slice(&e_type);
    h[18..20].copy_from_slice(&e_machine);
    Some(h)
}

/// A registered handler, as `/proc/sys/fs/binfmt_misc/NAME` shows it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Handler {
    /// Its name (the file's).
    pub name: String,
    /// `enabled` or `disabled`.
    pub enabled: bool,
    /// The interpreter's path.
    pub interpreter: String,
    /// Flags (`F`, `P`, `O`, `C`).
    pub flags: String,
    /// Offset of the magic in the file.
    pub offset: usize,
    /// Magic bytes (empty for extension handlers).
    pub magic: Vec<u8>,
    /// Mask of the magic (all ones when absent).
    pub mask: Vec<u8>,
}

impl Handler {
    /// Parses the kernel's description of a handler.
    pub fn parse(name: &str, text: &str) -> Handler {
        let mut h = Handler {
            name: name.to_string(),
            ..Handler::default()
        };
        for line in text.lines() {
            let line = line.trim();
            if line == "enabled" {
                h.enabled = true;
            } else if let Some(v) = line.strip_prefix("interpreter ") {
                h.interpreter = v.to_string();
            } else if let Some(v) = line.strip_prefix("flags:") {
                h.flags = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("offset ") {
                h.offset = v.trim().parse().unwrap_or(0);
            } else if let Some(v) = line.strip_prefix("magic ") {
                h.magic = hex::decode(v.trim()).unwrap_or_default();
            } else if let Some(v) = line.strip_prefix("mask ") {
                h.mask = hex::decode(v.trim()).unwrap_or_default();
            }
        }
        h
    }

    /// Whether the handler claims a file starting with `head`.
    pub fn matches(&self, head: &[u8]) -> bool {
        if self.magic.is_empty() || self.offset + self.magic.len() > head.len() {
            return false;
        }
        self.magic.iter().enumerate().all(|(i, m)| {
            let mask = self.mask.get(i).copied().unwrap_or(0xff);
            head[self.offset + i] & mask == m & mask
        })
    }
}

/// The handlers registered under `dir` (a binfmt_misc mount); empty when
/// it is not mounted or reading fails.
pub fn handlers(dir: &Path) -> Vec<Handler> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Handler> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == "register" || name == "status" {
                return None;
            }
            let text = fs::read_to_string(e.path()).ok()?;
            Some(Handler::parse(&name, &text))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Why a platform's binaries cannot run here.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusable {
    /// binfmt_misc is not mounted or globally disabled.
    NoBinfmtMisc,
    /// No enabled handler claims the platform's ELF files.
    NoHandler,
    /// A handler does, but without the `F` flag (unusable in a sandbox).
    NotFixBinary(Box<Handler>),
    /// hoist does not know the platform's ELF machine.
    UnknownMachine,
}

/// Whether binaries of `platform` can run on this host, natively or through
/// a binfmt_misc handler registered under `dir`.
pub fn usable(platform: &Platform, dir: &Path) -> Result<(), Unusable> {
    if Platform::host().rank(platform).is_some() {
        return Ok(());
    }
    let header = elf_header(platform).ok_or(Unusable::UnknownMachine)?;
    let status = fs::read_to_string(dir.join("status")).unwrap_or_default();
    if status.trim() != "enabled" {
        return Err(Unusable::NoBinfmtMisc);
    }
    let claiming: Vec<Handler> = handlers(dir)
        .into_iter()
        .filter(|h| h.enabled && h.matches(&header))
        .collect();
    if claiming.iter().any(|h| h.flags.contains('F')) {
        return Ok(());
    }
    match claiming.into_iter().next() {
        Some(h) => Err(Unusable::NotFixBinary(Box::new(h))),
        None => Err(Unusable::NoHandler),
    }
}

/// Checks that a RUN step of a `platform` stage can execute here; the error
/// says what is missing and how to fix it.
pub fn check(platform: &Platform) -> Result<(), String> {
    let reason = match usable(platform, Path::new(BINFMT_MISC)) {
        Ok(()) => return Ok(()),
        Err(r) => r,
    };
    let host = Platform::host();
    let qemu = qemu_arch(platform);
    let register = format!(
        "`apt-get install qemu-user-static` and register the handler with the F flag: `hoist binfmt --install {platform}` (or `cat /usr/lib/binfmt.d/qemu-{qemu}.conf > {BINFMT_MISC}/register`)"
    );
    let why = match reason {
        Unusable::NoBinfmtMisc => format!(
            "binfmt_misc is not mounted or is disabled ({BINFMT_MISC}/status; `mount -t binfmt_misc binfmt_misc {BINFMT_MISC}`), so no emulator can run them; {register}"
        ),
        Unusable::NoHandler => format!(
            "no binfmt_misc handler for {qemu} is registered; install an emulator: {register}"
        ),
        Unusable::NotFixBinary(h) => format!(
            "the binfmt_misc handler {} ({}) lacks the F flag, so its interpreter cannot be found inside the build's root filesystem; remove it (`echo -1 > {BINFMT_MISC}/{}`) and register it again with F: {register}",
            h.name, h.interpreter, h.name
        ),
        Unusable::UnknownMachine => {
            "hoist does not know the ELF machine of that architecture".to_string()
        }
    };
    Err(format!(
        "cannot run {platform} binaries on this {host} host: {why}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QEMU_AARCH64: &str = "enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
";

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    fn binfmt(handlers: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("status"), "enabled\n").unwrap();
        fs::write(dir.path().join("register"), "").unwrap();
        for (name, text) in handlers {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    #[test]
    fn debian_qemu_handler_claims_arm64_and_nothing_else() {
        let h = Handler::parse("qemu-aarch64", QEMU_AARCH64);
        assert!(h.enabled);
        assert_eq!(h.flags, "POF");
        assert!(h.matches(&elf_header(&p("linux/arm64")).unwrap()));
        for other in [
            "linux/s390x",
            "linux/arm/v7",
            "linux/riscv64",
            "linux/ppc64le",
        ] {
            assert!(!h.matches(&elf_header(&p(other)).unwrap()), "{other}");
        }
    }

    #[test]
    fn a_handler_needs_the_fix_binary_flag() {
        if Platform::host().rank(&p("linux/arm64")).is_some() {
            return; // arm64 runs natively on this host
        }
        let dir = binfmt(&[("qemu-aarch64", QEMU_AARCH64)]);
        assert_eq!(usable(&p("linux/arm64"), dir.path()), Ok(()));
        assert_eq!(
            usable(&p("linux/s390x"), dir.path()),
            Err(Unusable::NoHandler)
        );
        let without_f = QEMU_AARCH64.replace("flags: POF", "flags: P");
        let dir = binfmt(&[("qemu-aarch64", &without_f)]);
        assert!(matches!(
            usable(&p("linux/arm64"), dir.path()),
            Err(Unusable::NotFixBinary(_))
        ));
        let disabled = QEMU_AARCH64.replace("enabled", "disabled");
        let dir = binfmt(&[("qemu-aarch64", &disabled)]);
        assert_eq!(
            usable(&p("linux/arm64"), dir.path()),
            Err(Unusable::NoHandler)
        );
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            usable(&p("linux/arm64"), empty.path()),
            Err(Unusable::NoBinfmtMisc)
        );
    }

    #[test]
    fn the_host_platform_needs_no_handler() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(usable(&Platform::host(), empty.path()), Ok(()));
    }
}
