//! Incremental COPY: a COPY from a build context that misses the cache
//! hard-links, from the snapshot the same COPY made last time on the same
//! base, every file it would write identically, and writes only the others.
//!
//! * **Finding the previous snapshot.** After each such COPY a record is
//!   written to `<root>/copy-reuse/v1/<key>`, keyed by the op's definition,
//!   its base snapshot and the context directory (not by the content: that
//!   is what changed): the committed snapshot's name and, per regular file
//!   the COPY wrote, its path in the image and the sha256 of its content.
//!   Written atomically after the commit; a record whose snapshot is gone
//!   (pruned) is ignored, and any file it names is checked before use.
//! * **Deciding, per file.** The COPY's own walk decides (one mapping of
//!   sources to destinations, with `.dockerignore`, `--exclude` and the
//!   destination rules): a file is reused when the previous snapshot's own
//!   directory (its overlay upper dir) holds a regular file at the same path
//!   with exactly the size, permission bits, owner and mtime (to the
//!   nanosecond) the COPY would give it, no extended attribute, an inode no
//!   other file of this COPY reuses (so the layer never gains a tar hard
//!   link), and the record's content digest equals the source's (the
//!   build's stat cache, keyed by path, size, mtime, inode and ctime).
//!   Everything else is copied as before, through the mount.
//! * **Linking, offline.** Overlayfs forbids writing into an upper dir while
//!   it is mounted, and `link` across the mount fails with `EXDEV`; so the
//!   reused files are linked into the new upper dir after the COPY has
//!   unmounted it, before the diff. Their parent directories are in the
//!   upper dir already: the walk made or finished them through the mount,
//!   and touches (copies up) any other parent there, as creating the file
//!   would have. Links bump the mtime of their directories, so the mtimes
//!   the COPY gave its directories are set again afterwards. A link that
//!   fails (`EMLINK`, the old snapshot pruned meanwhile) is replaced by a
//!   copy from the source into the upper dir.
//!
//! The upper dir then holds what a plain COPY would have left there, and the
//! layer (from the upper dir) has the same bytes. Only the overlay backend
//! does this: the native one compares link counts in its diff and keeps no
//! upper dir apart. Later steps write through copy-up into their own upper
//! dirs, so a shared inode is never written again; removing either snapshot
//! leaves the other's link.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use rustix::fs::{AtFlags, Mode, OFlags};

use hoist_snapshotter::{GzipBlock, GzipBlockSource};
use hoist_untrusted::Root;

use super::files::{Deferred, FileJob};
use super::hash::StatCache;
use super::{io_error, EngineError};
use crate::digest::{CanonicalEncoder, Digest};

const HEADER: &str = "hoist-copy-reuse 2";

/// Where the records live, under the store's root.
pub(crate) fn records_dir(store_root: &Path) -> PathBuf {
    store_root.join("copy-reuse").join("v1")
}

/// Removes the records whose snapshot `exists` no longer (after a
/// collection). A record written meanwhile for a snapshot committed after
/// the caller looked may go too: records are hints, its COPY then copies.
pub(crate) fn forget_dangling(store_root: &Path, exists: impl Fn(&str) -> bool) {
    let dir = records_dir(store_root);
    let Ok(entries) = fs::read_dir(&dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let mut head = String::new();
        let read = fs::File::open(&path).and_then(|f| {
            use std::io::BufRead as _;
            let mut lines = std::io::BufReader::new(f);
            lines.read_line(&mut head)?;
            head.clear();
            lines.read_line(&mut head)
        });
        // Temp files of a writer (dot-named) are left to it.
        let temp = entry.file_name().to_string_lossy().starts_with('.');
        if !temp && (read.is_err() || !exists(head.trim_end_matches('\n'))) {
            let _ = fs::remove_file(&path);
        }
    }
}

/// The record key of a COPY: its definition (sources, destination, options),
/// the snapshot it writes on and the context directory it reads.
pub(crate) fn key(definition: &[u8], base: Option<&str>, context: &Path) -> Digest {
    CanonicalEncoder::new("copy-reuse", 1)
        .bytes("op", definition)
        .str("base", base.unwrap_or(""))
        .bytes("context", context.as_os_str().as_bytes())
        .finish()
        .digest()
}

/// What the last COPY of a key left: its snapshot, its gzip layer blob and
/// the blocks that blob was written in, and the content digest of each
/// regular file it wrote, by path in the image (relative, no `/`).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Record {
    pub snapshot: String,
    pub layer: Option<String>,
    pub blocks: Vec<GzipBlock>,
    pub files: HashMap<String, [u8; 32]>,
}

impl Record {
    /// The record of `key`; `None` when there is none or it does not parse
    /// (a record is only ever a hint: nothing in it is used unchecked).
    pub fn load(dir: &Path, key: &Digest) -> Option<Record> {
        let text = fs::read(dir.join(key.hex())).ok()?;
        let text = String::from_utf8(text).ok()?;
        let mut lines = text.split('\n');
        if lines.next()? != HEADER {
            return None;
        }
        let snapshot = lines.next()?.to_owned();
        let layer = match lines.next()?.strip_prefix("layer ")? {
            "-" => None,
            digest => Some(digest.to_owned()),
        };
        let mut blocks = Vec::new();
        let mut files = HashMap::new();
        for line in lines.filter(|l| !l.is_empty()) {
            if let Some(block) = line.strip_prefix("block ") {
                blocks.push(parse_block(block)?);
                continue;
            }
            let (digest, path) = line.split_once(' ')?;
            files.insert(path.to_owned(), parse_hex32(digest)?);
        }
        Some(Record {
            snapshot,
            layer,
            blocks,
            files,
        })
    }

    /// Writes the record of `key` atomically (temp file, fsync, rename).
    pub fn save(&self, dir: &Path, key: &Digest) -> Result<(), EngineError> {
        fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        let path = dir.join(key.hex());
        let mut paths: Vec<(&String, &[u8; 32])> = self.files.iter().collect();
        paths.sort();
        hoist_untrusted::atomic::write_whole(&path, |out| {
            writeln!(out, "{HEADER}\n{}", self.snapshot)?;
            writeln!(out, "layer {}", self.layer.as_deref().unwrap_or("-"))?;
            for b in &self.blocks {
                writeln!(
                    out,
                    "block {} {} {} {}",
                    hex::encode(b.key),
                    b.offset,
                    b.len,
                    hex::encode(b.digest)
                )?;
            }
            for (p, d) in paths {
                writeln!(out, "{} {p}", hex::encode(d))?;
            }
            Ok(())
        })
        .map_err(|e| io_error(e.action, &e.path)(e.source))
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

/// `KEY OFFSET LEN DIGEST` of a record's `block` line.
fn parse_block(text: &str) -> Option<GzipBlock> {
    let mut parts = text.split(' ');
    let block = GzipBlock {
        key: parse_hex32(parts.next()?)?,
        offset: parts.next()?.parse().ok()?,
        len: parts.next()?.parse().ok()?,
        digest: parse_hex32(parts.next()?)?,
    };
    parts.next().is_none().then_some(block)
}

/// The gzip blocks of the previous COPY's layer blob, read from the blob
/// in the content store. Opened once: a collection that removes the blob
/// meanwhile leaves the open file readable.
pub(crate) struct PreviousBlocks {
    blob: fs::File,
    blocks: HashMap<[u8; 32], GzipBlock>,
    taken: std::sync::atomic::AtomicUsize,
}

/// No block of hoist's is near this (1 MiB of input deflates to at most a
/// little over 1 MiB); a record saying otherwise is not believed.
const MAX_BLOCK_LEN: u64 = 4 << 20;

impl PreviousBlocks {
    /// The blocks `record` lists, in its layer blob `blob`; `None` when it
    /// lists none.
    pub fn new(record: &Record, blob: fs::File) -> Option<Self> {
        let blocks: HashMap<_, _> = record
            .blocks
            .iter()
            .filter(|b| b.len <= MAX_BLOCK_LEN)
            .map(|b| (b.key, *b))
            .collect();
        (!blocks.is_empty()).then_some(PreviousBlocks {
            blob,
            blocks,
            taken: Default::default(),
        })
    }

    /// How many blocks were given out.
    pub fn taken(&self) -> usize {
        self.taken.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl GzipBlockSource for PreviousBlocks {
    fn block(&self, key: &[u8; 32]) -> Option<Vec<u8>> {
        use sha2::Digest as _;
        use std::os::unix::fs::FileExt as _;
        let b = self.blocks.get(key)?;
        let mut bytes = vec![0; usize::try_from(b.len).ok()?];
        self.blob.read_exact_at(&mut bytes, b.offset).ok()?;
        // The store's blobs are checked by fsck, not on every read: a block
        // that is not what was written is deflated afresh.
        if <[u8; 32]>::from(sha2::Sha256::digest(&bytes)) != b.digest {
            return None;
        }
        self.taken
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Some(bytes)
    }
}

/// The previous snapshot's own directory, held open so that a snapshot
/// removed and made again under the same directory name meanwhile is
/// never read: lookups in a removed directory fail, and fall back. Its
/// path is for the one check that has no `*at` call (xattrs): a directory
/// replaced meanwhile only makes the link from the descriptor fail.
struct Previous {
    dir: Root,
    files: HashMap<String, [u8; 32]>,
    /// Its directories opened lately, by path relative to it (`None`: not
    /// to be opened as [`Previous::dir_fd`] asks), so that each file costs
    /// a lookup of its own name only. At most [`OPEN_DIRS`].
    dirs: Mutex<HashMap<Box<str>, Option<Arc<OwnedFd>>>>,
}

/// How many directories of the previous snapshot are held open at most. The
/// COPY's files come in the order of its walk, so the latest directories are
/// the ones asked for; a context of many directories must not use up the
/// process's descriptors (1,024 by default).
const OPEN_DIRS: usize = 64;

impl Previous {
    /// The directory `rel` (`""` for the top) of the previous snapshot,
    /// kept open for the files after it. `rel` is made of the context's
    /// names. The old snapshot holds what the same COPY wrote through the
    /// root-scoped resolver, so no symlink lies on the way; that is checked,
    /// by the kernel (openat2 refusing any symlink and any step out of the
    /// directory), before the lookups in it. Where openat2 is missing,
    /// nothing is reused.
    fn dir_fd(&self, rel: &str) -> Option<Arc<OwnedFd>> {
        let lock = || self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = lock().get(rel) {
            return known.clone();
        }
        let opened = rustix::fs::openat2(
            self.dir.as_fd(),
            if rel.is_empty() { "." } else { rel },
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            rustix::fs::ResolveFlags::NO_SYMLINKS
                | rustix::fs::ResolveFlags::BENEATH
                | rustix::fs::ResolveFlags::NO_MAGICLINKS,
        )
        .ok()
        .map(Arc::new);
        let mut dirs = lock();
        if dirs.len() >= OPEN_DIRS {
            // A new stretch of the walk: what was open is not asked for again.
            dirs.clear();
        }
        dirs.insert(rel.into(), opened.clone());
        opened
    }
}

/// One COPY's reuse: what the walk decided, and what the new record holds.
pub(crate) struct Reuse<'a> {
    previous: Option<Previous>,
    hashes: &'a StatCache,
    /// Where the new snapshot is mounted while the COPY walks.
    mount: OnceLock<PathBuf>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    inodes: HashSet<u64>,
    touched: HashSet<PathBuf>,
    claimed: Vec<(Box<str>, Deferred)>,
    written: HashMap<String, [u8; 32]>,
    finished: Vec<(PathBuf, SystemTime)>,
}

impl<'a> Reuse<'a> {
    /// A reuse of `previous` (a record and the own directory of its
    /// snapshot), or only the making of a new record when there is none.
    pub fn new(previous: Option<(Record, PathBuf)>, hashes: &'a StatCache) -> Self {
        let previous = previous.and_then(|(record, dir)| {
            Some(Previous {
                dir: Root::new(&dir).ok()?,
                files: record.files,
                dirs: Mutex::new(HashMap::new()),
            })
        });
        Reuse {
            previous,
            hashes,
            mount: OnceLock::new(),
            state: Mutex::new(State::default()),
        }
    }

    /// The COPY writes under `root` (the mounted new snapshot).
    pub fn set_mount(&self, root: &Path) {
        let _ = self.mount.set(root.to_path_buf());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Each critical section is a few collection operations.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `job` when the previous snapshot holds exactly the file it
    /// would write (to be linked once unmounted); gives it back otherwise.
    pub(super) fn offer(&self, job: FileJob) -> Result<Option<FileJob>, EngineError> {
        let Some(rel) = self
            .mount
            .get()
            .and_then(|m| job.dst.strip_prefix(m).ok())
            .and_then(|r| r.to_str())
            .filter(|r| !r.is_empty() && !r.contains('\n'))
            .map(str::to_owned)
        else {
            return Ok(Some(job));
        };
        let Some(digest) = self.hashes.lookup(&job.src, &job.meta) else {
            return Ok(Some(job));
        };
        let reusable = self
            .previous
            .as_ref()
            .is_some_and(|p| p.files.get(&rel) == Some(&digest) && self.same_file(p, &rel, &job));
        let mut state = self.lock();
        state.written.insert(rel.clone(), digest);
        if !reusable {
            return Ok(Some(job));
        }
        let parent = job.dst.parent().map(Path::to_path_buf);
        let fresh_parent = parent.filter(|p| state.touched.insert(p.clone()));
        state.claimed.push((rel.into_boxed_str(), job.defer()));
        drop(state);
        if let Some(parent) = fresh_parent {
            // Copies the parent up into the upper dir (with its ancestors)
            // and sets its mtime as creating the file in it would.
            let now = rustix::fs::Timestamps {
                last_access: rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_OMIT,
                },
                last_modification: rustix::fs::Timespec {
                    tv_sec: 0,
                    tv_nsec: rustix::fs::UTIME_NOW,
                },
            };
            rustix::fs::utimensat(rustix::fs::CWD, &parent, &now, AtFlags::empty())
                .map_err(|e| io_error("set the modification time of", &parent)(e.into()))?;
        }
        Ok(None)
    }

    /// Whether the previous snapshot's file at `rel` is what `job` writes.
    fn same_file(&self, previous: &Previous, rel: &str, job: &FileJob) -> bool {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        // One name looked up in a directory opened as `dir_fd` checks: it
        // cannot lead anywhere else.
        if matches!(name, "" | "." | "..") {
            return false;
        }
        let Some(dir) = previous.dir_fd(parent) else {
            return false;
        };
        let Ok(old) = rustix::fs::statat(&*dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return false;
        };
        let is_file =
            rustix::fs::FileType::from_raw_mode(old.st_mode) == rustix::fs::FileType::RegularFile;
        let same = is_file
            && old.st_size as u64 == job.meta.len()
            && old.st_mode & 0o7777 == job.mode
            && old.st_uid == job.owner.uid
            && old.st_gid == job.owner.gid
            && old.st_mtime == job.meta.mtime()
            && old.st_mtime_nsec as i64 == job.meta.mtime_nsec();
        if !same {
            return false;
        }
        // A COPY gives its files no extended attributes of its own; any on
        // the old file (overlay's among them) came from elsewhere. A size
        // query: rustix answers an empty buffer with 0, always. No `*at` call
        // lists xattrs, so the path is the snapshot's; `dir_fd` has just
        // opened every directory on it without a symlink, and a committed
        // snapshot does not change. (Through the directory's /proc/self/fd
        // link instead, 12 alternated incremental rebuilds took 0.963 s
        // against 0.908 s.)
        if !matches!(
            rustix::fs::llistxattr_query(previous.dir.path().join(rel)),
            Ok(0)
        ) {
            return false;
        }
        self.lock().inodes.insert(old.st_ino)
    }

    /// The COPY set `dir`'s mtime to `mtime` (after its content).
    pub(super) fn finished_dir(&self, dir: &Path, mtime: SystemTime) {
        if self.previous.is_some() {
            self.lock().finished.push((dir.to_path_buf(), mtime));
        }
    }

    /// Links the files taken by [`Reuse::offer`] into `upper` (the new
    /// snapshot's own directory, unmounted), copies those that cannot be
    /// linked from their sources, and sets again the mtimes the COPY gave
    /// the directories they went into. Returns how many were linked.
    pub fn link_into(&self, upper: &Path) -> Result<usize, EngineError> {
        let mut state = self.lock();
        let claimed = std::mem::take(&mut state.claimed);
        let finished = std::mem::take(&mut state.finished);
        drop(state);
        let Some(previous) = &self.previous else {
            return Ok(0);
        };
        if claimed.is_empty() {
            return Ok(0);
        }
        let Some(mount) = self.mount.get() else {
            return Ok(0);
        };
        let new = rustix::fs::open(
            upper,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error("open", upper)(e.into()))?;
        let parents: HashSet<PathBuf> = claimed
            .iter()
            .filter_map(|(rel, _)| mount.join(&**rel).parent().map(Path::to_path_buf))
            .collect();
        // Links go to the walk's contiguous halves on two threads: linking
        // is directory and inode updates in the kernel, and the halves
        // mostly touch different directories.
        let link = |part: Vec<(Box<str>, Deferred)>| {
            let mut failed = Vec::new();
            for (rel, job) in part {
                if let Err(e) =
                    rustix::fs::linkat(previous.dir.as_fd(), &*rel, &new, &*rel, AtFlags::empty())
                {
                    tracing::debug!(path = %rel, error = %e, "copying instead of linking");
                    failed.push((rel, job));
                }
            }
            failed
        };
        let total = claimed.len();
        let mut first = claimed;
        let second = first.split_off(total / 2);
        let mut failed = std::thread::scope(|scope| {
            let other = scope.spawn(|| link(second));
            let mut failed = link(first);
            // A panic in the other half is raised here: its files must not
            // be left neither linked nor copied.
            failed.extend(
                other
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            );
            failed
        });
        let linked = total - failed.len();
        for (rel, job) in failed.drain(..) {
            job.into_job(upper.join(&*rel))?.run(None)?;
        }
        for (dir, mtime) in finished {
            if !parents.contains(&dir) {
                continue;
            }
            let Ok(rel) = dir.strip_prefix(mount) else {
                continue;
            };
            let path = upper.join(rel);
            fs::File::open(&path)
                .and_then(|f| f.set_modified(mtime))
                .map_err(io_error("set the modification time of", &path))?;
        }
        Ok(linked)
    }

    /// The record of this COPY, naming the snapshot it committed.
    pub fn record(self, snapshot: String) -> Record {
        let state = self.state.into_inner().unwrap_or_else(|e| e.into_inner());
        Record {
            snapshot,
            layer: None,
            blocks: Vec::new(),
            files: state.written,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_ones_are_no_records() {
        let dir = tempfile::tempdir().unwrap();
        let key = Digest::of(b"k");
        assert_eq!(Record::load(dir.path(), &key), None);
        let record = Record {
            snapshot: "chain-abc".into(),
            layer: Some("sha256:".to_owned() + &"d".repeat(64)),
            blocks: vec![
                GzipBlock {
                    key: [3; 32],
                    offset: 10,
                    len: 5000,
                    digest: [4; 32],
                },
                GzipBlock {
                    key: [5; 32],
                    offset: 5010,
                    len: 7,
                    digest: [6; 32],
                },
            ],
            files: HashMap::from([
                ("src/a b".to_owned(), [1u8; 32]),
                ("src/c".to_owned(), [2u8; 32]),
            ]),
        };
        record.save(dir.path(), &key).unwrap();
        assert_eq!(Record::load(dir.path(), &key), Some(record));
        let no_layer = Record {
            layer: None,
            blocks: vec![],
            ..Record::default()
        };
        no_layer.save(dir.path(), &key).unwrap();
        assert_eq!(Record::load(dir.path(), &key), Some(no_layer));
        for (text, why) in [
            (
                "hoist-copy-reuse 2\nchain-abc\nlayer -\nzz src/a\n",
                "a bad digest",
            ),
            (
                "hoist-copy-reuse 2\nchain-abc\nlayer -\nblock 00 1 2 00\n",
                "a bad block",
            ),
            ("hoist-copy-reuse 2\nchain-abc\n", "no layer line"),
            ("hoist-copy-reuse 1\nchain-abc\n", "the older format"),
        ] {
            fs::write(dir.path().join(key.hex()), text).unwrap();
            assert_eq!(Record::load(dir.path(), &key), None, "{why}");
        }
        fs::write(dir.path().join(key.hex()), "other 1\nchain-abc\n").unwrap();
        assert_eq!(Record::load(dir.path(), &key), None, "another format");
    }

    #[test]
    fn previous_blocks_give_only_what_their_digest_says() {
        use sha2::Digest as _;
        let dir = tempfile::tempdir().unwrap();
        let blob = dir.path().join("blob");
        let (one, two) = (b"first block".to_vec(), b"second".to_vec());
        fs::write(&blob, [&b"0123456789"[..], &one, &two].concat()).unwrap();
        let block = |key: u8, offset: u64, bytes: &[u8]| GzipBlock {
            key: [key; 32],
            offset,
            len: bytes.len() as u64,
            digest: sha2::Sha256::digest(bytes).into(),
        };
        let mut wrong = block(3, 10, &one);
        wrong.digest = [0; 32];
        let mut huge = block(4, 10, &one);
        huge.len = MAX_BLOCK_LEN + 1;
        let record = Record {
            blocks: vec![
                block(1, 10, &one),
                block(2, 10 + one.len() as u64, &two),
                wrong,
                huge,
                block(5, 1000, &one),
            ],
            ..Record::default()
        };
        let previous = PreviousBlocks::new(&record, fs::File::open(&blob).unwrap()).unwrap();
        assert_eq!(previous.block(&[1; 32]), Some(one));
        assert_eq!(previous.block(&[2; 32]), Some(two));
        assert_eq!(previous.block(&[3; 32]), None, "bytes not as written");
        assert_eq!(previous.block(&[4; 32]), None, "a length past belief");
        assert_eq!(previous.block(&[5; 32]), None, "past the blob's end");
        assert_eq!(previous.block(&[9; 32]), None, "an unknown key");
        assert_eq!(previous.taken(), 2);
        assert!(PreviousBlocks::new(&Record::default(), fs::File::open(&blob).unwrap()).is_none());
    }

    #[test]
    fn a_previous_snapshot_of_many_directories_keeps_few_open() {
        let dir = tempfile::tempdir().unwrap();
        let count = OPEN_DIRS * 3 + 5;
        for n in 0..count {
            fs::create_dir_all(dir.path().join(format!("src/d{n}"))).unwrap();
        }
        fs::create_dir(dir.path().join("outside")).unwrap();
        std::os::unix::fs::symlink("../outside", dir.path().join("src/link")).unwrap();
        let previous = Previous {
            dir: Root::new(dir.path()).unwrap(),
            files: HashMap::new(),
            dirs: Mutex::new(HashMap::new()),
        };
        let mut held = Vec::new();
        for n in 0..count {
            let fd = previous.dir_fd(&format!("src/d{n}"));
            assert!(fd.is_some(), "src/d{n} not opened");
            held.push(fd);
            let open = previous.dirs.lock().unwrap().len();
            assert!(open <= OPEN_DIRS, "{open} directories held open");
        }
        // A directory asked for again is the same one, open or opened anew.
        let again = previous.dir_fd("src/d0").unwrap();
        let first = held[0].as_ref().unwrap();
        let (a, b) = (
            rustix::fs::fstat(&*again).unwrap(),
            rustix::fs::fstat(&**first).unwrap(),
        );
        assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
        // Never through a symlink, nor out of the snapshot.
        assert!(previous.dir_fd("src/link").is_none());
        assert!(previous.dir_fd("src/../..").is_none());
    }
}
