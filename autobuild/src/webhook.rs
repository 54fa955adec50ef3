//! Webhook providers: signature checks (constant time, before the body is
//! parsed) and push payloads turned into [`PushedRef`]s.

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A webhook sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// GitHub: `X-Hub-Signature-256: sha256=<hex>`, `X-GitHub-Event`.
    GitHub,
    /// Bitbucket: `X-Hub-Signature: sha256=<hex>`, `X-Event-Key`.
    Bitbucket,
    /// GitLab: `X-Gitlab-Token: <secret>`, `X-Gitlab-Event`.
    GitLab,
    /// Gitea and Forgejo: `X-Gitea-Signature: <hex>`, `X-Gitea-Event`.
    Gitea,
}

impl Provider {
    /// `github`, `bitbucket`, `gitlab` or `gitea`.
    pub fn parse(s: &str) -> Option<Provider> {
        match s {
            "github" => Some(Provider::GitHub),
            "bitbucket" => Some(Provider::Bitbucket),
            "gitlab" => Some(Provider::GitLab),
            "gitea" | "forgejo" => Some(Provider::Gitea),
            _ => None,
        }
    }

    /// The lowercase name (stored as the build's trigger).
    pub fn name(self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::Bitbucket => "bitbucket",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
        }
    }

    /// The header carrying the event name.
    pub fn event_header(self) -> &'static str {
        match self {
            Provider::GitHub => "x-github-event",
            Provider::Bitbucket => "x-event-key",
            Provider::GitLab => "x-gitlab-event",
            Provider::Gitea => "x-gitea-event",
        }
    }

    /// The header carrying the signature or token.
    pub fn signature_header(self) -> &'static str {
        match self {
            Provider::GitHub => "x-hub-signature-256",
            Provider::Bitbucket => "x-hub-signature",
            Provider::GitLab => "x-gitlab-token",
            Provider::Gitea => "x-gitea-signature",
        }
    }

    /// Check `signature` (the header's value) over `body` with `secret`, in
    /// constant time. Missing header or secret: false.
    pub fn verify(self, secret: Option<&str>, signature: Option<&[u8]>, body: &[u8]) -> bool {
        let (Some(secret), Some(signature)) = (secret, signature) else {
            return false;
        };
        match self {
            Provider::GitLab => {
                // Compare digests so the comparison time does not depend on
                // the token's length either.
                let a = Sha256::digest(signature);
                let b = Sha256::digest(secret.as_bytes());
                a.ct_eq(&b).into()
            }
            Provider::GitHub | Provider::Bitbucket | Provider::Gitea => {
                let hex_sig = if self == Provider::Gitea {
                    signature
                } else {
                    match signature.strip_prefix(b"sha256=") {
                        Some(s) => s,
                        None => return false,
                    }
                };
                let Ok(expected) = hex::decode(hex_sig) else {
                    return false;
                };
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
                    return false;
                };
                mac.update(body);
                mac.verify_slice(&expected).is_ok()
            }
        }
    }

    /// Produce the signature header value a sender would (for hooks and tests).
    pub fn sign(self, secret: &str, body: &[u8]) -> String {
        if self == Provider::GitLab {
            return secret.to_string();
        }
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(body);
        let hex = hex::encode(mac.finalize().into_bytes());
        if self == Provider::Gitea {
            hex
        } else {
            format!("sha256={hex}")
        }
    }
}

/// What an event asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A ping or test event: answer 200, do nothing.
    Ping,
    /// An event this server does not act on.
    Ignored(String),
    /// A push; deleted refs are already left out.
    Push(Vec<PushedRef>),
}

/// One ref a push updated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedRef {
    /// Full ref (`refs/heads/main`, `refs/tags/v1`).
    pub git_ref: String,
    /// New commit id.
    pub sha: String,
    /// Head commit's message, when the payload has it.
    pub message: String,
}

/// A payload that is not what its event says.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Not JSON.
    #[error("the body is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// JSON, but a field is missing or of the wrong type.
    #[error("the push payload has no usable `{0}`")]
    Missing(&'static str),
}

fn is_zero_sha(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'0')
}

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// Parse a body whose signature was already checked.
pub fn parse_event(
    provider: Provider,
    event: Option<&str>,
    body: &[u8],
) -> Result<Event, PayloadError> {
    let event = event.unwrap_or("");
    match (provider, event) {
        (Provider::GitHub, "ping") | (Provider::Bitbucket, "diagnostics:ping") => {
            return Ok(Event::Ping)
        }
        (Provider::GitHub | Provider::Gitea, "push")
        | (Provider::GitLab, "Push Hook" | "Tag Push Hook")
        | (Provider::Bitbucket, "repo:push") => {}
        _ => return Ok(Event::Ignored(event.to_string())),
    }
    let v: Value = serde_json::from_slice(body)?;
    if provider == Provider::Bitbucket {
        let changes = v
            .pointer("/push/changes")
            .and_then(Value::as_array)
            .ok_or(PayloadError::Missing("push.changes"))?;
        let mut refs = Vec::new();
        for change in changes {
            // `new` is null when the change deletes the branch or tag.
            let Some(new) = change.get("new").filter(|n| !n.is_null()) else {
                continue;
            };
            let kind = str_at(new, "/type").ok_or(PayloadError::Missing("new.type"))?;
            let name = str_at(new, "/name").ok_or(PayloadError::Missing("new.name"))?;
            let prefix = match kind {
                "branch" | "named_branch" => "refs/heads/",
                "tag" | "annotated_tag" => "refs/tags/",
                _ => continue,
            };
            refs.push(PushedRef {
                git_ref: format!("{prefix}{name}"),
                sha: str_at(new, "/target/hash")
                    .ok_or(PayloadError::Missing("new.target.hash"))?
                    .to_string(),
                message: str_at(new, "/target/message").unwrap_or("").to_string(),
            });
        }
        return Ok(Event::Push(refs));
    }
    let git_ref = str_at(&v, "/ref").ok_or(PayloadError::Missing("ref"))?;
    let after = str_at(&v, "/after").ok_or(PayloadError::Missing("after"))?;
    let deleted = v.get("deleted").and_then(Value::as_bool).unwrap_or(false);
    if deleted || is_zero_sha(after) {
        return Ok(Event::Push(Vec::new()));
    }
    let sha = match provider {
        // GitLab's `after` of an annotated tag is the tag object; checkout_sha is the commit.
        Provider::GitLab => str_at(&v, "/checkout_sha").unwrap_or(after),
        _ => after,
    };
    let message = str_at(&v, "/head_commit/message")
        .or_else(|| {
            v.get("commits")
                .and_then(Value::as_array)
                .and_then(|c| c.last())
                .and_then(|c| str_at(c, "/message"))
        })
        .unwrap_or("");
    Ok(Event::Push(vec![PushedRef {
        git_ref: git_ref.to_string(),
        sha: sha.to_string(),
        message: message.to_string(),
    }]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_round_trip_and_reject_tampering() {
        for p in [
            Provider::GitHub,
            Provider::Bitbucket,
            Provider::GitLab,
            Provider::Gitea,
        ] {
            let sig = p.sign("k", b"body");
            assert!(p.verify(Some("k"), Some(sig.as_bytes()), b"body"), "{p:?}");
            assert!(!p.verify(Some("x"), Some(sig.as_bytes()), b"body"), "{p:?}");
            assert!(!p.verify(Some("k"), None, b"body"), "{p:?}");
            assert!(!p.verify(None, Some(sig.as_bytes()), b"body"), "{p:?}");
            if p != Provider::GitLab {
                assert!(!p.verify(Some("k"), Some(sig.as_bytes()), b"bodY"), "{p:?}");
            }
        }
    }

    #[test]
    fn deletions_queue_nothing() {
        let body = br#"{"ref":"refs/heads/x","after":"0000000000000000000000000000000000000000","deleted":true}"#;
        assert_eq!(
            parse_event(Provider::GitHub, Some("push"), body).unwrap(),
            Event::Push(vec![])
        );
        let body = br#"{"push":{"changes":[{"old":{},"new":null}]}}"#;
        assert_eq!(
            parse_event(Provider::Bitbucket, Some("repo:push"), body).unwrap(),
            Event::Push(vec![])
        );
    }
}
