//! The content store: blobs addressed by digest under `blobs/sha256/<hex>`,
//! ingested through a [`ContentWriter`] that hashes while it streams.
//!
//! # Ingest lifecycle
//!
//! 1. [`ContentStore::writer`] creates `ingest/<random>` (the *ref* of the
//!    ingest in progress).
//! 2. The caller writes bytes; the writer hashes them as they pass.
//! 3. [`ContentWriter::commit`] flushes and fsyncs the file, compares the size
//!    and the digest with what the caller expected, and links the file into
//!    `blobs/sha256/<hex>` without ever replacing an existing blob (an existing
//!    blob is success: content addressing makes it identical), then fsyncs the
//!    directory so the name survives a crash.
//!
//! A writer dropped before commit (an error, a panic) removes its ingest file.
//! A process killed mid-ingest leaves only a file in `ingest/`, never a
//! visible blob; `hoist du` and `hoist fsck` report such leftovers, told
//! apart from ingests in progress by the `flock` a writer holds on its file.
//!
//! # Resumable ingests
//!
//! A download knows the digest and size of what it fetches, so its ingest
//! gets a name made of the digest ([`ContentStore::resume_writer`]:
//! `ingest/sha256-<hex>`, containerd's ingest *ref* by digest) instead of a
//! random one. A pull that was killed, or that gave up and kept its bytes
//! ([`ContentWriter::suspend`]), left that file; the next writer for the same
//! blob hashes what is there and continues after it, so the download asks
//! only for the rest (an HTTP `Range`). Nothing in the file is trusted: the
//! digest checked at commit covers every byte, the old ones included, and a
//! mismatch discards the ingest. Collections and `hoist fsck --repair` remove
//! such files like any other abandoned ingest.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// Name of the file every OCI image layout starts with.
pub const OCI_LAYOUT_FILE: &str = "oci-layout";
/// The content of `oci-layout`.
pub const OCI_LAYOUT_CONTENT: &str = "{\"imageLayoutVersion\":\"1.0.0\"}";

const INGEST_DIR: &str = "ingest";
const WRITE_BUFFER: usize = 1 << 20;
/// How much of an ingest file is handed to writeback at a time.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// Blobs by digest in an OCI image layout directory (`<store>/content`).
#[derive(Clone, Debug)]
pub struct ContentStore {
    dir: PathBuf,
}

/// The outcome of a committed ingest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    /// The digest of the bytes written.
    pub digest: Digest,
    /// Their number.
    pub size: u64,
    /// False when the blob already existed (this ingest was a no-op).
    pub created: bool,
}

impl ContentStore {
    /// Open (creating when missing) the layout directory `dir`: `oci-layout`,
    /// `blobs/sha256/` and `ingest/`. `index.json` is written by the store's
    /// ref handling ([`crate::Store`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for sub in [dir.join("blobs/sha256"), dir.join(INGEST_DIR)] {
            fs::create_dir_all(&sub).map_err(|e| Error::io("create directory", &sub, e))?;
        }
        let layout = dir.join(OCI_LAYOUT_FILE);
        if !layout.exists() {
            write_atomic(&layout, OCI_LAYOUT_CONTENT.as_bytes())?;
        }
        Ok(ContentStore { dir })
    }

    /// The layout directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where in-progress ingests live.
    pub fn ingest_dir(&self) -> PathBuf {
        self.dir.join(INGEST_DIR)
    }

    /// The path a blob has (or would have). Only sha256 is supported.
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        if digest.algorithm().as_ref() != "sha256" {
            return Err(Error::UnsupportedDigest(digest.clone()));
        }
        Ok(self.dir.join("blobs/sha256").join(digest.digest()))
    }

    /// True when the blob is present.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    /// The size of a blob.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(m.len()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Err(Error::BlobNotFound(digest.clone()))
            }
            Err(e) => Err(Error::io("stat blob", path, e)),
        }
    }

    /// Open a blob for reading.
    pub fn open_blob(&self, digest: &Digest) -> Result<File> {
        let path = self.blob_path(digest)?;
        File::open(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::BlobNotFound(digest.clone())
            } else {
                Error::io("open blob", path, e)
            }
        })
    }

    /// Read a whole blob (for manifests and configs; stream layers with
    /// [`ContentStore::open_blob`]).
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut file = self.open_blob(digest)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(|e| {
            Error::io(
                "read blob",
                self.dir.join("blobs/sha256").join(digest.digest()),
                e,
            )
        })?;
        Ok(bytes)
    }

    /// Start an ingest.
    pub fn writer(&self) -> Result<ContentWriter> {
        let ingest = self.ingest_dir();
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(|e| Error::Stream {
            action: "draw a random ingest name".to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        let path = ingest.join(hex::encode(random));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| Error::io("create ingest file", &path, e))?;
        // The lock says "a process is writing this": `hoist fsck` and the
        // collection take an unlocked ingest file for a killed writer's.
        // It lasts as long as the descriptor, through the link into blobs/.
        if let Err(e) = crate::sys::lock_exclusive(&file) {
            let _ = fs::remove_file(&path);
            return Err(Error::io("lock ingest file", &path, e));
        }
        Ok(ContentWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            path,
            blobs: self.dir.join("blobs/sha256"),
            hasher: Sha256::new(),
            size: 0,
            written_back: 0,
            keep: false,
        })
    }

    /// Start the ingest of the blob `digest` of `size` bytes, or continue
    /// the one a killed or suspended download of it left (see the module
    /// docs): the writer's [`ContentWriter::size`] says how many bytes it
    /// already has. When another process is writing that ingest now, a fresh
    /// ingest of a random name is returned (both may finish: the first
    /// commit wins, the other finds the blob there).
    pub fn resume_writer(&self, digest: &Digest, size: u64) -> Result<ContentWriter> {
        use std::os::unix::fs::MetadataExt as _;
        // The name comes from a digest the caller parsed: algorithm and hex,
        // nothing that could leave the directory.
        let name = format!("{}-{}", digest.algorithm(), digest.digest());
        if name.contains('/') || name.starts_with("gc-") {
            return self.writer();
        }
        let path = self.ingest_dir().join(name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open ingest file", &path, e))?;
        if !crate::sys::try_lock_exclusive(&file)
            .map_err(|e| Error::io("lock ingest file", &path, e))?
        {
            return self.writer();
        }
        // Now, not when the killed pull last wrote: a collection takes an
        // ingest file older than the oldest lease for a dead writer's, and
        // this pull's lease is older than that write.
        file.set_modified(std::time::SystemTime::now())
            .map_err(|e| Error::io("touch ingest file", &path, e))?;
        // A collection may have removed the name between our open and our
        // lock: then this inode is no ingest any more, start afresh.
        let ours = file
            .metadata()
            .map_err(|e| Error::io("stat ingest file", &path, e))?;
        match fs::metadata(&path) {
            Ok(named) if named.ino() == ours.ino() && named.dev() == ours.dev() => {}
            _ => return self.writer(),
        }
        let mut hasher = Sha256::new();
        let mut have = ours.len();
        if have > size {
            have = 0;
        }
        let mut reader = &file;
        let hashed = io::copy(
            &mut Read::take(&mut reader, have),
            &mut HashingSink(&mut hasher),
        );
        if !matches!(hashed, Ok(n) if n == have) {
            have = 0;
            hasher = Sha256::new();
        }
        file.set_len(have)
            .map_err(|e| Error::io("truncate ingest file", &path, e))?;
        let mut file = file;
        io::Seek::seek(&mut file, io::SeekFrom::Start(have))
            .map_err(|e| Error::io("seek in ingest file", &path, e))?;
        Ok(ContentWriter {
            file: Some(BufWriter::with_capacity(WRITE_BUFFER, file)),
            path,
            blobs: self.dir.join("blobs/sha256"),
            hasher,
            size: have,
            written_back: have,
            keep: false,
        })
    }

    /// Copy a reader into the store, checked against the expected size and
    /// digest when given.
    pub fn ingest(
        &self,
        mut reader: impl Read,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Committed> {
        let mut writer = self.writer()?;
        copy_into(&mut reader, &mut writer)?;
        writer.commit(expected_size, expected)
    }

    /// Store a small in-memory blob (a manifest, a config).
    pub fn put(&self, bytes: &[u8]) -> Result<Committed> {
        let digest = digest_of(bytes);
        if let Ok(path) = self.blob_path(&digest) {
            // An existing blob is refreshed (see `ContentWriter::commit`); one
            // collected meanwhile is written again below.
            if refresh(&path).is_ok() {
                return Ok(Committed {
                    digest,
                    size: bytes.len() as u64,
                    created: false,
                });
            }
        }
        self.ingest(bytes, Some(bytes.len() as u64), Some(&digest))
    }

    /// Remove a blob; false when it was not there. Callers make sure nothing
    /// references it any more.
    pub fn delete_blob(&self, digest: &Digest) -> Result<bool> {
        let path = self.blob_path(digest)?;
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io("remove blob", path, e)),
        }
    }

    /// Every blob with its size, sorted by digest.
    pub fn blobs(&self) -> Result<Vec<(Digest, u64)>> {
        let dir = self.dir.join("blobs/sha256");
        let mut blobs = Vec::new();
        let entries = fs::read_dir(&dir).map_err(|e| Error::io("list blobs in", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list blobs in", &dir, e))?;
            let name = entry.file_name();
            let Some(digest) = name
                .to_str()
                .and_then(|hex| Digest::try_from(format!("sha256:{hex}")).ok())
            else {
                continue;
            };
            let meta = entry
                .metadata()
                .map_err(|e| Error::io("stat blob", entry.path(), e))?;
            blobs.push((digest, meta.len()));
        }
        blobs.sort_by(|a, b| a.0.as_ref().cmp(b.0.as_ref()));
        Ok(blobs)
    }
}

/// An ingest in progress: bytes written are hashed on the way to a file in
/// `ingest/`. Dropping it without [`ContentWriter::commit`] removes the file.
#[derive(Debug)]
pub struct ContentWriter {
    file: Option<BufWriter<File>>,
    path: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    size: u64,
    /// Bytes of the file already handed to the kernel's writeback.
    written_back: u64,
    /// Leave the name in `ingest/` alone on drop: kept for a later resume
    /// ([`ContentWriter::suspend`]) or already removed by the commit.
    keep: bool,
}

impl ContentWriter {
    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        sha256_digest(self.hasher.clone())
    }

    /// The number of bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The ingest file (the ref of this ingest).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the blob visible, in this order: flush and fsync, compare the
    /// size, compare the digest, link into `blobs/` unless it exists, fsync the
    /// directory. On any error nothing is left behind.
    pub fn commit(
        mut self,
        expected_size: Option<u64>,
        expected: Option<&Digest>,
    ) -> Result<Committed> {
        let Some(buffered) = self.file.take() else {
            return Err(Error::io(
                "commit ingest file (already closed)",
                &self.path,
                io::Error::from(io::ErrorKind::BrokenPipe),
            ));
        };
        let file = buffered
            .into_inner()
            .map_err(|e| Error::io("flush ingest file", &self.path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| Error::io("fsync ingest file", &self.path, e))?;
        // Kept open (and locked) until the blob is linked: see `writer`.
        let _locked = file;
        if let Some(expected) = expected_size {
            if expected != self.size {
                return Err(Error::SizeMismatch {
                    expected,
                    actual: self.size,
                });
            }
        }
        let digest = self.digest();
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(Error::DigestMismatch {
                    expected: expected.clone(),
                    actual: digest,
                });
            }
        }
        let target = self.blobs.join(digest.digest());
        // link(2) fails with EEXIST instead of replacing: a blob, once
        // visible, is never rewritten, even by a concurrent identical ingest.
        let created = loop {
            match fs::hard_link(&self.path, &target) {
                Ok(()) => break true,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    // Refresh the existing blob's modification time so that a
                    // garbage collection running now sees it as new (see
                    // `gc`); if the collection took it away in between, link
                    // ours again.
                    match refresh(&target) {
                        Ok(()) => break false,
                        Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(Error::io("refresh blob", &target, e)),
                    }
                }
                Err(e) => return Err(Error::io("link ingest file into", &target, e)),
            }
        };
        // The ingest name goes now, while the lock is held and before the
        // directory sync (slow on a busy disk): a process killed from here on
        // leaves no ingest file of a blob that exists, which a later pull,
        // finding the blob, would never take up again. The blob keeps the
        // inode; a name that cannot be removed is collected like any
        // abandoned ingest.
        let _ = fs::remove_file(&self.path);
        self.keep = true;
        if created {
            fsync_dir(&self.blobs)?;
        }
        Ok(Committed {
            digest,
            size: self.size,
            created,
        })
    }

    /// Abandon the ingest (same as dropping the writer).
    pub fn abort(self) {}

    /// Stop without committing, keeping what was written in `ingest/` for a
    /// later [`ContentStore::resume_writer`] of the same blob (a download
    /// cut off by the network). Returns the bytes kept; on a write error the
    /// ingest is removed as on drop.
    pub fn suspend(mut self) -> Result<u64> {
        if let Some(buffered) = self.file.take() {
            let file = buffered
                .into_inner()
                .map_err(|e| Error::io("flush ingest file", &self.path, e.into_error()))?;
            // The resume that comes next must get the lock even while a child
            // another thread is spawning still holds this description.
            crate::sys::unlock(&file)
                .map_err(|e| Error::io("unlock ingest file", &self.path, e))?;
        }
        self.keep = true;
        Ok(self.size)
    }
}

impl Write for ContentWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::from(io::ErrorKind::BrokenPipe))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        // What the buffer passed on is in the page cache: have the kernel
        // start writing it out while we produce the rest, so `commit`'s
        // fsync of a big blob does not wait for all of it at once.
        let in_file = self.size - file.buffer().len() as u64;
        if in_file - self.written_back >= WRITEBACK_CHUNK {
            let _ = crate::sys::start_writeback(
                file.get_ref(),
                self.written_back,
                in_file - self.written_back,
            );
            self.written_back = in_file;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for ContentWriter {
    fn drop(&mut self) {
        self.file.take();
        if self.keep {
            return;
        }
        // Ignoring the error: the file may never have been created, and a
        // leftover ingest file is invisible and reported by `hoist du`.
        let _ = fs::remove_file(&self.path);
    }
}

/// Feeds what is written to a hasher (re-hashing a resumed ingest).
struct HashingSink<'a>(&'a mut Sha256);

impl Write for HashingSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Set a blob's modification time to now (the sign of recent use that
/// garbage collection respects while builds hold leases).
pub(crate) fn refresh(path: &Path) -> io::Result<()> {
    // A read-only descriptor suffices: setting times needs ownership, not
    // write permission, and blobs may be read-only files.
    File::open(path)?.set_modified(std::time::SystemTime::now())
}

/// Copy `reader` into `writer` with a large buffer, naming the failing side.
pub fn copy_into(reader: &mut impl Read, writer: &mut ContentWriter) -> Result<u64> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Stream {
                    action: "read the input".to_string(),
                    source: e,
                })
            }
        };
        writer
            .write_all(&buf[..n])
            .map_err(|e| Error::io("write ingest file", writer.path().to_path_buf(), e))?;
        total += n as u64;
    }
}

/// The sha256 digest of some bytes.
pub fn digest_of(bytes: &[u8]) -> Digest {
    sha256_digest(Sha256::new_with_prefix(bytes))
}

/// Turn a finished hasher into a digest.
pub fn sha256_digest(hasher: Sha256) -> Digest {
    let hex = hex::encode(hasher.finalize());
    // A sha256 hex string of the right length always parses.
    Digest::try_from(format!("sha256:{hex}")).unwrap_or_else(|_| unreachable!("sha256 hex digest"))
}

/// Parse `sha256:<hex>` (or any valid OCI digest) into a [`Digest`].
pub fn parse_digest(s: &str) -> Result<Digest> {
    Digest::try_from(s).map_err(|source| Error::InvalidDigest {
        digest: s.to_string(),
        source,
    })
}

/// Write a small file atomically: temp file in the same directory, fsync,
/// rename, fsync the directory ([`hoist_untrusted::atomic::write_whole`]).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    hoist_untrusted::atomic::write_whole(path, |out| out.write_all(bytes))
        .map_err(|e| Error::io(e.action, e.path, e.source))
}

/// fsync a directory so renames and links in it survive a crash.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    hoist_untrusted::atomic::sync_dir(dir).map_err(|e| Error::io("fsync directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, ContentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = ContentStore::open(dir.path().join("content")).unwrap();
        (dir, store)
    }

    fn ingest_files(store: &ContentStore) -> usize {
        fs::read_dir(store.ingest_dir()).unwrap().count()
    }

    #[test]
    fn ingest_stores_by_digest_and_reads_back() {
        let (_d, store) = store();
        let data = b"hello hoist";
        let expected = digest_of(data);
        let c = store.ingest(&data[..], Some(11), Some(&expected)).unwrap();
        assert_eq!(c.digest, expected);
        assert_eq!(c.size, 11);
        assert!(c.created);
        assert_eq!(store.read_blob(&expected).unwrap(), data);
        assert_eq!(
            store.blob_path(&expected).unwrap(),
            store.dir().join("blobs/sha256").join(expected.digest())
        );
        assert_eq!(ingest_files(&store), 0);
        assert_eq!(
            fs::read_to_string(store.dir().join("oci-layout")).unwrap(),
            OCI_LAYOUT_CONTENT
        );
    }

    #[test]
    fn digest_mismatch_is_refused_and_leaves_nothing() {
        let (_d, store) = store();
        let wrong = digest_of(b"something else");
        let err = store
            .ingest(&b"payload"[..], None, Some(&wrong))
            .unwrap_err();
        assert!(err.is_mismatch(), "{err}");
        assert!(err
            .to_string()
            .starts_with("digest mismatch: expected sha256:"));
        assert!(!store.contains(&wrong));
        assert!(!store.contains(&digest_of(b"payload")));
        assert_eq!(ingest_files(&store), 0);
        assert!(store.blobs().unwrap().is_empty());
    }

    #[test]
    fn size_mismatch_is_refused() {
        let (_d, store) = store();
        let err = store.ingest(&b"12345"[..], Some(4), None).unwrap_err();
        assert!(matches!(
            err,
            Error::SizeMismatch {
                expected: 4,
                actual: 5
            }
        ));
        assert!(store.blobs().unwrap().is_empty());
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn interrupted_ingest_leaves_no_visible_blob() {
        let (_d, store) = store();
        let mut w = store.writer().unwrap();
        w.write_all(b"half of a layer").unwrap();
        let path = w.path().to_path_buf();
        // A crash: the ingest file stays, the writer's destructor never runs.
        std::mem::forget(w);
        assert!(path.exists());
        assert!(store.blobs().unwrap().is_empty());
        assert!(!store.contains(&digest_of(b"half of a layer")));
        // A dropped writer removes its file.
        let mut w = store.writer().unwrap();
        w.write_all(b"other").unwrap();
        drop(w);
        assert_eq!(ingest_files(&store), 1);
        fs::remove_file(path).unwrap();
    }

    #[test]
    fn reader_error_aborts_the_ingest() {
        struct Failing(u8);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "truncated"));
                }
                self.0 -= 1;
                buf[0] = b'x';
                Ok(1)
            }
        }
        let (_d, store) = store();
        let err = store.ingest(Failing(3), None, None).unwrap_err();
        assert_eq!(err.to_string(), "failed to read the input");
        assert!(store.blobs().unwrap().is_empty());
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn zero_length_blob() {
        let (_d, store) = store();
        let empty = digest_of(b"");
        assert_eq!(
            empty.to_string(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let c = store.ingest(io::empty(), Some(0), Some(&empty)).unwrap();
        assert_eq!(c.size, 0);
        assert!(c.created);
        assert_eq!(store.blob_size(&empty).unwrap(), 0);
        assert!(store.read_blob(&empty).unwrap().is_empty());
    }

    #[test]
    fn existing_blob_is_success_and_not_rewritten() {
        let (_d, store) = store();
        let first = store.put(b"same").unwrap();
        assert!(first.created);
        let path = store.blob_path(&first.digest).unwrap();
        let inode = std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap());
        let again = store
            .ingest(&b"same"[..], None, Some(&first.digest))
            .unwrap();
        assert!(!again.created);
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&fs::metadata(&path).unwrap()),
            inode
        );
    }

    #[test]
    fn concurrent_ingest_of_one_blob_by_threads() {
        let (_d, store) = store();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let digest = digest_of(&data);
        let created: Vec<bool> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let store = store.clone();
                    let (data, digest) = (&data, &digest);
                    s.spawn(move || {
                        let mut w = store.writer().unwrap();
                        for chunk in data.chunks(65_536) {
                            w.write_all(chunk).unwrap();
                        }
                        w.commit(Some(data.len() as u64), Some(digest))
                            .unwrap()
                            .created
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(created.iter().filter(|c| **c).count(), 1, "{created:?}");
        assert_eq!(store.read_blob(&digest).unwrap(), data);
        assert_eq!(ingest_files(&store), 0);
    }

    /// Not a test on its own: the body of each child process of
    /// `concurrent_ingest_of_one_blob_by_processes`.
    #[test]
    fn ingest_child_process() {
        let Some(dir) = std::env::var_os("HOIST_TEST_INGEST_DIR") else {
            return;
        };
        let store = ContentStore::open(dir).unwrap();
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        let mut w = store.writer().unwrap();
        for chunk in data.chunks(4096) {
            w.write_all(chunk).unwrap();
        }
        let c = w.commit(None, Some(&digest_of(&data))).unwrap();
        println!("created={}", c.created);
    }

    #[test]
    fn concurrent_ingest_of_one_blob_by_processes() {
        let (_d, store) = store();
        let exe = std::env::current_exe().unwrap();
        let children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args([
                        "--exact",
                        "content::tests::ingest_child_process",
                        "--nocapture",
                        "--test-threads=1",
                    ])
                    .env("HOIST_TEST_INGEST_DIR", store.dir())
                    .stdout(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut created = 0;
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success());
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("created="), "{stdout}");
            created += stdout.matches("created=true").count();
        }
        assert_eq!(created, 1);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 241) as u8).collect();
        assert_eq!(store.read_blob(&digest_of(&data)).unwrap(), data);
        assert_eq!(store.blobs().unwrap().len(), 1);
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn unsupported_algorithm_is_refused() {
        let (_d, store) = store();
        let d = parse_digest(&format!("sha512:{}", "a".repeat(128))).unwrap();
        assert!(matches!(
            store.blob_path(&d),
            Err(Error::UnsupportedDigest(_))
        ));
        assert!(parse_digest("sha256:xyz").unwrap_err().is_invalid());
    }

    #[test]
    fn write_atomic_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("index.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_suspended_ingest_resumes_where_it_stopped() {
        let (_d, store) = store();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let digest = digest_of(&data);
        let mut first = store.resume_writer(&digest, 100_000).unwrap();
        assert_eq!(first.size(), 0);
        first.write_all(&data[..40_000]).unwrap();
        assert_eq!(first.suspend().unwrap(), 40_000);
        assert_eq!(ingest_files(&store), 1);
        assert!(!store.contains(&digest));

        let mut second = store.resume_writer(&digest, 100_000).unwrap();
        assert_eq!(second.size(), 40_000);
        second.write_all(&data[40_000..]).unwrap();
        let c = second.commit(Some(100_000), Some(&digest)).unwrap();
        assert!(c.created);
        assert_eq!(store.read_blob(&digest).unwrap(), data);
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn a_suspended_ingest_resumes_while_a_child_holds_its_descriptor() {
        // What a `Command::spawn` in another thread does between its fork
        // and its exec, made to last: a child holding the ingest file's open
        // description (here as its stdin), and with it the flock.
        let (_d, store) = store();
        let data = vec![7u8; 30_000];
        let digest = digest_of(&data);
        let mut first = store.resume_writer(&digest, 30_000).unwrap();
        first.write_all(&data[..10_000]).unwrap();
        let shared = first.file.as_ref().unwrap().get_ref().try_clone().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .stdin(shared)
            .spawn()
            .unwrap();
        assert_eq!(first.suspend().unwrap(), 10_000);
        let second = store.resume_writer(&digest, 30_000);
        child.kill().unwrap();
        child.wait().unwrap();
        let mut second = second.unwrap();
        assert_eq!(second.size(), 10_000);
        second.write_all(&data[10_000..]).unwrap();
        assert!(second.commit(Some(30_000), Some(&digest)).unwrap().created);
        assert_eq!(store.read_blob(&digest).unwrap(), data);
    }

    #[test]
    fn a_resumed_ingest_survives_a_collection_while_its_pull_holds_a_lease() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::Store::open(dir.path().join("store")).unwrap();
        let data = vec![5u8; 50_000];
        let digest = digest_of(&data);
        // What a pull killed an hour ago left.
        let leftover = store
            .content()
            .ingest_dir()
            .join(format!("sha256-{}", digest.digest()));
        fs::write(&leftover, &data[..20_000]).unwrap();
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        File::options()
            .write(true)
            .open(&leftover)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
        let lease = store.create_lease("pull").unwrap();
        let mut w = store.content().resume_writer(&digest, 50_000).unwrap();
        assert_eq!(w.size(), 20_000);
        // A `hoist prune` in another process before the pull wrote a byte.
        store
            .collect_garbage(&crate::GcOptions::default(), &[])
            .unwrap();
        w.write_all(&data[20_000..]).unwrap();
        w.commit(Some(50_000), Some(&digest)).unwrap();
        assert_eq!(store.content().read_blob(&digest).unwrap(), data);
        store.release_lease(&lease).unwrap();
    }

    #[test]
    fn a_resumed_ingest_with_wrong_old_bytes_fails_its_digest_and_is_removed() {
        let (_d, store) = store();
        let data = vec![7u8; 10_000];
        let digest = digest_of(&data);
        let mut first = store.resume_writer(&digest, 10_000).unwrap();
        first.write_all(&[8u8; 4_000]).unwrap();
        first.suspend().unwrap();
        let mut second = store.resume_writer(&digest, 10_000).unwrap();
        second.write_all(&data[4_000..]).unwrap();
        assert!(matches!(
            second.commit(Some(10_000), Some(&digest)),
            Err(Error::DigestMismatch { .. })
        ));
        assert_eq!(ingest_files(&store), 0);
        // The next try starts from nothing.
        assert_eq!(store.resume_writer(&digest, 10_000).unwrap().size(), 0);
    }

    #[test]
    fn a_resume_while_another_writer_holds_the_ingest_gets_a_fresh_one() {
        let (_d, store) = store();
        let data = vec![1u8; 5_000];
        let digest = digest_of(&data);
        let mut busy = store.resume_writer(&digest, 5_000).unwrap();
        busy.write_all(&data[..1_000]).unwrap();
        busy.flush().unwrap();
        let mut other = store.resume_writer(&digest, 5_000).unwrap();
        assert_eq!(other.size(), 0);
        assert_ne!(other.path(), busy.path());
        other.write_all(&data).unwrap();
        other.commit(Some(5_000), Some(&digest)).unwrap();
        busy.write_all(&data[1_000..]).unwrap();
        let c = busy.commit(Some(5_000), Some(&digest)).unwrap();
        assert!(!c.created);
        assert_eq!(ingest_files(&store), 0);
    }

    #[test]
    fn a_longer_leftover_than_the_blob_is_started_afresh() {
        let (_d, store) = store();
        let data = vec![3u8; 1_000];
        let digest = digest_of(&data);
        fs::write(
            store
                .ingest_dir()
                .join(format!("sha256-{}", digest.digest())),
            vec![3u8; 2_000],
        )
        .unwrap();
        let mut w = store.resume_writer(&digest, 1_000).unwrap();
        assert_eq!(w.size(), 0);
        w.write_all(&data).unwrap();
        w.commit(Some(1_000), Some(&digest)).unwrap();
    }
}
