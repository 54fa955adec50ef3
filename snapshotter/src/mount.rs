//! Mounts as data, and the helpers that perform them.
//!
//! The snapshotter never mounts anything by itself: [`crate::Snapshotter`]
//! returns [`Mount`] values and the caller (the runner, a test, the differ)
//! decides when to call [`mount_all`] and [`unmount`].

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::sys;

/// One mount to perform, as containerd describes it: a filesystem type, a
/// source and the option strings (`ro`, `rbind`, `lowerdir=…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type: `overlay` or `bind`.
    pub kind: String,
    /// The source: `overlay` for overlay mounts, a directory for binds.
    pub source: PathBuf,
    /// Options; for overlay, `lowerdir=` lists the nearest parent first.
    pub options: Vec<String>,
}

impl Mount {
    /// True when the mount is read-only (`ro` among the options).
    pub fn is_read_only(&self) -> bool {
        self.options.iter().any(|o| o == "ro")
    }

    /// The value of an option such as `upperdir=`, if present.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

fn cstring(bytes: &[u8], what: &str) -> std::io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

fn mount_err(mount: &Mount, target: &Path, source: std::io::Error) -> Error {
    Error::Mount {
        action: "mount",
        kind: mount.kind.clone(),
        target: target.to_path_buf(),
        options: mount.options.join(","),
        source,
    }
}

/// Performs `mounts` on `target`, in order (later mounts stack on earlier
/// ones; the snapshotter always returns exactly one).
///
/// * `bind`: a recursive bind mount, remounted read-only when `ro` is given.
/// * `overlay`: mount(2) with the options as data. When the option string is
///   longer than the kernel accepts (one page, 4096 bytes, reached at about
///   50 layers with absolute paths), the directories are rewritten relative
///   to their common parent (`snapshots/`) and the mount is made by a forked
///   child that first changes into that directory; `12/fs:11/fs:…` fits the
///   kernel's own limit of 500 lower layers.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        mount_one(m, target).map_err(|e| mount_err(m, target, e))?;
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> std::io::Result<()> {
    let target_c = cstring(target.as_os_str().as_bytes(), "mount target")?;
    let source_c = cstring(m.source.as_os_str().as_bytes(), "mount source")?;
    let read_only = m.is_read_only();
    match m.kind.as_str() {
        "bind" => {
            let none = c"none";
            sys::mount(&source_c, &target_c, none, sys::MS_BIND | sys::MS_REC, None)?;
            if read_only {
                // A bind mount ignores MS_RDONLY on creation; it takes a remount.
                if let Err(e) = sys::mount(
                    &source_c,
                    &target_c,
                    none,
                    sys::MS_BIND | sys::MS_REMOUNT | sys::MS_RDONLY,
                    None,
                ) {
                    let _ = sys::unmount(&target_c);
                    return Err(e);
                }
            }
            Ok(())
        }
        kind => {
            let fstype = cstring(kind.as_bytes(), "filesystem type")?;
            let flags = if read_only { sys::MS_RDONLY } else { 0 };
            let data: Vec<&str> = m
                .options
                .iter()
                .map(String::as_str)
                .filter(|o| *o != "ro" && *o != "rw")
                .collect();
            let data = data.join(",");
            if data.len() < rustix::param::page_size() {
                let data_c = cstring(data.as_bytes(), "mount options")?;
                return sys::mount(&source_c, &target_c, &fstype, flags, Some(&data_c));
            }
            let (dir, short) = relative_overlay_options(m).ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "overlay options are too long and the layers share no parent directory",
                )
            })?;
            if short.len() >= rustix::param::page_size() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "overlay options are {} bytes even with relative paths; the chain is too deep",
                        short.len()
                    ),
                ));
            }
            let dir_c = cstring(dir.as_os_str().as_bytes(), "directory")?;
            let data_c = cstring(short.as_bytes(), "mount options")?;
            sys::mount_in_dir(&dir_c, &source_c, &target_c, &fstype, flags, &data_c)
        }
    }
}

/// Rewrites lowerdir/upperdir/workdir relative to their longest common
/// parent directory. Returns that directory and the new option string.
fn relative_overlay_options(m: &Mount) -> Option<(PathBuf, String)> {
    let mut dirs: Vec<&Path> = Vec::new();
    for o in &m.options {
        if let Some(v) = o.strip_prefix("lowerdir=") {
            dirs.extend(v.split(':').map(Path::new));
        } else if let Some(v) = o
            .strip_prefix("upperdir=")
            .or_else(|| o.strip_prefix("workdir="))
        {
            dirs.push(Path::new(v));
        }
    }
    let first = dirs.first()?;
    let mut common: PathBuf = first.parent()?.to_path_buf();
    while !dirs.iter().all(|d| d.starts_with(&common)) {
        common = common.parent()?.to_path_buf();
    }
    let rel = |p: &str| -> String {
        Path::new(p)
            .strip_prefix(&common)
            .map(|r| r.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_string())
    };
    let mut out = Vec::new();
    for o in &m.options {
        if o == "ro" || o == "rw" {
            continue;
        }
        if let Some(v) = o.strip_prefix("lowerdir=") {
            let lowers: Vec<String> = v.split(':').map(rel).collect();
            out.push(format!("lowerdir={}", lowers.join(":")));
        } else if let Some(v) = o.strip_prefix("upperdir=") {
            out.push(format!("upperdir={}", rel(v)));
        } else if let Some(v) = o.strip_prefix("workdir=") {
            out.push(format!("workdir={}", rel(v)));
        } else {
            out.push(o.clone());
        }
    }
    Some((common, out.join(",")))
}

/// Unmounts `target` (one level; call once per mount made by [`mount_all`]),
/// retrying for up to a second while the kernel reports it busy.
pub fn unmount(target: &Path) -> Result<()> {
    let target_c =
        cstring(target.as_os_str().as_bytes(), "mount target").map_err(|e| Error::Mount {
            action: "unmount",
            kind: String::new(),
            target: target.to_path_buf(),
            options: String::new(),
            source: e,
        })?;
    // EBUSY is often transient: a process forked by another thread holds a
    // copy of an fd inside the mount until it execs. Retry as containerd does.
    let mut attempts = 0;
    let result = loop {
        match sys::unmount(&target_c) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 50 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other,
        }
    };
    result.map_err(|e| Error::Mount {
        action: "unmount",
        kind: String::new(),
        target: target.to_path_buf(),
        options: String::new(),
        source: e,
    })
}

/// Mounts `mounts` on `target` for the lifetime of the guard.
pub struct MountGuard {
    target: PathBuf,
    mounted: bool,
}

impl MountGuard {
    /// Mounts and returns a guard that unmounts on drop.
    pub fn new(mounts: &[Mount], target: &Path) -> Result<Self> {
        mount_all(mounts, target)?;
        Ok(MountGuard {
            target: target.to_path_buf(),
            mounted: true,
        })
    }

    /// Unmounts now, reporting failure.
    pub fn unmount(mut self) -> Result<()> {
        self.mounted = false;
        unmount(&self.target)
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if self.mounted {
            // Errors here can only be reported by calling `unmount` explicitly.
            let _ = unmount(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_options_use_common_parent() {
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                "workdir=/r/snapshots/3/work".into(),
                "upperdir=/r/snapshots/3/fs".into(),
                "lowerdir=/r/snapshots/2/fs:/r/snapshots/1/fs".into(),
            ],
        };
        let (dir, data) = relative_overlay_options(&m).unwrap();
        assert_eq!(dir, Path::new("/r/snapshots"));
        assert_eq!(
            data,
            "index=off,workdir=3/work,upperdir=3/fs,lowerdir=2/fs:1/fs"
        );
        assert_eq!(m.option("upperdir"), Some("/r/snapshots/3/fs"));
    }
}
