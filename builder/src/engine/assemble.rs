//! Image assembly: the config as Docker writes it, and the manifest.

use std::collections::BTreeMap;

use hoist_cache::{Descriptor, Store};
use hoist_frontend::graph::{BuildGraph, ImageConfig, Op as GraphOp, Platform, Stage};
use serde_json::{json, Map, Value};

use super::artifact::Layer;
use super::EngineError;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image written to the content store.
#[derive(Clone, Debug)]
pub struct Assembled {
    /// The manifest's descriptor (what refs point at).
    pub manifest: Descriptor,
    /// `sha256:<hex>` of the config (the image ID).
    pub config_digest: String,
    /// The config document.
    pub config: Value,
}

/// The workspace's one RFC 3339 pair, under the names callers of this
/// module use (`hoist_cache::units` is the place to import them from).
pub use hoist_cache::units::format_rfc3339 as rfc3339;

fn parse_rfc3339(text: &str) -> Option<i64> {
    hoist_cache::units::parse_rfc3339(text).ok()
}

/// Sets the `created` of history entries later than `epoch` to `epoch`.
fn clamp_history(history: &mut [Value], epoch: i64) {
    for entry in history {
        let later = entry["created"]
            .as_str()
            .and_then(parse_rfc3339)
            .is_some_and(|t| t > epoch);
        if later {
            entry["created"] = json!(rfc3339(epoch));
        }
    }
}

/// The raw config of the image a stage ultimately starts from, if any: follows
/// the root input of each vertex down to an image.
pub fn base_image_config(
    store: &Store,
    graph: &BuildGraph,
    stage: &Stage,
) -> Result<Option<Value>, EngineError> {
    let mut vertex = stage.root;
    loop {
        let v = &graph.vertices[vertex];
        match &v.op {
            GraphOp::Image { reference, .. } => {
                let Some((_, digest)) = reference.split_once('@') else {
                    return Ok(None);
                };
                let parsed = digest
                    .parse()
                    .map_err(|_| EngineError::Invalid(format!("bad digest in {reference}")))?;
                let manifest =
                    store
                        .read_manifest(&parsed)
                        .map_err(|source| EngineError::Store {
                            action: format!("read manifest of {reference}"),
                            source,
                        })?;
                let bytes = store
                    .content()
                    .read_blob(manifest.config().digest())
                    .map_err(|source| EngineError::Store {
                        action: format!("read config of {reference}"),
                        source,
                    })?;
                return serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| EngineError::Invalid(format!("bad config of {reference}: {e}")));
            }
            GraphOp::Exec(e) => vertex = v.inputs[e.root],
            GraphOp::File(f) => match f.root {
                Some(r) => vertex = v.inputs[r],
                None => return Ok(None),
            },
            _ => return Ok(None),
        }
    }
}

/// The image a stage ultimately starts from, as its pinned reference
/// splits: (`docker.io/library/busybox:latest`, `sha256:…` of the manifest).
pub fn base_image_reference(graph: &BuildGraph, stage: &Stage) -> Option<(String, String)> {
    let mut vertex = stage.root;
    loop {
        let v = &graph.vertices[vertex];
        match &v.op {
            GraphOp::Image { reference, .. } => {
                let (name, digest) = reference.split_once('@')?;
                return Some((name.to_owned(), digest.to_owned()));
            }
            GraphOp::Exec(e) => vertex = *v.inputs.get(e.root)?,
            GraphOp::File(f) => vertex = *v.inputs.get(f.root?)?,
            _ => return None,
        }
    }
}

fn runtime_config(config: &ImageConfig, labels: &BTreeMap<String, String>) -> Value {
    let mut c = Map::new();
    if !config.user.is_empty() {
        c.insert("User".into(), json!(config.user));
    }
    if !config.exposed_ports.is_empty() {
        let ports: Map<String, Value> = config
            .exposed_ports
            .iter()
            .map(|p| (p.clone(), json!({})))
            .collect();
        c.insert("ExposedPorts".into(), Value::Object(ports));
    }
    c.insert("Env".into(), json!(config.env));
    if let Some(entrypoint) = &config.entrypoint {
        c.insert("Entrypoint".into(), json!(entrypoint));
    }
    if let Some(cmd) = &config.cmd {
        c.insert("Cmd".into(), json!(cmd));
    }
    if !config.volumes.is_empty() {
        let volumes: Map<String, Value> = config
            .volumes
            .iter()
            .map(|v| (v.clone(), json!({})))
            .collect();
        c.insert("Volumes".into(), Value::Object(volumes));
    }
    if !config.working_dir.is_empty() {
        c.insert("WorkingDir".into(), json!(config.working_dir));
    }
    let mut all_labels = config.labels.clone();
    all_labels.extend(labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    if !all_labels.is_empty() {
        c.insert("Labels".into(), json!(all_labels));
    }
    if !config.stop_signal.is_empty() {
        c.insert("StopSignal".into(), json!(config.stop_signal));
    }
    if config.args_escaped {
        c.insert("ArgsEscaped".into(), json!(true));
    }
    if let Some(h) = &config.healthcheck {
        let mut hc = Map::new();
        hc.insert("Test".into(), json!(h.test));
        for (name, value) in [
            ("Interval", h.interval),
            ("Timeout", h.timeout),
            ("StartPeriod", h.start_period),
            ("StartInterval", h.start_interval),
        ] {
            if value != 0 {
                hc.insert(name.into(), json!(value));
            }
        }
        if h.retries != 0 {
            hc.insert("Retries".into(), json!(h.retries));
        }
        c.insert("Healthcheck".into(), Value::Object(hc));
    }
    if !config.on_build.is_empty() {
        c.insert("OnBuild".into(), json!(config.on_build));
    }
    if !config.shell.is_empty() {
        c.insert("Shell".into(), json!(config.shell));
    }
    Value::Object(c)
}

/// Writes the config and manifest of `stage` with `layers` to the store.
///
/// `created` is the time of the config and of the history entries this build
/// adds. With `source_date_epoch`, the base image's history entries later than
/// it are clamped to it too, as BuildKit does (older ones keep their times:
/// they are part of the pinned base). Nothing else of the host enters the
/// JSON: keys are written in a fixed (sorted) order, labels, ports and volumes
/// come from sorted maps, env in Dockerfile order.
pub fn assemble(
    store: &Store,
    graph: &BuildGraph,
    stage: &Stage,
    layers: &[Layer],
    labels: &BTreeMap<String, String>,
    created: i64,
    source_date_epoch: Option<i64>,
) -> Result<Assembled, EngineError> {
    let created = rfc3339(source_date_epoch.unwrap_or(created));
    let base = if stage.has_base_image {
        base_image_config(store, graph, stage)?
    } else {
        None
    };
    let mut history: Vec<Value> = base
        .as_ref()
        .and_then(|b| b["history"].as_array().cloned())
        .unwrap_or_default();
    if let Some(epoch) = source_date_epoch {
        clamp_history(&mut history, epoch);
    }
    for entry in &stage.history {
        let mut h = Map::new();
        h.insert("created".into(), json!(created));
        h.insert("created_by".into(), json!(entry.created_by));
        h.insert("comment".into(), json!(entry.comment));
        if entry.empty_layer {
            h.insert("empty_layer".into(), json!(true));
        }
        history.push(Value::Object(h));
    }
    let history_layers = history
        .iter()
        .filter(|h| !h["empty_layer"].as_bool().unwrap_or(false))
        .count();
    if history_layers != layers.len() {
        tracing::warn!(
            history_layers,
            layers = layers.len(),
            "image history does not match its layers"
        );
    }
    let mut config = Map::new();
    config.insert("architecture".into(), json!(stage.platform.architecture));
    if !stage.config.author.is_empty() {
        config.insert("author".into(), json!(stage.config.author));
    }
    config.insert("config".into(), runtime_config(&stage.config, labels));
    config.insert("created".into(), json!(created));
    config.insert("history".into(), Value::Array(history));
    config.insert("os".into(), json!(stage.platform.os));
    if let Some(variant) = &stage.platform.variant {
        config.insert("variant".into(), json!(variant));
    }
    config.insert(
        "rootfs".into(),
        json!({"type": "layers", "diff_ids": layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()}),
    );
    let config = Value::Object(config);
    let config_descriptor =
        store
            .put_json(&config, OCI_CONFIG)
            .map_err(|source| EngineError::Store {
                action: "store the image config".into(),
                source,
            })?;
    let mut manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {
            "mediaType": OCI_CONFIG,
            "digest": config_descriptor.digest().to_string(),
            "size": config_descriptor.size(),
        },
        "layers": layers.iter().map(|l| json!({
            "mediaType": l.media_type,
            "digest": l.digest,
            "size": l.size,
        })).collect::<Vec<_>>(),
    });
    // The base as BuildKit records it, so that `hoist rebase` (and other
    // tools) know what the image was built on.
    let base = if stage.has_base_image {
        base_image_reference(graph, stage)
    } else {
        None
    };
    if let Some((name, digest)) = base {
        manifest["annotations"] = json!({
            super::rebase::BASE_DIGEST: digest,
            super::rebase::BASE_NAME: name,
        });
    }
    let manifest =
        store
            .put_json(&manifest, OCI_MANIFEST)
            .map_err(|source| EngineError::Store {
                action: "store the image manifest".into(),
                source,
            })?;
    Ok(Assembled {
        manifest,
        config_digest: config_descriptor.digest().to_string(),
        config,
    })
}

/// Where an `--annotation` goes: buildx's `TYPE` of `TYPE[PLATFORM]:KEY=VALUE`
/// (BuildKit's `annotation-TYPE.KEY` exporter options).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AnnotationTarget {
    /// The image manifest of each platform (the default).
    #[default]
    Manifest,
    /// The descriptor of each image manifest in the index.
    ManifestDescriptor,
    /// The image index itself.
    Index,
    /// The descriptor of the index in an OCI layout's `index.json` (`-o
    /// type=oci`); nowhere else, as with BuildKit.
    IndexDescriptor,
}

impl AnnotationTarget {
    /// buildx's name of the type.
    pub fn name(self) -> &'static str {
        match self {
            AnnotationTarget::Manifest => "manifest",
            AnnotationTarget::ManifestDescriptor => "manifest-descriptor",
            AnnotationTarget::Index => "index",
            AnnotationTarget::IndexDescriptor => "index-descriptor",
        }
    }

    /// Whether the annotation needs an index to land on (a single-platform
    /// build then writes an index of one manifest, as buildx's does).
    pub fn needs_index(self) -> bool {
        !matches!(self, AnnotationTarget::Manifest)
    }
}

/// One `--annotation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotation {
    /// Where it goes.
    pub target: AnnotationTarget,
    /// Only the image of this platform (`manifest[linux/arm64]:…`); `None`:
    /// every platform.
    pub platform: Option<Platform>,
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

impl Annotation {
    /// A `manifest` annotation for every platform.
    pub fn manifest(key: impl Into<String>, value: impl Into<String>) -> Annotation {
        Annotation {
            target: AnnotationTarget::Manifest,
            platform: None,
            key: key.into(),
            value: value.into(),
        }
    }

    /// Those of `annotations` of `target` that apply to `platform` (`None`:
    /// the index's, which no platform qualifies).
    pub fn select(
        annotations: &[Annotation],
        target: AnnotationTarget,
        platform: Option<&Platform>,
    ) -> BTreeMap<String, String> {
        annotations
            .iter()
            .filter(|a| a.target == target)
            .filter(|a| match (&a.platform, platform) {
                (None, _) => true,
                (Some(wanted), Some(p)) => same_platform(wanted, p),
                (Some(_), None) => false,
            })
            .map(|a| (a.key.clone(), a.value.clone()))
            .collect()
    }
}

/// Whether two platforms are the same once normalised (`arm64/v8` is `arm64`).
pub fn same_platform(a: &Platform, b: &Platform) -> bool {
    super::build::registry_platform(a) == super::build::registry_platform(b)
}

/// `--annotation`s on the image manifest (buildx's default `manifest`
/// type): merged over the ones the build writes (the base image's), the
/// manifest stored again and `image` pointed at it.
pub fn annotate(
    store: &Store,
    image: &mut Assembled,
    annotations: &BTreeMap<String, String>,
) -> Result<(), EngineError> {
    if annotations.is_empty() {
        return Ok(());
    }
    let failed = |action: &str| {
        let action = action.to_owned();
        move |source| EngineError::Store { action, source }
    };
    let bytes = store
        .content()
        .read_blob(image.manifest.digest())
        .map_err(failed("read the image manifest"))?;
    let mut manifest: Value = serde_json::from_slice(&bytes)
        .map_err(|e| EngineError::Invalid(format!("the image manifest is not JSON: {e}")))?;
    let mut all = manifest["annotations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (key, value) in annotations {
        all.insert(key.clone(), json!(value));
    }
    manifest["annotations"] = Value::Object(all);
    image.manifest = store
        .put_json(&manifest, OCI_MANIFEST)
        .map_err(failed("store the image manifest"))?;
    Ok(())
}

/// The `platform` object of an index entry.
pub fn platform_json(platform: &Platform) -> Value {
    let mut value = json!({
        "architecture": platform.architecture,
        "os": platform.os,
    });
    if let Some(variant) = &platform.variant {
        value["variant"] = json!(variant);
    }
    value
}

/// The index entry of an image manifest of `platform`, with its descriptor
/// annotations.
pub fn index_entry(
    manifest: &Descriptor,
    platform: &Platform,
    annotations: &BTreeMap<String, String>,
) -> Value {
    let mut entry = json!({
        "mediaType": manifest.media_type().to_string(),
        "digest": manifest.digest().to_string(),
        "size": manifest.size(),
    });
    if !annotations.is_empty() {
        entry["annotations"] = json!(annotations);
    }
    entry["platform"] = platform_json(platform);
    entry
}

/// Stores an OCI image index of `entries` (from [`index_entry`], and
/// attestation entries) with the index annotations; returns its descriptor
/// (what names point at).
pub fn write_index(
    store: &Store,
    entries: Vec<Value>,
    annotations: &BTreeMap<String, String>,
) -> Result<Descriptor, EngineError> {
    let mut index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": entries,
    });
    if !annotations.is_empty() {
        index["annotations"] = json!(annotations);
    }
    store
        .put_json(&index, OCI_INDEX)
        .map_err(|source| EngineError::Store {
            action: "store the image index".into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact bytes of a config: a change here changes every image digest
    /// hoist makes (e.g. serde_json's `preserve_order` turned on by another
    /// crate would reorder keys), so it must be deliberate.
    #[test]
    fn config_and_manifest_bytes_are_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let dockerfile = "FROM scratch\nCOPY x /x\nLABEL zeta=2 alpha=1\nENV Z=1 A=2\n\
                          EXPOSE 8080 443/udp\nVOLUME /data /cache\nCMD [\"/x\"]\n";
        let ast = hoist_frontend::parse(dockerfile).unwrap();
        let graph = hoist_frontend::lower(
            &ast,
            &hoist_frontend::BuildOptions::default(),
            &hoist_frontend::NoResolver,
        )
        .unwrap();
        let layer = Layer {
            digest: format!("sha256:{}", "a".repeat(64)),
            diff_id: format!("sha256:{}", "b".repeat(64)),
            size: 10,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
        };
        let labels = BTreeMap::from([("by".to_owned(), "cli".to_owned())]);
        let assembled = assemble(
            &store,
            &graph,
            graph.target_stage(),
            &[layer],
            &labels,
            1,
            Some(1_700_000_000),
        )
        .unwrap();
        let config = store
            .content()
            .read_blob(&assembled.config_digest.parse().unwrap())
            .unwrap();
        let config = String::from_utf8(config).unwrap();
        let arch = &graph.target_stage().platform.architecture;
        let expected = format!(
            r#"{{"architecture":"{arch}","config":{{"ArgsEscaped":true,"Cmd":["/x"],"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","Z=1","A=2"],"ExposedPorts":{{"443/udp":{{}},"8080/tcp":{{}}}},"Labels":{{"alpha":"1","by":"cli","zeta":"2"}},"Volumes":{{"/cache":{{}},"/data":{{}}}},"WorkingDir":"/"}},"created":"2023-11-14T22:13:20Z","history":[{{"comment":"buildkit.dockerfile.v0","created":"2023-11-14T22:13:20Z","created_by":"COPY x /x # buildkit"}},{{"comment":"buildkit.dockerfile.v0","created":"2023-11-14T22:13:20Z","created_by":"LABEL zeta=2 alpha=1","empty_layer":true}},{{"comment":"buildkit.dockerfile.v0","created":"2023-11-14T22:13:20Z","created_by":"ENV Z=1 A=2","empty_layer":true}},{{"comment":"buildkit.dockerfile.v0","created":"2023-11-14T22:13:20Z","created_by":"EXPOSE map[443/udp:{{}} 8080/tcp:{{}}]","empty_layer":true}},{{"comment":"buildkit.dockerfile.v0","created":"2023-11-14T22:13:20Z","created_by":"VOLUME [/data /cache]","empty_layer":true}},{{"comment":"buildkit.dockerfile.v0","created":"2023-11-14T22:13:20Z","created_by":"CMD [\"/x\"]","empty_layer":true}}],"os":"linux","rootfs":{{"diff_ids":["sha256:{}"],"type":"layers"}}}}"#,
            "b".repeat(64)
        );
        assert_eq!(config, expected);
        let manifest = store
            .content()
            .read_blob(assembled.manifest.digest())
            .unwrap();
        let expected = format!(
            r#"{{"config":{{"digest":"{}","mediaType":"application/vnd.oci.image.config.v1+json","size":{}}},"layers":[{{"digest":"sha256:{}","mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","size":10}}],"mediaType":"application/vnd.oci.image.manifest.v1+json","schemaVersion":2}}"#,
            assembled.config_digest,
            config.len(),
            "a".repeat(64)
        );
        assert_eq!(String::from_utf8(manifest).unwrap(), expected);
    }

    #[test]
    fn base_history_later_than_the_epoch_is_clamped() {
        let mut history = vec![
            json!({"created": "2001-09-09T01:46:40Z", "created_by": "old"}),
            json!({"created": "2030-01-01T00:00:00.5+02:00", "created_by": "new"}),
            json!({"created_by": "no time"}),
        ];
        clamp_history(&mut history, 1_700_000_000);
        assert_eq!(history[0]["created"], "2001-09-09T01:46:40Z");
        assert_eq!(history[1]["created"], "2023-11-14T22:13:20Z");
        assert!(history[2].get("created").is_none());
    }
}
