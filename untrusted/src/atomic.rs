//! Files written whole or not at all: the store's metadata, OCI layouts and
//! the archives a build writes for the user all go through [`write_whole`],
//! so a crash, a full disk or a failing writer never leaves half a file
//! under the final name.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// A step of [`write_whole`] failed; the destination was left as it was
/// (but for a destination written in place, see [`write_whole`]).
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} `{}`", path.display())]
pub struct WriteError {
    /// What failed: `create`, `write`, `fsync`, `rename into place` or
    /// `fsync the directory of`.
    pub action: &'static str,
    /// The destination.
    pub path: PathBuf,
    /// The cause; for `write`, the writer's own error (see
    /// [`io::Error::other`]).
    #[source]
    pub source: io::Error,
}

/// Writes `path` whole or not at all: `write` fills a temporary file beside
/// it, which is synced, renamed over `path`, and the directory synced, so the
/// new file survives a crash once this returns. The file is created 0666
/// less the umask, as `File::create` would.
///
/// A path that exists and is not a regular file (`/dev/null`, a FIFO,
/// `/dev/stdout`) is written in place: renaming over it would replace the
/// device or pipe with a file.
pub fn write_whole(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), WriteError> {
    let fail = |action: &'static str| {
        move |source: io::Error| WriteError {
            action,
            path: path.to_path_buf(),
            source,
        }
    };
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(fail("create"))?;
        let mut out = BufWriter::new(file);
        write(&mut out).map_err(fail("write"))?;
        return out.flush().map_err(fail("write"));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Dot-named, so listings and globs of the directory skip it; removed
    // when dropped on any error path.
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(fail("create"))?;
    let mut out = BufWriter::with_capacity(1 << 20, tmp);
    write(&mut out).map_err(fail("write"))?;
    let tmp = out
        .into_inner()
        .map_err(|e| fail("write")(e.into_error()))?;
    tmp.as_file().sync_all().map_err(fail("fsync"))?;
    tmp.persist(path)
        .map_err(|e| fail("rename into place")(e.error))?;
    sync_dir(dir).map_err(fail("fsync the directory of"))
}

/// Syncs a directory, so that renames and links in it survive a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_writer_leaves_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.tar");
        write_whole(&path, |w| w.write_all(b"old")).unwrap();
        let err = write_whole(&path, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        })
        .unwrap_err();
        assert_eq!(err.action, "write");
        assert_eq!(err.source.to_string(), "disk full");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.tar"]);
    }

    #[test]
    fn a_device_is_written_in_place_not_replaced() {
        write_whole(Path::new("/dev/null"), |w| w.write_all(b"gone")).unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(!meta.is_file(), "/dev/null was replaced by a file");
    }

    #[test]
    fn the_file_is_created_as_file_create_would() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        write_whole(&path, |w| w.write_all(b"x")).unwrap();
        let umask = unsafe_free_umask();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask);
    }

    /// The process umask, read from /proc (setting it to read it would race
    /// with other tests).
    fn unsafe_free_umask() -> u32 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
        u32::from_str_radix(line.trim_start_matches("Umask:").trim(), 8).unwrap()
    }
}
