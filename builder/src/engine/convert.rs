//! Layer compression and media types of an exported image
//! (`-o …,compression=zstd|gzip|uncompressed,compression-level=N,
//! force-compression=true,oci-mediatypes=false`), as BuildKit's exporters
//! apply them.
//!
//! Steps write gzip layers into the store. An output asking for another
//! compression (or another gzip level) gets a copy of the image whose
//! layers are converted at export: decompressed and written again by the
//! snapshotter's layer writer, so a converted layer is as reproducible as
//! a built one (same bytes for the same input, whatever the thread count).
//! The layers of the base image keep their blobs unless
//! `force-compression=true`, as in BuildKit (a base layer already has a
//! compressed blob, which BuildKit reuses whatever its compression).
//!
//! A converted blob is kept in the store under a cache record keyed by the
//! source blob and the format (`layer-convert/v1/…`), so a second export or
//! a push of the same layers reuses it instead of compressing again. The
//! record follows the store's rules for cache records: under the build's
//! lease while it runs, collected least recently used first, and as a
//! dangling record once no image holds its blob.

use std::io::Read as _;

use hoist_cache::image::media_types::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST,
};
use hoist_cache::image::{is_index, is_manifest, layer_compression, layer_media_type};
use hoist_cache::{Descriptor, Lease, NewCacheRecord, Store};
use hoist_snapshotter::{Compression, CompressionOptions, LayerWriter};
use serde_json::{json, Value};

use super::provenance::REFERENCE_TYPE;
use super::rebase::{BASE_DIGEST, BASE_NAME};
use super::{EngineError, LAYER_GZIP_LEVEL};

/// How an output wants its layers and manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerFormat {
    /// `compression=`.
    pub compression: Compression,
    /// `compression-level=`; `None` for the algorithm's default (hoist's
    /// gzip level 3, zstd 3).
    pub level: Option<u32>,
    /// `force-compression=true`: the base image's layers are converted too.
    pub force: bool,
    /// `oci-mediatypes=`: OCI media types or Docker v2 schema 2 ones;
    /// `None` (not asked) keeps the manifest's kind and the media types of
    /// the layers left as they are.
    pub oci_media_types: Option<bool>,
}

impl Default for LayerFormat {
    /// What steps write: gzip at hoist's level, OCI media types.
    fn default() -> Self {
        LayerFormat {
            compression: Compression::Gzip,
            level: None,
            force: false,
            oci_media_types: None,
        }
    }
}

impl LayerFormat {
    /// The level a layer is written at.
    fn effective_level(&self) -> u32 {
        match (self.compression, self.level) {
            (_, Some(level)) => level,
            (Compression::Gzip, None) => LAYER_GZIP_LEVEL,
            (Compression::Zstd, None) => hoist_snapshotter::layer::ZSTD_DEFAULT_LEVEL as u32,
            (Compression::Uncompressed, None) => 0,
        }
    }

    fn name(&self) -> &'static str {
        match self.compression {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Uncompressed => "uncompressed",
        }
    }
}

/// An image in another format, and what was changed against the request.
#[derive(Clone, Debug)]
pub struct Converted {
    /// The converted manifest or index (the source when nothing changed).
    pub target: Descriptor,
    /// Requests overridden as BuildKit overrides them (`oci-mediatypes=false`
    /// with zstd layers or annotations), one line each.
    pub warnings: Vec<String>,
}

fn store_error(action: impl Into<String>) -> impl FnOnce(hoist_cache::Error) -> EngineError {
    let action = action.into();
    move |source| EngineError::Store { action, source }
}

fn read_json(store: &Store, descriptor: &Descriptor, what: &str) -> Result<Value, EngineError> {
    let bytes = store
        .content()
        .read_blob(descriptor.digest())
        .map_err(store_error(format!("read {what} {}", descriptor.digest())))?;
    serde_json::from_slice(&bytes).map_err(|e| {
        EngineError::Invalid(format!("{what} {} is not JSON: {e}", descriptor.digest()))
    })
}

/// `target` (an image manifest, or an index of them) with its layers in
/// `format`. Without anything to change, `target` itself.
pub fn convert(
    store: &Store,
    target: &Descriptor,
    format: &LayerFormat,
    lease: Option<&Lease>,
) -> Result<Converted, EngineError> {
    let mut converter = Converter {
        store,
        format: *format,
        lease,
        warnings: Vec::new(),
    };
    let target = converter.convert(target)?;
    Ok(Converted {
        target,
        warnings: converter.warnings,
    })
}

/// A layer of the converted manifest, its media type still to be set.
struct LayerOut {
    layer: Value,
    /// Its compression; `None` for what keeps its media type whatever the
    /// manifest (unknown or non-distributable layers).
    kind: Option<Compression>,
    /// Whether it is a new blob.
    changed: bool,
}

/// What the steps of a build whose image outputs ask for `formats` write:
/// the compression they all ask for (at that compression's default
/// level, the only one steps write, so that the export knows the level of
/// every built layer), else gzip. A layer a step made in one compression
/// and found in the cache by a build asking for another is converted at
/// export; conversion and direct writing give the same bytes, as both are
/// the layer writer over the same tar stream.
pub fn step_compression<'a>(
    formats: impl IntoIterator<Item = Option<&'a LayerFormat>>,
) -> Compression {
    let mut all = formats
        .into_iter()
        .map(|f| f.map_or(Compression::Gzip, |f| f.compression));
    match all.next() {
        Some(first) if all.all(|c| c == first) => first,
        _ => Compression::Gzip,
    }
}

struct Converter<'a> {
    store: &'a Store,
    format: LayerFormat,
    lease: Option<&'a Lease>,
    warnings: Vec<String>,
}

impl Converter<'_> {
    /// BuildKit's "forcibly turning on oci-mediatype mode for …".
    fn force_oci(&mut self, why: &str) {
        if self.format.oci_media_types != Some(false) {
            return;
        }
        self.format.oci_media_types = Some(true);
        self.warnings.push(format!(
            "oci-mediatypes=false is overridden for {why}: OCI media types are used, as \
             BuildKit does"
        ));
    }

    fn convert(&mut self, target: &Descriptor) -> Result<Descriptor, EngineError> {
        let media_type = target.media_type().to_string();
        if is_index(&media_type) {
            self.convert_index(target)
        } else if is_manifest(&media_type) {
            self.convert_manifest(target)
        } else {
            Err(EngineError::Invalid(format!(
                "cannot convert the layers of a {} (expected an image manifest or index)",
                hoist_cache::text::escape(&media_type)
            )))
        }
    }

    fn convert_index(&mut self, target: &Descriptor) -> Result<Descriptor, EngineError> {
        let mut index = read_json(self.store, target, "image index")?;
        let children = index["manifests"].as_array().cloned().unwrap_or_default();
        let attested = children
            .iter()
            .any(|c| c["annotations"][REFERENCE_TYPE].is_string());
        if attested {
            self.force_oci("attestations");
        }
        let mut converted = Vec::new();
        for child in children {
            if child["annotations"][REFERENCE_TYPE].is_string() {
                // An attestation manifest: its layers are in-toto documents.
                converted.push(child);
                continue;
            }
            let descriptor: Descriptor = serde_json::from_value(child.clone()).map_err(|e| {
                EngineError::Invalid(format!("bad entry in image index {}: {e}", target.digest()))
            })?;
            if !self.store.content().contains(descriptor.digest()) {
                return Err(EngineError::Invalid(format!(
                    "image index {} names manifest {}, which the store lacks",
                    target.digest(),
                    descriptor.digest()
                )));
            }
            let new = self.convert(&descriptor)?;
            if attested && new.digest() != descriptor.digest() {
                // The attestation's statement names the image manifest's
                // digest, which this conversion changes; writing it again
                // belongs to the provenance step, not here.
                return Err(EngineError::Invalid(
                    "the layers of an image with a provenance attestation cannot be converted \
                     yet: give the outputs of a --provenance build the same compression= (the \
                     steps then write it) and no compression-level=, force-compression= or \
                     oci-mediatypes=false"
                        .into(),
                ));
            }
            let mut child = child;
            child["mediaType"] = json!(new.media_type().to_string());
            child["digest"] = json!(new.digest().to_string());
            child["size"] = json!(new.size());
            converted.push(child);
        }
        index["manifests"] = Value::Array(converted);
        let media_type = match self.format.oci_media_types {
            Some(true) => OCI_INDEX,
            Some(false) => DOCKER_MANIFEST_LIST,
            None if target.media_type().to_string() == DOCKER_MANIFEST_LIST => DOCKER_MANIFEST_LIST,
            None => OCI_INDEX,
        };
        index["mediaType"] = json!(media_type);
        self.store
            .put_json(&index, media_type)
            .map_err(store_error("store the converted image index"))
    }

    fn convert_manifest(&mut self, target: &Descriptor) -> Result<Descriptor, EngineError> {
        let mut manifest = read_json(self.store, target, "image manifest")?;
        let user_annotations = manifest["annotations"]
            .as_object()
            .is_some_and(|a| a.keys().any(|k| k != BASE_DIGEST && k != BASE_NAME));
        if user_annotations {
            self.force_oci("annotations");
        }
        let docker_manifest = manifest["mediaType"] == DOCKER_MANIFEST;
        let config: Descriptor = serde_json::from_value(manifest["config"].clone())
            .map_err(|e| EngineError::Invalid(format!("bad config in {}: {e}", target.digest())))?;
        let config_json = read_json(self.store, &config, "image config")?;
        let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|d| d.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let base = self.base_layers(&manifest)?;
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        if layers.len() != diff_ids.len() {
            return Err(EngineError::Invalid(format!(
                "image manifest {} has {} layers but its config {} diff_ids",
                target.digest(),
                layers.len(),
                diff_ids.len()
            )));
        }
        let mut converted = Vec::new();
        for (i, layer) in layers.into_iter().enumerate() {
            let digest = layer["digest"].as_str().unwrap_or_default().to_owned();
            let media_type = layer["mediaType"].as_str().unwrap_or_default().to_owned();
            let is_base = base.get(i).is_some_and(|d| *d == digest);
            converted.push(self.convert_layer(layer, &media_type, &diff_ids[i], is_base)?);
        }
        if converted.iter().any(|c| c.kind == Some(Compression::Zstd)) {
            self.force_oci("zstd");
        }
        let any_zstd = converted.iter().any(|c| c.kind == Some(Compression::Zstd));
        let oci = self
            .format
            .oci_media_types
            .unwrap_or(!docker_manifest || any_zstd);
        let explicit = self.format.oci_media_types.is_some();
        manifest["layers"] = Value::Array(
            converted
                .into_iter()
                .map(|mut c| {
                    if let Some(kind) = c.kind.filter(|_| c.changed || explicit) {
                        c.layer["mediaType"] = json!(layer_media_type(kind.into(), oci));
                    }
                    c.layer
                })
                .collect(),
        );
        let (manifest_type, config_type) = if oci {
            (OCI_MANIFEST, OCI_CONFIG)
        } else {
            (DOCKER_MANIFEST, DOCKER_CONFIG)
        };
        manifest["mediaType"] = json!(manifest_type);
        if explicit || oci == docker_manifest {
            manifest["config"]["mediaType"] = json!(config_type);
        }
        self.store
            .put_json(&manifest, manifest_type)
            .map_err(store_error("store the converted image manifest"))
    }

    /// The layer digests of the image this one was built on (the manifest
    /// its base annotation names, or the manifest of that index whose
    /// layers start this image's); empty without a base.
    fn base_layers(&self, manifest: &Value) -> Result<Vec<String>, EngineError> {
        let Some(digest) = manifest["annotations"][BASE_DIGEST].as_str() else {
            return Ok(Vec::new());
        };
        let Ok(digest) = digest.parse::<hoist_cache::Digest>() else {
            return Ok(Vec::new());
        };
        let ours: Vec<&str> = manifest["layers"]
            .as_array()
            .map(|l| l.iter().filter_map(|l| l["digest"].as_str()).collect())
            .unwrap_or_default();
        let layers_of = |value: &Value| -> Vec<String> {
            value["layers"]
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter_map(|l| l["digest"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        let read = |digest: &hoist_cache::Digest| -> Option<Value> {
            let bytes = self.store.content().read_blob(digest).ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let Some(base) = read(&digest) else {
            return Ok(Vec::new());
        };
        let candidates = match base["manifests"].as_array() {
            Some(children) => children
                .iter()
                .filter_map(|c| c["digest"].as_str()?.parse().ok())
                .filter_map(|d| read(&d))
                .map(|m| layers_of(&m))
                .collect(),
            None => vec![layers_of(&base)],
        };
        Ok(candidates
            .into_iter()
            .filter(|layers| {
                layers.len() <= ours.len() && layers.iter().zip(&ours).all(|(a, b)| a == b)
            })
            .max_by_key(Vec::len)
            .unwrap_or_default())
    }

    fn convert_layer(
        &mut self,
        mut layer: Value,
        media_type: &str,
        diff_id: &str,
        is_base: bool,
    ) -> Result<LayerOut, EngineError> {
        let Some(current) = layer_compression(media_type) else {
            // Not a layer media type hoist knows: left as it is.
            return Ok(LayerOut {
                layer,
                kind: None,
                changed: false,
            });
        };
        let foreign = media_type.contains("nondistributable") || media_type.contains("foreign");
        let current = Compression::from(current);
        let wanted = self.format.compression;
        let same_kind = current == wanted;
        // Steps write gzip at LAYER_GZIP_LEVEL and zstd at the default
        // level (see `step_compression`); a base layer's level is unknown,
        // and BuildKit keeps a blob of the asked compression type.
        let other_level = !is_base
            && match wanted {
                Compression::Gzip => self.format.effective_level() != LAYER_GZIP_LEVEL,
                Compression::Zstd => {
                    self.format.effective_level()
                        != hoist_snapshotter::layer::ZSTD_DEFAULT_LEVEL as u32
                }
                Compression::Uncompressed => false,
            };
        let convert = !foreign && (!is_base || self.format.force) && (!same_kind || other_level);
        let kind = if convert {
            let source = layer["digest"].as_str().unwrap_or_default().to_owned();
            let (digest, size) = self.converted_blob(&source, diff_id)?;
            layer["digest"] = json!(digest);
            layer["size"] = json!(size);
            // URLs and the like belong to the old blob.
            if let Some(fields) = layer.as_object_mut() {
                fields.remove("urls");
            }
            wanted
        } else {
            current
        };
        Ok(LayerOut {
            layer,
            kind: (!foreign).then_some(kind),
            changed: convert,
        })
    }

    /// The blob of `source` in this format: the one an earlier conversion
    /// kept, else written now (and kept).
    fn converted_blob(&self, source: &str, diff_id: &str) -> Result<(String, u64), EngineError> {
        let key = format!(
            "layer-convert/v1/{source}/{}/{}",
            self.format.name(),
            self.format.effective_level()
        );
        let known = self
            .store
            .use_cache_record(&key, self.lease)
            .map_err(store_error(format!(
                "look up the {} copy of {source}",
                self.format.name()
            )))?;
        if let Some(record) = known {
            if let Some(digest) = record.blobs.first() {
                if let Ok(parsed) = digest.parse::<hoist_cache::Digest>() {
                    if let Ok(size) = self.store.content().blob_size(&parsed) {
                        return Ok((digest.clone(), size));
                    }
                }
            }
        }
        let (digest, size) = self.recompress(source, diff_id)?;
        self.store
            .put_cache_record(
                &NewCacheRecord {
                    key: key.clone(),
                    final_key: key,
                    output: Vec::new(),
                    blobs: vec![digest.clone()],
                    description: format!("layer {source} as {}", self.format.name()),
                    step: String::new(),
                    preimage: None,
                },
                self.lease,
            )
            .map_err(store_error(format!(
                "record the {} copy of {source}",
                self.format.name()
            )))?;
        Ok((digest, size))
    }

    fn recompress(&self, source: &str, diff_id: &str) -> Result<(String, u64), EngineError> {
        let parsed = source
            .parse::<hoist_cache::Digest>()
            .map_err(|_| EngineError::Invalid(format!("bad layer digest {source}")))?;
        let mut blob = self
            .store
            .content()
            .open_blob(&parsed)
            .map_err(store_error(format!("open layer {source}")))?;
        let blob_path = self
            .store
            .content()
            .blob_path(&parsed)
            .map_err(store_error(format!("open layer {source}")))?;
        let mut input = hoist_snapshotter::apply::decompress(&mut blob).map_err(|source| {
            EngineError::Snapshot {
                action: format!("read layer {source}"),
                source,
            }
        })?;
        let mut writer = self
            .store
            .content()
            .writer()
            .map_err(store_error("start a layer blob"))?;
        let options = CompressionOptions {
            compression: self.format.compression,
            level: Some(self.format.effective_level()),
            threads: 0,
            skip_blob_digest: true,
        };
        let ingest = writer.path().to_path_buf();
        let write_error = |source: std::io::Error| EngineError::Io {
            action: "write a converted layer into".into(),
            path: ingest.clone(),
            source,
        };
        let mut out = LayerWriter::new(&mut writer, &options).map_err(write_error)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = match input.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(EngineError::Io {
                        action: "decompress layer".into(),
                        path: blob_path,
                        source: e,
                    })
                }
            };
            std::io::Write::write_all(&mut out, &buf[..n]).map_err(write_error)?;
        }
        let written = out.finish().map_err(write_error)?;
        if written.diff_id != diff_id {
            return Err(EngineError::Invalid(format!(
                "layer {source} decompresses to {}, but the image config says {diff_id}",
                written.diff_id
            )));
        }
        let committed = writer
            .commit(Some(written.size), None)
            .map_err(store_error(format!(
                "store the converted layer of {source}"
            )))?;
        Ok((committed.digest.to_string(), committed.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hoist_cache::image::media_types::{DOCKER_LAYER_GZIP, OCI_LAYER_GZIP, OCI_LAYER_ZSTD};
    use sha2::{Digest as _, Sha256};

    /// A store holding a one-layer image (gzip at the steps' level, as a
    /// build writes it) over `data`; its manifest's descriptor.
    fn image(store: &Store, data: &[u8], diff_id: Option<&str>) -> Descriptor {
        let mut writer = store.content().writer().unwrap();
        let mut layer = LayerWriter::new(
            &mut writer,
            &CompressionOptions {
                level: Some(LAYER_GZIP_LEVEL),
                ..CompressionOptions::default()
            },
        )
        .unwrap();
        std::io::Write::write_all(&mut layer, data).unwrap();
        let written = layer.finish().unwrap();
        writer.commit(None, None).unwrap();
        let diff_id = diff_id.map_or(written.diff_id.clone(), str::to_owned);
        let config = store
            .put_json(
                &json!({"architecture": "amd64", "os": "linux",
                        "rootfs": {"type": "layers", "diff_ids": [diff_id]}}),
                OCI_CONFIG,
            )
            .unwrap();
        store
            .put_json(
                &json!({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": config.digest().to_string(),
                               "size": config.size()},
                    "layers": [{"mediaType": OCI_LAYER_GZIP, "digest": written.digest,
                                "size": written.size}],
                }),
                OCI_MANIFEST,
            )
            .unwrap()
    }

    fn data() -> Vec<u8> {
        (0..300_000u32)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect()
    }

    fn layer(store: &Store, manifest: &Descriptor) -> Value {
        read_json(store, manifest, "manifest").unwrap()["layers"][0].clone()
    }

    #[test]
    fn zstd_conversion_keeps_the_diff_id_and_is_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = data();
        let source = image(&store, &data, None);
        let source_layer = layer(&store, &source);
        let format = LayerFormat {
            compression: Compression::Zstd,
            ..LayerFormat::default()
        };
        let converted = convert(&store, &source, &format, None).unwrap();
        assert!(converted.warnings.is_empty());
        let new_layer = layer(&store, &converted.target);
        assert_eq!(new_layer["mediaType"], OCI_LAYER_ZSTD);
        assert_ne!(new_layer["digest"], source_layer["digest"]);
        let blob = store
            .content()
            .read_blob(&new_layer["digest"].as_str().unwrap().parse().unwrap())
            .unwrap();
        assert_eq!(new_layer["size"], blob.len());
        assert_eq!(&blob[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
        let mut back = Vec::new();
        hoist_snapshotter::apply::decompress(&mut &blob[..])
            .unwrap()
            .read_to_end(&mut back)
            .unwrap();
        assert_eq!(back, data);

        // The second export takes the kept blob: it no longer needs the
        // source blob at all.
        let source_digest = source_layer["digest"].as_str().unwrap().parse().unwrap();
        assert!(store.content().delete_blob(&source_digest).unwrap());
        let again = convert(&store, &source, &format, None).unwrap();
        assert_eq!(again.target, converted.target);

        // Nothing to change: the same manifest.
        let gzip = convert(&store, &converted.target, &format, None).unwrap();
        assert_eq!(gzip.target, converted.target);
    }

    #[test]
    fn docker_media_types_and_the_zstd_override() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let source = image(&store, &data(), None);
        let docker = LayerFormat {
            oci_media_types: Some(false),
            ..LayerFormat::default()
        };
        let converted = convert(&store, &source, &docker, None).unwrap();
        assert_eq!(converted.target.media_type().to_string(), DOCKER_MANIFEST);
        let manifest = read_json(&store, &converted.target, "manifest").unwrap();
        assert_eq!(manifest["config"]["mediaType"], DOCKER_CONFIG);
        assert_eq!(manifest["layers"][0]["mediaType"], DOCKER_LAYER_GZIP);
        // Same blob: only the media types changed.
        assert_eq!(
            manifest["layers"][0]["digest"],
            layer(&store, &source)["digest"]
        );

        let zstd = LayerFormat {
            compression: Compression::Zstd,
            ..docker
        };
        let converted = convert(&store, &source, &zstd, None).unwrap();
        assert_eq!(converted.target.media_type().to_string(), OCI_MANIFEST);
        assert_eq!(converted.warnings.len(), 1, "{:?}", converted.warnings);
        assert!(converted.warnings[0].contains("zstd"));
    }

    #[test]
    fn steps_write_what_the_outputs_agree_on() {
        let zstd = LayerFormat {
            compression: Compression::Zstd,
            ..LayerFormat::default()
        };
        let plain = LayerFormat {
            compression: Compression::Uncompressed,
            ..LayerFormat::default()
        };
        assert_eq!(step_compression([]), Compression::Gzip);
        assert_eq!(step_compression([Some(&zstd)]), Compression::Zstd);
        assert_eq!(
            step_compression([Some(&zstd), Some(&zstd)]),
            Compression::Zstd
        );
        assert_eq!(step_compression([Some(&plain)]), Compression::Uncompressed);
        // An output without keys wants gzip: no agreement, gzip.
        assert_eq!(step_compression([Some(&zstd), None]), Compression::Gzip);
        assert_eq!(
            step_compression([Some(&zstd), Some(&plain)]),
            Compression::Gzip
        );
    }

    #[test]
    fn a_layer_that_is_not_its_diff_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let wrong = format!("sha256:{}", hex::encode(Sha256::digest(b"other")));
        let source = image(&store, &data(), Some(&wrong));
        let format = LayerFormat {
            compression: Compression::Uncompressed,
            ..LayerFormat::default()
        };
        let error = convert(&store, &source, &format, None).unwrap_err();
        assert!(error.to_string().contains(&wrong), "{error}");
    }
}
