//! `--cache-to` / `--cache-from` of `hoist build`, in BuildKit's syntax.
//! `type=local` (an OCI layout directory) and `type=registry` (the same
//! artifact under a registry tag, `cache_registry`) are implemented;
//! `type=inline` is refused with a message.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
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
}

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
            Some(other @ ("inline" | "gha" | "s3")) => {
                bail!("{flag} type={other} is not supported yet (type=local and type=registry are)")
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
        }
    }
    Ok(())
}

/// Exports what `built` used to `--cache-to`.
pub fn export(
    store: &Arc<Store>,
    spec: &CacheSpec,
    built: &Built,
    quiet: bool,
) -> anyhow::Result<()> {
    let keys: Vec<String> = if spec.max {
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
    };
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
        let e = parse("type=inline", "--cache-to").unwrap_err();
        assert!(e.to_string().contains("not supported yet"), "{e}");
        assert!(parse("type=local", "--cache-to").is_err());
    }
}
