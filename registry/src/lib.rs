//! hoist-registry: the OCI distribution protocol — resolve, pull, push,
//! auth, mirrors, insecure registries, retries — and image references.
//!
//! # What it owns, what it does not
//!
//! It owns talking to registries: references ([`Reference`]), resolving a
//! tag to a manifest or index (OCI, Docker v2 schema 2, Docker manifest
//! list), choosing a platform with containerd's rules ([`Platform`]),
//! streaming blobs both ways with digest checks, bearer/basic auth with
//! Docker's `config.json` and credential helpers ([`AuthFile`]), the
//! `[registry]` config ([`RegistryConfig`]), and retries.
//!
//! It does not own storage: blobs go through the [`BlobStore`] seam.
//! [`CacheBlobStore`] implements it over hoist's content store
//! (`hoist-cache`) and remembers which repository each blob came from, for
//! cross-repository mounts; [`OciDirStore`] is a complete implementation
//! over an OCI image layout directory. Nothing here prints: progress goes to
//! [`PullEvent`]/[`PushEvent`] callbacks.
//!
//! # Example
//!
//! ```no_run
//! use std::sync::Arc;
//! use hoist_registry::{Client, OciDirStore, PullOptions, Reference};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_environment()?; // config files + ~/.docker/config.json
//! let store = Arc::new(OciDirStore::open("/tmp/layout")?);
//! let reference = Reference::parse("busybox")?;
//! let image = client.pull(&reference, store.clone(), &PullOptions::default()).await?;
//! store.set_ref("busybox:latest", &image.manifest)?;
//!
//! // Push it elsewhere, mounting blobs the registry already has in the
//! // repository they were pulled from (same registry only).
//! let target = Reference::parse("registry.example:5000/me/busybox:1")?;
//! let mut options = hoist_registry::PushOptions::default();
//! for layer in &image.layers {
//!     options.mount_sources.insert(layer.digest().to_string(), vec![reference.clone()]);
//! }
//! client.push(&target, &image.manifest, store.clone(), &options).await?;
//! # Ok(()) }
//! ```
//!
//! # For the CLI and the builder
//!
//! - `hoist pull`/`push`: [`Client::from_environment`], then [`Client::pull`]
//!   / [`Client::push`] with a [`CacheBlobStore`]; after either, record
//!   where the blobs live ([`CacheBlobStore::record_sources`]) and fill
//!   [`PushOptions::mount_sources`] from [`CacheBlobStore::mount_sources`];
//!   draw [`PullEvent`]/[`PushEvent`]. Synchronous callers run the futures
//!   with [`block_on`].
//! - `hoist login`/`logout`: [`login`] / [`logout`] with
//!   [`AuthFile::discover`] (and [`auth::normalize_registry`] for display).
//! - `hoist info`: [`RegistryConfig::load`] then [`RegistryConfig::to_toml`],
//!   and [`AuthFile::default_path`].
//! - `FROM`: [`Client::resolve_image`] gives the platform's manifest digest
//!   to put in the cache key; [`Client::pull`] fetches what is missing.
//!
//! # Why not `oci-client`
//!
//! The `oci-client` crate (0.15, judged from its API and source, not
//! benchmarked) streams pulls into an `AsyncWrite` and offers
//! `push_blob_stream` and `mount_blob`, but its streamed push takes a
//! one-shot stream that cannot be replayed, so neither a retry nor a resumed
//! chunked upload (asking the registry for its `Range`) is possible; it has
//! no retry/backoff policy or `Retry-After` handling, no Docker credential
//! helpers or `config.json`, no mirrors and no insecure-registry fallback.
//! Those are most of this crate, so the protocol is built directly on
//! `reqwest` (rustls, streaming bodies) and tokio.
#![warn(missing_docs)]

pub mod auth;
mod cache_store;
mod client;
pub mod config;
pub mod error;
pub mod events;
pub mod manifest;
pub mod platform;
mod pull;
mod push;
pub mod reference;
pub mod store;
pub mod stored;

pub use auth::{AuthFile, Credential, CredentialProvider, StaticCredentials};
pub use cache_store::CacheBlobStore;
pub use client::{Client, ClientOptions, RetryPolicy};
pub use config::RegistryConfig;
pub use error::{ErrorKind, RegistryError};
pub use events::{EventSink, PullEvent, PushEvent, RetryNotice};
pub use platform::Platform;
pub use pull::{select_platform, PullOptions, PulledImage, Resolved, ResolvedImage};
pub use push::{PushOptions, PushedImage};
pub use reference::{Reference, ReferenceError};
pub use store::{BlobStore, BlobWriter, OciDirStore, StoreError};
pub use stored::{stored_manifest, stored_manifest_by_digest, stored_platforms};

/// `hoist login`: check `credential` against `registry` (a host such as
/// `docker.io` or `127.0.0.1:5000`; URL forms such as
/// `https://index.docker.io/v1/` are accepted), then save it in `auth_file`
/// (through its credential helper when one is configured).
pub async fn login(
    client: &Client,
    registry: &str,
    credential: &Credential,
    auth_file: &AuthFile,
) -> Result<(), RegistryError> {
    let registry = auth::normalize_registry(registry);
    client.check_login(&registry, credential).await?;
    let file = auth_file.clone();
    let credential = credential.clone();
    tokio::task::spawn_blocking(move || file.store(&registry, &credential))
        .await
        .map_err(|source| RegistryError::Task {
            what: "saving credentials".into(),
            source,
        })??;
    Ok(())
}

/// `hoist logout`: forget the credentials of `registry`. Returns whether
/// there were any.
pub fn logout(registry: &str, auth_file: &AuthFile) -> Result<bool, RegistryError> {
    Ok(auth_file.erase(&auth::normalize_registry(registry))?)
}

/// Run a future of this crate to completion, for synchronous callers: on a
/// new multi-threaded tokio runtime (the CLI has none), or on the current
/// one from a blocking thread of it (autobuild's builds).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output, RegistryError> {
    // On a blocking thread of a runtime (autobuild's builds), a second
    // runtime cannot start: use the one there is.
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        return Ok(handle.block_on(future));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| RegistryError::Io {
            action: "start the async runtime for",
            path: "registry transfers".into(),
            source,
        })?;
    Ok(runtime.block_on(future))
}
