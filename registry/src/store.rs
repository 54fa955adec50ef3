//! Where pulled blobs land and where pushed blobs come from.
//!
//! The registry client never touches a disk layout itself: it talks to a
//! [`BlobStore`]. [`crate::CacheBlobStore`] implements it over hoist's
//! content store (what the CLI uses); [`OciDirStore`] is a complete
//! implementation over an OCI image layout directory, used by the tests and
//! the transfer benchmark.
//!
//! # Ingest lifecycle
//!
//! 1. `store.writer(&descriptor)` opens an ingest for exactly that blob.
//! 2. The client writes the bytes as they arrive (several writes; a resumed
//!    download continues after [`BlobWriter::written`] bytes).
//! 3. `writer.commit()` checks size and digest, makes the blob durable and
//!    visible under its digest. A blob that is already present is success.
//! 4. Dropping a writer without commit aborts: no blob, no partial file
//!    visible under `blobs/`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use oci_spec::image::{Descriptor, Digest, MediaType};
use sha2::{Digest as _, Sha256};

/// The annotation naming a tagged image in an OCI layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Errors of a [`BlobStore`].
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The blob is not in the store.
    #[error("blob {0} not found")]
    NotFound(String),
    /// The bytes written do not hash to the expected digest.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// Digest the writer was opened for.
        expected: String,
        /// Digest of the bytes written.
        actual: String,
    },
    /// The number of bytes written differs from the descriptor's size.
    #[error("size mismatch for {digest}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The blob.
        digest: String,
        /// Size the writer was opened for.
        expected: u64,
        /// Bytes written.
        actual: u64,
    },
    /// The digest algorithm is not supported by this store.
    #[error("unsupported digest algorithm in {0}")]
    UnsupportedDigest(String),
    /// A file operation failed.
    #[error("failed to {action} {path}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The layout's `index.json` is not valid JSON of the expected shape.
    #[error("failed to parse {path}")]
    Index {
        /// The `index.json` path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An error from another store implementation (the content store).
    #[error(transparent)]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

type Result<T> = std::result::Result<T, StoreError>;

/// An open ingest of one blob. Writes stream in; [`BlobWriter::commit`]
/// checks size and digest and publishes the blob; dropping the writer
/// without committing discards everything written.
///
/// The digest check is the implementation's duty, not optional: the pull
/// path relies on it and does not hash the bytes a second time. Report a
/// wrong digest as [`StoreError::DigestMismatch`] and a wrong length as
/// [`StoreError::SizeMismatch`] so callers can tell corruption from I/O
/// failures.
pub trait BlobWriter: Write + Send {
    /// Bytes accepted so far (a resumed download asks for the rest).
    fn written(&self) -> u64;
    /// Check size and digest against the descriptor the writer was opened
    /// for, make the blob durable, and publish it under its digest. A blob
    /// that another writer published meanwhile counts as success.
    fn commit(self: Box<Self>) -> Result<()>;
}

/// Blob storage the registry client reads from (push) and writes into
/// (pull). Implementations must be safe to use from several transfers at
/// once.
pub trait BlobStore: Send + Sync {
    /// Whether the blob is present (and complete).
    fn has(&self, digest: &Digest) -> bool;
    /// The blob's size, or `None` when it is absent.
    fn size(&self, digest: &Digest) -> Result<Option<u64>>;
    /// Open an ingest for the blob `expected` describes.
    fn writer(&self, expected: &Descriptor) -> Result<Box<dyn BlobWriter>>;
    /// Read a blob from its start.
    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>>;
    /// Read a blob from `offset` (used to resume an upload). The default
    /// reads and discards the first `offset` bytes.
    fn reader_at(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>> {
        let mut reader = self.reader(digest)?;
        let skipped = io::copy(&mut (&mut reader).take(offset), &mut io::sink()).map_err(|e| {
            StoreError::Backend(Box::new(io::Error::new(
                e.kind(),
                format!("failed to skip {offset} bytes of {digest}: {e}"),
            )))
        })?;
        if skipped < offset {
            return Err(StoreError::SizeMismatch {
                digest: digest.to_string(),
                expected: offset,
                actual: skipped,
            });
        }
        Ok(reader)
    }
    /// Read a whole (small) blob into memory: manifests, configs, indexes.
    fn read_all(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut reader = self.reader(digest)?;
        let mut buf = Vec::new();
        reader
            .read_to_end(&mut buf)
            .map_err(|e| StoreError::Backend(Box::new(e)))?;
        Ok(buf)
    }
}

/// Store a small blob held in memory (manifests, configs) through the
/// ingest path, so the usual checks apply.
pub fn write_blob(store: &dyn BlobStore, descriptor: &Descriptor, bytes: &[u8]) -> Result<()> {
    if store.has(descriptor.digest()) {
        return Ok(());
    }
    let mut writer = store.writer(descriptor)?;
    writer
        .write_all(bytes)
        .map_err(|e| StoreError::Backend(Box::new(e)))?;
    writer.commit()
}

/// `sha256:<hex>` of a byte slice.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    digest_from_hasher(Sha256::new_with_prefix(bytes))
}

pub(crate) fn digest_from_hasher(hasher: Sha256) -> Digest {
    let text = format!("sha256:{}", hex::encode(hasher.finalize()));
    // A sha256 of 64 lowercase hex digits is always a valid digest.
    text.parse()
        .unwrap_or_else(|_| unreachable!("sha256 digest is valid"))
}

/// A descriptor for bytes held in memory.
pub fn descriptor_for(media_type: &str, bytes: &[u8]) -> Descriptor {
    Descriptor::new(
        MediaType::from(media_type),
        bytes.len() as u64,
        sha256_digest(bytes),
    )
}

/// An OCI image layout directory (`oci-layout`, `index.json`,
/// `blobs/sha256/<hex>`) used as a blob store. Ingests go to `ingest/`,
/// are fsynced, checked and renamed into `blobs/`; `index.json` names
/// images with the `org.opencontainers.image.ref.name` annotation, so
/// skopeo (`oci:DIR:NAME`) and umoci read the result directly.
pub struct OciDirStore {
    root: PathBuf,
    index_lock: Mutex<()>,
}

impl OciDirStore {
    /// Open (creating if needed) a layout at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<OciDirStore> {
        let root = root.into();
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(|source| StoreError::Io {
                action: "create directory",
                path: dir.clone(),
                source,
            })?;
        }
        let layout = root.join("oci-layout");
        if !layout.exists() {
            write_atomic(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        let index = root.join("index.json");
        if !index.exists() {
            write_atomic(
                &index,
                br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
            )?;
        }
        Ok(OciDirStore {
            root,
            index_lock: Mutex::new(()),
        })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of a blob (present or not).
    pub fn blob_path(&self, digest: &Digest) -> Result<PathBuf> {
        let algorithm = digest.algorithm().to_string();
        if algorithm != "sha256" && algorithm != "sha512" {
            return Err(StoreError::UnsupportedDigest(digest.to_string()));
        }
        Ok(self
            .root
            .join("blobs")
            .join(algorithm)
            .join(digest.digest()))
    }

    /// Name `descriptor` (a manifest or index present in the store) as
    /// `name` in `index.json`, replacing an older entry of that name.
    pub fn set_ref(&self, name: &str, descriptor: &Descriptor) -> Result<()> {
        let _guard = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.root.join("index.json");
        let mut index = self.read_index(&path)?;
        let mut entry = descriptor.clone();
        let mut annotations = entry.annotations().clone().unwrap_or_default();
        annotations.insert(REF_NAME_ANNOTATION.to_string(), name.to_string());
        entry.set_annotations(Some(annotations));
        let entry = serde_json::to_value(&entry).map_err(|source| StoreError::Index {
            path: path.clone(),
            source,
        })?;
        let manifests = index_manifests(&mut index);
        manifests.retain(|m| ref_name(m) != Some(name));
        manifests.push(entry);
        let bytes = serde_json::to_vec(&index).map_err(|source| StoreError::Index {
            path: path.clone(),
            source,
        })?;
        write_atomic(&path, &bytes)
    }

    /// The descriptor `index.json` names `name`, if any.
    pub fn get_ref(&self, name: &str) -> Result<Option<Descriptor>> {
        Ok(self.refs()?.remove(name))
    }

    /// All named images of `index.json`.
    pub fn refs(&self) -> Result<HashMap<String, Descriptor>> {
        let path = self.root.join("index.json");
        let mut index = self.read_index(&path)?;
        let mut out = HashMap::new();
        for entry in index_manifests(&mut index).iter() {
            if let Some(name) = ref_name(entry) {
                let descriptor: Descriptor =
                    serde_json::from_value(entry.clone()).map_err(|source| StoreError::Index {
                        path: path.clone(),
                        source,
                    })?;
                out.insert(name.to_string(), descriptor);
            }
        }
        Ok(out)
    }

    fn read_index(&self, path: &Path) -> Result<serde_json::Value> {
        let bytes = fs::read(path).map_err(|source| StoreError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Index {
            path: path.to_path_buf(),
            source,
        })
    }
}

fn index_manifests(index: &mut serde_json::Value) -> &mut Vec<serde_json::Value> {
    if !index.is_object() {
        *index = serde_json::json!({"schemaVersion": 2});
    }
    let object = match index.as_object_mut() {
        Some(object) => object,
        None => unreachable!("index was just made an object"),
    };
    let manifests = object
        .entry("manifests")
        .or_insert_with(|| serde_json::Value::Array(Vec::new()));
    if !manifests.is_array() {
        *manifests = serde_json::Value::Array(Vec::new());
    }
    match manifests.as_array_mut() {
        Some(array) => array,
        None => unreachable!("manifests was just made an array"),
    }
}

fn ref_name(entry: &serde_json::Value) -> Option<&str> {
    entry.get("annotations")?.get(REF_NAME_ANNOTATION)?.as_str()
}

/// Write a file by temp + fsync + rename, so readers see old or new.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    hoist_untrusted::atomic::write_whole(path, |out| out.write_all(bytes)).map_err(|e| {
        StoreError::Io {
            action: e.action,
            path: e.path,
            source: e.source,
        }
    })
}

impl BlobStore for OciDirStore {
    fn has(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_ok_and(|p| p.is_file())
    }

    fn size(&self, digest: &Digest) -> Result<Option<u64>> {
        let path = self.blob_path(digest)?;
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Io {
                action: "stat",
                path,
                source,
            }),
        }
    }

    fn writer(&self, expected: &Descriptor) -> Result<Box<dyn BlobWriter>> {
        let target = self.blob_path(expected.digest())?;
        if expected.digest().algorithm().to_string() != "sha256" {
            return Err(StoreError::UnsupportedDigest(expected.digest().to_string()));
        }
        let ingest = self.root.join("ingest");
        let tmp = tempfile::Builder::new()
            .prefix(expected.digest().digest())
            .tempfile_in(&ingest)
            .map_err(|source| StoreError::Io {
                action: "create an ingest file in",
                path: ingest.clone(),
                source,
            })?;
        let (file, path) = tmp.into_parts();
        Ok(Box::new(OciDirWriter {
            file: BufWriter::with_capacity(1 << 20, file),
            temp: path,
            target,
            hasher: Sha256::new(),
            written: 0,
            expected: expected.clone(),
        }))
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>> {
        self.reader_at(digest, 0)
    }

    fn reader_at(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>> {
        let path = self.blob_path(digest)?;
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound(digest.to_string()))
            }
            Err(source) => {
                return Err(StoreError::Io {
                    action: "open",
                    path,
                    source,
                })
            }
        };
        if offset > 0 {
            file.seek(SeekFrom::Start(offset))
                .map_err(|source| StoreError::Io {
                    action: "seek in",
                    path,
                    source,
                })?;
        }
        Ok(Box::new(file))
    }
}

struct OciDirWriter {
    file: BufWriter<File>,
    temp: tempfile::TempPath,
    target: PathBuf,
    hasher: Sha256,
    written: u64,
    expected: Descriptor,
}

impl Write for OciDirWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl BlobWriter for OciDirWriter {
    fn written(&self) -> u64 {
        self.written
    }

    fn commit(self: Box<Self>) -> Result<()> {
        let OciDirWriter {
            file,
            temp,
            target,
            hasher,
            written,
            expected,
        } = *self;
        let digest = expected.digest().to_string();
        if written != expected.size() {
            return Err(StoreError::SizeMismatch {
                digest,
                expected: expected.size(),
                actual: written,
            });
        }
        let actual = digest_from_hasher(hasher);
        if &actual != expected.digest() {
            return Err(StoreError::DigestMismatch {
                expected: digest,
                actual: actual.to_string(),
            });
        }
        let file = file.into_inner().map_err(|e| StoreError::Io {
            action: "flush ingest file",
            path: temp.to_path_buf(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(|source| StoreError::Io {
            action: "fsync ingest file",
            path: temp.to_path_buf(),
            source,
        })?;
        drop(file);
        if target.is_file() {
            // Someone else committed the same content; ours is dropped.
            return Ok(());
        }
        temp.persist(&target).map_err(|e| StoreError::Io {
            action: "rename ingest file into",
            path: target.clone(),
            source: e.error,
        })?;
        if let Some(dir) = target.parent() {
            // A directory that cannot be opened for syncing (unusual
            // filesystems) does not make the data wrong.
            let _ = hoist_untrusted::atomic::sync_dir(dir);
        }
        Ok(())
    }
}

/// Behavioural checks every [`BlobStore`] must pass, so that the content
/// store's adapter can be held to the same contract as [`OciDirStore`]
/// (run it from that adapter's tests). Uses blobs made of `tag`'s bytes so
/// that runs against a shared store do not collide. Returns the first
/// broken rule.
pub fn check_store(store: &dyn BlobStore, tag: &str) -> std::result::Result<(), String> {
    fn ensure(ok: bool, rule: &str) -> std::result::Result<(), String> {
        if ok {
            Ok(())
        } else {
            Err(rule.to_string())
        }
    }
    let e = |what: &str| {
        let what = what.to_string();
        move |err: StoreError| format!("{what}: {err}")
    };
    let content = format!("hoist blob store conformance {tag} 0123456789").into_bytes();
    let good = descriptor_for("application/octet-stream", &content);

    // Streamed in pieces, committed, visible with the right size and bytes.
    let existed = store.has(good.digest());
    let mut w = store.writer(&good).map_err(e("open a writer"))?;
    for piece in content.chunks(7) {
        w.write_all(piece)
            .map_err(|err| format!("write a piece: {err}"))?;
    }
    ensure(
        w.written() == content.len() as u64,
        "written() counts the bytes accepted",
    )?;
    ensure(
        existed || !store.has(good.digest()),
        "a blob is invisible before commit",
    )?;
    w.commit().map_err(e("commit a correct blob"))?;
    ensure(store.has(good.digest()), "a committed blob is visible")?;
    ensure(
        store.size(good.digest()).map_err(e("size"))? == Some(content.len() as u64),
        "size() reports the committed length",
    )?;
    ensure(
        store.read_all(good.digest()).map_err(e("read back"))? == content,
        "a committed blob reads back byte for byte",
    )?;
    let mut tail = Vec::new();
    store
        .reader_at(good.digest(), 10)
        .map_err(e("reader_at"))?
        .read_to_end(&mut tail)
        .map_err(|err| format!("read from an offset: {err}"))?;
    ensure(tail == content[10..], "reader_at starts at the offset")?;

    // Committing the same content again is success, not an error.
    let mut w = store.writer(&good).map_err(e("open a second writer"))?;
    w.write_all(&content)
        .map_err(|err| format!("write again: {err}"))?;
    w.commit().map_err(e("commit an existing blob"))?;

    // Wrong bytes, wrong length, dropped writers: no blob.
    let other = format!("hoist blob store conformance {tag} 9876543210").into_bytes();
    let wanted = descriptor_for("application/octet-stream", &other);
    let mut w = store.writer(&wanted).map_err(e("open a writer"))?;
    let mut corrupt = other.clone();
    corrupt[0] ^= 0xff;
    w.write_all(&corrupt)
        .map_err(|err| format!("write: {err}"))?;
    ensure(
        matches!(w.commit(), Err(StoreError::DigestMismatch { .. })),
        "wrong bytes fail commit with DigestMismatch",
    )?;
    ensure(
        !store.has(wanted.digest()),
        "a mismatched blob is not stored",
    )?;
    let mut w = store.writer(&wanted).map_err(e("open a writer"))?;
    w.write_all(&other[..other.len() - 1])
        .map_err(|err| format!("write: {err}"))?;
    ensure(
        matches!(w.commit(), Err(StoreError::SizeMismatch { .. })),
        "a short blob fails commit with SizeMismatch",
    )?;
    let mut w = store.writer(&wanted).map_err(e("open a writer"))?;
    w.write_all(&other).map_err(|err| format!("write: {err}"))?;
    drop(w);
    ensure(
        !store.has(wanted.digest()),
        "a dropped writer stores nothing",
    )?;
    ensure(
        matches!(store.reader(wanted.digest()), Err(StoreError::NotFound(_))),
        "reading an absent blob is NotFound",
    )?;
    ensure(
        store
            .size(wanted.digest())
            .map_err(e("size of an absent blob"))?
            .is_none(),
        "size() of an absent blob is None",
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oci_dir_store_passes_the_conformance_checks() {
        let dir = tempfile::tempdir().unwrap();
        let store = OciDirStore::open(dir.path()).unwrap();
        check_store(&store, "a").unwrap();
        check_store(&store, "a").unwrap();
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
    }

    #[test]
    fn commit_checks_digest_and_size_and_leaves_nothing_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let store = OciDirStore::open(dir.path()).unwrap();
        let good = descriptor_for("application/octet-stream", b"hello");
        let mut w = store.writer(&good).unwrap();
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.written(), 5);
        w.commit().unwrap();
        assert!(store.has(good.digest()));
        assert_eq!(store.read_all(good.digest()).unwrap(), b"hello");
        let path = store.blob_path(good.digest()).unwrap();
        assert!(path.ends_with(format!("blobs/sha256/{}", good.digest().digest())));

        // Same size, other content: digest mismatch, no blob, no ingest left.
        let wrong = descriptor_for("application/octet-stream", b"world");
        let mut w = store.writer(&wrong).unwrap();
        w.write_all(b"hellx").unwrap();
        let err = w.commit().unwrap_err();
        assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
        assert!(!store.has(wrong.digest()));
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);

        let mut w = store.writer(&wrong).unwrap();
        w.write_all(b"wor").unwrap();
        assert!(matches!(
            w.commit().unwrap_err(),
            StoreError::SizeMismatch { .. }
        ));
        // A dropped writer leaves nothing either.
        let mut w = store.writer(&wrong).unwrap();
        w.write_all(b"wo").unwrap();
        drop(w);
        assert_eq!(fs::read_dir(dir.path().join("ingest")).unwrap().count(), 0);
        assert!(!store.has(wrong.digest()));
    }

    #[test]
    fn refs_are_index_annotations() {
        let dir = tempfile::tempdir().unwrap();
        let store = OciDirStore::open(dir.path()).unwrap();
        let a = descriptor_for("application/vnd.oci.image.manifest.v1+json", b"{}");
        let b = descriptor_for("application/vnd.oci.image.manifest.v1+json", b"{ }");
        store.set_ref("app:1", &a).unwrap();
        store.set_ref("app:2", &a).unwrap();
        store.set_ref("app:1", &b).unwrap();
        let refs = store.refs().unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs["app:1"].digest(), b.digest());
        assert_eq!(refs["app:2"].digest(), a.digest());
        let text = fs::read_to_string(dir.path().join("index.json")).unwrap();
        assert!(text.contains(REF_NAME_ANNOTATION), "{text}");
        let layout = fs::read_to_string(dir.path().join("oci-layout")).unwrap();
        assert!(layout.contains("1.0.0"));
    }

    #[test]
    fn reader_at_skips() {
        let dir = tempfile::tempdir().unwrap();
        let store = OciDirStore::open(dir.path()).unwrap();
        let d = descriptor_for("application/octet-stream", b"0123456789");
        write_blob(&store, &d, b"0123456789").unwrap();
        let mut s = String::new();
        store
            .reader_at(d.digest(), 4)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "456789");
        let missing = descriptor_for("x", b"nope");
        assert!(matches!(
            store.reader(missing.digest()),
            Err(StoreError::NotFound(_))
        ));
    }
}
