//! `--cache-to` / `--cache-from` of `hoist build`, in BuildKit's syntax.
//! `type=local` (an OCI layout directory) and `type=registry` (the same
//! artifact under a registry tag, `cache_registry`) are implemented;
//! `type=inline` puts the records document in the image config under
//! [`INLINE_CACHE_KEY`], and `--cache-from type=registry` of such an image
//! reads it back.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use hoist_builder::engine::build::Built;
use hoist_cache::Store;
use hoist_registry::Reference;

/// Where a cache goes or comes from.
#[derive(Debug, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=local`: an OCI layout directory.
    Local(PathBuf),
    /// `type=registry`: a registry tag.
    Registry(Reference),
    /// `type=inline` (`--cache-to` only): in the image config.
    Inline,
}

/// The image config key `type=inline` writes the records document under
/// (BuildKit's is `moby.buildkit.cache.v0`).
pub const INLINE_CACHE_KEY: &str = "hoist.cache.v1";

/// A parsed `--cache-to` / `--cache-from`.
#[derive(Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// Where the cache is.
    pub location: CacheLocation,
    /// `mode=max`: every record the build used; `min` (default): only those
    /// of the final image's layers.
    pub max: bool,
}

/// Parses `type=local,dest=DIR[,mode=min|max]` (`src=DIR` for
/// `--cache-from`) and `type=registry,ref=REF[,mode=min|max]`.
pub fn parse(spec: &str, flag: &str) -> anyhow::Result<CacheSpec> {
    let (mut kind, mut dir, mut max, mut reference) = (None, None, false, None);
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| anyhow!("invalid {flag} `{spec}`: expected KEY=VALUE pairs"))?;
        match k {
            "type" => kind = Some(v.to_owned()),
            "dest" | "src" => dir = Some(PathBuf::from(v)),
            "mode" => {
                max = match v {
                    "max" => true,
                    "min" => false,
                    _ => bail!("invalid {flag} mode `{v}`: expected min or max"),
                }
            }
            "ref" => reference = Some(v.to_owned()),
            "compression" | "oci-mediatypes" | "ignore-error" => {}
            _ => bail!("invalid {flag} key `{k}`"),
        }
    }
    let location =
        match kind.as_deref() {
            Some("local") => CacheLocation::Local(dir.ok_or_else(|| {
                anyhow!("{flag} `{spec}` needs dest=DIR (src=DIR for --cache-from)")
            })?),
            Some("registry") => {
                let r = reference
                    .ok_or_else(|| anyhow!("{flag} `{spec}` needs ref=REGISTRY/NAME[:TAG]"))?;
                let parsed =
                    Reference::parse(&r).with_context(|| format!("invalid {flag} ref `{r}`"))?;
                CacheLocation::Registry(parsed)
            }
            Some("inline") if flag == "--cache-to" => CacheLocation::Inline,
            Some("inline") => {
                bail!("{flag} type=inline: import an inline cache with type=registry,ref=IMAGE")
            }
            Some(other @ ("gha" | "s3")) => {
                bail!("{flag} type={other} is not supported (type=local, registry and inline are)")
            }
            Some(other) => bail!("invalid {flag} type `{other}`"),
            None => bail!("invalid {flag} `{spec}`: type= is required"),
        };
    Ok(CacheSpec { location, max })
}

/// Imports every `--cache-from` before a build; `quiet` silences the
/// one-line summary of each registry import.
pub fn import_all(store: &Arc<Store>, specs: &[CacheSpec], quiet: bool) -> anyhow::Result<()> {
    for spec in specs {
        match &spec.location {
            CacheLocation::Local(dir) => {
                store.import_cache(dir).with_context(|| {
                    format!("failed to import the cache at `{}`", dir.display())
                })?;
            }
            CacheLocation::Registry(reference) => {
                let moved = super::cache_registry::import(store, reference)?;
                if quiet {
                    continue;
                }
                let mut err = std::io::stderr().lock();
                match moved {
                    Some(m) => writeln!(
                        err,
                        "importing cache from {reference}: {} records, {} blobs downloaded, {} already here",
                        m.records, m.blobs_transferred, m.blobs_present
                    )?,
                    None => writeln!(
                        err,
                        "importing cache from {reference}: not found (empty cache)"
                    )?,
                }
            }
            // Refused by `parse`; the image's config is the inline cache.
            CacheLocation::Inline => {}
        }
    }
    Ok(())
}

/// The keys `--cache-to` exports: with `mode=min` only records whose blobs
/// the final image holds.
fn exported_keys(store: &Store, spec: &CacheSpec, built: &Built) -> anyhow::Result<Vec<String>> {
    Ok(if spec.max {
        built.cache_records.clone()
    } else {
        let image: BTreeSet<&str> = built.layers.iter().map(|l| l.digest.as_str()).collect();
        let wanted: BTreeSet<&String> = built.cache_records.iter().collect();
        store
            .list_cache_records()?
            .into_iter()
            .filter(|r| {
                wanted.contains(&r.key) && r.blobs.iter().all(|b| image.contains(b.as_str()))
            })
            .map(|r| r.key)
            .collect()
    })
}

/// `--cache-to type=inline`: the image is rewritten with the records
/// document in its config (a new config and manifest; the layers are the
/// same). Called before the image is tagged; other specs return `built`
/// as it is.
pub fn inline(store: &Store, spec: Option<&CacheSpec>, mut built: Built) -> anyhow::Result<Built> {
    let Some(CacheSpec {
        location: CacheLocation::Inline,
        ..
    }) = spec
    else {
        return Ok(built);
    };
    if built.index.is_some() {
        bail!("--cache-to type=inline cannot be combined with a provenance attestation yet");
    }
    // Inline caches are mode=min, as in BuildKit: a config holds what the
    // image's own layers can serve.
    let min = CacheSpec {
        location: CacheLocation::Inline,
        max: false,
    };
    let keys = exported_keys(store, &min, &built)?;
    let document = store.cache_records_document(&keys)?;
    let mut config = built.image.config.clone();
    let object = config
        .as_object_mut()
        .ok_or_else(|| anyhow!("the image config is not a JSON object"))?;
    object.insert(INLINE_CACHE_KEY.to_string(), document);
    let config_bytes = serde_json::to_vec(&config)?;
    let config_blob = store.content().put(&config_bytes)?;
    let old = built.image.manifest.digest().to_string();
    let old_digest = hoist_cache::Digest::try_from(old.as_str())
        .map_err(|e| anyhow!("invalid manifest digest {old}: {e}"))?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.content().read_blob(&old_digest)?)?;
    manifest["config"]["digest"] = config_blob.digest.to_string().into();
    manifest["config"]["size"] = config_blob.size.into();
    let manifest_bytes = serde_json::to_vec(&manifest)?;
    let manifest_blob = store.content().put(&manifest_bytes)?;
    let digest = oci_spec::image::Digest::from_str(manifest_blob.digest.as_ref())
        .map_err(|e| anyhow!("invalid digest {}: {e}", manifest_blob.digest))?;
    let mut descriptor = built.image.manifest.clone();
    descriptor.set_digest(digest);
    descriptor.set_size(manifest_blob.size);
    built.image.manifest = descriptor;
    built.image.config_digest = config_blob.digest.to_string();
    built.image.config = config;
    Ok(built)
}

/// Exports what `built` used to `--cache-to`.
pub fn export(
    store: &Arc<Store>,
    spec: &CacheSpec,
    built: &Built,
    quiet: bool,
) -> anyhow::Result<()> {
    let keys = exported_keys(store, spec, built)?;
    match &spec.location {
        CacheLocation::Local(dir) => {
            store
                .export_cache(dir, &keys)
                .with_context(|| format!("failed to export the cache to `{}`", dir.display()))?;
        }
        CacheLocation::Registry(reference) => {
            let m = super::cache_registry::export(store, reference, &keys)?;
            if !quiet {
                writeln!(
                    std::io::stderr().lock(),
                    "exporting cache to {reference}: {} records, {} blobs pushed, {} already there",
                    m.records,
                    m.blobs_transferred,
                    m.blobs_present
                )?;
            }
        }
        // Written into the image by `inline` before tagging.
        CacheLocation::Inline => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_buildkit() {
        let s = parse("type=local,dest=/tmp/c,mode=max", "--cache-to").unwrap();
        assert_eq!(
            (s.location, s.max),
            (CacheLocation::Local(PathBuf::from("/tmp/c")), true)
        );
        assert!(!parse("type=local,src=/c", "--cache-from").unwrap().max);
        let s = parse(
            "type=registry,ref=127.0.0.1:5000/cache:x,mode=max",
            "--cache-to",
        )
        .unwrap();
        assert_eq!(
            s.location,
            CacheLocation::Registry(Reference::parse("127.0.0.1:5000/cache:x").unwrap())
        );
        assert!(s.max);
        assert!(parse("type=registry", "--cache-from").is_err());
        assert_eq!(
            parse("type=inline", "--cache-to").unwrap().location,
            CacheLocation::Inline
        );
        assert!(parse("type=inline", "--cache-from").is_err());
        let e = parse("type=gha", "--cache-to").unwrap_err();
        assert!(e.to_string().contains("not supported"), "{e}");
        assert!(parse("type=local", "--cache-to").is_err());
    }
}
