//! Progress events. The library never prints: it calls the sink the
//! caller gave, and the CLI decides how to draw (tty bars, plain, json).

use std::sync::Arc;
use std::time::Duration;

use oci_spec::image::Descriptor;

use crate::platform::Platform;

/// A callback receiving events; called from transfer tasks, so it must be
/// cheap and thread-safe.
pub type EventSink<E> = Arc<dyn Fn(E) + Send + Sync>;

/// A request is being retried after a transient failure.
#[derive(Clone, Debug)]
pub struct RetryNotice {
    /// What was being done (`fetch blob sha256:…`).
    pub action: String,
    /// The attempt that failed (1 = the first try).
    pub attempt: u32,
    /// How long we wait before the next try.
    pub delay: Duration,
    /// Why it failed (status and registry message, or network error).
    pub error: String,
}

/// Events of [`crate::Client::pull`].
#[derive(Clone, Debug)]
pub enum PullEvent {
    /// The reference resolved to this manifest or index.
    Resolved {
        /// The reference as asked.
        reference: String,
        /// What it points to.
        descriptor: Descriptor,
        /// The base URL that answered (a mirror or the origin).
        endpoint: String,
    },
    /// A mirror failed; the next one (or the origin) is tried.
    MirrorFailed {
        /// The mirror's base URL.
        mirror: String,
        /// Why it failed.
        error: String,
    },
    /// An index entry was chosen for the wanted platform.
    PlatformSelected {
        /// The platform of the chosen entry.
        platform: Platform,
        /// The chosen manifest.
        descriptor: Descriptor,
    },
    /// The store already has this blob; it is not downloaded.
    BlobSkipped {
        /// The blob.
        descriptor: Descriptor,
    },
    /// A blob download starts.
    BlobStarted {
        /// The blob.
        descriptor: Descriptor,
    },
    /// Bytes of a blob arrived.
    BlobProgress {
        /// The blob.
        descriptor: Descriptor,
        /// Bytes stored so far.
        done: u64,
        /// The blob's size.
        total: u64,
    },
    /// A blob is verified and committed to the store.
    BlobDone {
        /// The blob.
        descriptor: Descriptor,
    },
    /// A request is retried.
    Retrying(RetryNotice),
}

/// Events of [`crate::Client::push`].
#[derive(Clone, Debug)]
pub enum PushEvent {
    /// The registry already has the blob; nothing is uploaded.
    BlobExists {
        /// The blob.
        descriptor: Descriptor,
    },
    /// The blob was mounted from another repository of the registry.
    BlobMounted {
        /// The blob.
        descriptor: Descriptor,
        /// The repository it came from.
        from: String,
    },
    /// An upload starts.
    BlobStarted {
        /// The blob.
        descriptor: Descriptor,
    },
    /// Bytes of a blob were sent.
    BlobProgress {
        /// The blob.
        descriptor: Descriptor,
        /// Bytes sent so far (may go back after a restarted upload).
        done: u64,
        /// The blob's size.
        total: u64,
    },
    /// The registry accepted the blob.
    BlobDone {
        /// The blob.
        descriptor: Descriptor,
    },
    /// A manifest or index was stored under a tag or digest.
    ManifestPushed {
        /// The manifest.
        descriptor: Descriptor,
        /// Where (`host/repo:tag` or `host/repo@digest`).
        reference: String,
    },
    /// A request is retried.
    Retrying(RetryNotice),
}
