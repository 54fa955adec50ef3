//! Shared helpers: a store with busybox imported, running `hoist build`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

pub struct Env {
    pub root: TempDir,
    pub context: TempDir,
    pub scratch: TempDir,
}

pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn assert_ok(&self) -> &Self {
        assert!(
            self.status.success(),
            "hoist failed: {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }
}

pub fn hoist(root: &Path, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hoist"));
    command
        .arg("--root")
        .arg(root)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = command.spawn().expect("run hoist");
    if let Some(input) = stdin {
        use std::io::Write;
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).unwrap();
    }
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

impl Env {
    /// A fresh store with `busybox:latest` imported.
    pub fn new() -> Env {
        let env = Env {
            root: tempfile::tempdir().unwrap(),
            context: tempfile::tempdir().unwrap(),
            scratch: tempfile::tempdir().unwrap(),
        };
        let tar = env.scratch.path().join("busybox.tar");
        hoist_testutil::busybox_rootfs_tar(&tar);
        hoist(
            env.root.path(),
            &["import", tar.to_str().unwrap(), "busybox:latest"],
            None,
        )
        .assert_ok();
        env
    }

    pub fn write(&self, path: &str, content: &str) {
        let p = self.context.path().join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    pub fn dockerfile(&self, text: &str) {
        self.write("Dockerfile", text);
    }

    /// `hoist build --progress plain ARGS CONTEXT`.
    pub fn build(&self, args: &[&str]) -> Run {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(self.context.path().to_str().unwrap());
        hoist(self.root.path(), &all, None)
    }

    /// Builds, tags `tag`, and exports the filesystem; returns its directory.
    pub fn build_fs(&self, tag: &str, args: &[&str]) -> (Run, PathBuf) {
        let dest = self
            .scratch
            .path()
            .join(format!("fs-{}", tag.replace([':', '/'], "-")));
        let _ = fs::remove_dir_all(&dest);
        let output = format!("type=local,dest={}", dest.display());
        let mut all = vec!["-t", tag, "-o", "type=image", "-o", &output];
        all.extend_from_slice(args);
        let run = self.build(&all);
        run.assert_ok();
        (run, dest)
    }

    /// The `Config` document of an image.
    pub fn config(&self, image: &str) -> serde_json::Value {
        let run = hoist(self.root.path(), &["inspect", image], None);
        run.assert_ok();
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v[0]["Config"].clone()
    }

    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let run = hoist(self.root.path(), &["inspect", image], None);
        run.assert_ok();
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v[0].clone()
    }
}

pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

pub fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// Lines of plain progress that mark a step as cached / executed.
pub fn cached_steps(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.ends_with(" CACHED")).count()
}

pub fn done_steps(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" DONE "))
        .count()
}
