//! `hoist fsck`: is the store sound? The checks and the repair are
//! `hoist-cache`'s (`hoist_cache::fsck`, with the builder's snapshots);
//! this renders them.

use std::io::{self, Write};

use anyhow::bail;
use hoist_builder::engine::gc;
use hoist_cache::{FsckOptions, FsckReport};

use crate::context::Context;

/// Check the store: blob digests and sizes, refs, cache records, snapshots, leases, leftovers
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove what cannot be trusted (corrupt blobs, the records and images
    /// that need them) and what killed processes left behind
    #[arg(long)]
    repair: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: crate::commands::Format,
}

/// The kinds in the order they are checked, for the table.
const KINDS: [&str; 7] = [
    "blob",
    "ref",
    "cache record",
    "lease",
    "ingest",
    "index",
    "snapshot",
];

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let options = FsckOptions {
        repair: args.repair,
    };
    let report = gc::fsck(&store, &options)?;
    let root = store.root().display().to_string();
    let mut out = io::stdout().lock();
    match args.format {
        crate::commands::Format::Json => {
            let counts = report.counts();
            let kinds: serde_json::Map<String, serde_json::Value> = report
                .checked
                .iter()
                .map(|(kind, checked)| {
                    let (damaged, leftover) = counts.get(kind.as_str()).copied().unwrap_or((0, 0));
                    (
                        kind.clone(),
                        serde_json::json!({
                            "checked": checked, "damaged": damaged, "leftover": leftover,
                        }),
                    )
                })
                .collect();
            let doc = serde_json::json!({
                "root": root,
                "repair": args.repair,
                "kinds": kinds,
                "findings": report.findings,
                "unrepaired_damage": report.unrepaired_damage(),
                "sound": report.unrepaired_damage() == 0,
            });
            writeln!(out, "{doc}")?;
        }
        crate::commands::Format::Table => render_text(&mut out, &report, &root)?,
    }
    drop(out);
    let damaged = report.unrepaired_damage();
    if damaged > 0 {
        let hint = if args.repair {
            ""
        } else {
            "; `hoist fsck --repair` removes what cannot be trusted"
        };
        bail!(
            "the store at `{root}` is damaged: {damaged} problem{}{hint}",
            if damaged == 1 { "" } else { "s" }
        );
    }
    Ok(())
}

fn render_text(out: &mut impl Write, report: &FsckReport, root: &str) -> io::Result<()> {
    let counts = report.counts();
    let repaired = |kind: &str| {
        report
            .findings
            .iter()
            .filter(|f| f.kind == kind && f.repaired.is_some())
            .count()
    };
    writeln!(
        out,
        "{:<14}{:>9}{:>9}{:>11}{:>10}",
        "KIND", "CHECKED", "DAMAGED", "LEFTOVERS", "REPAIRED"
    )?;
    let mut kinds: Vec<&str> = KINDS.to_vec();
    for kind in report.checked.keys() {
        if !kinds.contains(&kind.as_str()) {
            kinds.push(kind);
        }
    }
    for kind in kinds {
        let checked = report.checked.get(kind).copied().unwrap_or(0);
        let (damaged, leftover) = counts.get(kind).copied().unwrap_or((0, 0));
        writeln!(
            out,
            "{kind:<14}{checked:>9}{damaged:>9}{leftover:>11}{:>10}",
            repaired(kind)
        )?;
    }
    if !report.findings.is_empty() {
        writeln!(out)?;
    }
    for f in &report.findings {
        let what = if f.damage { "damaged" } else { "leftover" };
        let id = hoist_cache::text::escape(&f.id);
        let problem = hoist_cache::text::escape(&f.problem);
        match &f.repaired {
            Some(done) => writeln!(out, "{what} {} {id}: {problem}: {done}", f.kind)?,
            None => writeln!(out, "{what} {} {id}: {problem}", f.kind)?,
        }
    }
    writeln!(out)?;
    let damaged = report.unrepaired_damage();
    let leftovers = report
        .findings
        .iter()
        .filter(|f| !f.damage && f.repaired.is_none())
        .count();
    if damaged == 0 {
        write!(out, "the store at `{root}` is sound")?;
        if leftovers > 0 {
            write!(
                out,
                " ({leftovers} leftover{} of killed processes: `hoist prune` or `hoist fsck --repair` removes them)",
                if leftovers == 1 { "" } else { "s" }
            )?;
        }
        writeln!(out)?;
    }
    Ok(())
}
