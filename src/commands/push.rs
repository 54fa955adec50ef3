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
    quiet: bool,
    /// Image to push, REGISTRY/NAME[:TAG] (give it such a name with
    /// `hoist tag` first)
    name: String,
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
    let pushed = block_on(blobs.push(&client, &reference, &image.target, Some(events)))?
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
