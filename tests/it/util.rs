//! A small DSL: a temp store, a command wrapper, fixtures and a store
//! snapshot for "the store is unchanged" checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use hoist_testutil::cli::Run;
pub use hoist_testutil::sha256_hex as hex;

/// A store in a temp dir (`dir/store`) with room for fixtures beside it;
/// running the binary (`run`, `ok`, `fails`, `inspect`, `command`) is
/// `hoist_testutil::cli::Hoist`'s.
pub struct Hoist {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    cli: hoist_testutil::cli::Hoist,
}

impl std::ops::Deref for Hoist {
    type Target = hoist_testutil::cli::Hoist;

    fn deref(&self) -> &Self::Target {
        &self.cli
    }
}

impl Hoist {
    pub fn new() -> Hoist {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        let cli = hoist_testutil::cli::Hoist::new(env!("CARGO_BIN_EXE_hoist"), &root);
        Hoist { dir, root, cli }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Every file under `content/` (path → sha256 of its bytes) plus the refs
    /// as `images --digests` shows them: what "the store is unchanged" means.
    pub fn snapshot(&self) -> (BTreeMap<String, String>, String) {
        let mut files = BTreeMap::new();
        let content = self.root.join("content");
        for entry in walkdir::WalkDir::new(&content).sort_by_file_name() {
            let entry = entry.unwrap();
            let rel = entry
                .path()
                .strip_prefix(&content)
                .unwrap()
                .display()
                .to_string();
            let value = if entry.file_type().is_file() {
                hex(&std::fs::read(entry.path()).unwrap())
            } else {
                "dir".to_string()
            };
            files.insert(rel, value);
        }
        let refs = self.ok(&["images", "--digests", "--no-trunc", "--format", "json"]);
        (files, refs)
    }

    /// Import the busybox fixture as `name`; returns the tar's path.
    pub fn import_busybox(&self, name: &str) -> PathBuf {
        let tar = self.path("busybox.tar");
        self.cli
            .import_busybox(&tar, name, &["--change", r#"CMD ["sh"]"#]);
        tar
    }
}

pub fn sha256_file(path: &Path) -> String {
    format!("sha256:{}", hex(&std::fs::read(path).unwrap()))
}

/// A tar holding the given files (path, content), made with the tar crate.
pub fn make_tar(path: &Path, files: &[(&str, &[u8])]) {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.finish().unwrap();
}

/// Files of a root filesystem: relative path → (kind, mode, content digest or
/// link target).
pub fn tree(root: &Path) -> BTreeMap<String, (String, u32, String)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(root).min_depth(1) {
        let entry = entry.unwrap();
        let rel = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .display()
            .to_string();
        let meta = entry.path().symlink_metadata().unwrap();
        let mode = meta.permissions().mode() & 0o7777;
        let value = if meta.file_type().is_symlink() {
            (
                "symlink".to_string(),
                0,
                std::fs::read_link(entry.path())
                    .unwrap()
                    .display()
                    .to_string(),
            )
        } else if meta.is_dir() {
            ("dir".to_string(), mode, String::new())
        } else {
            (
                "file".to_string(),
                mode,
                hex(&std::fs::read(entry.path()).unwrap()),
            )
        };
        out.insert(rel, value);
    }
    out
}
