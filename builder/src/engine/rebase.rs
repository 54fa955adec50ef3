//! `hoist rebase`: move an image from one base image to another without
//! running its steps again.
//!
//! For each platform of the image, the layers of the old base at the bottom
//! of the image are replaced by the new base's; the layers the image added
//! are kept, byte for byte (the same blobs). The config is rewritten to
//! match: `rootfs.diff_ids`, the history (the old base's entries replaced by
//! the new base's), and the runtime settings the image inherited from the
//! old base without changing them (Env and Labels variable by variable,
//! ExposedPorts and Volumes entry by entry, Entrypoint, Cmd, WorkingDir,
//! User, StopSignal, Healthcheck and Shell as wholes) taken from the new
//! base. An image index is rebased platform by platform.
//!
//! Builds record their base as BuildKit does, in the manifest annotations
//! [`BASE_NAME`] and [`BASE_DIGEST`] (see `assemble`); [`recorded_base`]
//! reads them back so that the old base need not be named, and the rebased
//! image records its new base the same way.
//!
//! What is *not* done, by nature: the image's steps were run on the old
//! base, so a binary that links against a library of the old base is not
//! rebuilt against the new one. The caller warns about it.

use std::collections::BTreeMap;

use hoist_cache::image::{is_index, is_manifest};
use hoist_cache::{Descriptor, Digest, MediaType, Store};
use hoist_registry::Platform;
use serde_json::{json, Map, Value};

use super::assemble::rfc3339;

/// Manifest annotation: the reference of the image the build started from.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
/// Manifest annotation: the digest of the manifest the build started from.
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// The runtime settings taken from the new base when the image kept the old
/// base's value (as wholes; Env, Labels, ExposedPorts and Volumes merge by key).
const WHOLE_SETTINGS: &[&str] = &[
    "Entrypoint",
    "Cmd",
    "WorkingDir",
    "User",
    "StopSignal",
    "Healthcheck",
    "Shell",
];

/// Why a rebase was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum RebaseError {
    /// The old base's layers are not the bottom of the image's.
    #[error(
        "{platform}: the old base is not the base of this image: {detail} \
         (its layers must be the first layers of the image, in order)"
    )]
    NotAPrefix {
        /// The platform rebased.
        platform: String,
        /// Which layer differs.
        detail: String,
    },
    /// A base lacks the platform of one of the image's manifests.
    #[error("{what} has no {platform} image in the store (pull that platform first)")]
    MissingPlatform {
        /// `the old base` or `the new base`.
        what: &'static str,
        /// The platform.
        platform: String,
    },
    /// The image names no base of its own and none was given.
    #[error(
        "the image records no base image (org.opencontainers.image.base.digest): name the old base with --from"
    )]
    NoRecordedBase,
    /// A document of the store is not what it should be.
    #[error("{0}")]
    Invalid(String),
    /// The store failed.
    #[error("failed to {action}")]
    Store {
        /// What was attempted.
        action: String,
        /// The cause.
        #[source]
        source: hoist_cache::Error,
    },
}

fn store_error(action: impl Into<String>) -> impl FnOnce(hoist_cache::Error) -> RebaseError {
    let action = action.into();
    move |source| RebaseError::Store { action, source }
}

/// An image named for a rebase: what a ref points at (a manifest or an
/// index) and, when known, its name (recorded in the annotations).
#[derive(Clone, Debug)]
pub struct Named {
    /// The ref target or manifest.
    pub target: Descriptor,
    /// The fully qualified name, e.g. `docker.io/library/busybox:1.36`.
    pub name: Option<String>,
}

/// What to rebase onto what.
#[derive(Clone, Debug)]
pub struct RebaseRequest {
    /// The image to rebase.
    pub image: Named,
    /// Its current base.
    pub from: Named,
    /// The base to put under it.
    pub to: Named,
    /// The config's `created` (seconds since the epoch) unless
    /// `source_date_epoch` is set.
    pub now: i64,
    /// SOURCE_DATE_EPOCH: `created` is it, and the new base's history
    /// entries later than it are clamped to it (as a build does).
    pub source_date_epoch: Option<i64>,
    /// Attach an in-toto provenance statement naming the three images,
    /// the subject named after this name (`None`: no provenance).
    pub provenance: Option<Option<String>>,
}

/// One rebased platform.
#[derive(Clone, Debug)]
pub struct RebasedPlatform {
    /// `linux/amd64`.
    pub platform: String,
    /// The new image manifest.
    pub manifest: Descriptor,
    /// How many layers of the old base were replaced.
    pub old_base_layers: usize,
    /// How many layers of the new base took their place.
    pub new_base_layers: usize,
    /// How many of the image's own layers were kept.
    pub kept_layers: usize,
}

/// The result of a rebase.
#[derive(Clone, Debug)]
pub struct Rebased {
    /// What refs should point at: the new manifest, or an index.
    pub target: Descriptor,
    /// Per platform, in the image's order.
    pub platforms: Vec<RebasedPlatform>,
}

/// The base an image's manifest records (for an index: its first image
/// manifest's): `(name, digest)`; the name may be absent.
pub fn recorded_base(
    store: &Store,
    image: &Descriptor,
) -> Result<Option<(Option<String>, Digest)>, RebaseError> {
    let manifests = image_manifests(store, image)?;
    let Some((descriptor, _)) = manifests.first() else {
        return Ok(None);
    };
    let manifest = read_json(store, descriptor.digest(), "the image manifest")?;
    let annotations = &manifest["annotations"];
    let Some(digest) = annotations[BASE_DIGEST].as_str() else {
        return Ok(None);
    };
    let digest = digest
        .parse()
        .map_err(|_| RebaseError::Invalid(format!("bad {BASE_DIGEST} annotation {digest:?}")))?;
    let name = annotations[BASE_NAME].as_str().map(str::to_owned);
    Ok(Some((name, digest)))
}

/// The descriptor of the manifest or index stored under `digest` (its media
/// type read from the document), `None` when the store lacks it.
pub fn stored_descriptor(
    store: &Store,
    digest: &Digest,
) -> Result<Option<Descriptor>, RebaseError> {
    if !store.content().contains(digest) {
        return Ok(None);
    }
    let bytes = store
        .content()
        .read_blob(digest)
        .map_err(store_error(format!("read {digest}")))?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| RebaseError::Invalid(format!("{digest} is not JSON: {e}")))?;
    let media_type = match value["mediaType"].as_str() {
        Some(t) => t.to_owned(),
        None if value.get("manifests").is_some() => {
            "application/vnd.oci.image.index.v1+json".to_owned()
        }
        None => "application/vnd.oci.image.manifest.v1+json".to_owned(),
    };
    Ok(Some(Descriptor::new(
        MediaType::from(media_type.as_str()),
        bytes.len() as u64,
        digest.clone(),
    )))
}

/// The platforms of the image manifests of `image` (a manifest or an index).
pub fn image_platforms(store: &Store, image: &Descriptor) -> Result<Vec<Platform>, RebaseError> {
    Ok(image_manifests(store, image)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Rebases `request.image` from `request.from` onto `request.to`, writing
/// the new manifests, configs and index to the store (no ref is changed).
pub fn rebase(store: &Store, request: &RebaseRequest) -> Result<Rebased, RebaseError> {
    let manifests = image_manifests(store, &request.image.target)?;
    let mut platforms = Vec::new();
    for (descriptor, platform) in &manifests {
        platforms.push(rebase_manifest(store, request, descriptor, platform)?);
    }
    let statements = match &request.provenance {
        Some(subject) => platforms
            .iter()
            .map(|p| Some(statement(request, p, subject.as_deref())))
            .collect(),
        None => vec![None; platforms.len()],
    };
    let target = if is_index(request.image.target.media_type().as_ref()) {
        rebuild_index(store, &request.image.target, &platforms, &statements)?
    } else {
        match (&platforms[..], &statements[..]) {
            ([one], [Some(statement)]) => single_index(store, one, statement)?,
            ([one], _) => one.manifest.clone(),
            _ => return Err(RebaseError::Invalid("one manifest expected".into())),
        }
    };
    Ok(Rebased { target, platforms })
}

/// The image manifests of `target` with their platforms: itself, or every
/// image manifest of an index except attestations. Each must be in the store.
fn image_manifests(
    store: &Store,
    target: &Descriptor,
) -> Result<Vec<(Descriptor, Platform)>, RebaseError> {
    let media_type = target.media_type().to_string();
    if is_manifest(&media_type) {
        let platform = manifest_platform(store, target.digest())?;
        return Ok(vec![(target.clone(), platform)]);
    }
    if !is_index(&media_type) {
        return Err(RebaseError::Invalid(format!(
            "{} is a {media_type}, not an image",
            target.digest()
        )));
    }
    let index = store
        .read_index(target.digest())
        .map_err(store_error("read the image index"))?;
    let mut out = Vec::new();
    for entry in index.manifests() {
        if !is_manifest(entry.media_type().as_ref()) || is_attestation(entry) {
            continue;
        }
        if !store.content().contains(entry.digest()) {
            let platform = entry
                .platform()
                .as_ref()
                .map(|p| Platform::from(p).to_string())
                .unwrap_or_default();
            return Err(RebaseError::Invalid(format!(
                "the store lacks the {platform} manifest of this image index: pull every platform of it first"
            )));
        }
        let platform = manifest_platform(store, entry.digest())?;
        out.push((entry.clone(), platform));
    }
    if out.is_empty() {
        return Err(RebaseError::Invalid(format!(
            "image index {} holds no image manifest",
            target.digest()
        )));
    }
    Ok(out)
}

fn is_attestation(entry: &Descriptor) -> bool {
    entry
        .annotations()
        .as_ref()
        .and_then(|a| a.get(super::provenance::REFERENCE_TYPE))
        .is_some_and(|t| t == "attestation-manifest")
}

fn manifest_platform(store: &Store, digest: &Digest) -> Result<Platform, RebaseError> {
    let manifest = read_json(store, digest, "an image manifest")?;
    let config_digest = config_digest(&manifest)?;
    let config = read_json(store, &config_digest, "an image config")?;
    Ok(config_platform(&config))
}

fn config_platform(config: &Value) -> Platform {
    let text = |k: &str| config[k].as_str().unwrap_or_default().to_owned();
    Platform::new(&text("os"), &text("architecture"), &text("variant"))
}

fn read_json(store: &Store, digest: &Digest, what: &str) -> Result<Value, RebaseError> {
    let bytes = store
        .content()
        .read_blob(digest)
        .map_err(store_error(format!("read {what} {digest}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| RebaseError::Invalid(format!("{what} {digest} is not JSON: {e}")))
}

fn config_digest(manifest: &Value) -> Result<Digest, RebaseError> {
    manifest["config"]["digest"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| RebaseError::Invalid("a manifest without a config digest".into()))
}

/// The manifest of `base` for `platform`, exactly (not a compatible one).
fn base_manifest(
    store: &Store,
    base: &Named,
    platform: &Platform,
    what: &'static str,
) -> Result<Descriptor, RebaseError> {
    let missing = || RebaseError::MissingPlatform {
        what,
        platform: platform.to_string(),
    };
    let found = hoist_registry::stored_manifest(store, &base.target, platform)
        .map_err(store_error(format!("read {what}")))?
        .ok_or_else(missing)?;
    let own = manifest_platform(store, found.digest())?;
    // A config that names no platform (a hand-made image) suits any.
    if own != *platform && !own.architecture.is_empty() {
        return Err(missing());
    }
    Ok(found)
}

fn layers(manifest: &Value) -> Vec<Value> {
    manifest["layers"].as_array().cloned().unwrap_or_default()
}

fn diff_ids(config: &Value) -> Vec<Value> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn history(config: &Value) -> Vec<Value> {
    config["history"].as_array().cloned().unwrap_or_default()
}

fn rebase_manifest(
    store: &Store,
    request: &RebaseRequest,
    descriptor: &Descriptor,
    platform: &Platform,
) -> Result<RebasedPlatform, RebaseError> {
    let old_descriptor = base_manifest(store, &request.from, platform, "the old base")?;
    let new_descriptor = base_manifest(store, &request.to, platform, "the new base")?;
    let image = read_json(store, descriptor.digest(), "the image manifest")?;
    let image_config = read_json(store, &config_digest(&image)?, "the image config")?;
    let old = read_json(store, old_descriptor.digest(), "the old base's manifest")?;
    let old_config = read_json(store, &config_digest(&old)?, "the old base's config")?;
    let new = read_json(store, new_descriptor.digest(), "the new base's manifest")?;
    let new_config = read_json(store, &config_digest(&new)?, "the new base's config")?;

    let refuse = |detail: String| RebaseError::NotAPrefix {
        platform: platform.to_string(),
        detail,
    };
    let (image_layers, old_layers, new_layers) = (layers(&image), layers(&old), layers(&new));
    let (image_ids, old_ids, new_ids) = (
        diff_ids(&image_config),
        diff_ids(&old_config),
        diff_ids(&new_config),
    );
    for (what, layers, ids) in [
        ("the image", &image_layers, &image_ids),
        ("the old base", &old_layers, &old_ids),
        ("the new base", &new_layers, &new_ids),
    ] {
        if layers.len() != ids.len() {
            return Err(RebaseError::Invalid(format!(
                "{platform}: {what} has {} layers but {} diff_ids",
                layers.len(),
                ids.len()
            )));
        }
    }
    if old_layers.len() > image_layers.len() {
        return Err(refuse(format!(
            "it has {} layers, the image only {}",
            old_layers.len(),
            image_layers.len()
        )));
    }
    for (n, (layer, id)) in old_layers.iter().zip(&old_ids).enumerate() {
        if layer["digest"] != image_layers[n]["digest"] || *id != image_ids[n] {
            return Err(refuse(format!(
                "layer {} of the image is {}, of the old base {}",
                n + 1,
                image_layers[n]["digest"].as_str().unwrap_or("?"),
                layer["digest"].as_str().unwrap_or("?")
            )));
        }
    }
    let kept = old_layers.len();

    // The old base's history entries are the first ones of the image's.
    let image_history = history(&image_config);
    let old_history = history(&old_config);
    let same_entry = |a: &Value, b: &Value| {
        a["created_by"] == b["created_by"]
            && a["empty_layer"].as_bool().unwrap_or(false)
                == b["empty_layer"].as_bool().unwrap_or(false)
    };
    let inherited = old_history.len() <= image_history.len()
        && old_history
            .iter()
            .zip(&image_history)
            .all(|(a, b)| same_entry(a, b));
    if !inherited {
        return Err(refuse(
            "the image's history does not start with the old base's".into(),
        ));
    }
    let mut new_history = history(&new_config);
    if let Some(epoch) = request.source_date_epoch {
        for entry in &mut new_history {
            let later = entry["created"]
                .as_str()
                .and_then(|t| hoist_cache::units::parse_rfc3339(t).ok())
                .is_some_and(|t| t > epoch);
            if later {
                entry["created"] = json!(rfc3339(epoch));
            }
        }
    }
    new_history.extend(image_history[old_history.len()..].iter().cloned());

    let mut all_layers = new_layers.clone();
    all_layers.extend(image_layers[kept..].iter().cloned());
    let mut all_ids = new_ids.clone();
    all_ids.extend(image_ids[kept..].iter().cloned());

    let mut config = image_config.clone();
    config["created"] = json!(rfc3339(request.source_date_epoch.unwrap_or(request.now)));
    config["history"] = Value::Array(new_history);
    config["rootfs"] = json!({"type": "layers", "diff_ids": all_ids});
    config["config"] = runtime_config(
        &image_config["config"],
        &old_config["config"],
        &new_config["config"],
    );
    let config_media_type = image["config"]["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.config.v1+json")
        .to_owned();
    let config_descriptor = store
        .put_json(&config, &config_media_type)
        .map_err(store_error("store the rebased config"))?;

    let manifest_media_type = image["mediaType"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| descriptor.media_type().to_string());
    let oci = manifest_media_type == "application/vnd.oci.image.manifest.v1+json";
    let mut manifest = image.clone();
    manifest["config"]["digest"] = json!(config_descriptor.digest().to_string());
    manifest["config"]["size"] = json!(config_descriptor.size());
    manifest["layers"] = Value::Array(
        all_layers
            .into_iter()
            .map(|mut l| {
                // The same blobs under the manifest's own family of media types.
                if let Some(t) = l["mediaType"].as_str() {
                    l["mediaType"] = json!(hoist_cache::image::layer_media_type_as(t, oci));
                }
                l
            })
            .collect(),
    );
    let mut annotations = manifest["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    annotations.insert(
        BASE_DIGEST.into(),
        json!(new_descriptor.digest().to_string()),
    );
    match &request.to.name {
        Some(name) => {
            annotations.insert(BASE_NAME.into(), json!(name));
        }
        None => {
            annotations.remove(BASE_NAME);
        }
    }
    manifest["annotations"] = Value::Object(annotations);
    let manifest = store
        .put_json(&manifest, &manifest_media_type)
        .map_err(store_error("store the rebased manifest"))?;
    Ok(RebasedPlatform {
        platform: platform.to_string(),
        manifest,
        old_base_layers: kept,
        new_base_layers: new_layers.len(),
        kept_layers: image_layers.len() - kept,
    })
}

/// The image's runtime config with what it inherited unchanged from `old`
/// replaced by `new`'s.
fn runtime_config(image: &Value, old: &Value, new: &Value) -> Value {
    let mut out = image.as_object().cloned().unwrap_or_default();
    for key in WHOLE_SETTINGS {
        if image.get(key) == old.get(key) {
            match new.get(key) {
                Some(v) => out.insert((*key).into(), v.clone()),
                None => out.remove(*key),
            };
        }
    }
    let env = merge_env(
        &strings(&image["Env"]),
        &strings(&old["Env"]),
        &strings(&new["Env"]),
    );
    if env.is_empty() {
        out.remove("Env");
    } else {
        out.insert("Env".into(), json!(env));
    }
    for key in ["Labels", "ExposedPorts", "Volumes"] {
        let merged = merge_map(&image[key], &old[key], &new[key]);
        if merged.is_empty() {
            out.remove(key);
        } else {
            out.insert(key.into(), Value::Object(merged));
        }
    }
    Value::Object(out)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Env by variable: the new base's variables first (with the image's value
/// where the image changed the old base's), then the image's own.
fn merge_env(image: &[String], old: &[String], new: &[String]) -> Vec<String> {
    let key = |e: &str| e.split('=').next().unwrap_or_default().to_owned();
    let find = |list: &[String], k: &str| list.iter().find(|e| key(e) == k).cloned();
    let changed = |e: &String| find(old, &key(e)).as_ref() != Some(e);
    let mut out: Vec<String> = new
        .iter()
        .map(|n| match find(image, &key(n)) {
            Some(own) if changed(&own) => own,
            _ => n.clone(),
        })
        .collect();
    for e in image {
        if find(new, &key(e)).is_none() && changed(e) {
            out.push(e.clone());
        }
    }
    out
}

/// A map by key: an entry the image kept from the old base follows the new
/// base (gone when the new base lacks it); the image's own entries stay.
fn merge_map(image: &Value, old: &Value, new: &Value) -> Map<String, Value> {
    let empty = Map::new();
    let (image, old, new) = (
        image.as_object().unwrap_or(&empty),
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut out: BTreeMap<String, Value> = new.clone().into_iter().collect();
    for (k, v) in image {
        if old.get(k) != Some(v) {
            out.insert(k.clone(), v.clone());
        }
    }
    out.into_iter().collect()
}

/// The in-toto statement of one rebased platform: a SLSA v1 predicate whose
/// build is the rebase, its three inputs resolved dependencies.
fn statement(request: &RebaseRequest, platform: &RebasedPlatform, subject: Option<&str>) -> Value {
    let image_ref = |n: &Named| {
        json!({
            "name": n.name,
            "digest": n.target.digest().to_string(),
        })
    };
    let dependency = |n: &Named| {
        let digest = n.target.digest().to_string();
        json!({
            "uri": n.name.clone().unwrap_or_default(),
            "digest": {"sha256": digest.trim_start_matches("sha256:")},
        })
    };
    let hex = platform
        .manifest
        .digest()
        .to_string()
        .trim_start_matches("sha256:")
        .to_owned();
    json!({
        "_type": super::provenance::STATEMENT_TYPE,
        "predicateType": super::provenance::SLSA_V1,
        "subject": [{"name": subject.unwrap_or("_"), "digest": {"sha256": hex}}],
        "predicate": {
            "buildDefinition": {
                "buildType": "urn:hoist:rebase:v1",
                "externalParameters": {
                    "image": image_ref(&request.image),
                    "from": image_ref(&request.from),
                    "to": image_ref(&request.to),
                    "platform": platform.platform,
                },
                "internalParameters": {
                    "sourceDateEpoch": request.source_date_epoch,
                    "oldBaseLayers": platform.old_base_layers,
                    "newBaseLayers": platform.new_base_layers,
                    "keptLayers": platform.kept_layers,
                },
                "resolvedDependencies": [
                    dependency(&request.image),
                    dependency(&request.from),
                    dependency(&request.to),
                ],
            },
            "runDetails": {
                "builder": {"id": "hoist rebase"},
                "metadata": {"stepsRerun": false},
            },
        },
    })
}

/// An index of one manifest and its attestation.
fn single_index(
    store: &Store,
    platform: &RebasedPlatform,
    statement: &Value,
) -> Result<Descriptor, RebaseError> {
    let entry = manifest_entry(platform);
    let attestation = attestation_entry(store, platform, statement)?;
    put_index(
        store,
        json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [entry, attestation],
        }),
    )
}

fn manifest_entry(platform: &RebasedPlatform) -> Value {
    let p = Platform::parse(&platform.platform).unwrap_or_else(|_| Platform::host());
    let mut platform_json = json!({"architecture": p.architecture, "os": p.os});
    if !p.variant.is_empty() {
        platform_json["variant"] = json!(p.variant);
    }
    json!({
        "mediaType": platform.manifest.media_type().to_string(),
        "digest": platform.manifest.digest().to_string(),
        "size": platform.manifest.size(),
        "platform": platform_json,
    })
}

fn attestation_entry(
    store: &Store,
    platform: &RebasedPlatform,
    statement: &Value,
) -> Result<Value, RebaseError> {
    let attestation = super::provenance::attestation_manifest(store, statement)
        .map_err(|e| RebaseError::Invalid(e.to_string()))?;
    Ok(super::provenance::attestation_entry(
        &attestation,
        &platform.manifest,
    ))
}

/// The image's index with each image manifest replaced by its rebased one;
/// the attestations of the old manifests are dropped (they describe a build
/// that did not make the new ones), new ones added with provenance.
fn rebuild_index(
    store: &Store,
    target: &Descriptor,
    platforms: &[RebasedPlatform],
    statements: &[Option<Value>],
) -> Result<Descriptor, RebaseError> {
    let mut index = read_json(store, target.digest(), "the image index")?;
    let entries = index["manifests"].as_array().cloned().unwrap_or_default();
    let mut out = Vec::new();
    let mut next = platforms.iter();
    for entry in entries {
        let media_type = entry["mediaType"].as_str().unwrap_or_default();
        let attestation = entry["annotations"][super::provenance::REFERENCE_TYPE].as_str()
            == Some("attestation-manifest");
        if attestation {
            continue;
        }
        if !is_manifest(media_type) {
            out.push(entry);
            continue;
        }
        let Some(rebased) = next.next() else {
            return Err(RebaseError::Invalid("the index changed meanwhile".into()));
        };
        let mut entry = entry;
        entry["digest"] = json!(rebased.manifest.digest().to_string());
        entry["size"] = json!(rebased.manifest.size());
        entry["mediaType"] = json!(rebased.manifest.media_type().to_string());
        out.push(entry);
    }
    for (platform, statement) in platforms.iter().zip(statements) {
        if let Some(statement) = statement {
            out.push(attestation_entry(store, platform, statement)?);
        }
    }
    index["manifests"] = Value::Array(out);
    put_index(store, index)
}

fn put_index(store: &Store, index: Value) -> Result<Descriptor, RebaseError> {
    let media_type = index["mediaType"]
        .as_str()
        .unwrap_or("application/vnd.oci.image.index.v1+json")
        .to_owned();
    let descriptor = store
        .put_json(&index, &media_type)
        .map_err(store_error("store the rebased index"))?;
    Ok(Descriptor::new(
        MediaType::from(media_type.as_str()),
        descriptor.size(),
        descriptor.digest().clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

    fn fake(name: &str) -> String {
        format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name))
        )
    }

    /// An image manifest and config in `store` (layer blobs are not needed:
    /// a rebase never reads them).
    fn image(store: &Store, arch: &str, layers: &[&str], env: &[&str]) -> Descriptor {
        let config = json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": env},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| fake(&format!("diff {l}"))).collect::<Vec<_>>()},
            "history": layers.iter().map(|l| json!({"created_by": format!("make {l}")})).collect::<Vec<_>>(),
        });
        let config = store
            .put_json(&config, "application/vnd.oci.image.config.v1+json")
            .unwrap();
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config.digest().to_string(), "size": config.size()},
            "layers": layers.iter().map(|l| json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": fake(l), "size": 1})).collect::<Vec<_>>(),
        });
        store.put_json(&manifest, OCI_MANIFEST).unwrap()
    }

    fn index(store: &Store, entries: &[(&str, &Descriptor)], attest: bool) -> Descriptor {
        let mut manifests: Vec<Value> = entries
            .iter()
            .map(|(arch, d)| {
                json!({"mediaType": OCI_MANIFEST, "digest": d.digest().to_string(),
                       "size": d.size(), "platform": {"os": "linux", "architecture": arch}})
            })
            .collect();
        if attest {
            manifests.push(json!({"mediaType": OCI_MANIFEST, "digest": entries[0].1.digest().to_string(),
                "size": entries[0].1.size(), "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"}}));
        }
        let d = store
            .put_json(
                &json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
                OCI_INDEX,
            )
            .unwrap();
        Descriptor::new(MediaType::from(OCI_INDEX), d.size(), d.digest().clone())
    }

    fn named(target: Descriptor) -> Named {
        Named { target, name: None }
    }

    fn request(image: Descriptor, from: Descriptor, to: Descriptor) -> RebaseRequest {
        RebaseRequest {
            image: named(image),
            from: named(from),
            to: named(to),
            now: 1,
            source_date_epoch: None,
            provenance: None,
        }
    }

    fn layer_names(store: &Store, manifest: &Descriptor) -> Vec<String> {
        let m = read_json(store, manifest.digest(), "m").unwrap();
        layers(&m)
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn an_index_is_rebased_platform_by_platform() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = index(
            &store,
            &[
                ("amd64", &image(&store, "amd64", &["a1"], &["V=old"])),
                ("arm64", &image(&store, "arm64", &["b1"], &["V=old"])),
            ],
            false,
        );
        let new_arm = image(&store, "arm64", &["b2"], &["V=new"]);
        let new = index(
            &store,
            &[
                ("arm64", &new_arm),
                ("amd64", &image(&store, "amd64", &["a2", "a3"], &["V=new"])),
            ],
            false,
        );
        let app = index(
            &store,
            &[
                (
                    "amd64",
                    &image(&store, "amd64", &["a1", "x"], &["V=old", "APP=1"]),
                ),
                (
                    "arm64",
                    &image(&store, "arm64", &["b1", "y"], &["V=old", "APP=1"]),
                ),
            ],
            true,
        );
        let rebased = rebase(&store, &request(app, old.clone(), new)).unwrap();
        let out = read_json(&store, rebased.target.digest(), "index").unwrap();
        let entries = out["manifests"].as_array().unwrap();
        // The old attestation is gone; one manifest per platform, in order.
        assert_eq!(entries.len(), 2);
        assert_eq!(rebased.platforms[0].platform, "linux/amd64");
        assert_eq!(
            layer_names(&store, &rebased.platforms[0].manifest),
            [fake("a2"), fake("a3"), fake("x")]
        );
        assert_eq!(
            layer_names(&store, &rebased.platforms[1].manifest),
            [fake("b2"), fake("y")]
        );
        assert_eq!(entries[1]["platform"]["architecture"], "arm64");
        assert_eq!(
            entries[1]["digest"],
            rebased.platforms[1].manifest.digest().to_string()
        );
        let m = read_json(&store, rebased.platforms[1].manifest.digest(), "m").unwrap();
        let config = read_json(&store, &config_digest(&m).unwrap(), "c").unwrap();
        assert_eq!(config["config"]["Env"], json!(["V=new", "APP=1"]));
        assert_eq!(config["history"][0]["created_by"], "make b2");
        // It records the new base's manifest of its own platform.
        assert_eq!(m["annotations"][BASE_DIGEST], new_arm.digest().to_string());

        // A new base without one of the platforms is refused.
        let amd_only = index(
            &store,
            &[("amd64", &image(&store, "amd64", &["a2"], &[]))],
            false,
        );
        let app2 = index(
            &store,
            &[
                ("amd64", &image(&store, "amd64", &["a1", "x"], &[])),
                ("arm64", &image(&store, "arm64", &["b1", "y"], &[])),
            ],
            false,
        );
        let err = rebase(&store, &request(app2.clone(), old.clone(), amd_only)).unwrap_err();
        assert!(matches!(err, RebaseError::MissingPlatform { .. }), "{err}");
        // An old base that is not the image's on one platform is refused.
        let wrong = index(
            &store,
            &[
                ("amd64", &image(&store, "amd64", &["a1"], &[])),
                ("arm64", &image(&store, "arm64", &["zz"], &[])),
            ],
            false,
        );
        let err = rebase(&store, &request(app2, wrong, old)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("linux/arm64: the old base is not the base"),
            "{err}"
        );
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn env_follows_the_new_base_where_the_image_kept_the_old_one() {
        let old = v(&["PATH=/old", "BASE=1", "GONE=x"]);
        let new = v(&["PATH=/new", "BASE=2", "ADDED=y"]);
        let image = v(&["PATH=/old", "BASE=mine", "GONE=x", "APP=1"]);
        assert_eq!(
            merge_env(&image, &old, &new),
            v(&["PATH=/new", "BASE=mine", "ADDED=y", "APP=1"])
        );
    }

    #[test]
    fn whole_settings_and_maps_follow_the_new_base_unless_changed() {
        let old = json!({"Cmd": ["sh"], "User": "a", "Labels": {"base": "1", "keep": "k"},
                         "ExposedPorts": {"80/tcp": {}}});
        let new = json!({"Cmd": ["bash"], "WorkingDir": "/w", "Labels": {"base": "2"}});
        let image = json!({"Cmd": ["sh"], "User": "app", "Labels": {"base": "1", "keep": "k", "app": "x"},
                           "ExposedPorts": {"80/tcp": {}, "8080/tcp": {}}});
        let out = runtime_config(&image, &old, &new);
        assert_eq!(out["Cmd"], json!(["bash"]));
        assert_eq!(out["User"], json!("app"));
        assert_eq!(out["WorkingDir"], json!("/w"));
        assert_eq!(out["Labels"], json!({"app": "x", "base": "2"}));
        assert_eq!(out["ExposedPorts"], json!({"8080/tcp": {}}));
    }
}
