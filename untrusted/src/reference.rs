//! Image references, parsed and normalized as the distribution spec and Docker do:
//! the one parser of the workspace (the registry crate re-exports it, the
//! frontend normalises `FROM` and `--from` with it).
//!
//! `busybox` is `docker.io/library/busybox:latest`; `host:5000/a/b:tag`,
//! `name@sha256:…` and `name:tag@sha256:…` are accepted. The first path
//! component is a registry host only when it contains `.` or `:` or is
//! `localhost`, exactly as Docker decides it.

use std::fmt;

use crate::text::escape;

/// The registry that short names resolve to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
/// The host that actually serves `docker.io`'s API.
pub const DEFAULT_REGISTRY_API_HOST: &str = "registry-1.docker.io";
const LEGACY_DEFAULT_REGISTRY: &str = "index.docker.io";
const MAX_NAME_LENGTH: usize = 255;
const MAX_TAG_LENGTH: usize = 128;

/// A parsed, normalized image reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<String>,
}

/// Which part of a reference is wrong.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    /// The input is empty.
    #[error("invalid reference format: empty reference")]
    Empty,
    /// The repository has upper-case letters (Docker refuses these).
    #[error("invalid reference format: repository name `{}` must be lowercase", escape(.0))]
    Uppercase(String),
    /// A path component breaks the grammar `[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*`.
    #[error("invalid reference format: repository name component `{}` in `{}` is not valid (lowercase letters, digits and single separators `.` `_` `__` `-` between them)", escape(component), escape(input))]
    Component {
        /// The whole reference.
        input: String,
        /// The offending component.
        component: String,
    },
    /// The registry host or port is malformed.
    #[error("invalid reference format: registry host `{}` is not valid", escape(.0))]
    Domain(String),
    /// The tag breaks `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid reference format: tag `{}` is not valid (letters, digits, `_`, `.`, `-`, at most 128, not starting with `.` or `-`)", escape(.0))]
    Tag(String),
    /// The digest is not `algorithm:hex` with a well-formed hex part.
    #[error("invalid reference format: digest `{}` is not valid (expected sha256: and 64 lowercase hex digits)", escape(.0))]
    Digest(String),
    /// The repository name is longer than 255 characters.
    #[error(
        "invalid reference format: repository name is longer than {MAX_NAME_LENGTH} characters"
    )]
    NameTooLong,
}

impl Reference {
    /// Parse and normalize a reference; with neither tag nor digest, the tag
    /// is `latest`.
    pub fn parse(input: &str) -> Result<Reference, ReferenceError> {
        let mut reference = Self::parse_bare(input)?;
        if reference.tag.is_none() && reference.digest.is_none() {
            reference.tag = Some("latest".to_string());
        }
        Ok(reference)
    }

    /// Parse and normalize without adding a default tag (for `hoist pull -a`-
    /// style uses and for names that only denote a repository).
    pub fn parse_bare(input: &str) -> Result<Reference, ReferenceError> {
        if input.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };
        // A tag is after the last ':' that comes after the last '/'; a ':'
        // before the last '/' belongs to host:port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag)?;
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (registry, repository) = split_domain(name);
        if registry != DEFAULT_REGISTRY || name.starts_with(DEFAULT_REGISTRY) {
            validate_domain(&registry)?;
        }
        if repository.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase(repository));
        }
        for component in repository.split('/') {
            if !valid_component(component) {
                return Err(ReferenceError::Component {
                    input: input.to_string(),
                    component: component.to_string(),
                });
            }
        }
        if registry.len() + 1 + repository.len() > MAX_NAME_LENGTH {
            return Err(ReferenceError::NameTooLong);
        }
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// Registry host (with port), e.g. `docker.io` or `127.0.0.1:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Host to send API requests to (`registry-1.docker.io` for Docker Hub).
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_REGISTRY {
            DEFAULT_REGISTRY_API_HOST
        } else {
            &self.registry
        }
    }

    /// Repository path inside the registry, e.g. `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest (`sha256:…`), if any.
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }

    /// Registry plus repository, e.g. `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The short name Docker prints, without tag or digest: `busybox`,
    /// `me/app`, `127.0.0.1:5000/app`.
    pub fn familiar_name(&self) -> String {
        if self.registry == DEFAULT_REGISTRY {
            self.repository
                .strip_prefix("library/")
                .filter(|r| !r.contains('/'))
                .unwrap_or(&self.repository)
                .to_string()
        } else {
            self.name()
        }
    }

    /// The short form Docker prints: `busybox:latest`, `me/app:1`,
    /// `127.0.0.1:5000/app:1`.
    pub fn familiar(&self) -> String {
        let mut s = self.familiar_name();
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            s.push('@');
            s.push_str(digest);
        }
        s
    }

    /// The same repository with another tag (and no digest).
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        validate_tag(tag)?;
        Ok(Reference {
            tag: Some(tag.to_string()),
            digest: None,
            ..self.clone()
        })
    }

    /// The same repository pinned to a digest (the tag is kept for display).
    pub fn with_digest(&self, digest: &str) -> Result<Reference, ReferenceError> {
        validate_digest(digest)?;
        Ok(Reference {
            digest: Some(digest.to_string()),
            ..self.clone()
        })
    }
}

impl fmt::Display for Reference {
    /// The fully qualified form: `docker.io/library/busybox:latest`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

fn split_domain(name: &str) -> (String, String) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            let registry = if first == LEGACY_DEFAULT_REGISTRY {
                DEFAULT_REGISTRY.to_string()
            } else {
                first.to_string()
            };
            let repository = if registry == DEFAULT_REGISTRY && !rest.contains('/') {
                format!("library/{rest}")
            } else {
                rest.to_string()
            };
            (registry, repository)
        }
        Some(_) => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        None => (DEFAULT_REGISTRY.to_string(), format!("library/{name}")),
    }
}

fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() || !is_alnum(bytes[0]) || !is_alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        if is_alnum(bytes[i]) {
            i += 1;
            continue;
        }
        // A separator run: `.`, `_`, `__`, or one or more `-`.
        let start = i;
        while i < bytes.len() && !is_alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Domain(domain.to_string());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        // IPv6 literal: [::1]:5000
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        if addr.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad());
        }
        match after.strip_prefix(':') {
            Some(port) => ("", Some(port)),
            None if after.is_empty() => ("", None),
            None => return Err(bad()),
        }
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    if !host.is_empty() || !domain.starts_with('[') {
        for label in host.split('.') {
            let b = label.as_bytes();
            let ok = !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-');
            if !ok {
                return Err(bad());
            }
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_TAG_LENGTH
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ReferenceError::Tag(tag.to_string()))
    }
}

/// Check a digest string: `sha256:` plus 64 lowercase hex digits (or
/// `sha512:` plus 128); other registered algorithms are refused.
pub fn validate_digest(digest: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Digest(digest.to_string());
    let (algorithm, hex) = digest.split_once(':').ok_or_else(bad)?;
    let len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() == len
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(bad())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn full(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn errors_quote_the_input_with_control_characters_escaped() {
        let e = Reference::parse("Evil\n\x1b[2J").unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e}");
        assert!(e.contains("\\n\\u{1b}[2J"), "{e}");
    }

    #[test]
    fn short_names_resolve_like_docker() {
        assert_eq!(full("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(full("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(full("me/app"), "docker.io/me/app:latest");
        assert_eq!(
            full("docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            full("index.docker.io/busybox"),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(full("docker.io/a/b/c:t"), "docker.io/a/b/c:t");
    }

    #[test]
    fn hosts_ports_and_digests() {
        assert_eq!(full("localhost/app"), "localhost/app:latest");
        assert_eq!(full("localhost:5000/app:v1"), "localhost:5000/app:v1");
        assert_eq!(full("127.0.0.1:5000/a/b:tag"), "127.0.0.1:5000/a/b:tag");
        assert_eq!(full("[::1]:5000/app"), "[::1]:5000/app:latest");
        assert_eq!(full("quay.io/org/app"), "quay.io/org/app:latest");
        let r = Reference::parse(&format!("busybox@{D}")).unwrap();
        assert_eq!(r.tag(), None);
        assert_eq!(r.digest(), Some(D));
        let r = Reference::parse(&format!("busybox:1@{D}")).unwrap();
        assert_eq!(r.tag(), Some("1"));
        assert_eq!(r.to_string(), format!("docker.io/library/busybox:1@{D}"));
    }

    #[test]
    fn familiar_form() {
        assert_eq!(
            Reference::parse("busybox").unwrap().familiar(),
            "busybox:latest"
        );
        assert_eq!(Reference::parse("me/app:1").unwrap().familiar(), "me/app:1");
        assert_eq!(
            Reference::parse("127.0.0.1:5000/app").unwrap().familiar(),
            "127.0.0.1:5000/app:latest"
        );
        assert_eq!(
            Reference::parse("docker.io/me/app:1")
                .unwrap()
                .familiar_name(),
            "me/app"
        );
        assert_eq!(
            Reference::parse("busybox").unwrap().api_host(),
            "registry-1.docker.io"
        );
    }

    #[test]
    fn separators_follow_the_grammar() {
        for ok in [
            "a", "a.b", "a_b", "a__b", "a-b", "a---b", "a0/b1", "x.y_z-w",
        ] {
            assert!(Reference::parse(ok).is_ok(), "{ok} should parse");
        }
        for bad in [
            "a..b", "a___b", "-a", "a-", "_a", "a_", "a/.b", "a//b", "a/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn errors_name_the_wrong_part() {
        assert_eq!(Reference::parse(""), Err(ReferenceError::Empty));
        assert_eq!(
            Reference::parse("Busybox"),
            Err(ReferenceError::Uppercase("library/Busybox".into()))
        );
        assert!(matches!(
            Reference::parse("busybox:"),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            Reference::parse("busybox:-x"),
            Err(ReferenceError::Tag(_))
        ));
        let long_tag = format!("busybox:{}", "a".repeat(129));
        assert!(matches!(
            Reference::parse(&long_tag),
            Err(ReferenceError::Tag(_))
        ));
        assert!(matches!(
            Reference::parse("busybox@sha256:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("busybox@md5:abc"),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse(&format!("busybox@{}", D.to_uppercase())),
            Err(ReferenceError::Digest(_))
        ));
        assert!(matches!(
            Reference::parse("bad_host.com:x/app"),
            Err(ReferenceError::Domain(_))
        ));
        assert!(matches!(
            Reference::parse("a:5000:1/app"),
            Err(ReferenceError::Domain(_))
        ));
        let long = format!("a/{}", "b".repeat(260));
        assert_eq!(Reference::parse(&long), Err(ReferenceError::NameTooLong));
        let msg = Reference::parse("a..b").unwrap_err().to_string();
        assert!(msg.contains("`a..b`"), "{msg}");
    }

    #[test]
    fn with_tag_and_digest() {
        let r = Reference::parse("busybox").unwrap();
        assert_eq!(
            r.with_tag("2").unwrap().to_string(),
            "docker.io/library/busybox:2"
        );
        assert!(r.with_tag("bad tag").is_err());
        assert_eq!(
            r.with_digest(D).unwrap().to_string(),
            format!("docker.io/library/busybox:latest@{D}")
        );
    }
}
