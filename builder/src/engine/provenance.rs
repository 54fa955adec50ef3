//! Build provenance: an in-toto statement with a SLSA v1 provenance predicate,
//! stored next to the image the way BuildKit stores attestations, so tools
//! that read BuildKit's attestations read hoist's.
//!
//! Layout (BuildKit's "attestation storage"): the image ref points at an OCI
//! index holding the image manifest (with its platform) and an *attestation
//! manifest* (`platform: unknown/unknown`, annotations
//! `vnd.docker.reference.type: attestation-manifest` and
//! `vnd.docker.reference.digest: <image manifest digest>`). That manifest's
//! config is a placeholder image config, its one layer the statement
//! (`application/vnd.in-toto+json`, annotated `in-toto.io/predicate-type`).
//!
//! The image manifest and config are not touched: the image digest is the
//! same with and without provenance, and the times the statement records
//! (`startedOn`, `finishedOn`) stay out of it. The index digest does change.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};

use hoist_cache::{Descriptor, Digest, Store};
use hoist_frontend::graph::{BuildGraph, Op as GraphOp, Platform};
use serde_json::{json, Map, Value};

use super::assemble::{rfc3339, Assembled};
use super::build::{BuildError, BuildRequest};
use super::Engine;
use super::EngineError;

/// Media type of an in-toto statement layer.
pub const IN_TOTO: &str = "application/vnd.in-toto+json";
/// The in-toto statement type BuildKit writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
/// SLSA provenance v1.
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
/// SLSA provenance v0.2 (read, never written).
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
/// The build type: the predicate is laid out as BuildKit's SLSA v1 predicate.
pub const BUILD_TYPE: &str =
    "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
/// Descriptor annotation naming what an index entry is.
pub const REFERENCE_TYPE: &str = "vnd.docker.reference.type";
/// Descriptor annotation naming the manifest an attestation describes.
pub const REFERENCE_DIGEST: &str = "vnd.docker.reference.digest";
/// Layer annotation repeating the statement's predicate type.
pub const PREDICATE_TYPE: &str = "in-toto.io/predicate-type";

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// What a provenance statement records about one build.
#[derive(Clone, Debug, Default)]
pub struct ProvenanceInput {
    /// The Dockerfile's name in the context (`Dockerfile`).
    pub dockerfile_name: String,
    /// `sha256` hex of the Dockerfile's bytes.
    pub dockerfile_sha256: String,
    /// `sha256` hex of the context's selected files (path, type, mode, owner,
    /// content; never times), after `.dockerignore`.
    pub context_sha256: Option<String>,
    /// The context's git checkout, if it is one.
    pub git: Option<GitInfo>,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--label` values.
    pub labels: BTreeMap<String, String>,
    /// `--target`.
    pub target: Option<String>,
    /// SOURCE_DATE_EPOCH, if the build had one.
    pub source_date_epoch: Option<i64>,
    /// Base images: (reference as resolved, `name@sha256:…`).
    pub base_images: Vec<String>,
    /// Platform of the image.
    pub platform: Platform,
    /// Start and end of the build, seconds since 1970.
    pub started: i64,
    /// End of the build.
    pub finished: i64,
    /// Name for the statement's subject (the first tag), `None` for `_`.
    pub subject_name: Option<String>,
    /// `--build-context`s: (name, the value as buildx hands it to the
    /// frontend, `sha256` hex of a directory's files after its
    /// `.dockerignore`, local name of a directory).
    pub named_contexts: Vec<NamedMaterial>,
    /// Those of `base_images` that come from OCI layouts (`pkg:oci`).
    pub layout_images: Vec<String>,
}

/// A named context as the provenance records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NamedMaterial {
    /// Its name (`--build-context NAME=…`).
    pub name: String,
    /// `context:NAME`'s value as buildx passes it (`local:NAME` for a
    /// directory, else the value, credentials removed).
    pub value: String,
    /// For a directory: its local name and the `sha256` hex of its files.
    pub local: Option<(String, String)>,
}

/// A git checkout's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitInfo {
    /// `HEAD`'s commit id.
    pub commit: String,
    /// Whether tracked files differ from `HEAD` or untracked files exist.
    pub dirty: bool,
    /// The `origin` remote's URL when it is a network URL (never a local path).
    pub source: Option<String>,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The git state of `dir` when it is the top of a git work tree (a context
/// that is a subdirectory of a repository is described by its content digest
/// only, since the commit covers more than the build reads). `None` without git.
pub fn git_info(dir: &Path) -> Option<GitInfo> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same = std::fs::canonicalize(&top).ok()? == std::fs::canonicalize(dir).ok()?;
    if !same {
        return None;
    }
    let commit = git(dir, &["rev-parse", "--verify", "HEAD"])?;
    let dirty = git(dir, &["status", "--porcelain"]).is_none_or(|s| !s.is_empty());
    let source = git(dir, &["remote", "get-url", "origin"]).filter(|url| {
        url.starts_with("https://") || url.starts_with("http://") || url.starts_with("ssh://")
            // scp-like `git@host:path`, not a local `/path` or `file://`
            || (url.contains('@') && url.contains(':') && !url.starts_with('/'))
    });
    Some(GitInfo {
        commit,
        dirty,
        source: source.map(|s| strip_credentials(&s)),
    })
}

/// `https://user:token@host/x` → `https://host/x`: a remote URL may carry a
/// token that must not be published.
fn strip_credentials(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            if path.is_empty() {
                format!("{scheme}://{host}")
            } else {
                format!("{scheme}://{host}/{path}")
            }
        }
        None => url.to_owned(),
    }
}

/// `sha256` hex of the whole context `name` after `.dockerignore` (paths,
/// types, modes, owners and contents; never times), as the cache keys see it.
pub(crate) fn context_sha256(engine: &super::Engine, name: &str) -> Result<String, EngineError> {
    let context = engine.context(name)?;
    // The selection the context's own key hashed when it took the whole
    // context: not walked and hashed again.
    let digest = super::hash::selection_digest(
        &context.dir,
        &[String::new()],
        Some(&context.ignore),
        &engine.hashes,
    )
    .map_err(super::io_error("hash the build context", &context.dir))?;
    Ok(digest.hex())
}

/// The base images `graph` uses, as resolved (`name@sha256:…`), sorted.
pub fn base_images(graph: &BuildGraph) -> Vec<String> {
    let mut out: Vec<String> = graph
        .vertices
        .iter()
        .filter_map(|v| match &v.op {
            GraphOp::Image { reference, .. } => Some(reference.clone()),
            _ => None,
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

fn platform_string(p: &Platform) -> String {
    match &p.variant {
        Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
        None => format!("{}/{}", p.os, p.architecture),
    }
}

/// A package URL for an image reference, as BuildKit writes them:
/// `pkg:docker/busybox@1.36?platform=linux%2Famd64` (the digest goes in the
/// descriptor's `digest`).
fn image_purl(reference: &str, platform: &Platform) -> (String, Option<String>) {
    // The store's names are normalised; one that is not is shown as it is.
    let parsed = hoist_untrusted::Reference::parse(reference).ok();
    let familiar = parsed
        .as_ref()
        .map_or_else(|| reference.to_owned(), |r| r.familiar_name());
    let tag = parsed.as_ref().and_then(|r| r.tag());
    let digest = parsed.as_ref().and_then(|r| r.digest());
    let version = tag.unwrap_or("latest");
    let platform = platform_string(platform).replace('/', "%2F");
    let hex = digest
        .and_then(|d| d.strip_prefix("sha256:"))
        .map(str::to_owned);
    (
        format!("pkg:docker/{familiar}@{version}?platform={platform}"),
        hex,
    )
}

/// The SLSA v1 provenance predicate of a build.
pub fn predicate(input: &ProvenanceInput) -> Value {
    let mut args = Map::new();
    for (k, v) in &input.build_args {
        args.insert(format!("build-arg:{k}"), json!(v));
    }
    for (k, v) in &input.labels {
        args.insert(format!("label:{k}"), json!(v));
    }
    if let Some(target) = &input.target {
        args.insert("target".into(), json!(target));
    }
    if let Some(epoch) = input.source_date_epoch {
        args.insert("source-date-epoch".into(), json!(epoch.to_string()));
    }
    let mut dependencies: Vec<Value> = input
        .base_images
        .iter()
        .map(|reference| {
            let (mut uri, hex) = image_purl(reference, &input.platform);
            if input.layout_images.contains(reference) {
                uri = uri.replacen("pkg:docker/", "pkg:oci/", 1);
            }
            match hex {
                Some(hex) => json!({"uri": uri, "digest": {"sha256": hex}}),
                None => json!({"uri": uri}),
            }
        })
        .collect();
    if input.context_sha256.is_some() || input.git.is_some() {
        let mut digest = Map::new();
        if let Some(hex) = &input.context_sha256 {
            digest.insert("sha256".into(), json!(hex));
        }
        let mut context = Map::new();
        context.insert("name".into(), json!("context"));
        if let Some(git) = &input.git {
            // A dirty tree is not the commit: record it only as a hint.
            if !git.dirty {
                digest.insert("gitCommit".into(), json!(git.commit));
            }
            if let Some(source) = &git.source {
                context.insert("uri".into(), json!(source));
            }
        }
        context.insert("digest".into(), Value::Object(digest));
        dependencies.push(Value::Object(context));
    }
    let mut locals = vec![json!({"name": "context"}), json!({"name": "dockerfile"})];
    for named in &input.named_contexts {
        args.insert(format!("context:{}", named.name), json!(named.value));
        match &named.local {
            Some((local, hex)) => {
                locals.push(json!({ "name": local }));
                dependencies.push(json!({"name": local, "digest": {"sha256": hex}}));
            }
            // Images are among the base images; a git or http context is
            // named by its URL.
            None if !named.value.starts_with("docker-image://")
                && !named.value.starts_with("oci-layout://") =>
            {
                dependencies.push(json!({ "uri": named.value }));
            }
            None => {}
        }
    }
    let mut metadata = Map::new();
    metadata.insert("startedOn".into(), json!(rfc3339(input.started)));
    metadata.insert("finishedOn".into(), json!(rfc3339(input.finished)));
    metadata.insert(
        "buildkit_completeness".into(),
        json!({"request": true, "resolvedDependencies": input.context_sha256.is_some()}),
    );
    metadata.insert(
        "buildkit_reproducible".into(),
        json!(input.source_date_epoch.is_some()),
    );
    if let Some(git) = &input.git {
        let mut vcs = Map::new();
        vcs.insert("revision".into(), json!(git.commit));
        if let Some(source) = &git.source {
            vcs.insert("source".into(), json!(source));
        }
        vcs.insert("dirty".into(), json!(git.dirty));
        metadata.insert("buildkit_metadata".into(), json!({ "vcs": vcs }));
    }
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "configSource": {
                    "path": input.dockerfile_name,
                    "digest": {"sha256": input.dockerfile_sha256},
                },
                "request": {
                    "frontend": "dockerfile.v0",
                    "args": args,
                    "locals": locals,
                },
            },
            "internalParameters": {
                "builderPlatform": platform_string(&Platform::host()),
            },
            "resolvedDependencies": dependencies,
        },
        "runDetails": {
            "builder": {
                "id": "",
                "version": {"hoist": env!("CARGO_PKG_VERSION")},
            },
            "metadata": metadata,
        },
    })
}

/// The in-toto statement about the image manifest `manifest`.
pub fn statement(input: &ProvenanceInput, manifest: &Descriptor) -> Value {
    let hex = manifest
        .digest()
        .to_string()
        .trim_start_matches("sha256:")
        .to_owned();
    let name = input
        .subject_name
        .as_ref()
        .map_or_else(|| "_".to_owned(), |n| image_purl(n, &input.platform).0);
    json!({
        "_type": STATEMENT_TYPE,
        "predicateType": SLSA_V1,
        "subject": [{"name": name, "digest": {"sha256": hex}}],
        "predicate": predicate(input),
    })
}

fn store_error(action: &str) -> impl FnOnce(hoist_cache::Error) -> EngineError + '_ {
    move |source| EngineError::Store {
        action: action.to_owned(),
        source,
    }
}

/// Stores `statement` as BuildKit's attestation manifest (a placeholder
/// config, the statement as its one layer) and returns its descriptor; the
/// caller lists it in an index next to the manifest it attests.
pub fn attestation_manifest(store: &Store, statement: &Value) -> Result<Descriptor, EngineError> {
    let bytes = serde_json::to_vec(statement)
        .map_err(|e| EngineError::Invalid(format!("cannot encode the provenance: {e}")))?;
    let committed = store
        .content()
        .put(&bytes)
        .map_err(store_error("store the provenance statement"))?;
    let predicate_type = statement["predicateType"].as_str().unwrap_or(SLSA_V1);
    let layer_digest = committed.digest.to_string();
    // BuildKit's placeholder config: a valid image config that runs nothing.
    let config = json!({
        "architecture": "unknown",
        "os": "unknown",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let config = store
        .put_json(&config, OCI_CONFIG)
        .map_err(store_error("store the attestation config"))?;
    let attestation = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config.digest().to_string(),
            "size": config.size(),
        },
        "layers": [{
            "mediaType": IN_TOTO,
            "digest": layer_digest,
            "size": committed.size,
            "annotations": {PREDICATE_TYPE: predicate_type},
        }],
    });
    store
        .put_json(&attestation, OCI_MANIFEST)
        .map_err(store_error("store the attestation manifest"))
}

/// Stores `statement` as an attestation of the image `manifest` (of
/// `platform`) and returns the descriptor of the index holding both: what
/// refs should point at.
pub fn attach(
    store: &Store,
    manifest: &Descriptor,
    platform: &Platform,
    statement: &Value,
) -> Result<Descriptor, EngineError> {
    let attestation = attestation_manifest(store, statement)?;
    let mut image_platform = json!({
        "architecture": platform.architecture,
        "os": platform.os,
    });
    if let Some(variant) = &platform.variant {
        image_platform["variant"] = json!(variant);
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": OCI_MANIFEST,
                "digest": manifest.digest().to_string(),
                "size": manifest.size(),
                "platform": image_platform,
            },
            attestation_entry(&attestation, manifest),
        ],
    });
    store
        .put_json(&index, OCI_INDEX)
        .map_err(store_error("store the image index"))
}

/// The provenance statements stored for the image manifest `manifest` under
/// `target` (an index; a plain manifest has none). Statements of SLSA v1 and
/// v0.2 are returned, as parsed JSON.
pub fn read(
    store: &Store,
    target: &Descriptor,
    manifest: &Digest,
) -> Result<Vec<Value>, EngineError> {
    if !hoist_cache::image::is_index(target.media_type().as_ref()) {
        return Ok(Vec::new());
    }
    let index = store
        .read_index(target.digest())
        .map_err(store_error("read the image index"))?;
    let wanted = manifest.to_string();
    let mut out = Vec::new();
    for entry in index.manifests() {
        let annotations = entry.annotations().clone().unwrap_or_default();
        if annotations.get(REFERENCE_TYPE).map(String::as_str) != Some("attestation-manifest")
            || annotations.get(REFERENCE_DIGEST) != Some(&wanted)
        {
            continue;
        }
        let attestation = store
            .read_manifest(entry.digest())
            .map_err(store_error("read the attestation manifest"))?;
        for layer in attestation.layers() {
            let predicate = layer
                .annotations()
                .as_ref()
                .and_then(|a| a.get(PREDICATE_TYPE).cloned())
                .unwrap_or_default();
            if layer.media_type().to_string() != IN_TOTO
                || (predicate != SLSA_V1 && predicate != SLSA_V02)
            {
                continue;
            }
            let bytes = store
                .content()
                .read_blob(layer.digest())
                .map_err(store_error("read the provenance statement"))?;
            let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
                EngineError::Invalid(format!(
                    "provenance statement {} is not JSON: {e}",
                    layer.digest()
                ))
            })?;
            out.push(value);
        }
    }
    Ok(out)
}

/// The named contexts of `request` for its provenance.
fn named_materials(
    engine: &Engine,
    request: &BuildRequest,
) -> Result<Vec<NamedMaterial>, EngineError> {
    let mut out = Vec::new();
    for (key, spec) in &request.named_contexts {
        let local = match &spec.source {
            super::named::NamedSource::Dir(_) => {
                let name = super::named::local_name(key);
                let hex = context_sha256(engine, &name)?;
                Some((name, hex))
            }
            _ => None,
        };
        out.push(NamedMaterial {
            name: key.clone(),
            value: strip_credentials(&spec.frontend_value(key)),
            local,
        });
    }
    Ok(out)
}

/// The provenance statement of `image`, built from `frontend` (the graph
/// of its platform).
pub(crate) fn build_statement(
    engine: &Engine,
    request: &BuildRequest,
    frontend: &BuildGraph,
    image: &Assembled,
    started: i64,
    finished: i64,
) -> Result<Value, BuildError> {
    use sha2::Digest as _;
    let stage = frontend.target_stage();
    // The build's own steps saved the stat cache already; files only this
    // walk hashed are hashed again next time rather than paying a second save.
    let context_sha256 = context_sha256(engine, "context")?;
    let input = ProvenanceInput {
        dockerfile_name: if request.dockerfile_name.is_empty() {
            "Dockerfile".to_owned()
        } else {
            request.dockerfile_name.clone()
        },
        dockerfile_sha256: hex::encode(sha2::Sha256::digest(request.dockerfile.as_bytes())),
        context_sha256: Some(context_sha256),
        git: git_info(&request.context_dir),
        build_args: request.options.build_args.clone(),
        labels: request.labels.clone(),
        target: request.options.target.clone(),
        source_date_epoch: request.repro.source_date_epoch,
        base_images: base_images(frontend),
        platform: stage.platform.clone(),
        started,
        finished,
        subject_name: request.repro.subject_name.clone(),
        named_contexts: named_materials(engine, request)?,
        layout_images: {
            let names: Vec<String> = super::named::layout_images(&request.named_contexts)
                .iter()
                .filter_map(|r| r.split_once('@').map(|(n, _)| format!("{n}@")))
                .collect();
            base_images(frontend)
                .into_iter()
                .filter(|r| names.iter().any(|n| r.starts_with(n.as_str())))
                .collect()
        },
    };
    Ok(statement(&input, &image.manifest))
}

/// The index entry of the attestation `attestation` of the image manifest
/// `manifest`, as BuildKit lists it.
pub fn attestation_entry(attestation: &Descriptor, manifest: &Descriptor) -> Value {
    json!({
        "mediaType": OCI_MANIFEST,
        "digest": attestation.digest().to_string(),
        "size": attestation.size(),
        "annotations": {
            REFERENCE_DIGEST: manifest.digest().to_string(),
            REFERENCE_TYPE: "attestation-manifest",
        },
        "platform": {"architecture": "unknown", "os": "unknown"},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform() -> Platform {
        Platform {
            os: "linux".into(),
            architecture: "amd64".into(),
            variant: None,
        }
    }

    #[test]
    fn purls_follow_buildkit() {
        let (uri, hex) = image_purl(
            &format!("docker.io/library/busybox:1.36@sha256:{}", "a".repeat(64)),
            &platform(),
        );
        assert_eq!(uri, "pkg:docker/busybox@1.36?platform=linux%2Famd64");
        assert_eq!(hex.unwrap(), "a".repeat(64));
        let (uri, _) = image_purl("localhost:5000/team/app", &platform());
        assert_eq!(
            uri,
            "pkg:docker/localhost:5000/team/app@latest?platform=linux%2Famd64"
        );
    }

    #[test]
    fn credentials_never_reach_the_statement() {
        assert_eq!(
            strip_credentials("https://user:token@example.com/r.git"),
            "https://example.com/r.git"
        );
        assert_eq!(
            strip_credentials("git@example.com:r.git"),
            "git@example.com:r.git"
        );
    }

    #[test]
    fn predicate_names_inputs() {
        let input = ProvenanceInput {
            dockerfile_name: "Dockerfile".into(),
            dockerfile_sha256: "d".repeat(64),
            context_sha256: Some("c".repeat(64)),
            git: Some(GitInfo {
                commit: "1".repeat(40),
                dirty: false,
                source: None,
            }),
            build_args: [("V".to_owned(), "1".to_owned())].into(),
            target: Some("app".into()),
            base_images: vec![format!(
                "docker.io/library/busybox:latest@sha256:{}",
                "b".repeat(64)
            )],
            platform: platform(),
            started: 0,
            finished: 60,
            ..Default::default()
        };
        let p = predicate(&input);
        let def = &p["buildDefinition"];
        assert_eq!(
            def["externalParameters"]["configSource"]["digest"]["sha256"],
            "d".repeat(64)
        );
        assert_eq!(
            def["externalParameters"]["request"]["args"]["build-arg:V"],
            "1"
        );
        assert_eq!(
            def["externalParameters"]["request"]["args"]["target"],
            "app"
        );
        assert_eq!(
            def["resolvedDependencies"][0]["digest"]["sha256"],
            "b".repeat(64)
        );
        assert_eq!(
            def["resolvedDependencies"][1]["digest"]["gitCommit"],
            "1".repeat(40)
        );
        assert_eq!(
            p["runDetails"]["metadata"]["finishedOn"],
            "1970-01-01T00:01:00Z"
        );
        assert_eq!(
            p["runDetails"]["builder"]["version"]["hoist"],
            env!("CARGO_PKG_VERSION")
        );
    }
}
