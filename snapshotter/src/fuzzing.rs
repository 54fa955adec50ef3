//! The fuzz target of the tar reader and layer apply, as a plain function.
//!
//! cargo-fuzz (`snapshotter/fuzz`, nightly) calls [`fuzz_apply`]; so do the
//! stable-Rust mutation loop (`cargo run --example fuzz_apply`) and the
//! corpus replay test, which use [`Harness`] directly to assert on outcomes.
//!
//! Each input is applied into a fresh root inside a temp dir that also holds
//! a sentinel directory beside the root and a lower layer (for the overlay
//! style's copy-up); a second sentinel sits at a fixed path in the system
//! temp dir ([`host_sentinel`]) so that absolute symlinks and names in the
//! corpus can aim at it. After the apply, every sentinel, the lower layer and
//! the temp dir itself must be byte-, mode-, owner-, link-count- and
//! ctime-identical: an escape that writes, chmods, chowns, links or creates
//! anything outside the root fails the check.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::{apply_layer, ApplyOptions, ApplyReport, ApplyTarget, Error, WhiteoutStyle};

/// Longest one apply of a fuzz input may take before it counts as a hang.
/// Inputs are at most a few MiB, so a correct apply takes milliseconds.
pub const TIME_LIMIT: Duration = Duration::from_secs(20);

/// The fixed sentinel directory in the system temp dir. Corpus entries aim
/// absolute symlinks and hardlinks at `<this>/victim`.
pub fn host_sentinel() -> PathBuf {
    std::env::temp_dir().join("hoist-fuzz-sentinel")
}

/// What is recorded of each path under a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Node {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    ino: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    /// File content or symlink target.
    data: Vec<u8>,
}

type Snapshot = BTreeMap<PathBuf, Node>;

fn node(path: &Path, meta: &fs::Metadata) -> Node {
    let data = if meta.file_type().is_symlink() {
        fs::read_link(path)
            .map(|p| p.into_os_string().into_encoded_bytes())
            .unwrap_or_default()
    } else if meta.is_file() {
        fs::read(path).unwrap_or_default()
    } else {
        Vec::new()
    };
    Node {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        nlink: meta.nlink(),
        ino: meta.ino(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        ctime: (meta.ctime(), meta.ctime_nsec()),
        data,
    }
}

/// Records `dir` and everything below it without following symlinks. The
/// subtree named `skip` (the apply root) is recorded only as its inode and
/// type: its content is the apply's to change, but it must stay the same
/// directory.
fn snapshot(dir: &Path, skip: Option<&Path>) -> Snapshot {
    let mut out = Snapshot::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        if Some(p.as_path()) == skip {
            let n = Node {
                mode: meta.mode() & libc::S_IFMT,
                uid: 0,
                gid: 0,
                nlink: 0,
                ino: meta.ino(),
                mtime: (0, 0),
                ctime: (0, 0),
                data: Vec::new(),
            };
            out.insert(p, n);
            continue;
        }
        if meta.is_dir() {
            if let Ok(rd) = fs::read_dir(&p) {
                for e in rd.flatten() {
                    stack.push(e.path());
                }
            }
        }
        out.insert(p.clone(), node(&p, &meta));
    }
    out
}

fn differences(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (p, n) in before {
        match after.get(p) {
            None => out.push(format!("{} was removed", p.display())),
            Some(m) if m != n => out.push(format!(
                "{} changed: before {n:?}, after {m:?}",
                p.display()
            )),
            Some(_) => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            out.push(format!("{} was created", p.display()));
        }
    }
    out
}

const VICTIM: &[u8] = b"original\n";

/// The sentinel's layout: a file, a directory with a file, a symlink.
fn make_sentinel(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir.join("dir"))?;
    fs::write(dir.join("victim"), VICTIM)?;
    fs::set_permissions(dir.join("victim"), fs::Permissions::from_mode(0o644))?;
    fs::write(dir.join("dir/inner"), VICTIM)?;
    symlink("victim", dir.join("link"))?;
    Ok(())
}

fn sentinel_is_pristine(dir: &Path) -> bool {
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let victim = fs::symlink_metadata(dir.join("victim"));
    names(dir) == ["dir", "link", "victim"]
        && names(&dir.join("dir")) == ["inner"]
        && fs::read(dir.join("victim")).ok().as_deref() == Some(VICTIM)
        && fs::read(dir.join("dir/inner")).ok().as_deref() == Some(VICTIM)
        && victim.is_ok_and(|m| m.mode() & 0o7777 == 0o644 && m.nlink() == 1)
        && fs::read_link(dir.join("link")).is_ok_and(|l| l == Path::new("victim"))
}

/// Creates the fixed sentinel once per process (atomically, as several
/// processes may start at once) and records it; later checks compare with
/// this record, so damage done by any earlier apply of the process is seen.
fn host_snapshot() -> &'static Snapshot {
    static HOST: OnceLock<Snapshot> = OnceLock::new();
    HOST.get_or_init(|| {
        let dir = host_sentinel();
        if fs::symlink_metadata(&dir).is_err() {
            let tmp = tempfile::Builder::new()
                .prefix("hoist-fuzz-sentinel.")
                .tempdir_in(std::env::temp_dir())
                .expect("create a temp dir for the host sentinel");
            let staged = tmp.path().join("s");
            make_sentinel(&staged).expect("create the host sentinel");
            // Losing the race to another process is fine: its sentinel is
            // checked below like any other.
            let _ = fs::rename(&staged, &dir);
        }
        assert!(
            sentinel_is_pristine(&dir),
            "the host sentinel {} is not as created (damaged by an earlier run? \
             inspect it, then remove it)",
            dir.display()
        );
        snapshot(&dir, None)
    })
}

/// A temp dir with an apply root, a sentinel beside it and a lower layer.
pub struct Harness {
    dir: tempfile::TempDir,
    before: Snapshot,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// Creates the scene (panics when the temp dir cannot be made).
    pub fn new() -> Harness {
        host_snapshot();
        let dir = tempfile::Builder::new()
            .prefix("hoist-fuzz-")
            .tempdir()
            .expect("create a temp dir");
        let d = dir.path();
        fs::create_dir(d.join("root")).unwrap();
        make_sentinel(&d.join("sentinel")).unwrap();
        // A lower layer for the overlay style, with symlinks that climb out
        // and one that aims at the host sentinel: copy-up must resolve them
        // inside the lower, too.
        let lower = d.join("lower");
        fs::create_dir_all(lower.join("etc")).unwrap();
        fs::create_dir_all(lower.join("d")).unwrap();
        fs::write(lower.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(lower.join("d/f"), b"lower\n").unwrap();
        symlink("../../..", lower.join("up")).unwrap();
        symlink(host_sentinel(), lower.join("abs")).unwrap();
        symlink("../sentinel/victim", lower.join("victim-link")).unwrap();
        // Opening this for reading would block: copy-up must not.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            lower.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        let before = snapshot(d, Some(&d.join("root")));
        Harness { dir, before }
    }

    /// The directory the layer is applied into.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// Applies `layer` (plain or compressed) into the root. The overlay
    /// style gets the lower layer as its parent.
    pub fn apply(&self, layer: &[u8], style: WhiteoutStyle) -> Result<ApplyReport, Error> {
        let target = ApplyTarget {
            root: self.root(),
            whiteouts: style,
            lowers: match style {
                WhiteoutStyle::Overlay => vec![self.dir.path().join("lower")],
                WhiteoutStyle::Delete => Vec::new(),
            },
        };
        let options = ApplyOptions {
            // chown to the layer's ids needs root; without it, keep ours.
            same_owner: rustix::process::geteuid().is_root(),
            ..ApplyOptions::default()
        };
        apply_layer(&target, &mut &layer[..], &options)
    }

    /// What changed outside the root (empty when nothing did).
    pub fn escapes(&self) -> Vec<String> {
        let d = self.dir.path();
        let mut out = differences(&self.before, &snapshot(d, Some(&d.join("root"))));
        out.extend(differences(
            host_snapshot(),
            &snapshot(&host_sentinel(), None),
        ));
        out
    }

    /// Panics naming every change outside the root.
    pub fn check(&self) {
        let escapes = self.escapes();
        assert!(
            escapes.is_empty(),
            "the layer changed things outside the root:\n{}",
            escapes.join("\n")
        );
    }
}

impl Drop for Harness {
    /// A layer may leave directories without write or search permission,
    /// which would keep a non-root user from removing the temp dir.
    fn drop(&mut self) {
        let mut stack = vec![self.root()];
        while let Some(p) = stack.pop() {
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.is_dir() {
                let _ = fs::set_permissions(&p, fs::Permissions::from_mode(0o700));
                if let Ok(rd) = fs::read_dir(&p) {
                    stack.extend(rd.flatten().map(|e| e.path()));
                }
            }
        }
    }
}

/// Every text an apply shows a user: the error and its causes, the warnings.
pub fn texts(result: &Result<ApplyReport, Error>) -> Vec<String> {
    let mut out = Vec::new();
    match result {
        Ok(report) => {
            for w in &report.warnings {
                out.push(w.path.clone());
                out.push(w.message.clone());
            }
        }
        Err(e) => {
            let mut cur: Option<&dyn std::error::Error> = Some(e);
            while let Some(c) = cur {
                out.push(c.to_string());
                cur = c.source();
            }
        }
    }
    out
}

/// Panics when a message carries a raw control character.
pub fn check_texts(result: &Result<ApplyReport, Error>) {
    for t in texts(result) {
        assert!(
            !t.chars().any(char::is_control),
            "a message carries a raw control character: {t:?}"
        );
    }
}

/// Gzip-compresses `data` (fast level: the fuzzer wants many runs).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip into memory");
    e.finish().expect("gzip into memory")
}

/// The fuzz target: applies `data` as a plain layer (deletion whiteouts)
/// and gzip-compressed (overlay whiteouts over a lower layer), each into a
/// fresh root. Panics if anything outside the root changed, if a message
/// carries a raw control character, or if an apply took longer than
/// [`TIME_LIMIT`]. Errors of the apply itself are expected.
pub fn fuzz_apply(data: &[u8]) {
    for (bytes, style) in [
        (data.to_vec(), WhiteoutStyle::Delete),
        (gzip(data), WhiteoutStyle::Overlay),
    ] {
        let h = Harness::new();
        let start = Instant::now();
        let result = h.apply(&bytes, style);
        let took = start.elapsed();
        h.check();
        check_texts(&result);
        assert!(
            took < TIME_LIMIT,
            "apply took {took:?} (limit {TIME_LIMIT:?})"
        );
    }
}
