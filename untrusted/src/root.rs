//! Paths resolved inside a root directory.
//!
//! [`Root`] opens every path with `openat2(RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS)`: the kernel treats the root as `/` for the whole
//! walk, symlinks (absolute or relative) included, and `..` never climbs above
//! it. Where openat2 is missing (kernels before 5.6, or a seccomp filter that
//! refuses it) the same walk is done one component at a time with
//! `O_PATH | O_NOFOLLOW`, each symlink read and expanded by hand and `..`
//! popping a stack of directory descriptors that never goes below the root.
//! Both walks give the same answer; the tests check it on hostile trees.
//!
//! Callers that hand a path to another program or to `mount(2)` take the
//! descriptor's `/proc/self/fd/N` ([`fd_path`]) rather than a path string, so
//! nothing can swap a component for a symlink between the check and the use.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::text::escape;

/// Linux's own limit on symlinks followed in one lookup (`MAXSYMLINKS`).
const MAX_SYMLINKS: usize = 40;

/// Set once openat2 has answered ENOSYS (or was refused): later lookups go
/// straight to the component walk.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Why a path could not be resolved inside its root. `path` is the path as
/// the input named it (inside the root), never a host path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing at that path inside the root (a symlink that points outside the
    /// root ends here too: outside does not exist).
    #[error("{}: no such file or directory", escape(path))]
    NotFound {
        /// The path inside the root.
        path: String,
    },
    /// A component that must be a directory is not one.
    #[error("{}: not a directory", escape(path))]
    NotDirectory {
        /// The path inside the root.
        path: String,
    },
    /// More than 40 symlinks on the way.
    #[error("{}: too many levels of symbolic links", escape(path))]
    Loop {
        /// The path inside the root.
        path: String,
    },
    /// The path names the root's parent or ends in `..` where a name is needed.
    #[error("{}: not a valid name for a new file", escape(path))]
    InvalidName {
        /// The path inside the root.
        path: String,
    },
    /// A system call failed.
    #[error("failed to {op} {}", escape(path))]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path inside the root.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// The closest `io::ErrorKind`, for callers that branch on it.
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            Error::NotFound { .. } => io::ErrorKind::NotFound,
            Error::NotDirectory { .. } => io::ErrorKind::NotADirectory,
            // `FilesystemLoop` is not stable yet.
            Error::Loop { .. } => io::ErrorKind::Other,
            Error::InvalidName { .. } => io::ErrorKind::InvalidInput,
            Error::Io { source, .. } => source.kind(),
        }
    }

    fn io(op: &'static str, path: &Path, errno: Errno) -> Error {
        Error::Io {
            op,
            path: shown(path),
            source: io::Error::from_raw_os_error(errno.raw_os_error()),
        }
    }

    fn from_errno(op: &'static str, path: &Path, errno: Errno) -> Error {
        match errno {
            Errno::NOENT => Error::NotFound { path: shown(path) },
            Errno::NOTDIR => Error::NotDirectory { path: shown(path) },
            Errno::LOOP => Error::Loop { path: shown(path) },
            e => Error::io(op, path, e),
        }
    }
}

fn shown(path: &Path) -> String {
    let s = path.to_string_lossy();
    if s.starts_with('/') {
        s.into_owned()
    } else {
        format!("/{s}")
    }
}

/// A directory that untrusted paths are resolved in, as if it were `/`.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    /// `path` with its own symlinks resolved, as `/proc/self/fd` shows it.
    real: PathBuf,
    walk_only: bool,
}

/// Where a lookup ended.
enum Walk {
    Found(OwnedFd),
    /// `dir` exists; `rest[0]` is missing in it and `rest[1..]` follow.
    Missing {
        dir: OwnedFd,
        rest: Vec<Vec<u8>>,
    },
}

impl Root {
    /// Opens `path` (trusted: chosen by hoist, so its own symlinks are followed).
    pub fn new(path: impl AsRef<Path>) -> Result<Root, Error> {
        let path = path.as_ref();
        let fd = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open root directory", path, e))?;
        let real = real_path(&fd).map_err(|source| Error::Io {
            op: "locate root directory",
            path: path.display().to_string(),
            source,
        })?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
            real,
            walk_only: false,
        })
    }

    /// Like [`Root::new`], but every lookup takes the component walk that is
    /// used where openat2 is missing (for tests that compare the two).
    #[doc(hidden)]
    pub fn new_walk_only(path: impl AsRef<Path>) -> Result<Root, Error> {
        let mut root = Root::new(path)?;
        root.walk_only = true;
        Ok(root)
    }

    /// The root as it was given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's own descriptor (`O_PATH`).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// An `O_PATH` descriptor of `path` (absolute or relative, both taken
    /// inside the root). The last component is followed when it is a symlink
    /// only if `follow_last` is set.
    pub fn open(&self, path: impl AsRef<Path>, follow_last: bool) -> Result<OwnedFd, Error> {
        let path = path.as_ref();
        let mut flags = OFlags::PATH | OFlags::CLOEXEC;
        if !follow_last {
            flags |= OFlags::NOFOLLOW;
        }
        if let Some(result) = self.openat2(path, flags) {
            return result.map_err(|e| Error::from_errno("open", path, e));
        }
        match self.walk(path, follow_last)? {
            Walk::Found(fd) => Ok(fd),
            Walk::Missing { .. } => Err(Error::NotFound { path: shown(path) }),
        }
    }

    /// `path` opened for reading, symlinks followed inside the root. Opening
    /// never blocks (a FIFO in a context must not hang a build): the file is
    /// opened `O_NONBLOCK`, which changes nothing for regular files.
    pub fn open_read(&self, path: impl AsRef<Path>) -> Result<File, Error> {
        let path = path.as_ref();
        let fd = self.open(path, true)?;
        // The O_PATH descriptor is reopened through its magic link, which
        // names exactly the object resolved above.
        let file = rustix::fs::open(
            fd_path(&fd),
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", path, e))?;
        Ok(File::from(file))
    }

    /// The file `path` names inside the root, opened for reading as
    /// [`open_to_read`] opens a name a walk found: the components before the
    /// last resolved inside the root (a directory swapped for a symlink since
    /// the walk leads nowhere outside), the last never followed (a symlink
    /// there is [`Error::Loop`]), the atime left alone where allowed, and
    /// never blocking (a FIFO swapped in is no hang).
    pub fn open_to_read(&self, path: impl AsRef<Path>) -> Result<File, Error> {
        let path = path.as_ref();
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let opened = if self.walk_only || NO_OPENAT2.load(Ordering::Relaxed) {
            None
        } else {
            // Tried outside `Root::openat2` first: there EPERM means "refused
            // by a seccomp filter", and O_NOATIME on another user's file is
            // EPERM too.
            let rel = relative_bytes(path);
            let rel = if rel.is_empty() { &b"."[..] } else { &rel[..] };
            match rustix::fs::openat2(
                &self.fd,
                OsStr::from_bytes(rel),
                flags | OFlags::NOFOLLOW | OFlags::NOATIME,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                Err(Errno::PERM | Errno::NOSYS | Errno::INVAL | Errno::AGAIN | Errno::INTR) => {
                    self.openat2(path, flags | OFlags::NOFOLLOW)
                }
                other => Some(other),
            }
        };
        let fd = match opened {
            Some(result) => result.map_err(|e| Error::from_errno("open", path, e))?,
            None => {
                // The component walk's descriptor, reopened through its
                // magic link, which names exactly that object.
                let found = self.open(path, false)?;
                let stat = rustix::fs::fstat(&found).map_err(|e| Error::io("stat", path, e))?;
                if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink {
                    return Err(Error::Loop { path: shown(path) });
                }
                let reopen =
                    |extra| rustix::fs::open(fd_path(&found), flags | extra, Mode::empty());
                match reopen(OFlags::NOATIME) {
                    Err(Errno::PERM) => reopen(OFlags::empty()),
                    other => other,
                }
                .map_err(|e| Error::from_errno("open", path, e))?
            }
        };
        Ok(File::from(fd))
    }

    /// The entries of the directory `path` names inside the root, its last
    /// component not followed: a symlink there (a directory swapped for one
    /// since it was stat'ed) is an error, never a listing of another place.
    pub fn read_dir(&self, path: impl AsRef<Path>) -> Result<std::fs::ReadDir, Error> {
        let path = path.as_ref();
        let fd = self.open(path, false)?;
        std::fs::read_dir(fd_path(&fd)).map_err(|source| Error::Io {
            op: "list",
            path: shown(path),
            source,
        })
    }

    /// The target of the symlink `path` names inside the root (its last
    /// component not followed; the components before it resolved inside).
    pub fn read_link(&self, path: impl AsRef<Path>) -> Result<PathBuf, Error> {
        let path = path.as_ref();
        let fd = self.open(path, false)?;
        // An O_PATH descriptor of the link itself: an empty name reads it.
        let target = rustix::fs::readlinkat(&fd, "", Vec::new())
            .map_err(|e| Error::io("read symbolic link", path, e))?;
        Ok(PathBuf::from(std::ffi::OsString::from_vec(
            target.into_bytes(),
        )))
    }

    /// Metadata of what `path` names inside the root.
    pub fn metadata(
        &self,
        path: impl AsRef<Path>,
        follow_last: bool,
    ) -> Result<std::fs::Metadata, Error> {
        let path = path.as_ref();
        let fd = self.open(path, follow_last)?;
        File::from(fd).metadata().map_err(|source| Error::Io {
            op: "stat",
            path: shown(path),
            source,
        })
    }

    /// The host path of what `path` names inside the root, with every symlink
    /// resolved (inside the root). The answer is always below the root.
    pub fn resolve(&self, path: impl AsRef<Path>, follow_last: bool) -> Result<PathBuf, Error> {
        let path = path.as_ref();
        let fd = self.open(path, follow_last)?;
        self.host_path(&fd, path)
    }

    /// The host path where `path` is, or would be once created: its existing
    /// part resolved as [`Root::resolve`] does, the missing rest appended as
    /// plain names (a `..` there removes only an appended name). Always below
    /// the root.
    pub fn resolve_or_missing(
        &self,
        path: impl AsRef<Path>,
        follow_last: bool,
    ) -> Result<PathBuf, Error> {
        let path = path.as_ref();
        match self.resolve(path, follow_last) {
            Err(Error::NotFound { .. }) => {}
            other => return other,
        }
        match self.walk(path, follow_last)? {
            Walk::Found(fd) => self.host_path(&fd, path),
            Walk::Missing { dir, rest } => {
                let mut host = self.host_path(&dir, path)?;
                let base_len = host.components().count();
                for name in rest {
                    if name == b".." {
                        if host.components().count() > base_len {
                            host.pop();
                        }
                    } else {
                        host.push(OsStr::from_bytes(&name));
                    }
                }
                Ok(host)
            }
        }
    }

    /// The host path of a descriptor opened in this root.
    fn host_path(&self, fd: &OwnedFd, shown_as: &Path) -> Result<PathBuf, Error> {
        let real = real_path(fd).map_err(|source| Error::Io {
            op: "locate",
            path: shown(shown_as),
            source,
        })?;
        let relative = real.strip_prefix(&self.real).map_err(|_| Error::Io {
            op: "resolve",
            path: shown(shown_as),
            source: io::Error::other("resolved outside its root"),
        })?;
        Ok(self.path.join(relative))
    }

    /// Makes `path` a directory inside the root, creating what is missing
    /// (mode `mode`, less nothing: the umask is not applied). Returns an
    /// `O_PATH` descriptor of it and the host paths of the directories it
    /// created, outermost first.
    pub fn mkdir_all(
        &self,
        path: impl AsRef<Path>,
        mode: u32,
    ) -> Result<(OwnedFd, Vec<PathBuf>), Error> {
        let path = path.as_ref();
        let mut created = Vec::new();
        // Each round creates one directory, or walks again after a race.
        for _ in 0..4096 {
            let fd = if let Some(r) = self.openat2(path, OFlags::PATH | OFlags::CLOEXEC) {
                match r {
                    Ok(fd) => Walk::Found(fd),
                    Err(Errno::NOENT) => self.walk(path, true)?,
                    Err(e) => return Err(Error::from_errno("open", path, e)),
                }
            } else {
                self.walk(path, true)?
            };
            match fd {
                Walk::Found(fd) => {
                    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", path, e))?;
                    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
                        return Err(Error::NotDirectory { path: shown(path) });
                    }
                    return Ok((fd, created));
                }
                Walk::Missing { dir, rest } => {
                    let name = OsStr::from_bytes(&rest[0]);
                    match rustix::fs::mkdirat(&dir, name, Mode::from_raw_mode(mode)) {
                        Ok(()) => {}
                        // Made by someone else since the walk: walk again,
                        // and neither chmod nor claim it.
                        Err(Errno::EXIST) => continue,
                        Err(e) => return Err(Error::io("create directory", path, e)),
                    }
                    let new = rustix::fs::openat(
                        &dir,
                        name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::from_errno("open", path, e))?;
                    rustix::fs::fchmod(&new, Mode::from_raw_mode(mode))
                        .map_err(|e| Error::io("chmod", path, e))?;
                    created.push(self.host_path(&new, path)?);
                }
            }
        }
        Err(Error::Io {
            op: "create directory",
            path: shown(path),
            source: io::Error::other("the path kept changing while it was created"),
        })
    }

    /// Creates the file `path` (its parents as directories of mode 0755) and
    /// opens it for writing; an existing file of that name is an error
    /// (`AlreadyExists`), and a symlink there is never followed. Returns the
    /// file and the host paths of everything created, outermost first.
    pub fn create_file(
        &self,
        path: impl AsRef<Path>,
        mode: u32,
    ) -> Result<(File, Vec<PathBuf>), Error> {
        let path = path.as_ref();
        let (parent, name) = split_last(path)?;
        let (dir, mut created) = self.mkdir_all(&parent, 0o755)?;
        // An O_PATH directory serves as the dirfd of openat(2).
        let file = rustix::fs::openat(
            &dir,
            OsStr::from_bytes(&name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| Error::io("create", path, e))?;
        rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io("chmod", path, e))?;
        created.push(self.host_path(&file, path)?);
        Ok((File::from(file), created))
    }

    /// openat2 in the root; `None` when openat2 is not to be used.
    fn openat2(&self, path: &Path, flags: OFlags) -> Option<rustix::io::Result<OwnedFd>> {
        if self.walk_only || NO_OPENAT2.load(Ordering::Relaxed) {
            return None;
        }
        let rel = relative_bytes(path);
        let rel: &OsStr = if rel.is_empty() {
            OsStr::new(".")
        } else {
            OsStr::from_bytes(&rel)
        };
        for _ in 0..8 {
            match rustix::fs::openat2(
                &self.fd,
                rel,
                flags,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // A rename elsewhere in the root while `..` was resolved: the
                // kernel asks to retry.
                Err(Errno::AGAIN) | Err(Errno::INTR) => continue,
                // No openat2 here (before 5.6, or refused by a seccomp
                // filter around hoist): walk by hand from now on.
                Err(Errno::NOSYS) | Err(Errno::PERM) | Err(Errno::INVAL) => {
                    NO_OPENAT2.store(true, Ordering::Relaxed);
                    return None;
                }
                other => return Some(other),
            }
        }
        None
    }

    /// The component walk: what openat2 with RESOLVE_IN_ROOT does, by hand.
    fn walk(&self, path: &Path, follow_last: bool) -> Result<Walk, Error> {
        let mut pending: Vec<Vec<u8>> = components(&relative_bytes(path));
        pending.reverse();
        // Directories below the root on the way; empty means "at the root".
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut links = 0;
        while let Some(name) = pending.pop() {
            if name == b".." {
                stack.pop();
                continue;
            }
            let cur: BorrowedFd<'_> = stack.last().map_or(self.fd.as_fd(), |f| f.as_fd());
            let fd = match rustix::fs::openat(
                cur,
                OsStr::from_bytes(&name),
                OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let dir = reopen(cur).map_err(|e| Error::io("open", path, e))?;
                    pending.push(name);
                    pending.reverse();
                    return Ok(Walk::Missing { dir, rest: pending });
                }
                Err(e) => return Err(Error::from_errno("open", path, e)),
            };
            let st = rustix::fs::fstat(&fd).map_err(|e| Error::io("stat", path, e))?;
            let kind = FileType::from_raw_mode(st.st_mode);
            let last = pending.is_empty();
            if kind == FileType::Symlink && (!last || follow_last) {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::Loop { path: shown(path) });
                }
                let target = rustix::fs::readlinkat(&fd, "", Vec::new())
                    .map_err(|e| Error::io("read symbolic link", path, e))?;
                let target = target.as_bytes();
                if target.starts_with(b"/") {
                    stack.clear();
                }
                let mut parts = components(target);
                parts.reverse();
                pending.extend(parts);
                continue;
            }
            if !last && kind != FileType::Directory {
                return Err(Error::NotDirectory { path: shown(path) });
            }
            stack.push(fd);
        }
        match stack.pop() {
            Some(fd) => Ok(Walk::Found(fd)),
            None => Ok(Walk::Found(
                reopen(self.fd.as_fd()).map_err(|e| Error::io("open", path, e))?,
            )),
        }
    }
}

/// Opens `name` in `dir` (an absolute `name` ignores `dir`; `rustix::fs::CWD`
/// for a plain path) to read a file a walk found there: never through a
/// symlink put in its place since (an error, not a file elsewhere), never
/// waiting (a FIFO put in its place opens at once), and without touching its
/// atime. Files just written (a snapshot's) or touched
/// (a context after `touch`) have an atime no newer than their mtime or
/// ctime, which relatime would update on the first read, dirtying and
/// journaling every inode a layer's diff or a context's hashing reads.
/// `O_NOATIME` needs the file's owner or `CAP_FOWNER`; anyone else reads it
/// the usual way.
pub fn open_to_read(dir: impl AsFd, name: impl AsRef<Path>) -> io::Result<File> {
    let open = |flags| {
        rustix::fs::openat(
            &dir,
            name.as_ref(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK | flags,
            Mode::empty(),
        )
    };
    match open(OFlags::NOATIME) {
        Err(Errno::PERM) => open(OFlags::empty()),
        other => other,
    }
    .map(File::from)
    .map_err(io::Error::from)
}

/// `/proc/self/fd/N` of a descriptor: a path that names exactly the object
/// the descriptor holds, for `mount(2)` targets and other path-only calls.
pub fn fd_path(fd: &impl AsRawFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn real_path(fd: &impl AsRawFd) -> io::Result<PathBuf> {
    std::fs::read_link(fd_path(fd))
}

fn reopen(fd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        fd,
        ".",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// The path's components as bytes, without the root and `.`.
fn relative_bytes(path: &Path) -> Vec<u8> {
    let parts: Vec<&[u8]> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.as_bytes()),
            Component::ParentDir => Some(&b".."[..]),
            _ => None,
        })
        .collect();
    parts.join(&b'/')
}

fn components(path: &[u8]) -> Vec<Vec<u8>> {
    path.split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(<[u8]>::to_vec)
        .collect()
}

/// The parent and last name of a path that is to be created.
fn split_last(path: &Path) -> Result<(PathBuf, Vec<u8>), Error> {
    let mut parts = components(&relative_bytes(path));
    match parts.pop() {
        Some(name) if name != b".." => {
            let parent = parts.join(&b'/');
            Ok((PathBuf::from(OsStr::from_bytes(&parent)), name))
        }
        _ => Err(Error::InvalidName { path: shown(path) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    /// A root with hostile symlinks, beside a "host" directory with a secret.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        host: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        let root = dir.path().join("root");
        fs::create_dir_all(host.join("secret")).unwrap();
        fs::write(host.join("secret/key"), "host secret").unwrap();
        fs::create_dir_all(root.join("etc")).unwrap();
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("secret")).unwrap();
        fs::write(root.join("secret/key"), "root's own").unwrap();
        fs::write(root.join("usr/bin/sh"), "sh").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink(&host, root.join("abs_out")).unwrap();
        symlink("../../../../../..", root.join("dotdot")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("loop2", root.join("loop1")).unwrap();
        symlink("loop1", root.join("loop2")).unwrap();
        symlink("/nowhere/new", root.join("dangling")).unwrap();
        symlink("../host", root.join("etc/rel_out")).unwrap();
        fs::write(root.join("etc/file"), "f").unwrap();
        Fixture {
            host,
            root,
            _dir: dir,
        }
    }

    fn both(root: &Path) -> [Root; 2] {
        [Root::new(root).unwrap(), Root::new_walk_only(root).unwrap()]
    }

    #[test]
    fn read_link_reads_the_link_itself_never_what_it_leads_to() {
        let f = fixture();
        symlink("key", f.host.join("secret/host_link")).unwrap();
        symlink("etc", f.root.join("etc_alias")).unwrap();
        assert!(fs::read_link(f.root.join("abs_out/secret/host_link")).is_ok());
        for r in both(&f.root) {
            assert_eq!(r.read_link("bin").unwrap(), Path::new("usr/bin"));
            assert_eq!(r.read_link("/abs_out").unwrap(), f.host);
            // Through a link on the way, resolved inside: `etc/rel_out`.
            assert_eq!(
                r.read_link("etc_alias/rel_out").unwrap(),
                Path::new("../host")
            );
            // A link on the way that leads out is resolved inside the root,
            // where it names nothing: the host's own link is never read.
            assert!(r.read_link("abs_out/secret/host_link").is_err());
            assert!(r.read_link("etc/file").is_err(), "a file is no link");
            assert!(r.read_link("missing").is_err());
        }
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_root() {
        let f = fixture();
        for r in both(&f.root) {
            let rr = |p: &str, follow| r.resolve(p, follow).map_err(|e| e.kind());
            assert_eq!(rr("/bin/sh", true), Ok(f.root.join("usr/bin/sh")));
            // `..` at the root stays at the root.
            assert_eq!(
                rr("/../../../secret/key", true),
                Ok(f.root.join("secret/key"))
            );
            assert_eq!(rr("dotdot/secret/key", true), Ok(f.root.join("secret/key")));
            assert_eq!(rr("slash/etc/file", true), Ok(f.root.join("etc/file")));
            // An absolute symlink to the host's directory means the root's
            // directory of that name, which does not exist.
            assert_eq!(rr("abs_out/secret/key", true), Err(io::ErrorKind::NotFound));
            assert_eq!(
                rr("/etc/rel_out/secret/key", true),
                Err(io::ErrorKind::NotFound)
            );
            assert!(matches!(r.resolve("loop1", true), Err(Error::Loop { .. })));
            assert_eq!(rr("loop1", false), Ok(f.root.join("loop1")));
            assert_eq!(rr("etc/file/x", true), Err(io::ErrorKind::NotADirectory));
            assert_eq!(rr("/", true), Ok(f.root.clone()));
            assert_eq!(rr("", true), Ok(f.root.clone()));
            // Not following the last component leaves the link itself.
            assert_eq!(rr("bin", false), Ok(f.root.join("bin")));
            let missing = |p: &str| r.resolve_or_missing(p, true).map_err(|e| e.kind());
            assert_eq!(
                missing("abs_out/secret/key"),
                Ok(f.root
                    .join(f.host.strip_prefix("/").unwrap())
                    .join("secret/key"))
            );
            assert_eq!(missing("/bin/new/../../x"), Ok(f.root.join("usr/bin/x")));
            assert_eq!(missing("dangling"), Ok(f.root.join("nowhere/new")));
            assert_eq!(missing("/etc/file"), Ok(f.root.join("etc/file")));
            let mut s = String::new();
            use std::io::Read;
            r.open_read("/dotdot/../secret/key")
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "root's own");
        }
    }

    #[test]
    fn open_to_read_resolves_inside_never_follows_the_last_and_never_blocks() {
        use std::io::Read;
        let f = fixture();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            f.root.join("etc/fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        // As `touch` leaves a file: atime = mtime, which relatime would update.
        let then = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        fs::File::options()
            .write(true)
            .open(f.root.join("secret/key"))
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(then).set_modified(then))
            .unwrap();
        symlink("secret/key", f.root.join("key_link")).unwrap();
        for r in both(&f.root) {
            let read = |p: &str| -> Result<String, Error> {
                let mut s = String::new();
                r.open_to_read(p)?.read_to_string(&mut s).unwrap();
                Ok(s)
            };
            // Components before the last resolve inside the root: `dotdot`
            // and `slash` lead to the root's own file, `abs_out` to nothing.
            assert_eq!(read("dotdot/secret/key").unwrap(), "root's own");
            assert_eq!(read("slash/secret/key").unwrap(), "root's own");
            assert!(matches!(
                read("abs_out/secret/key"),
                Err(Error::NotFound { .. })
            ));
            // The last component is never followed, even inside the root.
            assert!(matches!(read("key_link"), Err(Error::Loop { .. })));
            assert!(matches!(read("bin"), Err(Error::Loop { .. })));
            // A FIFO where a file was opens at once (a read finds no writer).
            let (tx, rx) = std::sync::mpsc::channel();
            let root = f.root.clone();
            let walk_only = r.walk_only;
            std::thread::spawn(move || {
                let r = if walk_only {
                    Root::new_walk_only(&root)
                } else {
                    Root::new(&root)
                }
                .unwrap();
                let _ = tx.send(r.open_to_read("etc/fifo").is_ok());
            });
            assert_eq!(
                rx.recv_timeout(std::time::Duration::from_secs(10)),
                Ok(true),
                "opening a FIFO must not wait for a writer"
            );
        }
        assert_eq!(
            fs::metadata(f.root.join("secret/key"))
                .unwrap()
                .accessed()
                .unwrap(),
            then,
            "the atime must be left alone"
        );
    }

    #[test]
    fn creating_follows_symlinks_inside_the_root_only() {
        for walk in [false, true] {
            let f = fixture();
            let r = if walk {
                Root::new_walk_only(&f.root).unwrap()
            } else {
                Root::new(&f.root).unwrap()
            };
            // Through an absolute symlink to the host: made inside the root.
            let (_, created) = r.mkdir_all("/abs_out/secret/made", 0o750).unwrap();
            let inside = f.root.join(f.host.strip_prefix("/").unwrap());
            assert_eq!(created.last().unwrap(), &inside.join("secret/made"));
            assert!(!f.host.join("secret/made").exists());
            let mode = fs::metadata(inside.join("secret/made"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o7777, 0o750);
            // A dangling symlink's target is made inside the root.
            r.mkdir_all("dangling/x", 0o755).unwrap();
            assert!(f.root.join("nowhere/new/x").is_dir());
            assert!(!Path::new("/nowhere").exists());
            let (_, created) = r.create_file("/../dotdot/newtop/stub", 0o644).unwrap();
            assert_eq!(
                created,
                vec![f.root.join("newtop"), f.root.join("newtop/stub")]
            );
            // A file where a directory is needed.
            assert_eq!(
                r.mkdir_all("etc/file/x", 0o755).unwrap_err().kind(),
                io::ErrorKind::NotADirectory
            );
            // An existing symlink as the file to create is never followed.
            assert_eq!(
                r.create_file("etc/rel_out", 0o644).unwrap_err().kind(),
                io::ErrorKind::AlreadyExists
            );
            assert_eq!(
                r.create_file("/..", 0o644).unwrap_err().kind(),
                io::ErrorKind::InvalidInput
            );
            assert_eq!(
                fs::read_to_string(f.host.join("secret/key")).unwrap(),
                "host secret"
            );
        }
    }

    #[test]
    fn a_symlink_swapped_in_after_creation_is_still_resolved_inside() {
        let f = fixture();
        let r = Root::new(&f.root).unwrap();
        r.mkdir_all("work/dir", 0o755).unwrap();
        fs::remove_dir(f.root.join("work/dir")).unwrap();
        symlink(&f.host, f.root.join("work/dir")).unwrap();
        let (_, created) = r.mkdir_all("work/dir/secret/x", 0o755).unwrap();
        assert!(created.iter().all(|p| p.starts_with(&f.root)));
        assert!(!f.host.join("secret/x").exists());
    }

    #[test]
    fn errors_name_the_path_inside_the_root_escaped() {
        let f = fixture();
        let r = Root::new(&f.root).unwrap();
        let e = r.resolve("missing/\x1b[2Jx", true).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/missing/\\u{1b}[2Jx: no such file or directory"
        );
    }
}
