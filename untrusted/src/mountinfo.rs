//! `/proc/self/mountinfo`, read once for everyone who needs to know what is
//! mounted where: the store's disk (for a full-disk message) and the
//! cgroup hierarchies a step is placed in.

use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo (proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The root of the mount within its filesystem (a cgroup's path, a bind
    /// mount's source directory).
    pub root: PathBuf,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// The filesystem type (`ext4`, `cgroup2`).
    pub fs_type: String,
    /// The device or source (`/dev/sda1`, `tmpfs`).
    pub source: String,
    /// The superblock options (a v1 cgroup's controllers are among them).
    pub super_options: String,
}

/// The mounts of this process's mount namespace, in mount order.
pub fn read() -> io::Result<Vec<Mount>> {
    Ok(parse(&std::fs::read("/proc/self/mountinfo")?))
}

/// Parses mountinfo text; a malformed line is skipped.
pub fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|b| *b == b'\n').filter_map(parse_line).collect()
}

fn parse_line(line: &[u8]) -> Option<Mount> {
    // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
    let fields: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let dash = fields.iter().position(|f| *f == b"-")?;
    if dash < 6 {
        return None;
    }
    let text = |f: &[u8]| String::from_utf8_lossy(&unescape(f)).into_owned();
    Some(Mount {
        root: PathBuf::from(OsString::from_vec(unescape(fields[3]))),
        mount_point: PathBuf::from(OsString::from_vec(unescape(fields[4]))),
        fs_type: text(fields.get(dash + 1)?),
        source: text(fields.get(dash + 2)?),
        super_options: fields.get(dash + 3).map(|f| text(f)).unwrap_or_default(),
    })
}

/// The kernel escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 4 <= field.len() {
            let octal = std::str::from_utf8(&field[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(byte) = octal {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(field[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_after_the_optional_ones_and_unescaped() {
        let text = b"36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 shared:2 - ext3 /dev/root rw,errors=continue\n\
            30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n\
            garbage line\n\
            40 1 0:50 /a\\134b /plain\\ rw - tmpfs tmpfs\n";
        let mounts = parse(text);
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].root, PathBuf::from("/mnt1"));
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt two"));
        assert_eq!(mounts[0].fs_type, "ext3");
        assert_eq!(mounts[0].source, "/dev/root");
        assert_eq!(mounts[0].super_options, "rw,errors=continue");
        assert_eq!(mounts[1].super_options, "rw,cpu,cpuacct");
        assert_eq!(mounts[2].root, PathBuf::from("/a\\b"));
        assert_eq!(mounts[2].mount_point, PathBuf::from("/plain\\"));
        assert_eq!(mounts[2].super_options, "");
    }

    #[test]
    fn this_process_has_a_root_mount() {
        let mounts = read().unwrap();
        assert!(mounts
            .iter()
            .any(|m| m.mount_point == std::path::Path::new("/")));
        assert!(mounts.iter().any(|m| m.fs_type == "proc"));
    }
}
