//! `hoist debug`: tools for people working on hoist and on Dockerfiles.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;

use crate::context::Context;

/// Inspect how hoist understands its inputs
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: DebugCommand,
}

#[derive(clap::Subcommand, Debug)]
enum DebugCommand {
    /// Print a Dockerfile's syntax tree in BuildKit's `dockerfile-parser` dump format
    DumpAst {
        /// The Dockerfile (`-` reads standard input)
        file: PathBuf,
    },
}

pub fn run(_context: &Context, args: Args) -> anyhow::Result<()> {
    match args.command {
        DebugCommand::DumpAst { file } => dump_ast(&file),
    }
}

fn dump_ast(file: &std::path::Path) -> anyhow::Result<()> {
    let (name, text) = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the Dockerfile from standard input")?;
        ("-".to_string(), text)
    } else {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        (file.display().to_string(), text)
    };
    // The rendered error already names FILE:LINE:COL and shows a caret.
    let ast = hoist_frontend::parse(&text).map_err(|e| anyhow::anyhow!(e.render(&name)))?;
    std::io::stdout().write_all(hoist_frontend::dump_ast(&ast).as_bytes())?;
    Ok(())
}
