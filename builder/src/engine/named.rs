//! Named build contexts: `hoist build --build-context NAME=VALUE`, as buildx
//! passes them to BuildKit's Dockerfile frontend (`context:NAME`).
//!
//! VALUE is a local directory, `docker-image://REF[@DIGEST]`,
//! `oci-layout://PATH[:TAG|@DIGEST]`, a git URL (the forms of a git build
//! context: `https://host/repo.git#REF:DIR`, `git@host:repo`, `ssh://…`,
//! `git://…`, `github.com/…`) or an http(s) URL. What the frontend does with
//! them (which `FROM` and `--from` they replace) is in
//! [`hoist_frontend::NamedContext`]; here they are parsed and checked, given
//! their files (a directory is a local context read inside its root with its
//! own `.dockerignore`) and, for an OCI layout, their blobs copied into the
//! store.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use hoist_cache::Store;
use hoist_frontend::dockerignore::Matcher;
use hoist_frontend::{named_context_key, NamedContext};
use hoist_untrusted::text::escape;
use hoist_untrusted::Root;
use serde_json::Value;

use super::{read_in_root, LocalContext};

/// The annotation naming an image of an OCI layout's `index.json`.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// A `--build-context` value that cannot be used, worded for the user
/// (values escaped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NamedContextError(pub String);

/// Where a named context's files come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedSource {
    /// A local directory.
    Dir(PathBuf),
    /// `docker-image://REF`: the normalised reference.
    Image(String),
    /// `docker-image://scratch`.
    Scratch,
    /// `oci-layout://PATH[:TAG|@DIGEST]`: the layout and the manifest (or
    /// index) digest it names.
    OciLayout {
        /// The layout directory.
        path: PathBuf,
        /// `sha256:…` of what the tag (default `latest`) or the digest names.
        digest: String,
    },
    /// A git repository.
    Git {
        /// Remote URL.
        url: String,
        /// Branch, tag or commit (empty: the default branch).
        reference: String,
        /// Subdirectory.
        subdir: String,
    },
    /// An http(s) URL (the file is the context's `/context`, as BuildKit).
    Http(String),
}

/// One `--build-context NAME=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedContextSpec {
    /// The name as the user gave it.
    pub name: String,
    /// The value as the user gave it.
    pub value: String,
    /// What it is.
    pub source: NamedSource,
}

/// The named contexts of a build, by key ([`named_context_key`]).
pub type NamedContexts = BTreeMap<String, NamedContextSpec>;

impl NamedContextSpec {
    /// Parses `NAME=VALUE`; a relative directory is relative to the current
    /// directory, as with buildx. Returns the key and the spec.
    pub fn parse(spec: &str) -> Result<(String, NamedContextSpec), NamedContextError> {
        let Some((name, value)) = spec.split_once('=') else {
            return Err(NamedContextError(format!(
                "invalid --build-context `{}`: expected NAME=VALUE",
                escape(spec)
            )));
        };
        let key = named_context_key(name).ok_or_else(|| {
            NamedContextError(format!(
                "invalid --build-context name `{}`: a name is a stage name or an image reference \
                 (lowercase letters, digits, `.`, `_`, `-`, `/`, `:TAG`)",
                escape(name)
            ))
        })?;
        let bad = |why: &str| {
            NamedContextError(format!(
                "invalid --build-context {}=`{}`: {why}",
                escape(name),
                escape(value)
            ))
        };
        if value.is_empty() {
            return Err(bad("the value is empty"));
        }
        if value.chars().any(char::is_control) {
            return Err(bad("the value holds control characters"));
        }
        let source = if let Some(r) = value.strip_prefix("docker-image://") {
            if r == "scratch" {
                NamedSource::Scratch
            } else {
                let r = hoist_untrusted::Reference::parse(r).map_err(|e| bad(&e.to_string()))?;
                NamedSource::Image(r.to_string())
            }
        } else if let Some(rest) = value.strip_prefix("oci-layout://") {
            let (path, digest) = oci_layout(rest).map_err(|m| bad(&m))?;
            NamedSource::OciLayout { path, digest }
        } else if super::fetch::is_git_context(value) {
            let (url, reference, subdir) = super::fetch::split_git_url(value);
            let url = match url.strip_prefix("github.com/") {
                Some(rest) => format!("https://github.com/{rest}"),
                None => url,
            };
            if reference.starts_with('-') || url.starts_with('-') {
                return Err(bad("a git URL or ref cannot start with `-`"));
            }
            NamedSource::Git {
                url,
                reference,
                subdir,
            }
        } else if value.starts_with("https://") || value.starts_with("http://") {
            NamedSource::Http(value.to_owned())
        } else if let Some((scheme, _)) = value.split_once("://") {
            return Err(bad(&format!(
                "unsupported context source `{}` (a directory, docker-image://, oci-layout://, \
                 a git URL or an http(s) URL)",
                escape(scheme)
            )));
        } else {
            let dir = PathBuf::from(value);
            if !dir.is_dir() {
                return Err(bad(
                    "not a directory (nor docker-image://, oci-layout://, a git or an http(s) URL)",
                ));
            }
            NamedSource::Dir(dir)
        };
        Ok((
            key,
            NamedContextSpec {
                name: name.to_owned(),
                value: value.to_owned(),
                source,
            },
        ))
    }

    /// The value as buildx hands it to BuildKit's frontend (`context:NAME`):
    /// `local:NAME` for a directory, else the value.
    pub fn frontend_value(&self, key: &str) -> String {
        match &self.source {
            NamedSource::Dir(_) => format!("local:{}", local_name(key)),
            _ => self.value.clone(),
        }
    }
}

/// Parses a set of `--build-context` values (a later NAME wins, as buildx).
pub fn parse_all(specs: &[String]) -> Result<NamedContexts, NamedContextError> {
    let mut out = NamedContexts::new();
    for spec in specs {
        let (key, spec) = NamedContextSpec::parse(spec)?;
        out.insert(key, spec);
    }
    Ok(out)
}

/// The local context name of a named directory (buildx's: `context` and
/// `dockerfile` are the main context's and the Dockerfile's).
pub fn local_name(key: &str) -> String {
    match key {
        "context" | "dockerfile" => format!("_{key}"),
        _ => key.to_owned(),
    }
}

/// The reference an OCI layout's image goes by in the store and the graph:
/// the context's name with the digest (BuildKit's "dummy" reference).
pub fn oci_reference(key: &str, digest: &str) -> String {
    let name = hoist_untrusted::Reference::parse_bare(key)
        .map(|r| r.name())
        .unwrap_or_else(|_| key.to_owned());
    format!("{name}@{digest}")
}

/// What the frontend needs of each named context.
pub fn frontend_contexts(contexts: &NamedContexts) -> BTreeMap<String, NamedContext> {
    contexts
        .iter()
        .map(|(key, spec)| {
            let c = match &spec.source {
                NamedSource::Dir(_) => NamedContext::Local {
                    context: local_name(key),
                },
                NamedSource::Image(r) => NamedContext::Image(r.clone()),
                NamedSource::Scratch => NamedContext::Scratch,
                NamedSource::OciLayout { digest, .. } => {
                    NamedContext::Image(oci_reference(key, digest))
                }
                NamedSource::Git {
                    url,
                    reference,
                    subdir,
                } => NamedContext::Git {
                    url: url.clone(),
                    reference: reference.clone(),
                    subdir: subdir.clone(),
                },
                NamedSource::Http(url) => NamedContext::Http { url: url.clone() },
            };
            (key.clone(), c)
        })
        .collect()
}

/// The images of OCI layouts, as the graph names them: never pulled.
pub fn layout_images(contexts: &NamedContexts) -> Vec<String> {
    contexts
        .iter()
        .filter_map(|(key, spec)| match &spec.source {
            NamedSource::OciLayout { digest, .. } => Some(oci_reference(key, digest)),
            _ => None,
        })
        .collect()
}

/// The local contexts of the named directories, each with the rules of its
/// own `.dockerignore` (read inside it, as BuildKit reads
/// `<dir>/.dockerignore` of a named context).
pub fn local_contexts(
    contexts: &NamedContexts,
) -> Result<Vec<(String, LocalContext)>, NamedContextError> {
    let mut out = Vec::new();
    for (key, spec) in contexts {
        let NamedSource::Dir(dir) = &spec.source else {
            continue;
        };
        let text = read_in_root(dir, Path::new(".dockerignore"))
            .map_err(|e| {
                NamedContextError(format!(
                    "--build-context {}: {}",
                    escape(&spec.name),
                    hoist_untrusted::text::error_chain(&e)
                ))
            })?
            .unwrap_or_default();
        let ignore = Matcher::parse(&text).map_err(|e| {
            NamedContextError(format!(
                "--build-context {}: .dockerignore: {e}",
                escape(&spec.name)
            ))
        })?;
        out.push((
            local_name(key),
            LocalContext {
                dir: dir.clone(),
                ignore,
            },
        ));
    }
    Ok(out)
}

/// Reads `PATH[:TAG|@DIGEST]` of an OCI layout: the layout's directory and
/// the digest the tag (default `latest`) names in its `index.json`.
fn oci_layout(rest: &str) -> Result<(PathBuf, String), String> {
    let (rest, digest) = match rest.split_once('@') {
        Some((p, d)) => (p, Some(d)),
        None => (rest, None),
    };
    let (path, tag) = match rest.split_once(':') {
        Some((p, t)) => (p, t),
        None => (rest, "latest"),
    };
    if path.is_empty() {
        return Err("no layout directory".into());
    }
    let dir = PathBuf::from(path);
    if !dir.is_dir() {
        return Err(format!(
            "`{}` is not a directory",
            escape(&dir.display().to_string())
        ));
    }
    if let Some(d) = digest {
        hoist_untrusted::reference::validate_digest(d).map_err(|e| e.to_string())?;
        return Ok((dir, d.to_owned()));
    }
    let index = read_in_root(&dir, Path::new("index.json"))
        .map_err(|e| hoist_untrusted::text::error_chain(&e))?
        .ok_or("it has no index.json: not an OCI image layout")?;
    let index: Value =
        serde_json::from_str(&index).map_err(|e| format!("its index.json is not JSON: {e}"))?;
    let found = index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["annotations"][REF_NAME].as_str() == Some(tag))
        .and_then(|m| m["digest"].as_str())
        .ok_or_else(|| format!("its index.json names no image `{}`", escape(tag)))?;
    hoist_untrusted::reference::validate_digest(found).map_err(|e| e.to_string())?;
    Ok((dir, found.to_owned()))
}

/// Copies the image (or index) of each OCI layout context into the store,
/// each blob read inside the layout and checked against its digest; returns
/// the digests stored (for the build's lease).
pub fn import_layouts(
    store: &Store,
    contexts: &NamedContexts,
) -> Result<Vec<String>, NamedContextError> {
    let mut stored = Vec::new();
    for spec in contexts.values() {
        let NamedSource::OciLayout { path, digest } = &spec.source else {
            continue;
        };
        let fail = |m: String| {
            NamedContextError(format!(
                "--build-context {}=`{}`: {m}",
                escape(&spec.name),
                escape(&spec.value)
            ))
        };
        let root = Root::new(path).map_err(|e| fail(e.to_string()))?;
        let mut todo = vec![(digest.clone(), true)];
        while let Some((digest, is_json)) = todo.pop() {
            let blob = copy_blob(store, &root, &digest).map_err(fail)?;
            stored.push(digest.clone());
            if !is_json {
                continue;
            }
            let Some(bytes) = blob else { continue };
            let doc: Value = serde_json::from_slice(&bytes)
                .map_err(|e| fail(format!("blob {digest} is not JSON: {e}")))?;
            for m in doc["manifests"].as_array().into_iter().flatten() {
                if let Some(d) = m["digest"].as_str() {
                    todo.push((d.to_owned(), true));
                }
            }
            if let Some(d) = doc["config"]["digest"].as_str() {
                todo.push((d.to_owned(), false));
            }
            for l in doc["layers"].as_array().into_iter().flatten() {
                if let Some(d) = l["digest"].as_str() {
                    todo.push((d.to_owned(), false));
                }
            }
        }
    }
    Ok(stored)
}

/// Copies one blob of a layout into the store (its bytes returned when it
/// is small enough to be a manifest, index or config).
fn copy_blob(store: &Store, root: &Root, digest: &str) -> Result<Option<Vec<u8>>, String> {
    hoist_untrusted::reference::validate_digest(digest).map_err(|e| e.to_string())?;
    let parsed: hoist_cache::Digest = digest
        .parse()
        .map_err(|_| format!("bad digest {}", escape(digest)))?;
    let (algorithm, hex) = digest.split_once(':').unwrap_or(("", digest));
    let path = Path::new("blobs").join(algorithm).join(hex);
    let mut file = root
        .open_read(&path)
        .map_err(|e| format!("cannot read blob {digest}: {e}"))?;
    // Manifests, indexes and configs are read whole; 4 MiB is BuildKit's
    // limit for a manifest.
    const SMALL: u64 = 4 << 20;
    let size = file.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
    if size <= SMALL {
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read blob {digest}: {e}"))?;
        if hoist_cache::content::digest_of(&bytes) != parsed {
            return Err(format!("blob {digest} does not match its digest"));
        }
        store
            .content()
            .put(&bytes)
            .map_err(|e| format!("cannot store blob {digest}: {e}"))?;
        return Ok(Some(bytes));
    }
    let mut writer = store
        .content()
        .writer()
        .map_err(|e| format!("cannot store blob {digest}: {e}"))?;
    hoist_cache::content::copy_into(&mut file, &mut writer)
        .map_err(|e| format!("cannot store blob {digest}: {e}"))?;
    writer
        .commit(None, Some(&parsed))
        .map_err(|e| format!("blob {digest}: {e}"))?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(spec: &str) -> String {
        NamedContextSpec::parse(spec).unwrap_err().to_string()
    }

    #[test]
    fn values_are_classified_as_buildx_does() {
        let p = |s: &str| NamedContextSpec::parse(s).unwrap();
        assert_eq!(
            p("alpine=docker-image://localhost:5000/a:1").1.source,
            NamedSource::Image("localhost:5000/a:1".into())
        );
        assert_eq!(
            p("docker.io/library/alpine:latest=docker-image://scratch").0,
            "alpine"
        );
        assert_eq!(
            p("src=https://h/r.git#v1:sub").1.source,
            NamedSource::Git {
                url: "https://h/r.git".into(),
                reference: "v1".into(),
                subdir: "sub".into()
            }
        );
        assert_eq!(
            p("f=https://h/f.tar.gz").1.source,
            NamedSource::Http("https://h/f.tar.gz".into())
        );
        assert_eq!(p("d=/").1.source, NamedSource::Dir("/".into()));
        assert_eq!(p("context=/").1.frontend_value("context"), "local:_context");
    }

    #[test]
    fn bad_names_and_values_are_refused_naming_them_escaped() {
        assert!(err("novalue").contains("expected NAME=VALUE"));
        assert!(err("Bad=/").contains("name `Bad`"), "{}", err("Bad=/"));
        assert!(
            err("a\x1b[2J=/").contains("a\\u{1b}[2J"),
            "{}",
            err("a\x1b[2J=/")
        );
        assert!(err("a=").contains("empty"));
        assert!(err("a=/no/such\x07dir").contains("control"));
        assert!(err("a=/no/such/dir").contains("not a directory"));
        assert!(err("a=ftp://x").contains("unsupported context source `ftp`"));
        assert!(err("a=docker-image://A..b").contains("a=`docker-image://A..b`"));
        assert!(err("a=oci-layout:///nonexistent").contains("not a directory"));
    }
}
