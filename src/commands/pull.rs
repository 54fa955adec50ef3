//! `hoist pull [--platform P] [-q] NAME`: download an image from a registry
//! into the store and name it with its fully qualified reference.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context as _;
use hoist_registry::{
    block_on, CacheBlobStore, Client, Platform, PullEvent, PullOptions, PulledImage, Reference,
};

use crate::context::Context;
use crate::progress::transfer::Transfers;
use crate::util::short_id;
use hoist_builder::pipeline::pull_event_line;

/// Download an image from a registry
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Platform to pick from a multi-platform image (os/arch[/variant];
    /// default: this machine's)
    #[arg(long, value_name = "PLATFORM")]
    platform: Option<String>,
    /// Print only the image's full name
    #[arg(short, long)]
    quiet: bool,
    /// Image to pull, NAME[:TAG|@DIGEST]
    name: String,
}

/// Config blobs are not shown in progress, as with Docker.
pub fn is_layer(descriptor: &hoist_cache::Descriptor) -> bool {
    let media_type = descriptor.media_type().to_string();
    !media_type.contains("config")
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let reference = Reference::parse(&args.name)?;
    let platform = args
        .platform
        .as_deref()
        .map(Platform::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("invalid --platform: {}", e.0))?;
    let store = Arc::new(context.store()?);
    let _lease = hoist_cache::LeaseGuard::take(&store, "pull")
        .context("failed to take a lease on the store")?;
    let name = reference.to_string();
    // Up to date: the name already held this platform's manifest.
    let wanted = platform.clone().unwrap_or_else(Platform::host);
    let before = store
        .get_ref(&name)?
        .and_then(|r| hoist_registry::stored_manifest(&store, &r.target, &wanted).ok())
        .flatten();
    let pulled = fetch(Arc::clone(&store), &reference, platform, args.quiet)?;

    let mut out = std::io::stdout().lock();
    if !args.quiet {
        writeln!(out, "Digest: {}", pulled.root.digest())?;
        let up_to_date = before.is_some_and(|b| b.digest() == pulled.manifest.digest());
        if up_to_date {
            writeln!(
                out,
                "Status: Image is up to date for {}",
                reference.familiar()
            )?;
        } else {
            writeln!(
                out,
                "Status: Downloaded newer image for {}",
                reference.familiar()
            )?;
        }
    }
    writeln!(out, "{name}")?;
    Ok(())
}

/// Downloads `reference` into the store and names it with its fully
/// qualified name; layer progress goes to stderr unless `quiet`. `hoist
/// build` calls this for base images the store lacks.
pub fn fetch(
    store: Arc<hoist_cache::Store>,
    reference: &Reference,
    platform: Option<Platform>,
    quiet: bool,
) -> anyhow::Result<PulledImage> {
    let blobs = CacheBlobStore::new(store.clone())?;
    let client = Client::from_environment().context("failed to set up the registry client")?;
    let name = reference.to_string();
    let transfers = Arc::new(Transfers::new(quiet, "Downloading"));
    let tag_or_digest = reference.tag().or(reference.digest()).unwrap_or("latest");
    transfers.line(&format!(
        "{tag_or_digest}: Pulling from {}",
        reference.repository()
    ));
    let shown = Arc::clone(&transfers);
    let events = Arc::new(move |event: PullEvent| {
        let line = pull_event_line(&event);
        match &event {
            PullEvent::BlobStarted { descriptor } if is_layer(descriptor) => shown.started(
                &short_id(descriptor.digest().as_ref()),
                descriptor.size(),
                line.as_deref(),
            ),
            PullEvent::BlobProgress {
                descriptor,
                done,
                total,
            } if is_layer(descriptor) => {
                shown.progress(&short_id(descriptor.digest().as_ref()), *done, *total);
            }
            PullEvent::BlobDone { descriptor } if is_layer(descriptor) => shown.finished(
                &short_id(descriptor.digest().as_ref()),
                "Download complete",
                line.as_deref(),
            ),
            _ => {
                if let Some(line) = line {
                    shown.line(&line);
                }
            }
        }
    });
    let options = PullOptions {
        platform,
        events: Some(events),
    };
    let pulled = block_on(blobs.pull(&client, reference, &options))?;
    transfers.end();
    let pulled = pulled.with_context(|| format!("failed to pull {}", reference.familiar()))?;
    // Named only when its config is one hoist can read back (Docker's pull
    // refuses such a config too); the blobs are left for GC.
    store
        .read_config(pulled.config.digest())
        .and_then(|config| hoist_cache::image::check_config_times(&config))
        .with_context(|| format!("failed to pull {}", reference.familiar()))?;
    // A multi-platform image is named by its index (as containerd does): a
    // pull for another platform adds that platform's manifest under the
    // same name instead of replacing the first (docs/platforms.md).
    store.set_ref(&name, pulled.ref_target())?;
    Ok(pulled)
}
