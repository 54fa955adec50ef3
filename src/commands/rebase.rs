//! `hoist rebase IMAGE [--from OLD] [--to NEW] [-t NAME]… [--push]`: the
//! flags, finding the three images (pulling what the store lacks), naming
//! and pushing the result. The rewriting is
//! `hoist_builder::engine::rebase`.

use std::io::Write;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context as _};
use hoist_builder::engine::rebase::{self, Named, RebaseRequest};
use hoist_cache::Store;
use hoist_registry::{Platform, Reference};

use crate::commands::{pull, push};
use crate::context::Context;
use crate::resolve::{self, By};
use crate::util::familiar;

/// `hoist rebase`'s flags (its help text is on `Command`'s variant).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The base IMAGE is built on now (default: the base its build recorded)
    #[arg(long, value_name = "OLD")]
    from: Option<String>,
    /// The base to put under it (default: the recorded base name, pulled again)
    #[arg(long, value_name = "NEW")]
    to: Option<String>,
    /// Name the result (default: IMAGE's own name, when it was given by name)
    #[arg(short, long = "tag", value_name = "NAME")]
    tags: Vec<String>,
    /// Push every name of the result to its registry
    #[arg(long)]
    push: bool,
    /// Attach an in-toto provenance statement naming IMAGE, OLD and NEW
    #[arg(long)]
    provenance: bool,
    /// The time the new config records, for a reproducible result
    #[arg(long, value_name = "N", env = "SOURCE_DATE_EPOCH")]
    source_date_epoch: Option<String>,
    /// The image to rebase (name, ID or digest)
    image: String,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let source_date_epoch = args
        .source_date_epoch
        .as_deref()
        .filter(|v| !v.trim().is_empty())
        .map(hoist_cache::units::parse_epoch)
        .transpose()
        .context("invalid --source-date-epoch (or SOURCE_DATE_EPOCH)")?;
    let tags = args
        .tags
        .iter()
        .map(|t| resolve::parse_tag_name(t).map(|r| r.to_string()))
        .collect::<anyhow::Result<Vec<String>>>()?;
    let store = Arc::new(context.store()?);
    let _lease = hoist_cache::LeaseGuard::take(&store, "rebase")
        .context("failed to take a lease on the store")?;
    let (entry, by) = resolve::resolve(&store, &args.image)?;
    let image_name = match &by {
        By::Name(name) => Some(name.clone()),
        By::Id => None,
    };
    let image = Named {
        target: entry.target.clone(),
        name: image_name.clone(),
    };
    let platforms = rebase::image_platforms(&store, &image.target)?;
    let recorded = rebase::recorded_base(&store, &image.target)?;

    let from = match &args.from {
        Some(from) => find_or_pull(&store, from, &platforms)?,
        None => {
            let (name, digest) = recorded
                .clone()
                .ok_or(rebase::RebaseError::NoRecordedBase)?;
            let target = match rebase::stored_descriptor(&store, &digest)? {
                Some(target) => target,
                None => {
                    let name = name.clone().ok_or_else(|| {
                        anyhow!(
                            "the recorded base {digest} is not in the store: name it with --from"
                        )
                    })?;
                    let pinned = format!("{}@{digest}", strip_digest(&name));
                    pull_named(&store, &pinned, &platforms)?.target
                }
            };
            Named { target, name }
        }
    };
    let to = match &args.to {
        Some(to) => find_or_pull(&store, to, &platforms)?,
        None => {
            let name = recorded.and_then(|(name, _)| name).ok_or_else(|| {
                anyhow!("the image records no base name: name the new base with --to")
            })?;
            newest(&store, &name, &platforms)?
        }
    };

    let request = RebaseRequest {
        image,
        from: from.clone(),
        to: to.clone(),
        now: crate::time::now(),
        source_date_epoch,
        provenance: args
            .provenance
            .then(|| tags.first().cloned().or(image_name.clone())),
    };
    let rebased = rebase::rebase(&store, &request)?;

    // Names may come from an image's annotations: shown escaped.
    let describe = |n: &Named| {
        n.name
            .as_deref()
            .map(|name| hoist_cache::text::escape(&familiar(name)).into_owned())
            .unwrap_or_else(|| n.target.digest().to_string())
    };
    for p in &rebased.platforms {
        eprintln!(
            "{}: {} layer(s) of {} replaced by {} of {}; {} layer(s) of the image kept",
            p.platform,
            p.old_base_layers,
            describe(&from),
            p.new_base_layers,
            describe(&to),
            p.kept_layers
        );
    }
    eprintln!(
        "warning: the steps that built {} were not run again on {}: a program compiled or linked against {} may need a rebuild",
        hoist_cache::text::escape(&args.image),
        describe(&to),
        describe(&from)
    );

    let names = if tags.is_empty() {
        image_name.into_iter().collect()
    } else {
        tags
    };
    store.update_refs(|refs| {
        for name in &names {
            refs.set(name, &rebased.target)?;
        }
        Ok(())
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "Digest: {}", rebased.target.digest())?;
    if names.is_empty() {
        eprintln!("note: the result has no name (IMAGE was given by ID): give it one with -t");
    }
    for name in &names {
        writeln!(out, "Rebased: {}", familiar(name))?;
    }
    drop(out);
    if args.push {
        for name in &names {
            push::run(
                context,
                push::Args {
                    quiet: false,
                    name: name.clone(),
                    platform: None,
                },
            )?;
        }
    }
    Ok(())
}

fn strip_digest(name: &str) -> &str {
    name.split_once('@').map_or(name, |(n, _)| n)
}

/// An image of the store by name, ID or digest; a reference the store
/// lacks is pulled (for each platform the image has).
fn find_or_pull(store: &Arc<Store>, arg: &str, platforms: &[Platform]) -> anyhow::Result<Named> {
    match resolve::resolve(store, arg) {
        Ok((entry, by)) => Ok(Named {
            target: entry.target,
            name: match by {
                By::Name(name) => Some(name),
                By::Id => None,
            },
        }),
        Err(not_found) => {
            if Reference::parse(arg).is_err() {
                return Err(not_found);
            }
            pull_named(store, arg, platforms)
                .with_context(|| format!("`{arg}` is not in the store and could not be pulled"))
        }
    }
}

/// The newest image under `name`: pulled from its registry, else (with a
/// warning) what the store holds under it.
fn newest(store: &Arc<Store>, name: &str, platforms: &[Platform]) -> anyhow::Result<Named> {
    match pull_named(store, strip_digest(name), platforms) {
        Ok(named) => Ok(named),
        Err(e) => {
            let Some(held) = store.get_ref(strip_digest(name))? else {
                return Err(e.context(format!(
                    "the recorded base {name} could not be pulled and is not in the store"
                )));
            };
            eprintln!(
                "warning: could not pull {}: {}; using the store's image of that name",
                hoist_cache::text::escape(&familiar(name)),
                hoist_cache::text::escape(&format!("{e:#}"))
            );
            Ok(Named {
                target: held.target,
                name: Some(strip_digest(name).to_owned()),
            })
        }
    }
}

fn pull_named(store: &Arc<Store>, name: &str, platforms: &[Platform]) -> anyhow::Result<Named> {
    let reference = Reference::parse(name)?;
    if platforms.is_empty() {
        bail!("the image has no platform to pull for");
    }
    for platform in platforms {
        pull::fetch(store.clone(), &reference, Some(platform.clone()), false)?;
    }
    let named = reference.to_string();
    let target = match store.get_ref(&named)? {
        Some(r) => r.target,
        None => bail!(
            "{} was pulled but has no name in the store",
            familiar(&named)
        ),
    };
    Ok(Named {
        target,
        name: Some(strip_digest(&named).to_owned()),
    })
}
