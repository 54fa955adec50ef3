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
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mut best: Option<(PathBuf, String, String)> = None;
    for line in mountinfo.lines() {
        // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(dash) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type), Some(source)) =
            (fields.get(4), fields.get(dash + 1), fields.get(dash + 2))
        else {
            continue;
        };
        let mount_point = PathBuf::from(unescape_mountinfo(mount_point));
        // The last mount on the longest matching prefix wins (later mounts
        // hide earlier ones on the same point).
        if real.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|(b, _, _)| mount_point.as_os_str().len() >= b.as_os_str().len())
        {
            best = Some((mount_point, fs_type.to_string(), unescape_mountinfo(source)));
        }
    }
    let (mount_point, fs_type, source) =
        best.unwrap_or_else(|| (PathBuf::from("/"), String::new(), String::new()));
    Ok(Disk {
        mount_point,
        fs_type,
        source,
        free,
        total,
    })
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Some(v) = s
                .get(i + 1..i + 4)
                .and_then(|o| u8::from_str_radix(o, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
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
        assert_eq!(unescape_mountinfo("/a\\040b"), "/a b");
        assert_eq!(unescape_mountinfo("/plain\\"), "/plain\\");
    }
}
