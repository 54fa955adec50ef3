//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Errors of every operation of this crate.
///
/// Messages name the action and the object; the cause sits in
/// [`std::error::Error::source`]. Callers that must branch use [`Error::kind`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A filesystem call failed on `path`.
    #[error("failed to {action} {}", crate::text::escape_path(path))]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// No snapshot is recorded under this key or name.
    #[error("snapshot `{0}` does not exist")]
    NotFound(String),
    /// A snapshot is already recorded under this key or name.
    #[error("snapshot `{0}` already exists")]
    AlreadyExists(String),
    /// `remove` was asked to delete a snapshot that other snapshots build on.
    #[error("cannot remove snapshot `{key}`: snapshots {children} are based on it")]
    HasChildren {
        /// The snapshot that was to be removed.
        key: String,
        /// Its children, comma-separated and quoted.
        children: String,
    },
    /// The snapshot exists but is of the wrong kind for the operation
    /// (e.g. committing a view, preparing on an active parent).
    #[error("cannot {action} snapshot `{key}`: it is {actual}, expected {expected}")]
    WrongKind {
        /// The operation refused.
        action: &'static str,
        /// The snapshot concerned.
        key: String,
        /// Its kind.
        actual: &'static str,
        /// What the operation needs.
        expected: &'static str,
    },
    /// The snapshot record file could not be parsed or written.
    #[error("failed to {action} snapshot records {}", path.display())]
    Records {
        /// "parse" or "encode".
        action: &'static str,
        /// The record file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A mount or unmount failed.
    #[error("failed to {action} {kind} at {} (options: {options})", target.display())]
    Mount {
        /// "mount" or "unmount".
        action: &'static str,
        /// The filesystem type.
        kind: String,
        /// The mount point.
        target: PathBuf,
        /// The options passed to the kernel.
        options: String,
        /// The system error.
        #[source]
        source: io::Error,
    },
    /// The overlay backend was forced but overlayfs does not work here.
    #[error("overlayfs is not usable under {}", root.display())]
    OverlayUnavailable {
        /// The snapshotter root where the probe ran.
        root: PathBuf,
        /// Why the probe mount failed.
        #[source]
        source: Box<Error>,
    },
    /// The overlay backend cannot use a root whose path contains `:` or `,`
    /// (they separate overlay mount options).
    #[error("snapshot root {} contains `:` or `,`, which overlay mount options cannot carry", root.display())]
    UnusableRoot {
        /// The snapshotter root.
        root: PathBuf,
    },
    /// The root was created with another backend; the layouts differ.
    #[error("snapshot root {} uses the {recorded} backend, not {requested}", root.display())]
    BackendMismatch {
        /// The snapshotter root.
        root: PathBuf,
        /// The backend recorded in the root.
        recorded: String,
        /// The backend asked for.
        requested: String,
    },
    /// A layer entry tried to leave the root or is otherwise unacceptable.
    #[error("refusing layer entry `{path}`: {reason}")]
    UnsafeEntry {
        /// The entry's path as written in the archive.
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// Reading or decoding the layer stream failed.
    #[error("failed to read layer entry `{path}`")]
    Layer {
        /// The entry being read ("" before the first entry).
        path: String,
        /// The decoding or I/O error.
        #[source]
        source: io::Error,
    },
    /// Writing the layer to the caller's writer failed.
    #[error("failed to write layer while adding `{path}`")]
    Write {
        /// The entry being written.
        path: String,
        /// The writer's error.
        #[source]
        source: io::Error,
    },
    /// A file changed size while it was being put into a layer.
    #[error(
        "file {} changed while it was being read (expected {expected} bytes)",
        crate::text::escape_path(path)
    )]
    FileChanged {
        /// The file.
        path: PathBuf,
        /// The size seen by lstat.
        expected: u64,
    },
    /// An overlay upper dir holds state the differ cannot translate
    /// (a directory redirect or a metacopy-only file), because it was
    /// mounted with options other than the snapshotter's.
    #[error("cannot diff {}: it carries overlay's `{xattr}` (mounted with redirect_dir or metacopy on?)", crate::text::escape_path(path))]
    UnsupportedOverlay {
        /// The file or directory in the upper dir.
        path: PathBuf,
        /// The overlay xattr found.
        xattr: String,
    },
    /// An unknown backend or compression name.
    #[error("unknown {what} `{value}` (expected one of: {expected})")]
    UnknownName {
        /// What was being parsed.
        what: &'static str,
        /// The value given.
        value: String,
        /// The accepted values.
        expected: &'static str,
    },
}

/// Categories of [`Error`] for callers that must branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The snapshot does not exist.
    NotFound,
    /// The key or name is taken.
    AlreadyExists,
    /// The snapshot is in the wrong state (children, kind).
    FailedPrecondition,
    /// The layer is malformed or malicious.
    InvalidLayer,
    /// Anything else (I/O, mounts, records).
    Other,
}

impl Error {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound(_) => ErrorKind::NotFound,
            Error::AlreadyExists(_) => ErrorKind::AlreadyExists,
            Error::HasChildren { .. }
            | Error::WrongKind { .. }
            | Error::BackendMismatch { .. }
            | Error::UnusableRoot { .. } => ErrorKind::FailedPrecondition,
            Error::UnsafeEntry { .. } | Error::Layer { .. } => ErrorKind::InvalidLayer,
            _ => ErrorKind::Other,
        }
    }
}

/// Builds an `Error::Io` mapper naming the action and the path.
pub(crate) fn io_err(
    action: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io {
        action,
        path,
        source,
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
