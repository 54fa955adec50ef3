//! A small DSL: a temp store, a command wrapper, fixtures and a store
//! snapshot for "the store is unchanged" checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

pub struct Hoist {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Hoist {
    pub fn new() -> Hoist {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("store");
        Hoist { dir, root }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hoist"));
        cmd.arg("--root").arg(&self.root).env_remove("HOIST_ROOT");
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let out: Output = self.command().args(args).output().unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Run and expect success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 0,
            "hoist {args:?} failed:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        r.stdout
    }

    /// Run and expect failure with exit code 1; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code, 1,
            "hoist {args:?} should fail with 1:\nstdout: {}\nstderr: {}",
            r.stdout, r.stderr
        );
        assert!(
            r.stdout.is_empty(),
            "nothing on stdout on failure: {}",
            r.stdout
        );
        r.stderr
    }

    /// `hoist inspect` as JSON.
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["inspect", image])).unwrap();
        v[0].clone()
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
        if !tar.exists() {
            hoist_testutil::busybox_rootfs_tar(&tar);
        }
        self.ok(&[
            "import",
            tar.to_str().unwrap(),
            name,
            "--change",
            r#"CMD ["sh"]"#,
        ]);
        tar
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    format!("{:x}", h.finalize())
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
