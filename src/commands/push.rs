//! `hoist push [-q] NAME[:TAG]`: upload an image of the store to the
//! registry its name designates.

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use hoist_registry::{block_on, CacheBlobStore, Client, PushEvent};

use crate::commands::pull::is_layer;
use crate::context::Context;
use crate::hint::WithHint;
use crate::progress::transfer::Transfers;
use crate::resolve::parse_tag_name;
use crate::util::short_id;
use hoist_builder::pipeline::push_event_line;

/// Upload an image to a registry
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print only the pushed image's name
    #[arg(short, long)]
    pub(crate) quiet: bool,
    /// Push only this platform's manifest of a multi-platform image
    /// (os/arch[/variant]); the registry's tag then names that manifest
    #[arg(long, value_name = "PLATFORM")]
    pub(crate) platform: Option<String>,
    /// Image to push, REGISTRY/NAME[:TAG] (give it such a name with
    /// `hoist tag` first)
    pub(crate) name: String,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let reference = parse_tag_name(&args.name)?;
    let name = reference.to_string();
    let store = Arc::new(context.store()?);
    let Some(image) = store.get_ref(&name)? else {
        return Err(anyhow!(
            "an image does not exist locally with the tag: {}",
            reference.familiar()
        ))
        .hint(format!(
            "name the image for the registry first: `hoist tag IMAGE {}`",
            reference.familiar()
        ));
    };
    let target = match &args.platform {
        Some(platform) => platform_manifest(&store, &image.target, &reference, platform)?,
        None => push_target(&store, &image.target, &reference)?,
    };
    let blobs = CacheBlobStore::new(store.clone())?;
    let client = Client::from_environment().context("failed to set up the registry client")?;

    let transfers = Arc::new(Transfers::new(args.quiet, "Pushing"));
    transfers.line(&format!(
        "The push refers to repository [{}]",
        reference.name()
    ));
    let shown = Arc::clone(&transfers);
    let events = Arc::new(move |event: PushEvent| {
        let line = push_event_line(&event);
        match &event {
            PushEvent::BlobStarted { descriptor } if is_layer(descriptor) => {
                shown.started(
                    &short_id(descriptor.digest().as_ref()),
                    descriptor.size(),
                    None,
                );
            }
            PushEvent::BlobProgress {
                descriptor,
                done,
                total,
            } if is_layer(descriptor) => {
                shown.progress(&short_id(descriptor.digest().as_ref()), *done, *total);
            }
            PushEvent::BlobDone { descriptor } if is_layer(descriptor) => shown.finished(
                &short_id(descriptor.digest().as_ref()),
                "Pushed",
                line.as_deref(),
            ),
            _ => {
                if let Some(line) = line {
                    shown.line(&line);
                }
            }
        }
    });
    let pushed = block_on(blobs.push(&client, &reference, &target, Some(events)))?;
    transfers.end();
    let pushed = pushed.with_context(|| format!("failed to push {}", reference.familiar()))?;

    let mut out = std::io::stdout().lock();
    if args.quiet {
        writeln!(out, "{name}")?;
    } else {
        writeln!(
            out,
            "{}: digest: {} size: {}",
            reference.tag().unwrap_or("latest"),
            pushed.descriptor.digest(),
            pushed.descriptor.size()
        )?;
    }
    Ok(())
}

/// `--platform`: the manifest of `platform` in `target` (an index, or an
/// image manifest of that platform).
fn platform_manifest(
    store: &hoist_cache::Store,
    target: &hoist_cache::Descriptor,
    reference: &hoist_registry::Reference,
    platform: &str,
) -> anyhow::Result<hoist_cache::Descriptor> {
    let wanted = hoist_registry::Platform::parse(platform)
        .map_err(|e| anyhow!("invalid --platform: {e}"))?;
    match hoist_registry::stored_manifest(store, target, &wanted)? {
        Some(manifest) => Ok(manifest),
        None => {
            let held: Vec<String> = hoist_registry::stored_platforms(store, target)
                .iter()
                .map(ToString::to_string)
                .collect();
            Err(anyhow!(
                "{} has no {wanted} image in the store (it holds {})",
                reference.familiar(),
                if held.is_empty() {
                    "no platform".to_string()
                } else {
                    held.join(", ")
                }
            ))
        }
    }
}

/// What to push for `target`: itself, unless it is an index pulled for some
/// platforms only. Then, as Docker does, the one platform present is pushed
/// alone (with a note: its digest is not the index's); with several present
/// and some missing, nothing is pushed.
fn push_target(
    store: &hoist_cache::Store,
    target: &hoist_cache::Descriptor,
    reference: &hoist_registry::Reference,
) -> anyhow::Result<hoist_cache::Descriptor> {
    let missing = store.missing_manifests(target)?;
    if missing.is_empty() {
        return Ok(target.clone());
    }
    let platforms = hoist_registry::stored_platforms(store, target);
    let present: Vec<hoist_cache::Descriptor> = platforms
        .iter()
        .filter_map(|p| {
            hoist_registry::stored_manifest(store, target, p)
                .ok()
                .flatten()
        })
        .collect();
    match (present.as_slice(), platforms.as_slice()) {
        ([one], [platform]) => {
            eprintln!(
                "note: the store holds only {platform} of this multi-platform image: pushing that platform's manifest alone (digest {})",
                one.digest()
            );
            Ok(one.clone())
        }
        _ => {
            let held: Vec<String> = platforms.iter().map(ToString::to_string).collect();
            Err(anyhow!(
                "cannot push {}: the store holds the manifests of {} of its image index but lacks {} others",
                reference.familiar(),
                if held.is_empty() { "none".to_string() } else { held.join(", ") },
                missing.len()
            ))
            .hint(format!(
                "pull the other platforms first (`hoist pull --platform PLATFORM {}`)",
                reference.familiar()
            ))
        }
    }
}
