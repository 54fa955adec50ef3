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
    /// List what holds the space: images, cache records, cache mounts,
    /// snapshots (like `docker system df -v`)
    #[arg(short, long)]
    verbose: bool,
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
    let gc = hoist_cache::GcConfig::load(store.root())?;
    let on_disk = hoist_cache::gc::disk_usage(store.root());
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
            serde_json::json!({
                "Root": store.root(),
                "Usage": values,
                "Total": total + ingest.1 + metadata,
                "OnDisk": on_disk,
                "MaxStorage": gc.max_storage,
                "MaxStorageSource": gc.source,
                "GcEnabled": gc.enabled,
            })
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
    writeln!(
        out,
        "\non disk: {} of gc.max-storage {} ({}{})",
        human_size(on_disk),
        human_size(gc.max_storage),
        gc.source,
        if gc.enabled {
            ""
        } else {
            ", automatic collection disabled"
        }
    )?;
    if args.verbose {
        verbose(&store, &mut out)?;
    }
    Ok(())
}

/// `docker system df -v`'s sections, for hoist's store.
fn verbose(store: &hoist_cache::Store, out: &mut impl Write) -> anyhow::Result<()> {
    let sizes = hoist_cache::gc::blob_sizes(store)?;
    let size_of = |blobs: &BTreeSet<String>| -> u64 {
        blobs
            .iter()
            .map(|b| sizes.get(b).copied().unwrap_or(0))
            .sum()
    };
    // Images: size, and what they share with other images.
    let refs = store.list_refs()?;
    let reach: Vec<BTreeSet<String>> = refs
        .iter()
        .map(|r| store.reachable_blobs(&r.target).unwrap_or_default())
        .collect();
    let mut users: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for set in &reach {
        for b in set {
            *users.entry(b.as_str()).or_default() += 1;
        }
    }
    writeln!(out, "\nImages space usage:\n")?;
    let mut rows = Vec::new();
    for (r, set) in refs.iter().zip(&reach) {
        let shared: BTreeSet<String> = set
            .iter()
            .filter(|b| users.get(b.as_str()).copied().unwrap_or(0) > 1)
            .cloned()
            .collect();
        let (repository, tag) = crate::util::repository_and_tag(&r.name);
        let id = store
            .image(&r.target)
            .map(|i| crate::util::short_id(i.id().as_ref()))
            .unwrap_or_else(|_| "<damaged>".into());
        rows.push(vec![
            repository,
            tag,
            id,
            human_size(size_of(set)),
            human_size(size_of(&shared)),
            human_size(size_of(set) - size_of(&shared)),
        ]);
    }
    print_table(
        out,
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
        ],
        &rows,
    )?;

    // Cache records: the blobs they hold that no image reaches.
    let roots = hoist_cache::gc::roots(store)?;
    let records = store.list_cache_records()?;
    let mut rows = Vec::new();
    let mut cache_total = BTreeSet::new();
    for record in records.iter().rev() {
        let own: BTreeSet<String> = record
            .blobs
            .iter()
            .filter(|b| !roots.contains(*b))
            .cloned()
            .collect();
        cache_total.extend(own.iter().cloned());
        let step = if record.description.is_empty() {
            "-".to_string()
        } else {
            record.description.clone()
        };
        rows.push(vec![
            crate::util::short_id(&record.key),
            human_size(size_of(&own)),
            ago_ms(record.created_ms),
            ago_ms(record.last_used_ms),
            (own.len() < record.blobs.len()).to_string(),
            step,
        ]);
    }
    writeln!(
        out,
        "\nBuild cache usage: {}\n",
        human_size(size_of(&cache_total))
    )?;
    print_table(
        out,
        &["CACHE ID", "SIZE", "CREATED", "LAST USED", "SHARED", "STEP"],
        &rows,
    )?;

    let summary = hoist_cache::gc::usage_summary(store.root());
    writeln!(out, "\nCache mounts:\n")?;
    let rows: Vec<Vec<String>> = summary
        .cache_mounts
        .iter()
        .map(|(id, (size, last))| vec![id.clone(), human_size(*size), ago_ms(*last)])
        .collect();
    print_table(out, &["ID", "SIZE", "LAST USED"], &rows)?;

    writeln!(out, "\nSnapshots:\n")?;
    let rows: Vec<Vec<String>> = hoist_builder::engine::gc::snapshot_usage(store.root())
        .into_values()
        .map(|s| {
            vec![
                s.name.chars().take(24).collect(),
                s.kind.to_string(),
                human_size(s.size),
                s.parent
                    .map(|p| p.chars().take(24).collect())
                    .unwrap_or_else(|| "-".into()),
                ago_ms(s.created_unix as i64 * 1000),
            ]
        })
        .collect();
    print_table(out, &["NAME", "KIND", "SIZE", "PARENT", "CREATED"], &rows)?;
    Ok(())
}

fn ago_ms(ms: i64) -> String {
    if ms <= 0 {
        return "N/A".to_string();
    }
    crate::time::ago(Some(&crate::time::format_rfc3339(ms / 1000)))
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
