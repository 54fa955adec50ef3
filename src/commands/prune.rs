//! `hoist prune`: remove build cache, as `docker builder prune` does; and
//! the automatic collection `hoist build` runs when the store passes
//! `gc.max-storage`.

use std::io::{self, BufRead, Write};

use anyhow::{bail, Context as _};
use hoist_builder::engine::gc;
use hoist_cache::GcOptions;

use crate::context::Context;
use crate::util::human_size;

/// Remove build cache (unused cache records, layers, snapshots, cache mounts)
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove all unused build cache, not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Provide filter values (`until=DURATION`, e.g. `until=24h`)
    #[arg(long = "filter", value_name = "FILTER")]
    filters: Vec<String>,
    /// Amount of disk space to keep for cache (e.g. `10GB`)
    #[arg(long, value_name = "SIZE")]
    keep_storage: Option<String>,
    /// Do not prompt for confirmation
    #[arg(short, long)]
    force: bool,
    /// List what was removed, with sizes
    #[arg(short, long)]
    verbose: bool,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let mut options = GcOptions {
        all: args.all,
        ..GcOptions::default()
    };
    for filter in &args.filters {
        match filter.split_once('=') {
            Some(("until", value)) => {
                options.until = Some(
                    hoist_cache::units::parse_duration(value)
                        .context("invalid --filter until=DURATION")?,
                )
            }
            _ => bail!("invalid filter `{filter}`: only `until=DURATION` is supported"),
        }
    }
    if let Some(size) = &args.keep_storage {
        options.keep_storage =
            Some(hoist_cache::units::parse_size(size).context("invalid --keep-storage")?);
    }
    if !args.force {
        let what = if args.all {
            "all build cache"
        } else {
            "all dangling build cache"
        };
        let mut err = io::stderr().lock();
        write!(
            err,
            "WARNING! This will remove {what}.\nAre you sure you want to continue? [y/N] "
        )?;
        err.flush()?;
        let mut answer = String::new();
        io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "Yes") {
            return Ok(());
        }
    }
    let store = context.store()?;
    let report = gc::collect(&store, &options).context("failed to prune the build cache")?;
    let mut out = io::stdout().lock();
    let records: Vec<_> = report
        .removed
        .iter()
        .filter(|r| args.verbose || r.kind != "blob" && r.kind != "ingest")
        .collect();
    if !records.is_empty() {
        writeln!(out, "Deleted build cache objects:")?;
        for r in records {
            if args.verbose {
                writeln!(
                    out,
                    "{}\t{}\t{}\t{}",
                    r.kind,
                    r.id,
                    human_size(r.size),
                    r.description
                )?;
            } else {
                writeln!(out, "{}", r.id)?;
            }
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "Total reclaimed space: {}",
        human_size(report.reclaimed)
    )?;
    if let Some(target) = options.keep_storage {
        if report.usage_after > target {
            writeln!(
                io::stderr().lock(),
                "warning: the store still uses {} (over --keep-storage {}): tagged images and what running builds use are kept",
                human_size(report.usage_after),
                human_size(target)
            )?;
        }
    }
    Ok(())
}
