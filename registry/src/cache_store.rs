//! [`BlobStore`] over hoist's content store (`hoist-cache`), and the record
//! of where blobs came from, which makes cross-repository mounts possible.
//!
//! Pulled blobs stream into a [`ContentWriter`] that hashes as it writes;
//! commit checks the descriptor's size and digest and links the file into
//! `blobs/` (never replacing a blob), so the pull path's guarantees are the
//! content store's.
//!
//! # Blob sources
//!
//! After a pull or a push, the CLI calls [`CacheBlobStore::record_sources`]
//! with the registry and repository the blobs are now known to live in; a
//! later push to another repository of the same registry asks
//! [`CacheBlobStore::mount_sources`] and mounts instead of uploading (as
//! Docker's distribution metadata does). The rows live in the store's
//! SQLite database, in the `blob_sources` table of `hoist-cache`'s
//! migration 3.
//! Rows are hints: a blob deleted since, or a repository gone from the
//! registry, only makes the mount fail and the push upload instead.

use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use hoist_cache::{ContentWriter, Store};
use oci_spec::image::{Descriptor, Digest};

use crate::reference::Reference;
use crate::store::{BlobStore, BlobWriter, StoreError};

/// How many source repositories are offered per blob (most recent first):
/// each costs a mount request when it fails.
const MAX_SOURCES_PER_BLOB: usize = 3;

/// hoist's content store as a [`BlobStore`]. Cheap to clone.
#[derive(Clone)]
pub struct CacheBlobStore {
    store: Arc<Store>,
}

impl CacheBlobStore {
    /// Wrap an open store (opening it created the `blob_sources` table).
    pub fn new(store: Arc<Store>) -> Result<CacheBlobStore, StoreError> {
        Ok(CacheBlobStore { store })
    }

    /// The store underneath.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Remember that the blobs `digests` are in `repository` of `registry`
    /// (after a pull from there or a push to there).
    pub fn record_sources<'a>(
        &self,
        registry: &str,
        repository: &str,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<(), StoreError> {
        let digests: Vec<String> = digests.into_iter().map(ToString::to_string).collect();
        self.store
            .db()
            .write(|tx| -> Result<(), hoist_cache::Error> {
                // REPLACE gives the row a new rowid: the newest source sorts first.
                let mut insert = tx.prepare(
                    "INSERT OR REPLACE INTO blob_sources (digest, registry, repository)
                     VALUES (?1, ?2, ?3)",
                )?;
                for digest in &digests {
                    insert.execute([digest.as_str(), registry, repository])?;
                }
                Ok(())
            })
            .map_err(backend)
    }

    /// Pulls `reference` into the store with `client` and records where its
    /// blobs came from, so that a later push to the same registry mounts
    /// them instead of uploading. Naming the image is the caller's choice.
    pub async fn pull(
        &self,
        client: &crate::Client,
        reference: &Reference,
        options: &crate::PullOptions,
    ) -> Result<crate::PulledImage, crate::RegistryError> {
        let pulled = client
            .pull(reference, Arc::new(self.clone()), options)
            .await?;
        let blobs = pulled.layers.iter().chain([&pulled.config]);
        self.record_sources(
            reference.registry(),
            reference.repository(),
            blobs.map(|d| d.digest()),
        )
        .map_err(|source| crate::RegistryError::Store {
            action: "record the sources of",
            digest: pulled.manifest.digest().to_string(),
            source,
        })?;
        Ok(pulled)
    }

    /// [`Self::pull`], then names the image as `hoist pull` does: only when
    /// its config is one hoist can read back (Docker's pull refuses such a
    /// config too; the blobs are left for GC), and by its index when the
    /// reference named one, so a pull for another platform adds that
    /// platform's manifest under the same name instead of replacing the
    /// first (docs/platforms.md).
    pub async fn pull_image(
        &self,
        client: &crate::Client,
        reference: &Reference,
        options: &crate::PullOptions,
    ) -> Result<crate::PulledImage, crate::RegistryError> {
        let pulled = self.pull(client, reference, options).await?;
        let store_error = |action: &'static str, digest: &Digest| {
            let digest = digest.to_string();
            move |e: hoist_cache::Error| crate::RegistryError::Store {
                action,
                digest,
                source: StoreError::Backend(Box::new(e)),
            }
        };
        self.store
            .read_config(pulled.config.digest())
            .and_then(|config| hoist_cache::image::check_config_times(&config))
            .map_err(store_error("read the config", pulled.config.digest()))?;
        self.store
            .set_ref(&reference.to_string(), pulled.ref_target())
            .map_err(store_error("name", pulled.ref_target().digest()))?;
        Ok(pulled)
    }

    /// Pushes the image (or index) `root` of the store to `reference`:
    /// blobs this registry is known to hold in another repository are
    /// mounted, and afterwards every blob is recorded as living there.
    pub async fn push(
        &self,
        client: &crate::Client,
        reference: &Reference,
        root: &Descriptor,
        events: Option<crate::EventSink<crate::PushEvent>>,
    ) -> Result<crate::PushedImage, crate::RegistryError> {
        let store_error = |source| crate::RegistryError::Store {
            action: "list the blobs of",
            digest: root.digest().to_string(),
            source,
        };
        let digests: Vec<Digest> = self
            .store
            .reachable_blobs(root)
            .map_err(|e| store_error(backend(e)))?
            .iter()
            .filter_map(|d| Digest::try_from(d.as_str()).ok())
            .collect();
        // Mounting only saves uploads: without known sources, upload.
        let mount_sources = self
            .mount_sources(reference.registry(), &digests)
            .unwrap_or_default();
        let options = crate::PushOptions {
            events,
            mount_sources,
        };
        let pushed = client
            .push(reference, root, Arc::new(self.clone()), &options)
            .await?;
        self.record_sources(reference.registry(), reference.repository(), &digests)
            .map_err(store_error)?;
        Ok(pushed)
    }

    /// Known sources of `digests` in `registry`, newest first, as the
    /// digest → references map [`crate::PushOptions::mount_sources`] takes.
    pub fn mount_sources<'a>(
        &self,
        registry: &str,
        digests: impl IntoIterator<Item = &'a Digest>,
    ) -> Result<HashMap<String, Vec<Reference>>, StoreError> {
        let digests: Vec<String> = digests.into_iter().map(ToString::to_string).collect();
        let rows = self
            .store
            .db()
            .read(|c| -> Result<Vec<(String, String)>, hoist_cache::Error> {
                let mut query = c.prepare(
                    "SELECT digest, repository FROM blob_sources
                     WHERE digest = ?1 AND registry = ?2 ORDER BY rowid DESC",
                )?;
                let mut rows = Vec::new();
                for digest in &digests {
                    let found = query.query_map([digest.as_str(), registry], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
                    })?;
                    for row in found.take(MAX_SOURCES_PER_BLOB) {
                        rows.push(row?);
                    }
                }
                Ok(rows)
            })
            .map_err(backend)?;
        let mut out: HashMap<String, Vec<Reference>> = HashMap::new();
        for (digest, repository) in rows {
            // A row that no longer parses (hand-edited database) is skipped:
            // sources are only hints.
            if let Ok(reference) = Reference::parse_bare(&format!("{registry}/{repository}")) {
                out.entry(digest).or_default().push(reference);
            }
        }
        Ok(out)
    }
}

fn backend(e: hoist_cache::Error) -> StoreError {
    StoreError::Backend(Box::new(e))
}

/// Map the content store's errors onto the categories the client branches on.
fn store_error(e: hoist_cache::Error, digest: &Digest) -> StoreError {
    match e {
        hoist_cache::Error::BlobNotFound(_) => StoreError::NotFound(digest.to_string()),
        hoist_cache::Error::UnsupportedDigest(_) => {
            StoreError::UnsupportedDigest(digest.to_string())
        }
        hoist_cache::Error::DigestMismatch { expected, actual } => StoreError::DigestMismatch {
            expected: expected.to_string(),
            actual: actual.to_string(),
        },
        hoist_cache::Error::SizeMismatch { expected, actual } => StoreError::SizeMismatch {
            digest: digest.to_string(),
            expected,
            actual,
        },
        other => backend(other),
    }
}

impl BlobStore for CacheBlobStore {
    fn has(&self, digest: &Digest) -> bool {
        self.store.content().contains(digest)
    }

    fn size(&self, digest: &Digest) -> Result<Option<u64>, StoreError> {
        match self.store.content().blob_size(digest) {
            Ok(size) => Ok(Some(size)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(store_error(e, digest)),
        }
    }

    fn writer(&self, expected: &Descriptor) -> Result<Box<dyn BlobWriter>, StoreError> {
        // Refuse what the store cannot hold before any byte is downloaded.
        self.store
            .content()
            .blob_path(expected.digest())
            .map_err(|e| store_error(e, expected.digest()))?;
        // Named by the digest: what a killed or cut-off pull of this blob
        // left is continued, not downloaded again (`written` says how much).
        let inner = self
            .store
            .content()
            .resume_writer(expected.digest(), expected.size())
            .map_err(|e| store_error(e, expected.digest()))?;
        Ok(Box::new(CacheWriter {
            inner,
            expected: expected.clone(),
        }))
    }

    fn reader(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, StoreError> {
        let file = self
            .store
            .content()
            .open_blob(digest)
            .map_err(|e| store_error(e, digest))?;
        Ok(Box::new(file))
    }

    fn reader_at(&self, digest: &Digest, offset: u64) -> Result<Box<dyn Read + Send>, StoreError> {
        let mut file = self
            .store
            .content()
            .open_blob(digest)
            .map_err(|e| store_error(e, digest))?;
        file.seek(SeekFrom::Start(offset)).map_err(|source| {
            let path = self.store.content().blob_path(digest).unwrap_or_default();
            StoreError::Io {
                action: "seek in",
                path,
                source,
            }
        })?;
        Ok(Box::new(file))
    }
}

struct CacheWriter {
    inner: ContentWriter,
    expected: Descriptor,
}

impl Write for CacheWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl BlobWriter for CacheWriter {
    fn written(&self) -> u64 {
        self.inner.size()
    }

    fn commit(self: Box<Self>) -> Result<(), StoreError> {
        let CacheWriter { inner, expected } = *self;
        inner
            .commit(Some(expected.size()), Some(expected.digest()))
            .map(|_| ())
            .map_err(|e| store_error(e, expected.digest()))
    }

    fn suspend(self: Box<Self>) {
        // A failure to keep the bytes only costs downloading them again.
        let _ = self.inner.suspend();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{check_store, descriptor_for, write_blob};

    fn open() -> (tempfile::TempDir, CacheBlobStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path().join("store")).unwrap());
        (dir, CacheBlobStore::new(store).unwrap())
    }

    #[test]
    fn cache_blob_store_passes_the_conformance_checks() {
        let (_dir, store) = open();
        check_store(&store, "cache").unwrap();
        check_store(&store, "cache").unwrap();
        let ingest = store.store().content().ingest_dir();
        assert_eq!(std::fs::read_dir(ingest).unwrap().count(), 0);
    }

    #[test]
    fn committed_blobs_are_content_store_blobs() {
        let (_dir, store) = open();
        let d = descriptor_for("application/octet-stream", b"layer bytes");
        write_blob(&store, &d, b"layer bytes").unwrap();
        assert_eq!(
            store.store().content().read_blob(d.digest()).unwrap(),
            b"layer bytes"
        );
        // Reopening the wrapper (table exists already) is fine.
        CacheBlobStore::new(store.store().clone()).unwrap();
    }

    #[test]
    fn sources_are_per_registry_newest_first_and_bounded() {
        let (_dir, store) = open();
        let a = descriptor_for("application/octet-stream", b"a");
        let b = descriptor_for("application/octet-stream", b"b");
        store
            .record_sources("r:5000", "one", [a.digest(), b.digest()])
            .unwrap();
        store.record_sources("r:5000", "two", [a.digest()]).unwrap();
        store
            .record_sources("other:5000", "x", [a.digest()])
            .unwrap();
        for repo in ["three", "four"] {
            store.record_sources("r:5000", repo, [a.digest()]).unwrap();
        }
        store.record_sources("r:5000", "one", [a.digest()]).unwrap();
        let sources = store
            .mount_sources("r:5000", [a.digest(), b.digest()])
            .unwrap();
        let names = |d: &Descriptor| -> Vec<String> {
            sources[&d.digest().to_string()]
                .iter()
                .map(|r| r.name())
                .collect()
        };
        assert_eq!(names(&a), ["r:5000/one", "r:5000/four", "r:5000/three"]);
        assert_eq!(names(&b), ["r:5000/one"]);
        let none = descriptor_for("application/octet-stream", b"c");
        assert!(store
            .mount_sources("r:5000", [none.digest()])
            .unwrap()
            .is_empty());
    }
}
