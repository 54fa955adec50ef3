//! `hoist inspect IMAGE...`: JSON with the manifest, config, digests, sizes;
//! `--provenance`: the images' provenance statements.

use std::io::{self, Write};

use anyhow::Context as _;

use crate::context::Context;
use crate::hint::WithHint;
use crate::resolve::{all_images, find};

/// Show an image's manifest, config, digests and sizes as JSON
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Images (name, ID or digest)
    #[arg(required = true)]
    images: Vec<String>,
    /// Show the images' provenance (in-toto SLSA statements) instead
    #[arg(long)]
    provenance: bool,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let entries = all_images(&store)?;
    let mut values = Vec::new();
    for arg in &args.images {
        let (i, _) = find(&entries, arg)?;
        let entry = &entries[i];
        let image = entry.image()?;
        if args.provenance {
            let statements = hoist_builder::engine::provenance::read(
                &store,
                &entry.target,
                image.manifest_descriptor.digest(),
            )?;
            if statements.is_empty() {
                return Err(anyhow::anyhow!(
                    "image `{arg}` has no provenance attestation"
                ))
                .hint("build it with `hoist build --provenance`");
            }
            values.extend(statements);
            continue;
        }
        let raw = |digest: &hoist_cache::Digest, what: &str| -> anyhow::Result<serde_json::Value> {
            let bytes = store.content().read_blob(digest)?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("failed to parse the {what} {digest}"))
        };
        let layers: Vec<serde_json::Value> = image
            .layers()
            .iter()
            .map(|l| {
                serde_json::json!({
                    "MediaType": l.media_type().to_string(),
                    "Digest": l.digest().to_string(),
                    "Size": l.size(),
                })
            })
            .collect();
        let names: Vec<String> = entry.names.clone();
        // The platforms present in the store, in the index's order (an
        // attestation's `unknown/unknown` is none).
        let platforms: Vec<String> = hoist_registry::stored_platforms(&store, &entry.target)
            .iter()
            .map(ToString::to_string)
            .filter(|p| !p.starts_with("unknown/"))
            .collect();
        values.push(serde_json::json!({
            "Id": image.id().to_string(),
            "Names": names,
            "RepoTags": names.iter().map(|n| crate::util::familiar(n)).collect::<Vec<_>>(),
            "Target": {
                "MediaType": entry.target.media_type().to_string(),
                "Digest": entry.target.digest().to_string(),
                "Size": entry.target.size(),
            },
            "ManifestDigest": image.manifest_descriptor.digest().to_string(),
            "ConfigDigest": image.id().to_string(),
            "Created": image.config.created(),
            "Architecture": image.config.architecture().to_string(),
            "Os": image.config.os().to_string(),
            "Platforms": platforms,
            "Size": image.size(),
            "Layers": layers,
            "Manifest": raw(image.manifest_descriptor.digest(), "manifest")?,
            "Config": raw(image.id(), "config")?,
        }));
    }
    let mut out = io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, &values)?;
    writeln!(out)?;
    Ok(())
}
