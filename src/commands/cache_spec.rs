//! `--cache-to` / `--cache-from` of `hoist build`, in BuildKit's syntax.
//! Only `type=local` is implemented; `type=registry` and `type=inline` are
//! refused with a message.

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use hoist_builder::engine::build::Built;
use hoist_cache::Store;

/// A parsed `--cache-to` / `--cache-from`.
#[derive(Debug, PartialEq, Eq)]
pub struct CacheSpec {
    /// The cache layout directory.
    pub dir: PathBuf,
    /// `mode=max`: every record the build used; `min` (default): only those
    /// of the final image's layers.
    pub max: bool,
}

/// Parses `type=local,dest=DIR[,mode=min|max]` (`src=DIR` for `--cache-from`).
pub fn parse(spec: &str, flag: &str) -> anyhow::Result<CacheSpec> {
    let (mut kind, mut dir, mut max) = (None, None, false);
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
            "ref" | "compression" | "oci-mediatypes" | "ignore-error" => {}
            _ => bail!("invalid {flag} key `{k}`"),
        }
    }
    match kind.as_deref() {
        Some("local") => {}
        Some(other @ ("registry" | "inline" | "gha" | "s3")) => {
            bail!("{flag} type={other} is not supported yet (type=local is)")
        }
        Some(other) => bail!("invalid {flag} type `{other}`"),
        None => bail!("invalid {flag} `{spec}`: type= is required"),
    }
    let dir =
        dir.ok_or_else(|| anyhow!("{flag} `{spec}` needs dest=DIR (src=DIR for --cache-from)"))?;
    Ok(CacheSpec { dir, max })
}

/// Imports every `--cache-from` before a build.
pub fn import_all(store: &Store, specs: &[CacheSpec]) -> anyhow::Result<()> {
    for spec in specs {
        store
            .import_cache(&spec.dir)
            .with_context(|| format!("failed to import the cache at `{}`", spec.dir.display()))?;
    }
    Ok(())
}

/// Exports what `built` used to `--cache-to`.
pub fn export(store: &Store, spec: &CacheSpec, built: &Built) -> anyhow::Result<()> {
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
    store
        .export_cache(&spec.dir, &keys)
        .with_context(|| format!("failed to export the cache to `{}`", spec.dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_like_buildkit() {
        let s = parse("type=local,dest=/tmp/c,mode=max", "--cache-to").unwrap();
        assert_eq!((s.dir, s.max), (PathBuf::from("/tmp/c"), true));
        assert!(!parse("type=local,src=/c", "--cache-from").unwrap().max);
        let e = parse("type=registry,ref=r/c", "--cache-to").unwrap_err();
        assert!(e.to_string().contains("not supported yet"), "{e}");
        assert!(parse("type=local", "--cache-to").is_err());
    }
}
