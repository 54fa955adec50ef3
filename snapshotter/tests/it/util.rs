//! Helpers for the integration tests: a tree fingerprint to compare
//! directories, and a mounted-snapshot guard.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use hoist_snapshotter::{mount_all, unmount, Mount, Snapshotter};
use sha2::{Digest, Sha256};

/// Everything a layer should carry about one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Content hash, symlink target or device number.
    pub data: String,
    /// mtime in seconds for non-directories (directory mtimes move with
    /// their content and differ between tools).
    pub mtime: Option<i64>,
    pub xattrs: Vec<(String, String)>,
    /// For files with several links: the first path of the link group.
    pub link: Option<String>,
}

pub type Tree = BTreeMap<String, Node>;

fn xattrs(path: &Path) -> Vec<(String, String)> {
    let mut names = vec![0u8; 4096];
    let Ok(n) = rustix::fs::llistxattr(path, &mut names[..]) else {
        return Vec::new();
    };
    let mut v = Vec::new();
    for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let k = String::from_utf8_lossy(name).into_owned();
        if k.starts_with("trusted.overlay.")
            || k.starts_with("user.overlay.")
            || k == "security.selinux"
        {
            continue;
        }
        let mut value = vec![0u8; 4096];
        let m = rustix::fs::lgetxattr(path, name, &mut value[..]).unwrap();
        v.push((k, hex::encode(&value[..m])));
    }
    v.sort();
    v
}

/// Fingerprints the tree under `root` (the root itself excluded).
pub fn tree(root: &Path) -> Tree {
    let mut out = Tree::new();
    let mut links: HashMap<(u64, u64), String> = HashMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name() {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let ft = meta.file_type();
        let (kind, data) = if ft.is_dir() {
            ("dir", String::new())
        } else if ft.is_file() {
            (
                "file",
                hex::encode(Sha256::digest(fs::read(entry.path()).unwrap())),
            )
        } else if ft.is_symlink() {
            (
                "symlink",
                String::from_utf8_lossy(
                    fs::read_link(entry.path()).unwrap().as_os_str().as_bytes(),
                )
                .into_owned(),
            )
        } else if ft.is_char_device() {
            ("char", format!("{:x}", meta.rdev()))
        } else if ft.is_block_device() {
            ("block", format!("{:x}", meta.rdev()))
        } else if ft.is_fifo() {
            ("fifo", String::new())
        } else {
            ("socket", String::new())
        };
        let link = if ft.is_file() && meta.nlink() > 1 {
            Some(
                links
                    .entry((meta.dev(), meta.ino()))
                    .or_insert_with(|| rel.clone())
                    .clone(),
            )
        } else {
            None
        };
        out.insert(
            rel,
            Node {
                kind: kind.to_string(),
                mode: if ft.is_symlink() {
                    0
                } else {
                    meta.mode() & 0o7777
                },
                uid: meta.uid(),
                gid: meta.gid(),
                data,
                mtime: if ft.is_dir() {
                    None
                } else {
                    Some(meta.mtime())
                },
                xattrs: xattrs(entry.path()),
                link,
            },
        );
    }
    out
}

/// Panics with a readable list of differences when two trees differ.
pub fn assert_same_tree(expected: &Tree, got: &Tree, what: &str) {
    let mut diffs = Vec::new();
    for (path, e) in expected {
        match got.get(path) {
            None => diffs.push(format!("missing  {path}: {e:?}")),
            Some(g) if g != e => diffs.push(format!(
                "differs  {path}:\n  expected {e:?}\n  got      {g:?}"
            )),
            _ => {}
        }
    }
    for (path, g) in got {
        if !expected.contains_key(path) {
            diffs.push(format!("extra    {path}: {g:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: trees differ:\n{}",
        diffs.join("\n")
    );
}

/// A mount made for a test, unmounted on drop.
pub struct Mounted {
    pub dir: tempfile::TempDir,
}

impl Mounted {
    pub fn new(mounts: &[Mount]) -> Mounted {
        let dir = tempfile::tempdir().unwrap();
        mount_all(mounts, dir.path()).unwrap();
        Mounted { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        unmount(self.dir.path()).unwrap();
    }
}

/// Fingerprint of a committed snapshot, read through a temporary view.
pub fn committed_tree(s: &dyn Snapshotter, name: &str) -> Tree {
    let key = format!("view-of-{name}");
    let mounts = s.view(&key, Some(name)).unwrap();
    let t = {
        let m = Mounted::new(&mounts);
        tree(m.path())
    };
    s.remove(&key).unwrap();
    t
}

/// Runs `f` on the mounted active snapshot `key`.
pub fn with_mounted(s: &dyn Snapshotter, key: &str, f: impl FnOnce(&Path)) {
    let m = Mounted::new(&s.mounts(key).unwrap());
    f(m.path());
}

pub fn write(path: impl AsRef<Path>, content: &[u8]) {
    let path = path.as_ref();
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).unwrap();
    }
    fs::write(path, content).unwrap();
}

pub fn chmod(path: impl AsRef<Path>, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

pub fn run(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn sh(script: &str) {
    run("sh", &["-ec", script]);
}

pub fn temp_root() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    (dir, root)
}
