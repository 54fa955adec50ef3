//! Mount targets that the image lacks, made for one run and removed after it,
//! so that a layer never gains `/etc/hosts`, `/run/secrets/...` or `/proc`
//! because a step ran.
//!
//! Two cases (details in `docs/runner.md`):
//! - the root is an overlay given as data: the missing targets are made in a
//!   per-run directory added as the *topmost lower* layer. The overlay shows
//!   them, nothing is written to the upper dir, and binds over them never
//!   cause a copy-up.
//! - the root is a directory (or a bind of one): missing targets are created
//!   in it before the run and removed after it, deepest first, and the
//!   parents' timestamps are restored (BuildKit's mount stub cleaner does the
//!   same).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hoist_untrusted::Root;

/// A mount target: a path inside the step and whether it is a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    pub path: String,
    pub is_file: bool,
    /// Permission bits for a directory stub (default 0o755).
    pub mode: Option<u32>,
}

/// What was created in a root directory, to be undone.
#[derive(Debug, Default)]
pub(crate) struct Stubs {
    /// Created paths, in creation order.
    created: Vec<PathBuf>,
    /// Timestamps of parent directories before anything was created.
    times: Vec<(PathBuf, libc::timespec, libc::timespec)>,
}

fn io_context<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> crate::RunError + 'a {
    move |source| crate::RunError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Create one target inside `root`: its missing parents as 0755 directories,
/// then the file or the directory (with the target's mode). Returns the host
/// paths created, outermost first.
fn create_target(root: &Root, t: &Target) -> Result<Vec<PathBuf>, hoist_untrusted::Error> {
    if t.is_file {
        root.create_file(&t.path, 0o644).map(|(_, created)| created)
    } else {
        let parent = Path::new(&t.path).parent().unwrap_or(Path::new("/"));
        let (_, mut created) = root.mkdir_all(parent, 0o755)?;
        let (_, last) = root.mkdir_all(&t.path, t.mode.unwrap_or(0o755))?;
        created.extend(last);
        Ok(created)
    }
}

fn untrusted_error(root: &Path) -> impl FnOnce(hoist_untrusted::Error) -> crate::RunError + '_ {
    move |e| crate::RunError::Io {
        action: "create mount stub in",
        path: root.to_path_buf(),
        source: io::Error::new(e.kind(), e.to_string()),
    }
}

impl Stubs {
    /// Create the missing `targets` inside the root directory `root`. Each
    /// target is resolved inside `root` (symlinks and `..` included, see
    /// hoist-untrusted): a hostile target such as `/../../tmp/x` names
    /// `<root>/tmp/x`, never a host path.
    pub(crate) fn create_in_dir(root: &Path, targets: &[Target]) -> Result<Stubs, crate::RunError> {
        let mut stubs = Stubs::default();
        let scoped = Root::new(root).map_err(untrusted_error(root))?;
        for t in targets {
            let path = scoped
                .resolve_or_missing(&t.path, true)
                .map_err(untrusted_error(root))?;
            if path.symlink_metadata().is_ok() {
                continue;
            }
            // The first existing ancestor gets its timestamps back afterwards.
            let mut cur = path.parent();
            while let Some(p) = cur {
                if p.symlink_metadata().is_ok() || p == root {
                    stubs.remember_times(p);
                    break;
                }
                cur = p.parent();
            }
            stubs
                .created
                .extend(create_target(&scoped, t).map_err(untrusted_error(root))?);
        }
        Ok(stubs)
    }

    fn remember_times(&mut self, dir: &Path) {
        if self.times.iter().any(|(p, _, _)| p == dir) {
            return;
        }
        if let Ok(meta) = fs::symlink_metadata(dir) {
            use std::os::unix::fs::MetadataExt;
            let at = libc::timespec {
                tv_sec: meta.atime(),
                tv_nsec: meta.atime_nsec(),
            };
            let mt = libc::timespec {
                tv_sec: meta.mtime(),
                tv_nsec: meta.mtime_nsec(),
            };
            self.times.push((dir.to_path_buf(), at, mt));
        }
    }

    /// Make every target in the fresh directory `lower` (the overlay case),
    /// inside it whatever the target's `..` say.
    pub(crate) fn create_lower(lower: &Path, targets: &[Target]) -> Result<(), crate::RunError> {
        let scoped = Root::new(lower).map_err(untrusted_error(lower))?;
        for t in targets {
            match create_target(&scoped, t) {
                Ok(_) => {}
                // Two targets on one path (a file bound twice): one stub.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(untrusted_error(lower)(e)),
            }
        }
        Ok(())
    }

    /// Remove what was created and restore the parents' timestamps.
    pub(crate) fn remove(&mut self) -> Result<(), crate::RunError> {
        let mut first_err = None;
        for p in self.created.drain(..).rev() {
            let res = match fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => fs::remove_dir(&p),
                Ok(_) => fs::remove_file(&p),
                Err(_) => Ok(()),
            };
            if let Err(e) = res {
                first_err.get_or_insert((p, e));
            }
        }
        for (dir, at, mt) in self.times.drain(..) {
            let _ = crate::sys::set_times(&dir, at, mt);
        }
        match first_err {
            Some((p, e)) => Err(io_context("remove mount stub", &p)(e)),
            None => Ok(()),
        }
    }
}

impl Drop for Stubs {
    fn drop(&mut self) {
        if !self.created.is_empty() {
            let _ = self.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_are_removed_and_parent_times_restored() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("etc")).unwrap();
        fs::write(root.path().join("etc/passwd"), "x").unwrap();
        let before = fs::metadata(root.path().join("etc"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let targets = vec![
            Target {
                path: "/etc/hosts".into(),
                is_file: true,
                mode: None,
            },
            Target {
                path: "/etc/passwd".into(),
                is_file: true,
                mode: None,
            },
            Target {
                path: "/run/secrets/a".into(),
                is_file: true,
                mode: None,
            },
        ];
        let mut stubs = Stubs::create_in_dir(root.path(), &targets).unwrap();
        assert!(root.path().join("etc/hosts").is_file());
        assert!(root.path().join("run/secrets/a").is_file());
        stubs.remove().unwrap();
        assert!(!root.path().join("etc/hosts").exists());
        assert!(!root.path().join("run").exists());
        assert_eq!(fs::read(root.path().join("etc/passwd")).unwrap(), b"x");
        let after = fs::metadata(root.path().join("etc"))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
    }
}
