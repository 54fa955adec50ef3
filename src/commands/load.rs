//! `hoist load [-i FILE]`: read a docker-save or OCI archive.

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, Context as _};
use hoist_cache::archive;
use hoist_registry::reference::Reference;

use crate::context::Context;
use crate::hint::WithHint;

/// Read images from a tar archive (docker save or OCI layout)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Archive to read (default: stdin); plain, gzip or zstd
    #[arg(short, long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Name to give an image the archive does not name (only for archives
    /// holding a single image)
    #[arg(long, value_name = "NAME[:TAG]")]
    name: Option<String>,
    /// Print nothing on success
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let default_name = args
        .name
        .as_deref()
        .map(crate::resolve::parse_tag_name)
        .transpose()?;
    let (input, label): (Box<dyn Read>, String) = match &args.input {
        Some(path) if path.as_os_str() != "-" => (
            Box::new(
                File::open(path).with_context(|| format!("failed to open `{}`", path.display()))?,
            ),
            format!("`{}`", path.display()),
        ),
        _ => {
            if io::stdin().is_terminal() {
                return Err(anyhow!("no archive to load: stdin is a terminal"))
                    .hint("use `-i FILE` or pipe an archive in");
            }
            (Box::new(io::stdin().lock()), "stdin".to_string())
        }
    };
    let store = context.store()?;
    let _lease = hoist_cache::LeaseGuard::take(&store, "load")
        .context("failed to take a lease on the store")?;
    let loaded = archive::load(&store, input).with_context(|| format!("failed to load {label}"))?;
    let single = loaded.images.len() == 1;
    let mut refs: Vec<(String, hoist_cache::Descriptor)> = Vec::new();
    let named = (|| {
        for image in &loaded.images {
            let mut names = Vec::new();
            for raw in &image.names {
                let reference = Reference::parse(raw).with_context(|| {
                    format!(
                        "the archive names an image `{}`",
                        hoist_cache::text::escape(raw)
                    )
                })?;
                names.push(reference.to_string());
            }
            if names.is_empty() {
                match (&default_name, single) {
                    (Some(name), true) => names.push(name.to_string()),
                    _ => {
                        return Err(anyhow!(
                            "image {} in {label} has no name (no RepoTags or ref name annotation)",
                            image.target.digest()
                        ))
                        .hint("give it one with `hoist load --name NAME[:TAG]`")
                    }
                }
            }
            for name in names {
                refs.push((name, image.target.clone()));
            }
        }
        Ok(())
    })();
    if let Err(e) = named {
        loaded.discard(&store);
        return Err(e);
    }
    store.update_refs(|tx| {
        for (name, target) in &refs {
            tx.set(name, target)?;
        }
        Ok(())
    })?;
    if !args.quiet {
        let mut out = io::stdout().lock();
        for (name, _) in &refs {
            writeln!(out, "Loaded image: {}", crate::util::familiar(name))?;
        }
    }
    Ok(())
}
