//! The `hoist` binary run against a store in a temp dir: the harness of the
//! root package's integration tests (`tests/build`, `tests/lifecycle`,
//! `tests/it`, `tests/autobuild.rs`).
//!
//! Only the root package knows where its binary is, so every entry point
//! takes it: `env!("CARGO_BIN_EXE_hoist")`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use tempfile::TempDir;

/// What one run of the binary did.
pub struct Run {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout, lossily decoded.
    pub stdout: String,
    /// Its stderr, lossily decoded.
    pub stderr: String,
}

impl Run {
    /// The exit code (-1 when a signal ended it).
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Asserts that the run succeeded, showing both streams when it did not.
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

    /// The JSON progress events on stderr (`--progress json`): every line
    /// that starts with `{`, parsed.
    pub fn json_events(&self) -> Vec<serde_json::Value> {
        self.stderr
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

/// Runs `command` to the end with `stdin` (or none) and captures its output.
pub fn run(command: &mut Command, stdin: Option<&[u8]>) -> Run {
    command
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
        let mut pipe = child.stdin.take().expect("stdin was piped");
        pipe.write_all(input).expect("write hoist's stdin");
    }
    let out = child.wait_with_output().expect("wait for hoist");
    Run {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The binary `bin` with `--root ROOT`.
#[derive(Debug, Clone)]
pub struct Hoist {
    bin: PathBuf,
    root: PathBuf,
}

impl Hoist {
    /// `bin --root root` (the store need not exist yet).
    pub fn new(bin: impl Into<PathBuf>, root: impl Into<PathBuf>) -> Hoist {
        Hoist {
            bin: bin.into(),
            root: root.into(),
        }
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A command for the binary on this store (`HOIST_ROOT` and the CI
    /// markers of the environment removed); add the arguments.
    pub fn command(&self) -> Command {
        let mut command = Command::new(&self.bin);
        command
            .arg("--root")
            .arg(&self.root)
            .env_remove("HOIST_ROOT")
            // Tests read plain progress; run inside a CI, hoist would add
            // its groups and annotations (tests/it/ci_logs.rs sets them).
            .env_remove("GITHUB_ACTIONS")
            .env_remove("GITHUB_STEP_SUMMARY")
            .env_remove("GITLAB_CI");
        command
    }

    /// `hoist ARGS` with no stdin.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, None)
    }

    /// `hoist ARGS` with `stdin` written to its standard input.
    pub fn run_with_input(&self, args: &[&str], stdin: Option<&[u8]>) -> Run {
        run(self.command().args(args), stdin)
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code(),
            0,
            "hoist {args:?} failed:\nstdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
        r.stdout
    }

    /// Runs and expects failure with exit code 1 and nothing on stdout;
    /// returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let r = self.run(args);
        assert_eq!(
            r.code(),
            1,
            "hoist {args:?} should fail with 1:\nstdout: {}\nstderr: {}",
            r.stdout,
            r.stderr
        );
        assert!(
            r.stdout.is_empty(),
            "nothing on stdout on failure: {}",
            r.stdout
        );
        r.stderr
    }

    /// `hoist inspect IMAGE`: the image's document.
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["inspect", image])).expect("inspect prints JSON");
        v[0].clone()
    }

    /// `hoist import` of the busybox root filesystem (written to `tar` unless
    /// it exists) as `name`, with `extra` arguments (e.g. `--change`).
    pub fn import_busybox(&self, tar: &Path, name: &str, extra: &[&str]) {
        if !tar.exists() {
            crate::busybox_rootfs_tar(tar);
        }
        let tar = tar.to_str().expect("UTF-8 temp path");
        let mut args = vec!["import", tar, name];
        args.extend_from_slice(extra);
        self.ok(&args);
    }
}

/// A store with `busybox:latest` imported, a build context and a scratch
/// directory, each a temp dir of its own.
pub struct Env {
    /// The store.
    pub root: TempDir,
    /// The build context.
    pub context: TempDir,
    /// Room for outputs and fixtures.
    pub scratch: TempDir,
    hoist: Hoist,
}

impl Env {
    /// A fresh store of the binary `bin` with `busybox:latest` imported.
    pub fn new(bin: impl Into<PathBuf>) -> Env {
        let root = tempfile::tempdir().expect("tempdir");
        let hoist = Hoist::new(bin, root.path());
        let env = Env {
            root,
            context: tempfile::tempdir().expect("tempdir"),
            scratch: tempfile::tempdir().expect("tempdir"),
            hoist,
        };
        env.hoist.import_busybox(
            &env.scratch.path().join("busybox.tar"),
            "busybox:latest",
            &[],
        );
        env
    }

    /// The binary on this store.
    pub fn hoist(&self) -> &Hoist {
        &self.hoist
    }

    /// Writes `content` to `path` in the context (parents created).
    pub fn write(&self, path: &str, content: &str) {
        let p = self.context.path().join(path);
        fs::create_dir_all(p.parent().expect("a path in the context")).expect("mkdir -p");
        fs::write(p, content).expect("write a context file");
    }

    /// Writes the context's `Dockerfile`.
    pub fn dockerfile(&self, text: &str) {
        self.write("Dockerfile", text);
    }

    /// `hoist build --progress plain ARGS CONTEXT`.
    pub fn build(&self, args: &[&str]) -> Run {
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(self.context.path().to_str().expect("UTF-8 temp path"));
        self.hoist.run(&all)
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
        self.inspect(image)["Config"].clone()
    }

    /// `hoist inspect IMAGE`.
    pub fn inspect(&self, image: &str) -> serde_json::Value {
        self.hoist.inspect(image)
    }
}

/// The permission bits of `path` (not following a symlink).
pub fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).expect("stat").mode() & 0o7777
}

/// The owner and group of `path` (not following a symlink).
pub fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).expect("stat");
    (m.uid(), m.gid())
}

/// How many steps plain progress marks as cached.
pub fn cached_steps(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.ends_with(" CACHED")).count()
}

/// How many steps plain progress marks as executed.
pub fn done_steps(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" DONE "))
        .count()
}
