//! `--annotation [TYPE[PLATFORM]:]KEY=VALUE`, read as buildx reads it.

use super::PipelineError;
use crate::engine::assemble::{Annotation, AnnotationTarget};

/// Parses one `--annotation` as buildx does: `KEY=VALUE` (the image
/// manifests), `manifest:`, `manifest-descriptor:`, `index:`,
/// `index-descriptor:`, and `manifest[linux/arm64]:` (one platform's
/// image). A prefix of lowercase letters and dashes before a colon is a
/// type, and an unknown one is refused, as buildx refuses it; a key with
/// other characters before a colon (`org.x:y`) is a key.
pub fn parse_annotation(text: &str) -> Result<Annotation, PipelineError> {
    let shown = hoist_untrusted::escape(text);
    let invalid =
        |why: &str| PipelineError::Invalid(format!("invalid --annotation `{shown}`: {why}"));
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| invalid("expected [TYPE:]KEY=VALUE"))?;
    let (target, platform, key) = match split_type(key) {
        None => (AnnotationTarget::Manifest, None, key),
        Some((kind, platform, rest)) => {
            let target = match kind {
                "manifest" => AnnotationTarget::Manifest,
                "manifest-descriptor" => AnnotationTarget::ManifestDescriptor,
                "index" => AnnotationTarget::Index,
                "index-descriptor" => AnnotationTarget::IndexDescriptor,
                _ => {
                    return Err(invalid(&format!(
                        "unknown annotation type `{kind}` (the types are manifest, \
                         manifest-descriptor, index and index-descriptor)"
                    )))
                }
            };
            let platform = match platform {
                None => None,
                Some(_)
                    if !matches!(
                        target,
                        AnnotationTarget::Manifest | AnnotationTarget::ManifestDescriptor
                    ) =>
                {
                    return Err(invalid(&format!(
                        "`{kind}` annotations are of the whole index: a platform cannot be \
                         given (only manifest[PLATFORM] and manifest-descriptor[PLATFORM])"
                    )))
                }
                Some(p) => Some(
                    hoist_registry::Platform::parse(p)
                        .map(|p| hoist_frontend::graph::Platform {
                            os: p.os,
                            architecture: p.architecture,
                            variant: (!p.variant.is_empty()).then_some(p.variant),
                        })
                        .map_err(|e| invalid(&e.to_string()))?,
                ),
            };
            (target, platform, rest)
        }
    };
    if key.is_empty() || key.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            "the key is empty or has spaces or control characters",
        ));
    }
    Ok(Annotation {
        target,
        platform,
        key: key.to_owned(),
        value: value.to_owned(),
    })
}

/// `TYPE[PLATFORM]:REST` → (TYPE, PLATFORM, REST) when the text starts with
/// buildx's type pattern (`[a-z-]+`, then an optional `[…]` of
/// `[A-Za-z0-9_/-]`, then `:`); `None` when it does not (all of it is the
/// key).
fn split_type(key: &str) -> Option<(&str, Option<&str>, &str)> {
    let end = key
        .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
        .filter(|&i| i > 0)?;
    let kind = &key[..end];
    let rest = &key[end..];
    if let Some(rest) = rest.strip_prefix(':') {
        return Some((kind, None, rest));
    }
    let inner = rest.strip_prefix('[')?;
    let close = inner.find(']')?;
    let platform = &inner[..close];
    let valid = !platform.is_empty()
        && platform
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '-'));
    let rest = inner[close + 1..].strip_prefix(':')?;
    valid.then_some((kind, Some(platform), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotations_parse_as_buildx_reads_them() {
        let ok = |t: &str| parse_annotation(t).unwrap();
        let a = ok("a.b=c");
        assert_eq!(
            (a.target, a.platform, a.key.as_str(), a.value.as_str()),
            (AnnotationTarget::Manifest, None, "a.b", "c")
        );
        let a = ok("manifest:a.b=c=d");
        assert_eq!((a.key.as_str(), a.value.as_str()), ("a.b", "c=d"));
        assert_eq!(ok("org.x=").value, "");
        assert_eq!(ok("index:a=b").target, AnnotationTarget::Index);
        assert_eq!(
            ok("index-descriptor:a=b").target,
            AnnotationTarget::IndexDescriptor
        );
        assert_eq!(
            ok("manifest-descriptor:a=b").target,
            AnnotationTarget::ManifestDescriptor
        );
        let a = ok("manifest[linux/arm64]:a=b");
        assert_eq!(a.target, AnnotationTarget::Manifest);
        assert_eq!(a.platform.unwrap().architecture, "arm64");
        let a = ok("manifest-descriptor[linux/arm/v7]:a=b");
        assert_eq!(a.platform.unwrap().variant.as_deref(), Some("v7"));
        // Not a type: the whole text before `=` is the key.
        assert_eq!(ok("org.opencontainers:x=1").key, "org.opencontainers:x");
        let e = parse_annotation("manifests:a=b").unwrap_err();
        assert!(
            e.to_string()
                .contains("unknown annotation type `manifests`"),
            "{e}"
        );
        let e = parse_annotation("index[linux/amd64]:a=b").unwrap_err();
        assert!(e.to_string().contains("a platform cannot be given"), "{e}");
        let e = parse_annotation("manifest[\x1b]:a=b").unwrap_err();
        assert!(!e.to_string().contains('\x1b'), "{e}");
        assert!(parse_annotation("manifest[linux/x y]:a=b").is_err());
        assert!(parse_annotation("novalue").is_err());
        assert!(parse_annotation("=v").is_err());
        assert!(parse_annotation("index:=v").is_err());
        assert!(parse_annotation("a b=v").is_err());
    }
}
