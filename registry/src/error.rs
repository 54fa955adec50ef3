//! The crate's error type and the categories callers branch on.

use std::path::PathBuf;

use crate::reference::ReferenceError;
use crate::store::StoreError;

/// Everything that can go wrong while talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The request never got an HTTP answer (connection refused or reset,
    /// timeout, TLS failure, body cut short), even after retries.
    #[error("failed to {action} at {url}")]
    Transport {
        /// What we were doing, e.g. `fetch blob sha256:…`.
        action: String,
        /// The URL asked.
        url: String,
        /// The underlying network error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry answered with an error status; `message` quotes its
    /// error JSON (`denied: requested access to the resource is denied`).
    #[error("failed to {action} at {url}: {status} {message}")]
    Status {
        /// What we were doing.
        action: String,
        /// The URL asked.
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The registry's own message, or the status text when it sent none.
        message: String,
        /// The first error code of the registry's error JSON (`DENIED`,
        /// `MANIFEST_UNKNOWN`, …), if any.
        code: Option<String>,
    },
    /// Content did not hash to the digest it was asked for; nothing was
    /// stored.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        /// What was fetched (blob, manifest, and from where).
        what: String,
        /// The digest we asked for.
        expected: String,
        /// The digest of the bytes that arrived.
        actual: String,
    },
    /// Content was longer or shorter than its descriptor says.
    #[error("size mismatch for {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        /// What was fetched.
        what: String,
        /// The descriptor's size.
        expected: u64,
        /// How many bytes arrived.
        actual: u64,
    },
    /// A manifest or index could not be parsed.
    #[error("failed to parse {what}")]
    Manifest {
        /// Which document, with its digest.
        what: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The registry returned a document type we cannot use.
    #[error("unsupported media type `{media_type}` for {what}")]
    UnsupportedMediaType {
        /// The media type received.
        media_type: String,
        /// Which document.
        what: String,
    },
    /// An index has no manifest for the wanted platform.
    #[error("no image for platform {platform} in {reference} (it has: {available})")]
    PlatformNotFound {
        /// The platform asked for.
        platform: String,
        /// The image asked for.
        reference: String,
        /// The platforms the index offers, comma separated.
        available: String,
    },
    /// The blob store failed (reading, writing or committing a blob).
    #[error("failed to {action} {digest} in the blob store")]
    Store {
        /// What we were doing with the store.
        action: &'static str,
        /// The blob concerned.
        digest: String,
        /// The store's error.
        #[source]
        source: StoreError,
    },
    /// A reference or digest string is malformed.
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    /// A URL could not be built (bad mirror or registry host).
    #[error("invalid registry URL `{url}`: {reason}")]
    Url {
        /// The URL text.
        url: String,
        /// Why it is invalid.
        reason: String,
    },
    /// An environment setting of the client has a value it cannot use.
    #[error("invalid {name}={value:?}: {reason}")]
    Setting {
        /// The variable.
        name: &'static str,
        /// Its value (control characters escaped by `{:?}`).
        value: String,
        /// What it takes.
        reason: String,
    },
    /// Authentication failed before any registry call could succeed (token
    /// endpoint errors, missing credentials for basic auth, bad challenge).
    #[error("failed to authenticate to {registry}: {message}")]
    Auth {
        /// The registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// Reading credentials (docker config, credential helper) failed.
    #[error(transparent)]
    Credentials(#[from] crate::auth::CredentialError),
    /// Reading or parsing a configuration file failed.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// A proxy variable is unusable.
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyError),
    /// A certs.d directory could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Building the HTTP client failed (TLS setup).
    #[error("failed to build the HTTP client")]
    ClientBuild(#[source] reqwest::Error),
    /// An internal task panicked or was cancelled.
    #[error("transfer task for {what} failed")]
    Task {
        /// What the task was doing.
        what: String,
        /// The join error.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A file could not be read or written.
    #[error("failed to {action} {path}")]
    Io {
        /// What we were doing.
        action: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Broad categories of [`RegistryError`] for callers that must branch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The manifest, blob or repository does not exist (404).
    NotFound,
    /// Credentials are missing or wrong (401).
    Unauthorized,
    /// The credentials are valid but not allowed to do this (403, `DENIED`).
    Denied,
    /// Content did not match its digest or size.
    Integrity,
    /// The network or the registry failed (connection, timeout, 5xx, 429).
    Unavailable,
    /// The input was wrong (reference, platform, media type, config).
    InvalidInput,
    /// Local storage or files failed.
    Local,
}

impl RegistryError {
    /// The category of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RegistryError::Transport { .. } | RegistryError::Task { .. } => ErrorKind::Unavailable,
            RegistryError::Status { status, code, .. } => match (*status, code.as_deref()) {
                (404, _)
                | (_, Some("MANIFEST_UNKNOWN" | "BLOB_UNKNOWN" | "NAME_UNKNOWN" | "NOT_FOUND")) => {
                    ErrorKind::NotFound
                }
                (401, _) | (_, Some("UNAUTHORIZED")) => ErrorKind::Unauthorized,
                (403, _) | (_, Some("DENIED")) => ErrorKind::Denied,
                (408 | 429, _) | (500..=599, _) => ErrorKind::Unavailable,
                _ => ErrorKind::InvalidInput,
            },
            RegistryError::DigestMismatch { .. } | RegistryError::SizeMismatch { .. } => {
                ErrorKind::Integrity
            }
            RegistryError::Manifest { .. }
            | RegistryError::UnsupportedMediaType { .. }
            | RegistryError::PlatformNotFound { .. }
            | RegistryError::Reference(_)
            | RegistryError::Url { .. }
            | RegistryError::Config(_)
            | RegistryError::Setting { .. } => ErrorKind::InvalidInput,
            RegistryError::Auth { .. } => ErrorKind::Unauthorized,
            RegistryError::Credentials(_)
            | RegistryError::Store { .. }
            | RegistryError::ClientBuild(_)
            | RegistryError::Tls(_)
            | RegistryError::Proxy(_)
            | RegistryError::Io { .. } => ErrorKind::Local,
        }
    }

    /// True when the registry said the thing does not exist.
    pub fn is_not_found(&self) -> bool {
        self.kind() == ErrorKind::NotFound
    }
}

/// The registry's error body (distribution spec "error codes").
#[derive(serde::Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<ErrorEntry>,
}

#[derive(serde::Deserialize)]
struct ErrorEntry {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

/// Turn a registry error body into `code: message[; code: message]` as the
/// docker CLI prints it, e.g. `denied: requested access to the resource is
/// denied`. Returns the first code too. Falls back to the status text when
/// the body is not the spec's JSON.
pub(crate) fn describe_error_body(status: u16, body: &[u8]) -> (String, Option<String>) {
    if let Ok(parsed) = serde_json::from_slice::<ErrorBody>(body) {
        if !parsed.errors.is_empty() {
            let code = parsed.errors.first().map(|e| e.code.clone());
            let message = parsed
                .errors
                .iter()
                .map(|e| {
                    let code = e.code.to_ascii_lowercase().replace('_', " ");
                    if e.message.is_empty() {
                        code
                    } else {
                        format!("{code}: {}", e.message)
                    }
                })
                .collect::<Vec<_>>()
                .join("; ");
            return (message, code);
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        // HEAD answers carry no body; say what the registry says on GET.
        match status {
            401 => return ("unauthorized: authentication required".into(), None),
            403 => {
                return (
                    "denied: requested access to the resource is denied".into(),
                    None,
                )
            }
            _ => {}
        }
    }
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("error")
        .to_ascii_lowercase();
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() || text.len() > 200 || text.starts_with('<') {
        (reason, None)
    } else {
        (format!("{reason}: {text}"), None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_is_quoted_like_docker() {
        let body = br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"}]}"#;
        let (msg, code) = describe_error_body(403, body);
        assert_eq!(msg, "denied: requested access to the resource is denied");
        assert_eq!(code.as_deref(), Some("DENIED"));
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}},{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#;
        let (msg, _) = describe_error_body(404, body);
        assert_eq!(
            msg,
            "manifest unknown: manifest unknown; name unknown: repository name not known to registry"
        );
        let (msg, code) = describe_error_body(502, b"<html>bad gateway</html>");
        assert_eq!(msg, "bad gateway");
        assert_eq!(code, None);
    }

    #[test]
    fn kinds() {
        let e = RegistryError::Status {
            action: "x".into(),
            url: "u".into(),
            status: 404,
            message: "m".into(),
            code: Some("MANIFEST_UNKNOWN".into()),
        };
        assert!(e.is_not_found());
        let e = RegistryError::Status {
            action: "x".into(),
            url: "u".into(),
            status: 403,
            message: "m".into(),
            code: None,
        };
        assert_eq!(e.kind(), ErrorKind::Denied);
    }
}
