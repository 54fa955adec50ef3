//! Small safe filesystem helpers over rustix: xattrs, ownership, times,
//! special files, reflinks.

use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

/// Overlayfs keeps its private state in these namespaces; they never go into
/// a layer and are never taken from one.
pub(crate) fn is_overlay_private(name: &[u8]) -> bool {
    name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.")
}

/// Fills `buf` from `r` unless the stream ends first; the bytes read.
pub(crate) fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

fn to_io(e: rustix::io::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.raw_os_error())
}

fn xattr_unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::NODATA
}

/// The NUL-separated xattr names `list` writes, `query` giving the size
/// they need when they do not fit; `None` where the filesystem has none.
/// Most files have no xattrs or a few short ones: one call, not a size
/// query first.
fn xattr_names(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    query: impl Fn() -> rustix::io::Result<usize>,
) -> io::Result<Option<Vec<u8>>> {
    let mut names = vec![0u8; 1024];
    loop {
        match list(&mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                return Ok(Some(names));
            }
            Err(e) if e == rustix::io::Errno::RANGE => {
                let need = query().map_err(to_io)?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(e) if xattr_unsupported(e) => return Ok(None),
            Err(e) => return Err(to_io(e)),
        }
    }
}

/// All xattrs of `path` (not following a final symlink), sorted by name.
pub(crate) fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    read_xattrs_with(
        |buf| rustix::fs::llistxattr(path, buf),
        || rustix::fs::llistxattr_query(path),
        |name, buf| rustix::fs::lgetxattr(path, name, buf),
        |name| rustix::fs::lgetxattr_query(path, name),
    )
}

/// All xattrs, sorted by name, of whatever `list` lists and `get` reads (a
/// path or a descriptor); the `query` calls say the size a name list or a
/// value needs when it does not fit. Each value is read into a buffer
/// first, not sized by a query first: most are short.
fn read_xattrs_with(
    list: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
    list_query: impl Fn() -> rustix::io::Result<usize>,
    get: impl Fn(&[u8], &mut [u8]) -> rustix::io::Result<usize>,
    get_query: impl Fn(&[u8]) -> rustix::io::Result<usize>,
) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let Some(names) = xattr_names(list, list_query)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut value = vec![0u8; 256];
        let value_len = loop {
            match get(name, &mut value[..]) {
                Ok(n) => break Some(n),
                Err(e) if e == rustix::io::Errno::RANGE => {
                    let need = get_query(name).map_err(to_io)?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                // Removed between list and get: not there.
                Err(e) if e == rustix::io::Errno::NODATA => break None,
                Err(e) => return Err(to_io(e)),
            }
        };
        if let Some(n) = value_len {
            value.truncate(n);
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// One xattr of `path` (not following a final symlink), if present.
pub(crate) fn get_xattr(path: &Path, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut value = vec![0u8; 64];
    match rustix::fs::lgetxattr(path, name, &mut value[..]) {
        Ok(n) => {
            value.truncate(n);
            Ok(Some(value))
        }
        Err(e) if xattr_unsupported(e) => Ok(None),
        Err(e) => Err(to_io(e)),
    }
}

/// Sets one xattr on `path` without following a final symlink.
pub(crate) fn set_xattr(path: &Path, name: &[u8], value: &[u8]) -> io::Result<()> {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).map_err(to_io)
}

/// Sets one xattr on an open file.
pub(crate) fn fset_xattr(file: impl AsFd, name: &[u8], value: &[u8]) -> io::Result<()> {
    rustix::fs::fsetxattr(file, name, value, rustix::fs::XattrFlags::empty()).map_err(to_io)
}

/// chown without following a final symlink.
pub(crate) fn lchown_at(dir: impl AsFd, name: &Path, uid: u32, gid: u32) -> io::Result<()> {
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(to_io)
}

/// chown of a path (relative to the cwd) without following a final symlink.
pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) -> io::Result<()> {
    lchown_at(CWD, path, uid, gid)
}

fn timestamps(secs: i64, nsec: u32) -> Timestamps {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nsec.into(),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Sets atime and mtime of `name` in `dir` (not following a final symlink).
pub(crate) fn set_times_at(dir: impl AsFd, name: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    rustix::fs::utimensat(
        dir,
        name,
        &timestamps(secs, nsec),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(to_io)
}

/// Sets atime and mtime of a path (not following a final symlink).
pub(crate) fn set_times(path: &Path, secs: i64, nsec: u32) -> io::Result<()> {
    set_times_at(CWD, path, secs, nsec)
}

/// Sets atime and mtime of an open file.
pub(crate) fn fset_times(file: impl AsFd, secs: i64, nsec: u32) -> io::Result<()> {
    rustix::fs::futimens(file, &timestamps(secs, nsec)).map_err(to_io)
}

/// mknod in `dir`: `mode` carries the file type bits (S_IFCHR, S_IFBLK, S_IFIFO).
pub(crate) fn mknod_at(dir: impl AsFd, name: &Path, mode: u32, rdev: u64) -> io::Result<()> {
    let kind = rustix::fs::FileType::from_raw_mode(mode);
    let perm = rustix::fs::Mode::from_raw_mode(mode & 0o7777);
    rustix::fs::mknodat(dir, name, kind, perm, rdev).map_err(to_io)
}

/// Copies the content of `src` into the empty file `dst`: a reflink (shared
/// extents, no data copied) when the filesystem offers FICLONE, a plain copy
/// otherwise (which the kernel may still accelerate with copy_file_range).
pub(crate) fn reflink_or_copy(src: &mut File, dst: &mut File) -> io::Result<()> {
    if rustix::fs::ioctl_ficlone(&*dst, &*src).is_ok() {
        return Ok(());
    }
    io::copy(src, dst).map(|_| ())
}

/// Makes a `dev_t` from major and minor numbers.
pub(crate) fn makedev(major: u32, minor: u32) -> u64 {
    rustix::fs::makedev(major, minor)
}

/// Splits a `dev_t` into major and minor numbers.
pub(crate) fn split_dev(dev: u64) -> (u32, u32) {
    (rustix::fs::major(dev), rustix::fs::minor(dev))
}

/// All xattrs of an open file, sorted by name.
pub(crate) fn read_xattrs_fd(fd: impl AsFd) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let fd = fd.as_fd();
    read_xattrs_with(
        |buf| rustix::fs::flistxattr(fd, buf),
        || rustix::fs::flistxattr_query(fd),
        |name, buf| rustix::fs::fgetxattr(fd, name, buf),
        |name| rustix::fs::fgetxattr_query(fd, name),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xattr_names_and_values_longer_than_the_first_buffers_are_read_by_path_and_by_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"x").unwrap();
        // 40 names of about 60 bytes: more than the first 1 KiB listing.
        let mut expected = Vec::new();
        for i in 0..40 {
            let name = format!("user.{}{i:02}", "n".repeat(50));
            // One value past the first 256-byte read, too.
            let value = match i {
                0 => vec![b'v'; 1000],
                _ => format!("value {i}").into_bytes(),
            };
            if let Err(e) = rustix::fs::lsetxattr(
                &path,
                name.as_str(),
                &value,
                rustix::fs::XattrFlags::empty(),
            ) {
                // A filesystem without user xattrs cannot show the long list.
                assert_eq!(e, rustix::io::Errno::NOTSUP, "{e}");
                hoist_testutil::cannot_run(&format!("{} has no user xattrs", dir.path().display()));
                return;
            }
            expected.push((name.into_bytes(), value));
        }
        expected.sort();
        assert_eq!(read_xattrs(&path).unwrap(), expected);
        let file = File::open(&path).unwrap();
        assert_eq!(read_xattrs_fd(&file).unwrap(), expected);
    }
}
