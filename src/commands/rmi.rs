//! `hoist rmi IMAGE...`: untag; when an image has no name left, delete the
//! blobs no other image reaches.

use std::collections::BTreeSet;
use std::io::{self, Write};

use anyhow::bail;
use hoist_cache::Store;

use crate::context::Context;
use crate::hint::WithHint;
use crate::resolve::{all_images, find, By, Entry};
use crate::util::{familiar, short_id};

/// Remove images (untag, then delete blobs no other image uses)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Images (name, ID or digest)
    #[arg(required = true)]
    images: Vec<String>,
    /// Remove an image even when several names or child images use it
    #[arg(short, long)]
    force: bool,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let mut out = io::stdout().lock();
    for arg in &args.images {
        let entries = all_images(&store)?;
        let (i, by) = find(&entries, arg)?;
        let entry = &entries[i];
        let names: Vec<String> = match by {
            // Another name keeps the image: only this tag goes.
            By::Name(name) if entry.names.len() > 1 => vec![name],
            By::Name(name) => {
                refuse_if_children(&entries, i, &familiar(&name), args.force)?;
                vec![name]
            }
            By::Id => {
                if entry.names.len() > 1 && !args.force {
                    let names: Vec<String> = entry.names.iter().map(|n| familiar(n)).collect();
                    return Err(anyhow::anyhow!(
                        "cannot remove image {} by ID: it has several names ({})",
                        short_id(&entry.id()),
                        names.join(", ")
                    ))
                    .hint("remove the names one by one, or use `--force` to remove them all");
                }
                refuse_if_children(&entries, i, &short_id(&entry.id()), args.force)?;
                entry.names.clone()
            }
        };
        store.update_refs(|tx| {
            for name in &names {
                tx.delete(name)?;
            }
            Ok(())
        })?;
        for name in &names {
            writeln!(out, "Untagged: {}", familiar(name))?;
        }
        if names.len() == entry.names.len() {
            delete_unreachable(&store, entry)?;
            writeln!(out, "Deleted: {}", entry.id())?;
        }
    }
    Ok(())
}

fn refuse_if_children(entries: &[Entry], i: usize, what: &str, force: bool) -> anyhow::Result<()> {
    let layers = entries[i].layer_digests();
    if force || layers.is_empty() {
        return Ok(());
    }
    let children: Vec<String> = entries
        .iter()
        .enumerate()
        .filter(|(j, e)| {
            let l = e.layer_digests();
            *j != i && l.len() > layers.len() && l.starts_with(&layers)
        })
        .flat_map(|(_, e)| e.names.iter().map(|n| familiar(n)))
        .collect();
    if children.is_empty() {
        return Ok(());
    }
    bail!(
        "cannot remove `{what}`: it is the base of {} (use `--force` to remove it anyway)",
        children.join(", ")
    )
}

/// Delete the blobs of `removed` that no remaining ref reaches.
///
/// A concurrent import that has written its blobs but not yet tagged them is
/// not protected until GC leases exist; only blobs of the removed image are
/// candidates, which keeps that window small.
fn delete_unreachable(store: &Store, removed: &Entry) -> anyhow::Result<()> {
    let candidates = match store.reachable_blobs(&removed.target) {
        Ok(blobs) => blobs,
        // A damaged image: at least its target goes.
        Err(_) => BTreeSet::from([removed.target.digest().to_string()]),
    };
    let _lock = store.lock()?;
    let mut keep = BTreeSet::new();
    for r in store.list_refs()? {
        keep.extend(store.reachable_blobs(&r.target)?);
    }
    for digest in candidates.difference(&keep) {
        let digest = hoist_cache::content::parse_digest(digest)?;
        store.content().delete_blob(&digest)?;
    }
    Ok(())
}
