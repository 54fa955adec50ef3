//! The filesystem a store lives on: which one, and how full, for the
//! message a full disk deserves (`hoist` names the disk and the store).

use std::path::{Path, PathBuf};

/// A mounted filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Disk {
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// Its type (`ext4`, `tmpfs`).
    pub fs_type: String,
    /// Its device or source (`/dev/sda1`, `tmpfs`).
    pub source: String,
    /// Bytes free for unprivileged users.
    pub free: u64,
    /// Its size in bytes.
    pub total: u64,
}

/// The filesystem holding `path` (the nearest existing ancestor when
/// `path` does not exist), from `/proc/self/mountinfo` and `statvfs(2)`.
pub fn disk_of(path: &Path) -> std::io::Result<Disk> {
    let mut existing = path.to_path_buf();
    while !existing.exists() {
        if !existing.pop() {
            existing = PathBuf::from("/");
            break;
        }
    }
    let real = existing.canonicalize()?;
    let (free, total) = crate::sys::filesystem_space(&real)?;
    let mut best: Option<hoist_untrusted::mountinfo::Mount> = None;
    for mount in hoist_untrusted::mountinfo::read()? {
        // The last mount on the longest matching prefix wins (later mounts
        // hide earlier ones on the same point).
        if real.starts_with(&mount.mount_point)
            && best.as_ref().is_none_or(|b| {
                mount.mount_point.as_os_str().len() >= b.mount_point.as_os_str().len()
            })
        {
            best = Some(mount);
        }
    }
    let (mount_point, fs_type, source) = best
        .map(|m| (m.mount_point, m.fs_type, m.source))
        .unwrap_or_else(|| (PathBuf::from("/"), String::new(), String::new()));
    Ok(Disk {
        mount_point,
        fs_type,
        source,
        free,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_filesystem_is_found() {
        let disk = disk_of(Path::new("/proc/self")).unwrap();
        assert_eq!(disk.mount_point, Path::new("/proc"));
        assert_eq!(disk.fs_type, "proc");
        let disk = disk_of(Path::new("/no/such/dir/at/all")).unwrap();
        assert_eq!(disk.mount_point, Path::new("/"));
        assert!(disk.total > 0);
    }
}
