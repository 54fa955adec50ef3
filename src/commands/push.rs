//! `hoist push [-q] NAME[:TAG]`: upload an image of the store to the
//! registry its name designates.

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, Context as _};
use hoist_registry::{block_on, CacheBlobStore, Client, PushEvent};

use crate::commands::pull::is_layer;
use crate::context::Context;
use crate::hint::WithHint;
use crate::resolve::parse_tag_name;
use crate::util::{report_retry, short_id};

/// Upload an image to a registry
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print only the pushed image's name
    #[arg(short, long)]
    pub(crate) quiet: bool,
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
    let target = push_target(&store, &image.target, &reference)?;
    let blobs = CacheBlobStore::new(store.clone())?;
    let client = Client::from_environment().context("failed to set up the registry client")?;

    if !args.quiet {
        eprintln!("The push refers to repository [{}]", reference.name());
    }
    let quiet = args.quiet;
    let events = Arc::new(move |event: PushEvent| {
        if quiet {
            return;
        }
        let (descriptor, status) = match &event {
            PushEvent::BlobExists { descriptor } => {
                (descriptor, "Layer already exists".to_string())
            }
            PushEvent::BlobMounted { descriptor, from } => {
                (descriptor, format!("Mounted from {from}"))
            }
            PushEvent::BlobDone { descriptor } => (descriptor, "Pushed".to_string()),
            PushEvent::Retrying(notice) => {
                report_retry(notice);
                return;
            }
            _ => return,
        };
        if is_layer(descriptor) {
            eprintln!("{}: {status}", short_id(descriptor.digest().as_ref()));
        }
    });
    let pushed = block_on(blobs.push(&client, &reference, &target, Some(events)))?
        .with_context(|| format!("failed to push {}", reference.familiar()))?;

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
