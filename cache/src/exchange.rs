//! Sharing build cache between stores: `--cache-to type=local,dest=DIR` and
//! `--cache-from type=local,src=DIR`; for `type=registry`, the same
//! artifact staged in the store itself ([`Store::stage_cache_artifact`]) for
//! the CLI to push, and read back after a pull
//! ([`Store::import_cache_manifest`]).
//!
//! The exported cache is an OCI image layout whose `index.json` names one
//! artifact manifest (`artifactType` [`CACHE_ARTIFACT_TYPE`]): its config is
//! a JSON document listing the records ([`CACHE_RECORDS_MEDIA_TYPE`]), its
//! layers are the blobs those records need. Exporting again replaces the
//! layout's index and removes the blobs the new manifest no longer names,
//! so a cache directory holds one build's worth, not every build's.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::content::{parse_digest, write_atomic, ContentStore};
use crate::error::{Error, Result};
use crate::records::NewCacheRecord;
use crate::Store;

/// `artifactType` of the cache manifest.
pub const CACHE_ARTIFACT_TYPE: &str = "application/vnd.hoist.cache.v1";
/// Media type of the records document (the manifest's config).
pub const CACHE_RECORDS_MEDIA_TYPE: &str = "application/vnd.hoist.cache.records.v1+json";

#[derive(Serialize, Deserialize)]
struct ExportedRecord {
    key: String,
    final_key: String,
    /// The output, as the builder encoded it (JSON text for hoist's builder).
    output: String,
    blobs: Vec<String>,
    description: String,
    step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    preimage: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RecordsDocument {
    records: Vec<ExportedRecord>,
}

/// What an export or import moved.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExchangeReport {
    /// Records written or read.
    pub records: usize,
    /// Blobs copied.
    pub blobs_copied: usize,
    /// Blobs already present on the other side.
    pub blobs_present: usize,
}

fn json_error(action: &str) -> impl FnOnce(serde_json::Error) -> Error + '_ {
    move |source| Error::Json {
        action: action.to_string(),
        source,
    }
}

fn copy_blob(from: &ContentStore, to: &ContentStore, digest: &str) -> Result<bool> {
    let parsed = parse_digest(digest)?;
    if to.contains(&parsed) {
        return Ok(false);
    }
    let reader = from.open_blob(&parsed)?;
    to.ingest(reader, None, Some(&parsed))?;
    Ok(true)
}

/// The cache artifact's manifest, staged in a content store by
/// [`Store::stage_cache_artifact`]: what a registry push starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheArtifact {
    /// Digest of the manifest (`application/vnd.oci.image.manifest.v1+json`).
    pub digest: String,
    /// Its size in bytes.
    pub size: u64,
    /// Every blob the manifest names (records document and layers).
    pub blobs: BTreeSet<String>,
}

impl Store {
    fn exported_records(&self, keys: &[String]) -> Result<(Vec<ExportedRecord>, BTreeSet<String>)> {
        let wanted: BTreeSet<&String> = keys.iter().collect();
        let mut records = Vec::new();
        let mut blobs = BTreeSet::new();
        for row in self.list_cache_records()? {
            if !wanted.contains(&row.key) {
                continue;
            }
            blobs.extend(row.blobs.iter().cloned());
            records.push(ExportedRecord {
                key: row.key,
                final_key: row.final_key,
                output: String::from_utf8_lossy(&row.output).into_owned(),
                blobs: row.blobs,
                description: row.description,
                step: row.step,
                preimage: row
                    .preimage
                    .map(|p| String::from_utf8_lossy(&p).into_owned()),
            });
        }
        Ok((records, blobs))
    }

    /// The records document ([`CACHE_RECORDS_MEDIA_TYPE`]) of the records
    /// under `keys`, as JSON: what `type=inline` puts in an image config.
    pub fn cache_records_document(&self, keys: &[String]) -> Result<serde_json::Value> {
        let (records, _) = self.exported_records(keys)?;
        serde_json::to_value(RecordsDocument { records })
            .map_err(json_error("serialize the cache records"))
    }

    /// Adds the records of a records document (as [`Store::cache_records_document`]
    /// makes) whose blobs this store holds; the others are skipped.
    pub fn import_cache_records(&self, document: &serde_json::Value) -> Result<ExchangeReport> {
        let document: RecordsDocument = serde_json::from_value(document.clone())
            .map_err(json_error("parse the cache records"))?;
        let mut report = ExchangeReport::default();
        self.import_records(self.content(), document, &mut report)?;
        Ok(report)
    }

    /// Writes the records under `keys`, their blobs, the records document
    /// and the artifact manifest into `target`.
    fn write_cache_artifact(
        &self,
        target: &ContentStore,
        keys: &[String],
    ) -> Result<(CacheArtifact, ExchangeReport)> {
        let mut report = ExchangeReport::default();
        let (records, blobs) = self.exported_records(keys)?;
        report.records = records.len();
        let mut layers = Vec::new();
        for digest in &blobs {
            let parsed = parse_digest(digest)?;
            let size = self.content().blob_size(&parsed)?;
            if copy_blob(self.content(), target, digest)? {
                report.blobs_copied += 1;
            } else {
                report.blobs_present += 1;
            }
            layers.push(serde_json::json!({
                "mediaType": "application/octet-stream",
                "digest": digest,
                "size": size,
            }));
        }
        let document = serde_json::to_vec(&RecordsDocument { records })
            .map_err(json_error("serialize the cache records"))?;
        let config = target.put(&document)?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "artifactType": CACHE_ARTIFACT_TYPE,
            "config": {
                "mediaType": CACHE_RECORDS_MEDIA_TYPE,
                "digest": config.digest.to_string(),
                "size": config.size,
            },
            "layers": layers,
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(json_error("serialize the cache manifest"))?;
        let m = target.put(&manifest_bytes)?;
        let mut all = blobs;
        all.insert(config.digest.to_string());
        Ok((
            CacheArtifact {
                digest: m.digest.to_string(),
                size: m.size,
                blobs: all,
            },
            report,
        ))
    }

    /// Writes the cache artifact of the records under `keys` into this
    /// store's own content (their blobs are here already), for a push to a
    /// registry. The manifest and records document are referenced by no
    /// ref: the caller's lease protects them until the push is done.
    pub fn stage_cache_artifact(&self, keys: &[String]) -> Result<(CacheArtifact, ExchangeReport)> {
        self.write_cache_artifact(self.content(), keys)
    }

    /// Writes the records under `keys` and their blobs as a cache layout at
    /// `dir` (created when missing), replacing what was there.
    pub fn export_cache(&self, dir: &Path, keys: &[String]) -> Result<ExchangeReport> {
        let layout = ContentStore::open(dir)?;
        let (m, report) = self.write_cache_artifact(&layout, keys)?;
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "artifactType": CACHE_ARTIFACT_TYPE,
                "digest": m.digest,
                "size": m.size,
                "annotations": {"org.opencontainers.image.ref.name": "cache"},
            }],
        });
        let index_bytes =
            serde_json::to_vec_pretty(&index).map_err(json_error("serialize index.json"))?;
        write_atomic(&dir.join("index.json"), &index_bytes)?;
        // Stale entries go: only what the new manifest names stays.
        let mut keep = m.blobs;
        keep.insert(m.digest.clone());
        for (digest, _) in layout.blobs()? {
            if !keep.contains(&digest.to_string()) {
                layout.delete_blob(&digest)?;
            }
        }
        Ok(report)
    }

    /// Reads a cache layout written by [`Store::export_cache`] at `dir`:
    /// its records are added (existing keys are left as they are) and their
    /// blobs copied in when missing.
    pub fn import_cache(&self, dir: &Path) -> Result<ExchangeReport> {
        let index_path = dir.join("index.json");
        let index_bytes = match fs::read(&index_path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ExchangeReport::default()),
            Err(e) => return Err(Error::io("read", &index_path, e)),
        };
        let index: serde_json::Value = serde_json::from_slice(&index_bytes)
            .map_err(json_error("parse the cache index.json"))?;
        let layout = ContentStore::open(dir)?;
        let mut report = ExchangeReport::default();
        for entry in index["manifests"].as_array().into_iter().flatten() {
            if entry["artifactType"].as_str() != Some(CACHE_ARTIFACT_TYPE) {
                continue;
            }
            let Some(digest) = entry["digest"].as_str() else {
                continue;
            };
            self.import_cache_manifest_from(&layout, digest, &mut report)?;
        }
        Ok(report)
    }

    /// Adds the records of the cache artifact manifest `digest`, which is in
    /// this store's content already (pulled from a registry with its
    /// blobs). Records whose blobs are missing are skipped.
    pub fn import_cache_manifest(&self, digest: &str) -> Result<ExchangeReport> {
        let mut report = ExchangeReport::default();
        self.import_cache_manifest_from(self.content(), digest, &mut report)?;
        Ok(report)
    }

    fn import_cache_manifest_from(
        &self,
        from: &ContentStore,
        digest: &str,
        report: &mut ExchangeReport,
    ) -> Result<()> {
        let manifest: serde_json::Value =
            serde_json::from_slice(&from.read_blob(&parse_digest(digest)?)?)
                .map_err(json_error("parse the cache manifest"))?;
        if manifest["artifactType"].as_str() != Some(CACHE_ARTIFACT_TYPE)
            && manifest["config"]["mediaType"].as_str() != Some(CACHE_RECORDS_MEDIA_TYPE)
        {
            return Err(Error::invalid(format!(
                "{digest} is not a hoist cache manifest (artifactType {CACHE_ARTIFACT_TYPE})"
            )));
        }
        let config = manifest["config"]["digest"]
            .as_str()
            .ok_or_else(|| Error::invalid("the cache manifest has no config"))?;
        let document: RecordsDocument =
            serde_json::from_slice(&from.read_blob(&parse_digest(config)?)?)
                .map_err(json_error("parse the cache records"))?;
        self.import_records(from, document, report)
    }

    fn import_records(
        &self,
        from: &ContentStore,
        document: RecordsDocument,
        report: &mut ExchangeReport,
    ) -> Result<()> {
        for record in document.records {
            let mut complete = true;
            for blob in &record.blobs {
                match copy_blob(from, self.content(), blob) {
                    Ok(true) => report.blobs_copied += 1,
                    Ok(false) => report.blobs_present += 1,
                    Err(e) if e.is_not_found() => complete = false,
                    Err(e) => return Err(e),
                }
            }
            if !complete {
                continue;
            }
            if self.use_cache_record(&record.key, None)?.is_some() {
                continue;
            }
            self.put_cache_record(
                &NewCacheRecord {
                    key: record.key,
                    final_key: record.final_key,
                    output: record.output.into_bytes(),
                    blobs: record.blobs,
                    description: record.description,
                    step: record.step,
                    preimage: record.preimage.map(String::into_bytes),
                },
                None,
            )?;
            report.records += 1;
        }
        Ok(())
    }
}
