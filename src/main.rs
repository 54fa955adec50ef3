//! `hoist`: the command-line interface.
//!
//! Each subcommand lives in `src/commands/<name>.rs` with an `Args` struct
//! (clap derive) and a `run(&Context, Args)` function; `commands/mod.rs`
//! lists them. Errors travel as `anyhow::Error` and are printed here, one line
//! per cause, with `hint:` lines from [`hint::Hint`] contexts.

mod change;
mod commands;
mod context;
mod diskfull;
mod hint;
mod interrupt;
mod progress;
mod resolve;
mod time;
mod util;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

/// Daemonless OCI image builder.
#[derive(Parser, Debug)]
#[command(name = "hoist", version, about, propagate_version = true)]
struct Cli {
    /// Store root (default: /var/lib/hoist as root, else $XDG_DATA_HOME/hoist)
    #[arg(long, global = true, env = "HOIST_ROOT", value_name = "DIR")]
    root: Option<PathBuf>,

    /// Log verbosity on stderr [default: warn, or the filter in HOIST_LOG, else RUST_LOG]
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<LogLevel>,

    /// Colors on stderr: auto is on for a terminal unless NO_COLOR is set
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: ColorChoice,

    #[command(subcommand)]
    command: commands::Command,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl From<LogLevel> for tracing::Level {
    fn from(level: LogLevel) -> Self {
        match level {
            LogLevel::Error => tracing::Level::ERROR,
            LogLevel::Warn => tracing::Level::WARN,
            LogLevel::Info => tracing::Level::INFO,
            LogLevel::Debug => tracing::Level::DEBUG,
            LogLevel::Trace => tracing::Level::TRACE,
        }
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// `--log-level` wins; else `HOIST_LOG`, else `RUST_LOG`, in EnvFilter's
/// syntax (`hoist_registry=debug,info`), as other Rust tools read them.
fn log_filter(level: Option<LogLevel>) -> Result<EnvFilter, String> {
    if let Some(level) = level {
        return Ok(EnvFilter::default().add_directive(tracing::Level::from(level).into()));
    }
    for var in ["HOIST_LOG", "RUST_LOG"] {
        match std::env::var(var) {
            Ok(spec) if !spec.trim().is_empty() => {
                return EnvFilter::builder().parse(&spec).map_err(|e| {
                    format!(
                        "invalid {var} `{}`: {e}",
                        hoist_cache::text::escape_except(&spec, &[])
                    )
                });
            }
            _ => {}
        }
    }
    Ok(EnvFilter::default().add_directive(tracing::Level::WARN.into()))
}

/// `NO_COLOR` (no-color.org) turns `auto` off, as does a stderr that is not
/// a terminal; `always` and `never` are what they say.
fn colors_enabled(choice: ColorChoice) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            // Not console's `colors_supported`: it takes an empty NO_COLOR
            // as set, which no-color.org says to ignore.
            std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                && console::Term::stderr().is_term()
                && !console::is_dumb()
        }
    }
}

fn main() -> ExitCode {
    // The sandbox init of RUN steps is this binary, re-executed.
    hoist_runner::init_if_requested();
    cap_malloc_arenas();
    // Usage errors exit 2 (clap's convention, as ripgrep's and Docker's).
    let cli = Cli::parse();
    let filter = match log_filter(cli.log_level) {
        Ok(filter) => filter,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let colors = colors_enabled(cli.color);
    console::set_colors_enabled(colors);
    console::set_colors_enabled_stderr(colors);
    let context = context::Context::new(cli.root);
    match commands::run(&context, cli.command, Cli::command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is::<commands::ExitWith>() => match error.downcast() {
            Ok(commands::ExitWith { code, error }) => {
                if let Some(error) = error {
                    report(&error);
                }
                ExitCode::from(code)
            }
            Err(error) => {
                report(&error);
                ExitCode::FAILURE
            }
        },
        Err(error) if is_broken_pipe(&error) => ExitCode::SUCCESS,
        Err(error) if error.is::<interrupt::Interrupted>() => {
            report(&error);
            ExitCode::from(interrupt::EXIT_INTERRUPTED)
        }
        Err(error) => {
            report(&diskfull::explain(error, &context.root));
            ExitCode::FAILURE
        }
    }
}

/// A reader of our output went away (`hoist images | head -1`): not an error.
fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `error: …` then `  caused by: …` per cause, then `hint: …` lines after a
/// blank line.
fn report(error: &anyhow::Error) {
    // anyhow finds a context of type Hint at any depth of the chain.
    let hint = error.downcast_ref::<hint::Hint>().map(|h| h.0.clone());
    let mut lines: Vec<String> = Vec::new();
    for cause in error.chain() {
        // The last guard for input that a message quotes unescaped (a
        // library's error, an I/O error carrying a name): no control
        // character reaches the terminal; lines of a multi-line message stay.
        let raw = cause.to_string();
        if Some(&raw) == hint.as_ref() {
            continue;
        }
        let text = hoist_cache::text::escape_except(&raw, &['\n']).into_owned();
        // anyhow chains sometimes repeat a message (a context equal to its
        // source's text); print each fact once.
        if lines.last() != Some(&text) {
            lines.push(text);
        }
    }
    let hints: Vec<String> = hint.into_iter().collect();
    let mut stderr = std::io::stderr().lock();
    for (i, line) in lines.iter().enumerate() {
        let prefix = if i == 0 { "error: " } else { "  caused by: " };
        let _ = writeln!(stderr, "{prefix}{line}");
    }
    if !hints.is_empty() {
        let _ = writeln!(stderr);
        for hint in hints {
            let hint = hoist_cache::text::escape_except(&hint, &['\n']);
            let _ = writeln!(stderr, "hint: {hint}");
        }
    }
}

/// glibc gives each thread that allocates an arena of its own (up to eight
/// per core), and COPY's worker threads kept tens of MB of them after a
/// build of many files: peak RSS of the incremental bench went from 47 to
/// 78 MB. One arena, and a fixed 128 KiB threshold above which an
/// allocation is its own mapping, returned to the kernel when freed: glibc's
/// adaptive threshold otherwise rises after the first multi-MB frees (the
/// stat cache's text, an explain preimage), and from then on every 1 MiB
/// compression block came from the arena, which kept 16-22 MB freed but
/// resident. Measured on the incremental bench: 60-71 MB with two arenas,
/// 52-53 MB with this, for about 4 % more CPU (docs/bench.md).
#[allow(unsafe_code)]
fn cap_malloc_arenas() {
    // SAFETY: mallopt only tunes the allocator and is called before this
    // process starts any thread; its failure (0) leaves the default, which
    // is still correct.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}
