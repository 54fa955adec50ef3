//! The sentinel, the store scan and the two ways of running hoist.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hoist_testutil::cli::{Hoist, Run};
use tempfile::TempDir;

/// This package's `hoist` binary.
pub const HOIST: &str = env!("CARGO_BIN_EXE_hoist");

/// A directory on the host that no build may touch, holding a secret that
/// must never reach an image, the store or the output.
pub struct Sentinel {
    dir: TempDir,
    /// The secret in `victimfile` and `victimdir/inner`.
    pub secret: String,
    before: BTreeMap<PathBuf, String>,
}

impl Sentinel {
    /// `/tmp/hoist-sentinel-*/` with `victimfile` (0644), `victimfile2`
    /// (0600), `victimdir/` (0755) and `victimdir/inner`; owned by `owner`.
    pub fn new(owner: Option<(u32, u32)>) -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("hoist-sentinel-")
            .tempdir_in("/tmp")
            .expect("sentinel dir");
        let secret = format!(
            "HOIST-SENTINEL-{}",
            &hoist_testutil::sha256_hex(
                format!("{:?}{}", dir.path(), std::process::id()).as_bytes()
            )[..24]
        );
        let p = dir.path();
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(p.join("victimfile"), &secret).expect("write");
        fs::write(p.join("victimfile2"), format!("second {secret}")).expect("write");
        fs::set_permissions(p.join("victimfile2"), fs::Permissions::from_mode(0o600))
            .expect("chmod");
        fs::create_dir(p.join("victimdir")).expect("mkdir");
        fs::set_permissions(p.join("victimdir"), fs::Permissions::from_mode(0o755)).expect("chmod");
        fs::write(p.join("victimdir/inner"), &secret).expect("write");
        if let Some((uid, gid)) = owner {
            for e in walk(p) {
                std::os::unix::fs::lchown(&e, Some(uid), Some(gid)).expect("chown");
            }
        }
        let mut s = Sentinel {
            dir,
            secret,
            before: BTreeMap::new(),
        };
        s.before = s.state();
        s
    }

    /// The sentinel's absolute path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The sentinel's path reached from a step's root through `..`:
    /// `/../../../../../../../tmp/hoist-sentinel-*`.
    pub fn dotdot(&self) -> String {
        format!("/../../../../../../..{}", self.path().display())
    }

    fn state(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        // The parent's entry for the sentinel, then everything below it.
        for path in walk(self.path()) {
            let meta = fs::symlink_metadata(&path).expect("stat");
            let content = if meta.is_file() {
                String::from_utf8_lossy(&fs::read(&path).expect("read")).into_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).expect("readlink").display())
            } else {
                String::new()
            };
            out.insert(
                path,
                format!(
                    "{:o} {}:{} {} {content}",
                    meta.mode(),
                    meta.uid(),
                    meta.gid(),
                    meta.len()
                ),
            );
        }
        out
    }

    /// Asserts that nothing in the sentinel changed, appeared or went away.
    pub fn assert_untouched(&self) {
        let after = self.state();
        assert_eq!(after, self.before, "the host sentinel changed");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        let p = out[i].clone();
        if fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir()) {
            let mut names: Vec<PathBuf> = fs::read_dir(&p)
                .expect("read_dir")
                .map(|e| e.expect("entry").path())
                .collect();
            names.sort();
            out.extend(names);
        }
        i += 1;
    }
    out
}

/// Asserts that `secret` appears in no file under `store` (layers
/// decompressed) and in neither output stream of `run`.
pub fn assert_secret_nowhere(store: &Path, run: &Run, secret: &str) {
    assert!(
        !run.stdout.contains(secret) && !run.stderr.contains(secret),
        "the secret reached the output:\n{}\n{}",
        run.stdout,
        run.stderr
    );
    let needle = secret.as_bytes();
    for path in walk(store) {
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || meta.len() > 256 << 20 {
            continue;
        }
        let Ok(bytes) = fs::read(&path) else {
            continue;
        };
        assert!(
            !contains(&bytes, needle),
            "the secret is in {}",
            path.display()
        );
        if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut plain = Vec::new();
            let _ = flate2::read::MultiGzDecoder::new(&bytes[..]).read_to_end(&mut plain);
            assert!(
                !contains(&plain, needle),
                "the secret is in the layer {}",
                path.display()
            );
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// As whom hoist runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// As root (the CI default).
    Root,
    /// As an unprivileged user in a user namespace.
    Rootless,
}

/// A store with busybox imported and a context, used as root or rootless.
pub struct Builder {
    mode: Mode,
    work: TempDir,
    store: PathBuf,
    /// The build context.
    pub context: PathBuf,
    /// The sentinel of this case.
    pub sentinel: Sentinel,
}

impl Builder {
    /// A builder in `mode`, or `None` (with the reason printed; a failure
    /// under `HOIST_REQUIRE_ROOT_TESTS=1`) when that mode cannot run here.
    pub fn new(mode: Mode) -> Option<Builder> {
        if !hoist_testutil::is_root() {
            hoist_testutil::cannot_run("the hostile suite needs root");
            return None;
        }
        if mode == Mode::Rootless && !hoist_testutil::rootless::available() {
            return None;
        }
        let owner = (mode == Mode::Rootless).then(hoist_testutil::rootless::user);
        let work = tempfile::tempdir().expect("tempdir");
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
        let store = work.path().join("store");
        let context = work.path().join("context");
        let tmp = work.path().join("tmp");
        for d in [&store, &context, &tmp] {
            fs::create_dir(d).expect("mkdir");
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(d, Some(uid), Some(gid)).expect("chown");
            }
        }
        let b = Builder {
            mode,
            sentinel: Sentinel::new(owner),
            work,
            store,
            context,
        };
        let tar = b.work.path().join("busybox.tar");
        hoist_testutil::busybox_rootfs_tar(&tar);
        fs::set_permissions(&tar, fs::Permissions::from_mode(0o644)).expect("chmod");
        b.hoist(&["import", tar.to_str().expect("UTF-8"), "busybox:latest"])
            .assert_ok();
        Some(b)
    }

    /// `hoist --root STORE ARGS` as this builder's user.
    pub fn hoist(&self, args: &[&str]) -> Run {
        match self.mode {
            Mode::Root => Hoist::new(HOIST, &self.store).run(args),
            Mode::Rootless => {
                let mut command = hoist_testutil::rootless::command(
                    Path::new(HOIST),
                    self.work.path(),
                    &self.work.path().join("tmp"),
                );
                command.arg("--root").arg(&self.store);
                hoist_testutil::rootless::run(command, args)
            }
        }
    }

    /// Writes a context file (parents created).
    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) {
        let p = self.context.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir -p");
        fs::write(p, content).expect("write");
    }

    /// A symlink in the context.
    pub fn symlink(&self, path: &str, target: impl AsRef<Path>) {
        let p = self.context.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir -p");
        symlink(target, p).expect("symlink");
    }

    /// `hoist build --progress plain ARGS CONTEXT` with `dockerfile`.
    pub fn build(&self, dockerfile: &str, args: &[&str]) -> Run {
        self.write("Dockerfile", dockerfile);
        let mut all = vec!["build", "--progress", "plain"];
        all.extend_from_slice(args);
        all.push(self.context.to_str().expect("UTF-8"));
        self.hoist(&all)
    }

    /// The checks every case ends with: sentinel untouched, secret nowhere.
    pub fn assert_host_untouched(&self, run: &Run) {
        self.sentinel.assert_untouched();
        assert_secret_nowhere(&self.store, run, &self.sentinel.secret);
    }
}

/// Asserts that `run` failed and its message names `Dockerfile:LINE` and
/// contains `words`.
pub fn assert_refused(run: &Run, line: usize, words: &str) {
    assert_ne!(run.code(), 0, "the build should fail:\n{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("Dockerfile:{line}")),
        "the error should name Dockerfile:{line}:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(words),
        "the error should say {words:?}:\n{}",
        run.stderr
    );
}

/// Both modes of a case: `mod NAME { fn root(); fn rootless(); }`.
#[macro_export]
macro_rules! both_modes {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[test]
            fn root() {
                if let Some(b) =
                    $crate::hostile::common::Builder::new($crate::hostile::common::Mode::Root)
                {
                    ($body)(&b);
                }
            }
            #[test]
            fn rootless() {
                if let Some(b) =
                    $crate::hostile::common::Builder::new($crate::hostile::common::Mode::Rootless)
                {
                    ($body)(&b);
                }
            }
        }
    };
}
