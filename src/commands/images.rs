//! `hoist images`: list images, Docker's columns, or a tree of bases.

use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::commands::Format;
use crate::context::Context;
use crate::resolve::{all_images, Entry};
use crate::time;
use crate::util::{human_size, print_table, repository_and_tag, short_id};

/// List images
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show manifest digests
    #[arg(long)]
    digests: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show full image IDs
    #[arg(long)]
    no_trunc: bool,
    /// Show which image is built on which base: a child's layers start with
    /// all of its parent's
    #[arg(long, conflicts_with_all = ["quiet", "format"])]
    tree: bool,
}

struct Row<'a> {
    entry: &'a Entry,
    name: String,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let mut entries = all_images(&store)?;
    // Newest first, as Docker lists them.
    entries.sort_by(|a, b| created(b).cmp(&created(a)).then(a.names.cmp(&b.names)));
    let mut out = io::stdout().lock();
    if args.tree {
        return print_tree(&mut out, &entries, args.no_trunc);
    }
    let rows: Vec<Row<'_>> = entries
        .iter()
        .flat_map(|entry| {
            entry.names.iter().map(move |name| Row {
                entry,
                name: name.clone(),
            })
        })
        .collect();
    let id = |entry: &Entry| {
        if args.no_trunc {
            entry.id()
        } else {
            short_id(&entry.id())
        }
    };
    if args.quiet {
        let mut seen = std::collections::BTreeSet::new();
        for row in &rows {
            let id = id(row.entry);
            if seen.insert(id.clone()) {
                writeln!(out, "{id}")?;
            }
        }
        return Ok(());
    }
    if args.format == Format::Json {
        for row in &rows {
            let (repository, tag) = repository_and_tag(&row.name);
            let created_at = config_created(row.entry);
            let size = row.entry.image.as_ref().map_or(0, |i| i.size());
            let value = serde_json::json!({
                "Repository": repository,
                "Tag": tag,
                "Name": row.name,
                "ID": row.entry.id(),
                "Digest": row.entry.target.digest().to_string(),
                "CreatedAt": created_at,
                "CreatedSince": time::ago(created_at.as_deref()),
                "Size": human_size(size),
                "SizeBytes": size,
            });
            writeln!(out, "{value}")?;
        }
        return Ok(());
    }
    let mut header = vec!["REPOSITORY", "TAG"];
    if args.digests {
        header.push("DIGEST");
    }
    header.extend(["IMAGE ID", "CREATED", "SIZE"]);
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            let (repository, tag) = repository_and_tag(&row.name);
            let mut cells = vec![repository, tag];
            if args.digests {
                cells.push(row.entry.target.digest().to_string());
            }
            cells.push(id(row.entry));
            cells.push(time::ago(config_created(row.entry).as_deref()));
            cells.push(human_size(row.entry.image.as_ref().map_or(0, |i| i.size())));
            cells
        })
        .collect();
    print_table(&mut out, &header, &table)?;
    Ok(())
}

fn config_created(entry: &Entry) -> Option<String> {
    entry
        .image
        .as_ref()
        .and_then(|i| i.config.created().clone())
}

fn created(entry: &Entry) -> i64 {
    config_created(entry)
        .as_deref()
        .and_then(time::parse_rfc3339)
        .unwrap_or(entry.ref_created)
}

/// The parent of each image: the image with the most layers whose layer list
/// is a proper, non-empty prefix of this one's. Computed from manifests only,
/// so it holds for imported, loaded and (later) built images alike.
pub fn parents(entries: &[Entry]) -> Vec<Option<usize>> {
    let layers: Vec<Vec<String>> = entries.iter().map(Entry::layer_digests).collect();
    (0..entries.len())
        .map(|i| {
            (0..entries.len())
                .filter(|&j| {
                    j != i
                        && !layers[j].is_empty()
                        && layers[j].len() < layers[i].len()
                        && layers[i].starts_with(&layers[j])
                })
                .max_by_key(|&j| layers[j].len())
        })
        .collect()
}

fn print_tree(out: &mut impl Write, entries: &[Entry], no_trunc: bool) -> anyhow::Result<()> {
    let parents = parents(entries);
    let mut children: BTreeMap<Option<usize>, Vec<usize>> = BTreeMap::new();
    for (i, parent) in parents.iter().enumerate() {
        children.entry(*parent).or_default().push(i);
    }
    // Siblings by name, so the tree reads the same every time.
    for kids in children.values_mut() {
        kids.sort_by(|a, b| entries[*a].names.cmp(&entries[*b].names));
    }
    let label = |i: usize| {
        let e = &entries[i];
        let names: Vec<String> = e.names.iter().map(|n| crate::util::familiar(n)).collect();
        let id = if no_trunc { e.id() } else { short_id(&e.id()) };
        let size = human_size(e.image.as_ref().map_or(0, |img| img.size()));
        let layers = e.layer_digests().len();
        let plural = if layers == 1 { "" } else { "s" };
        format!(
            "{} ({id}, {size}, {layers} layer{plural})",
            names.join(", ")
        )
    };
    fn walk(
        out: &mut impl Write,
        node: usize,
        prefix: &str,
        last: bool,
        root: bool,
        children: &BTreeMap<Option<usize>, Vec<usize>>,
        label: &dyn Fn(usize) -> String,
    ) -> io::Result<()> {
        let (branch, extend) = match (root, last) {
            (true, _) => ("", ""),
            (false, true) => ("└── ", "    "),
            (false, false) => ("├── ", "│   "),
        };
        writeln!(out, "{prefix}{branch}{}", label(node))?;
        let kids = children.get(&Some(node)).cloned().unwrap_or_default();
        let next = format!("{prefix}{extend}");
        for (k, kid) in kids.iter().enumerate() {
            walk(
                out,
                *kid,
                &next,
                k + 1 == kids.len(),
                false,
                children,
                label,
            )?;
        }
        Ok(())
    }
    for root in children.get(&None).cloned().unwrap_or_default() {
        walk(out, root, "", true, true, &children, &label)?;
    }
    Ok(())
}
