//! hoist-cache: the store every hoist command reads and writes.
//!
//! It owns
//! - the **content store** ([`ContentStore`]): blobs by digest in a directory
//!   that is itself a valid OCI image layout (`<root>/content/oci-layout`,
//!   `index.json`, `blobs/sha256/<hex>`), ingested atomically and checked
//!   against the expected digest ([`ContentWriter`]);
//! - the **metadata database** ([`Database`], SQLite in WAL mode at
//!   `<root>/meta.db`): image refs, build cache records ([`records`]) and
//!   leases ([`lease`]), with tables added by appending to [`db::MIGRATIONS`];
//! - **garbage collection** ([`gc`]): roots, leases, least-recently-used
//!   eviction until the store's size on disk is under a cap;
//! - **refs** ([`ImageRef`]): names → manifest descriptors, mirrored into
//!   `content/index.json` with `org.opencontainers.image.ref.name` set to the
//!   fully qualified name (`docker.io/library/busybox:latest`), so
//!   `skopeo inspect oci:<root>/content:docker.io/library/busybox:latest` works;
//! - the **image model** ([`image`]): manifests, indexes and configs in OCI
//!   and Docker v2 schema 2 media types, through the `oci-spec` crate;
//! - **image archives** ([`archive`]): `docker save`-style and OCI-layout tars,
//!   written and read.
//!
//! It does not parse image references (the CLI normalizes names with
//! `hoist-registry` and passes plain strings), know Dockerfiles, or touch
//! snapshots. Libraries never print: nothing here writes to stdout/stderr.
//!
//! ```no_run
//! # fn main() -> Result<(), hoist_cache::Error> {
//! use hoist_cache::{Store, image::media_types};
//! use oci_spec::image::{Descriptor, MediaType};
//!
//! let store = Store::open(hoist_cache::default_root())?;
//! let blob = store.content().ingest(std::io::stdin(), None, None)?;
//! let target = Descriptor::new(MediaType::ImageManifest, blob.size, blob.digest);
//! store.set_ref("docker.io/library/demo:latest", &target)?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod archive;
pub mod content;
pub mod db;
pub mod disk;
mod error;
pub mod exchange;
pub mod fsck;
pub mod gc;
pub mod image;
pub mod lease;
pub mod records;
pub mod refs;
mod sys;
pub use hoist_untrusted::{text, units};

use std::path::{Path, PathBuf};

pub use content::{Committed, ContentStore, ContentWriter};
pub use db::Database;
pub use error::{Error, ErrorKind, Result};
pub use fsck::{DerivedCheck, Finding, FsckOptions, FsckReport};
pub use gc::{DerivedEntry, DerivedStore, GcConfig, GcOptions, GcReport};
pub use lease::{Lease, LeaseGuard, LeaseInfo};
pub use oci_spec::image::{Descriptor, Digest, MediaType};
pub use records::{CacheRecordRow, NewCacheRecord};
pub use refs::{ImageRef, RefTransaction};

/// The store's directories and database, opened together.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    content: ContentStore,
    db: Database,
}

/// Subdirectory holding the OCI image layout.
pub const CONTENT_DIR: &str = "content";
/// File name of the metadata database.
pub const DATABASE_FILE: &str = "meta.db";
/// Scratch space for exports and loads (same filesystem as the blobs).
pub const TMP_DIR: &str = "tmp";

impl Store {
    /// Open (creating when missing) the store at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Store> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("create store root", &root, e))?;
        let content = ContentStore::open(root.join(CONTENT_DIR))?;
        let db = Database::open(root.join(DATABASE_FILE))?;
        let store = Store { root, content, db };
        // A process killed between a ref change's commit and its rewrite
        // of index.json leaves the file stale; the next open mends it.
        match store.index_disagreement() {
            Ok(None) => {}
            Ok(Some(problem)) => {
                let mended = (|| {
                    let _lock = store.lock()?;
                    if store.index_disagreement()?.is_some() {
                        tracing::debug!(%problem, "rewriting index.json from the database");
                        store.write_index()?;
                    }
                    Ok::<(), Error>(())
                })();
                // A reader without write access still gets its answers
                // from the database, which is the truth.
                if let Err(e) = mended {
                    tracing::debug!(error = %e, "could not rewrite index.json");
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not compare index.json with the database"),
        }
        if let Err(e) = store.restore_aside_blobs_if_idle() {
            tracing::debug!(error = %e, "could not put back blobs a collection left aside");
        }
        Ok(store)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The content store (`<root>/content`).
    pub fn content(&self) -> &ContentStore {
        &self.content
    }

    /// The metadata database (`<root>/meta.db`).
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// A scratch directory on the store's filesystem (created when missing).
    pub fn tmp_dir(&self) -> Result<PathBuf> {
        let dir = self.root.join(TMP_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create directory", &dir, e))?;
        Ok(dir)
    }
}

/// The default store root: `/var/lib/hoist` for root, otherwise
/// `$XDG_DATA_HOME/hoist` (default `~/.local/share/hoist`). The CLI's
/// `--root` / `HOIST_ROOT` take precedence over this.
pub fn default_root() -> PathBuf {
    if sys::effective_uid() == 0 {
        return PathBuf::from("/var/lib/hoist");
    }
    let data_home =
        hoist_untrusted::xdg::data_home().unwrap_or_else(|| PathBuf::from(".local/share"));
    data_home.join("hoist")
}
