//! The crate's error type and the categories callers branch on.

use std::path::PathBuf;

use oci_spec::image::Digest;

/// What went wrong, coarsely, for callers that must branch
/// (containerd's error categories in Rust form).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// A blob, ref or image does not exist.
    NotFound,
    /// The content does not match the size or digest the caller expected.
    Mismatch,
    /// Input (a digest, a manifest, an archive) is malformed.
    Invalid,
    /// The store was written by a newer hoist or is otherwise unusable.
    Unsupported,
    /// The filesystem failed.
    Io,
    /// The metadata database failed.
    Database,
}

/// Errors of the content store, the metadata database, the image model and
/// the archive formats. Input they quote (paths, archive member names, media
/// types, digests) is shown with control characters escaped
/// ([`crate::text`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed; `action` says which (e.g. "create ingest file").
    #[error("failed to {action} `{}`", crate::text::escape_path(path))]
    Io {
        /// What hoist was doing.
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing a stream that is not a file (stdin, an archive) failed.
    #[error("failed to {}", crate::text::escape(action))]
    Stream {
        /// What hoist was doing.
        action: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The ingested bytes do not have the digest the caller expected.
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch {
        /// The digest the caller announced.
        expected: Digest,
        /// The digest of the bytes actually received.
        actual: Digest,
    },
    /// The ingested bytes do not have the size the caller expected.
    #[error("size mismatch: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// The size the caller announced.
        expected: u64,
        /// The number of bytes actually received.
        actual: u64,
    },
    /// No blob with this digest is in the store.
    #[error("blob {0} not found in the content store")]
    BlobNotFound(Digest),
    /// No ref with this name exists.
    #[error("no image named `{}` in the store", crate::text::escape(.0))]
    RefNotFound(String),
    /// The store only keeps sha256 blobs.
    #[error("unsupported digest algorithm in `{0}` (only sha256 is supported)")]
    UnsupportedDigest(Digest),
    /// A digest string is malformed.
    #[error("invalid digest `{}`", crate::text::escape(digest))]
    InvalidDigest {
        /// The string given.
        digest: String,
        /// Why it was refused.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A JSON document (manifest, index, config, archive metadata) could not
    /// be parsed or written.
    #[error("failed to {}", crate::text::escape(action))]
    Json {
        /// What hoist was doing, naming the document.
        action: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A document or archive is well-formed JSON/tar but not what an image
    /// needs; `reason` says what is missing or wrong.
    #[error("{}", crate::text::escape(reason))]
    InvalidImage {
        /// A one-line explanation naming the object.
        reason: String,
    },
    /// A media type hoist cannot handle in this place.
    #[error(
        "unsupported media type `{}` for {what}",
        crate::text::escape(media_type)
    )]
    UnsupportedMediaType {
        /// The media type found.
        media_type: String,
        /// Where it was found.
        what: &'static str,
    },
    /// The database schema is newer than this hoist knows.
    #[error("the metadata database `{}` has schema version {found}, newer than this hoist supports ({supported}); upgrade hoist", path.display())]
    SchemaTooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },
    /// Another crate's data taking part in garbage collection failed.
    #[error("failed to {action}")]
    Derived {
        /// What hoist was doing.
        action: String,
        /// The other crate's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A metadata database operation failed.
    #[error("failed to {action} in the metadata database")]
    Database {
        /// What hoist was doing.
        action: String,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } | Error::Stream { source, .. } => {
                if source.kind() == std::io::ErrorKind::NotFound {
                    ErrorKind::NotFound
                } else {
                    ErrorKind::Io
                }
            }
            Error::DigestMismatch { .. } | Error::SizeMismatch { .. } => ErrorKind::Mismatch,
            Error::BlobNotFound(_) | Error::RefNotFound(_) => ErrorKind::NotFound,
            Error::UnsupportedDigest(_)
            | Error::InvalidDigest { .. }
            | Error::Json { .. }
            | Error::InvalidImage { .. }
            | Error::UnsupportedMediaType { .. } => ErrorKind::Invalid,
            Error::SchemaTooNew { .. } => ErrorKind::Unsupported,
            Error::Database { .. } => ErrorKind::Database,
            Error::Derived { .. } => ErrorKind::Io,
        }
    }

    /// True when a blob, ref or file does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }

    /// True when content did not match the expected size or digest.
    pub fn is_mismatch(&self) -> bool {
        self.kind() == ErrorKind::Mismatch
    }

    /// True when the input was malformed.
    pub fn is_invalid(&self) -> bool {
        self.kind() == ErrorKind::Invalid
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn db(action: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> Error {
        let action = action.into();
        move |source| Error::Database { action, source }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidImage {
            reason: reason.into(),
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(source: rusqlite::Error) -> Self {
        Error::Database {
            action: "run a statement".to_string(),
            source,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
