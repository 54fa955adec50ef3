//! `hoist history IMAGE`: one row per history entry, newest first.

use std::io::{self, Write};

use crate::commands::Format;
use crate::context::Context;
use crate::resolve;
use crate::time;
use crate::util::{human_size, print_table, short_id};

/// Show the history of an image
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Image (name, ID or digest)
    image: String,
    /// Do not truncate output
    #[arg(long)]
    no_trunc: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    let store = context.store()?;
    let (entry, _) = resolve::resolve(&store, &args.image)?;
    let image = entry.image()?;
    let mut layers = image.layers().iter();
    let history = image.config.history().clone().unwrap_or_default();
    // (created, created_by, size, comment), oldest first.
    let mut rows: Vec<(Option<String>, String, u64, String)> = Vec::new();
    for h in &history {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            layers.next().map_or(0, |l| l.size())
        };
        rows.push((
            h.created().clone(),
            h.created_by().clone().unwrap_or_default(),
            size,
            h.comment().clone().unwrap_or_default(),
        ));
    }
    // Layers the history does not account for (images without history).
    for layer in layers {
        rows.push((None, String::new(), layer.size(), String::new()));
    }
    rows.reverse();
    let mut out = io::stdout().lock();
    let id = image.id().to_string();
    if args.format == Format::Json {
        for (i, (created, created_by, size, comment)) in rows.iter().enumerate() {
            let value = serde_json::json!({
                "ID": if i == 0 { id.clone() } else { "<missing>".to_string() },
                "CreatedAt": created,
                "CreatedSince": time::ago(created.as_deref()),
                "CreatedBy": created_by,
                "Size": human_size(*size),
                "SizeBytes": size,
                "Comment": comment,
            });
            writeln!(out, "{value}")?;
        }
        return Ok(());
    }
    let table: Vec<Vec<String>> = rows
        .iter()
        .enumerate()
        .map(|(i, (created, created_by, size, comment))| {
            let image = match (i, args.no_trunc) {
                (0, true) => id.clone(),
                (0, false) => short_id(&id),
                _ => "<missing>".to_string(),
            };
            let created_by = if args.no_trunc || created_by.chars().count() <= 45 {
                created_by.clone()
            } else {
                format!("{}…", created_by.chars().take(44).collect::<String>())
            };
            vec![
                image,
                time::ago(created.as_deref()),
                created_by,
                human_size(*size),
                comment.clone(),
            ]
        })
        .collect();
    print_table(
        &mut out,
        &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        &table,
    )?;
    Ok(())
}
