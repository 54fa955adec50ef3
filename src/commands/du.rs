//! `hoist du`: store usage by kind.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::Path;

use crate::commands::Format;
use crate::context::Context;
use crate::util::{human_size, print_table};

/// Show the store's disk usage by kind
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let refs = store.list_refs()?;
    let targets: BTreeSet<String> = refs.iter().map(|r| r.target.digest().to_string()).collect();
    let mut reachable = BTreeSet::new();
    for r in &refs {
        if let Ok(blobs) = store.reachable_blobs(&r.target) {
            reachable.extend(blobs);
        }
    }
    let blobs = store.content().blobs()?;
    let (mut used, mut used_count, mut total) = (0u64, 0u64, 0u64);
    for (digest, size) in &blobs {
        total += size;
        if reachable.contains(&digest.to_string()) {
            used += size;
            used_count += 1;
        }
    }
    // (kind, count, bytes)
    let mut rows: Vec<(String, Option<u64>, u64)> = vec![
        ("images".to_string(), Some(targets.len() as u64), used),
        ("  blobs in use".to_string(), Some(used_count), used),
        (
            "  blobs unreferenced".to_string(),
            Some(blobs.len() as u64 - used_count),
            total - used,
        ),
    ];
    let ingest = dir_usage(&store.content().ingest_dir());
    rows.push(("ingest (incomplete)".to_string(), Some(ingest.0), ingest.1));
    let mut metadata = 0;
    for name in [
        "meta.db",
        "meta.db-wal",
        "meta.db-shm",
        "content/index.json",
        "content/oci-layout",
        "lock",
    ] {
        metadata += std::fs::metadata(store.root().join(name)).map_or(0, |m| m.len());
    }
    rows.push(("metadata".to_string(), None, metadata));
    // Everything else under the root (snapshots/, cache-mounts/, tmp/ …), by
    // top-level directory, so later features show up without changes here.
    let known = ["content", "meta.db", "meta.db-wal", "meta.db-shm", "lock"];
    if let Ok(read) = std::fs::read_dir(store.root()) {
        let mut others: Vec<_> = read
            .filter_map(Result::ok)
            .filter(|e| !known.contains(&e.file_name().to_string_lossy().as_ref()))
            .collect();
        others.sort_by_key(|e| e.file_name());
        for e in others {
            let (count, bytes) = dir_usage(&e.path());
            rows.push((
                format!("{}/", e.file_name().to_string_lossy()),
                Some(count),
                bytes,
            ));
        }
    }
    let mut out = io::stdout().lock();
    if args.format == Format::Json {
        let values: Vec<_> = rows
            .iter()
            .map(|(kind, count, bytes)| {
                serde_json::json!({"Type": kind.trim(), "Count": count, "Size": bytes})
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::json!({"Root": store.root(), "Usage": values, "Total": total + ingest.1 + metadata})
        )?;
        return Ok(());
    }
    writeln!(out, "store: {}", store.root().display())?;
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|(kind, count, bytes)| {
            vec![
                kind.clone(),
                count.map_or_else(|| "-".to_string(), |c| c.to_string()),
                human_size(*bytes),
            ]
        })
        .collect();
    print_table(&mut out, &["TYPE", "COUNT", "SIZE"], &table)?;
    Ok(())
}

/// (files, bytes) under a directory.
fn dir_usage(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if entry.file_type().is_file() {
            files += 1;
            bytes += entry.metadata().map_or(0, |m| m.len());
        }
    }
    (files, bytes)
}
