//! Turning what the user typed (`busybox`, `app:1`, `1a2b3c`, `sha256:…`,
//! `name@sha256:…`) into an image of the store.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail};
use hoist_cache::image::Image;
use hoist_cache::{Descriptor, Store};
use hoist_registry::reference::Reference;

use crate::hint::WithHint;

/// One image of the store (one ref target) with every name pointing at it.
pub struct Entry {
    /// Fully qualified names, sorted.
    pub names: Vec<String>,
    /// What they point at.
    pub target: Descriptor,
    /// The resolved manifest and config (`None` when a blob is missing or
    /// unreadable; a warning says why).
    pub image: Option<Image>,
    /// When the first of its refs was created (seconds since the epoch).
    pub ref_created: i64,
}

impl Entry {
    pub fn image(&self) -> anyhow::Result<&Image> {
        self.image.as_ref().ok_or_else(|| {
            anyhow!(
                "image {} is damaged (a manifest or config blob is missing or invalid)",
                self.target.digest()
            )
        })
    }

    /// The image ID (config digest), or the target digest for a damaged image.
    pub fn id(&self) -> String {
        self.image
            .as_ref()
            .map_or_else(|| self.target.digest().to_string(), |i| i.id().to_string())
    }

    pub fn layer_digests(&self) -> Vec<String> {
        self.image
            .as_ref()
            .map(Image::layer_digests)
            .unwrap_or_default()
    }
}

/// Every image of the store, grouped by target.
pub fn all_images(store: &Store) -> anyhow::Result<Vec<Entry>> {
    let mut by_target: BTreeMap<String, Entry> = BTreeMap::new();
    for r in store.list_refs()? {
        let key = r.target.digest().to_string();
        if let Some(entry) = by_target.get_mut(&key) {
            entry.names.push(r.name);
            entry.ref_created = entry.ref_created.min(r.created_at);
            continue;
        }
        let image = match store.image(&r.target) {
            Ok(image) => Some(image),
            Err(e) => {
                tracing::warn!("image `{}` is damaged: {e}", r.name);
                None
            }
        };
        by_target.insert(
            key,
            Entry {
                names: vec![r.name],
                target: r.target,
                image,
                ref_created: r.created_at,
            },
        );
    }
    Ok(by_target.into_values().collect())
}

/// How an image was named on the command line.
pub enum By {
    /// By a ref name (fully qualified).
    Name(String),
    /// By image ID, manifest digest or a prefix of either.
    Id,
}

/// Find the image `arg` denotes among `entries` (from [`all_images`]);
/// returns its index.
pub fn find(entries: &[Entry], arg: &str) -> anyhow::Result<(usize, By)> {
    let parsed = Reference::parse(arg);
    if let Ok(reference) = &parsed {
        if reference.digest().is_none() {
            let name = reference.to_string();
            if let Some(i) = entries.iter().position(|e| e.names.contains(&name)) {
                return Ok((i, By::Name(name)));
            }
        } else if let Some(digest) = reference.digest() {
            let matches: Vec<usize> = (0..entries.len())
                .filter(|&i| {
                    entries[i].target.digest().to_string() == digest
                        || entries[i].image.as_ref().is_some_and(|img| {
                            img.manifest_descriptor.digest().to_string() == digest
                        })
                })
                .collect();
            if let [i] = matches[..] {
                return Ok((i, By::Id));
            }
        }
    }
    let hex = arg.strip_prefix("sha256:").unwrap_or(arg);
    let is_id = !hex.is_empty()
        && hex.len() <= 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if is_id {
        let hexes = |d: String| d.strip_prefix("sha256:").map(str::to_string).unwrap_or(d);
        let matches: Vec<usize> = (0..entries.len())
            .filter(|&i| {
                hexes(entries[i].id()).starts_with(hex)
                    || hexes(entries[i].target.digest().to_string()).starts_with(hex)
            })
            .collect();
        match matches[..] {
            [i] => return Ok((i, By::Id)),
            [] => {}
            _ => bail!(
                "image ID prefix `{arg}` is ambiguous: it matches {} images",
                matches.len()
            ),
        }
    }
    match parsed {
        Ok(reference) => Err(anyhow!("no such image: `{}`", reference.familiar()))
            .hint("`hoist images` lists the images in the store (names are normalized as Docker does: `busybox` is `docker.io/library/busybox:latest`)"),
        Err(e) => Err(anyhow!(e)),
    }
}

/// Resolve one argument against the store.
pub fn resolve(store: &Store, arg: &str) -> anyhow::Result<(Entry, By)> {
    let mut entries = all_images(store)?;
    let (i, by) = find(&entries, arg)?;
    Ok((entries.swap_remove(i), by))
}

/// Normalize a name for tagging: a tag is added when missing, digests are
/// refused (a ref names a tag).
pub fn parse_tag_name(arg: &str) -> anyhow::Result<Reference> {
    let reference = Reference::parse(arg)?;
    if reference.digest().is_some() {
        bail!("`{arg}` contains a digest; an image name here must be NAME[:TAG]");
    }
    Ok(reference)
}
