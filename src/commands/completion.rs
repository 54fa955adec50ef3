//! `hoist completion SHELL` and `hoist man DIR`: shell completion scripts
//! (clap_complete) and man pages (clap_mangen), both generated from the same
//! clap definition the parser uses, so they never drift from the options.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context as _;

/// Print a shell completion script to stdout
///
/// bash: `hoist completion bash > /etc/bash_completion.d/hoist` (or
/// `source <(hoist completion bash)`); zsh: write it as `_hoist` into a
/// directory of `$fpath`; fish: `~/.config/fish/completions/hoist.fish`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The shell to complete for
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Write man pages (hoist.1 and hoist-COMMAND.1 for every subcommand) into DIR
///
/// `hoist man /usr/local/share/man/man1` installs them; `man -l DIR/hoist.1`
/// reads one without installing.
#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages into (created when missing)
    dir: PathBuf,
}

pub fn completion(mut command: clap::Command, args: Args) -> anyhow::Result<()> {
    // clap_complete panics on a failed write; a buffer cannot fail, and a
    // closed pipe (`hoist completion bash | head`) then ends quietly.
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "hoist", &mut script);
    std::io::stdout().lock().write_all(&script)?;
    Ok(())
}

pub fn man(command: clap::Command, args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("failed to create `{}`", args.dir.display()))?;
    clap_mangen::generate_to(command, &args.dir)
        .with_context(|| format!("failed to write man pages into `{}`", args.dir.display()))?;
    eprintln!("Wrote man pages into {}", args.dir.display());
    Ok(())
}
