//! `hoist autobuild`: rebuild and push images when a git repository changes
//! (webhooks, a trigger URL, a post-receive hook, base-image changes).
//!
//! The `hoist-autobuild` crate does the work; this module parses arguments,
//! builds the tokio runtime for `serve` and prints records.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use hoist_autobuild::{BuildRecord, Config, ImageBuilder, Queue};
use hoist_registry::Client;

use crate::commands::Format;
use crate::context::Context;

/// Automated builds: rebuild and push images on git pushes
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Run the webhook server and the builds it queues (with a PostgreSQL
    /// queue: receive only; `worker` processes build)
    Serve {
        /// The autobuild config file (TOML)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Listen address (default: the config's `listen`)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Claim and run builds from a PostgreSQL queue (`[queue] url`)
    Worker {
        /// The autobuild config file (TOML)
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// This worker's name, recorded in each build it runs (default: HOST-PID)
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Builds at once (default: the config's `concurrency`)
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// On SIGTERM, how long to let running builds finish before handing
        /// them back to the queue
        #[arg(long, value_name = "DURATION", default_value = "10m")]
        drain_timeout: String,
    },
    /// List builds, newest first
    List {
        /// Read a PostgreSQL queue: this config's `[queue] url`
        /// (HOIST_AUTOBUILD_QUEUE works without a config)
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only this repository's builds
        #[arg(long, value_name = "NAME")]
        repo: Option<String>,
        /// How many builds
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Output format
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print a build's log
    Logs {
        /// Read a PostgreSQL queue: this config's `[queue] url`
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Build id
        id: i64,
        /// Keep printing until the build is over
        #[arg(short, long)]
        follow: bool,
    },
    /// Queue a build again (the running server picks it up)
    Retry {
        /// Use a PostgreSQL queue: this config's `[queue] url`
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Build id
        id: i64,
    },
    /// A git post-receive hook: queue a build for each updated ref
    /// (reads `OLD NEW REF` lines on stdin)
    Hook {
        /// The autobuild server, e.g. http://127.0.0.1:9870
        #[arg(long, value_name = "URL")]
        server: String,
        /// The repository's name in the server's config
        #[arg(long, value_name = "NAME")]
        repo: String,
        /// The repository's trigger token (or secret)
        #[arg(long, value_name = "S")]
        secret: Option<String>,
    },
    /// Install `hoist autobuild hook` as the post-receive hook of bare repositories
    InstallHook {
        /// Git directories (bare repositories or .git directories)
        #[arg(required = true, value_name = "GIT_DIR")]
        git_dirs: Vec<PathBuf>,
        /// The autobuild server, e.g. http://127.0.0.1:9870
        #[arg(long, value_name = "URL")]
        server: String,
        /// The repository's name in the server's config
        #[arg(long, value_name = "NAME")]
        repo: String,
        /// The repository's trigger token (or secret); the hook is then mode 0700
        #[arg(long, value_name = "S")]
        secret: Option<String>,
    },
}

pub fn run(context: &Context, args: Args) -> anyhow::Result<()> {
    match args.command {
        Sub::Serve { config, listen } => serve(context, &config, listen),
        Sub::Worker {
            config,
            name,
            concurrency,
            drain_timeout,
        } => worker(context, &config, name, concurrency, &drain_timeout),
        Sub::List {
            config,
            repo,
            limit,
            format,
        } => list(
            &queue(context, config.as_deref())?,
            repo.as_deref(),
            limit,
            format,
        ),
        Sub::Logs { config, id, follow } => logs(&queue(context, config.as_deref())?, id, follow),
        Sub::Retry { config, id } => {
            let queued = queue(context, config.as_deref())?.retry(id)?;
            println!("queued build #{} (a copy of #{id})", queued.id);
            Ok(())
        }
        Sub::Hook {
            server,
            repo,
            secret,
        } => hook(&server, &repo, secret.as_deref()),
        Sub::InstallHook {
            git_dirs,
            server,
            repo,
            secret,
        } => {
            let program = std::env::current_exe()
                .context("failed to find the hoist executable for the hook")?;
            for dir in &git_dirs {
                let path = hoist_autobuild::install_hook(
                    dir,
                    &program,
                    &server,
                    &repo,
                    secret.as_deref(),
                )?;
                println!("{}", path.display());
            }
            Ok(())
        }
    }
}

/// The queue `list`, `logs` and `retry` read: the config's `[queue] url`
/// (or HOIST_AUTOBUILD_QUEUE), else the store's own.
fn queue(context: &Context, config: Option<&std::path::Path>) -> anyhow::Result<Queue> {
    let url = match config {
        Some(path) => Config::load(path)?.queue.url,
        None => match std::env::var(hoist_autobuild::config::QUEUE_ENV) {
            Ok(url) if !url.is_empty() => {
                hoist_autobuild::config::check_queue_url(&url)
                    .map_err(|m| anyhow::anyhow!("{}: {m}", hoist_autobuild::config::QUEUE_ENV))?;
                Some(url)
            }
            _ => None,
        },
    };
    Ok(Queue::open(url.as_deref(), &context.root)?)
}

fn worker(
    context: &Context,
    config: &std::path::Path,
    name: Option<String>,
    concurrency: Option<usize>,
    drain_timeout: &str,
) -> anyhow::Result<()> {
    let drain_timeout = hoist_cache::units::parse_duration(drain_timeout)
        .map_err(|e| anyhow::anyhow!("--drain-timeout `{drain_timeout}`: {e}"))?;
    let config = Config::load(config)?;
    if concurrency == Some(0) {
        bail!("--concurrency must be at least 1");
    }
    let options = hoist_autobuild::worker::WorkerOptions {
        name: name.unwrap_or_else(hoist_autobuild::worker::default_name),
        concurrency: concurrency.unwrap_or(config.concurrency),
        drain_timeout,
    };
    let store = Arc::new(context.store()?);
    let client = Client::from_environment().context("failed to set up the registry client")?;
    let builder = ImageBuilder::new(store, client);
    let report = hoist_autobuild::run_worker(config, &context.root, builder, options, |o| {
        eprintln!(
            "autobuild worker {} running up to {} build(s) at once",
            o.name, o.concurrency
        );
    })?;
    for id in &report.handed_back {
        eprintln!("build #{id} was still running at the drain timeout; handed back to the queue");
    }
    Ok(())
}

fn serve(
    context: &Context,
    config: &std::path::Path,
    listen: Option<String>,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let shared = config.queue.url.is_some();
    let store = Arc::new(context.store()?);
    let client = Client::from_environment().context("failed to set up the registry client")?;
    let builder = ImageBuilder::new(store, client);
    hoist_autobuild::run_server(
        config,
        &context.root,
        builder,
        listen.as_deref(),
        |addr, recovery| {
            for (id, copy) in &recovery.interrupted {
                match copy {
                    Some(copy) => eprintln!("build #{id} was interrupted; queued again as #{copy}"),
                    None => eprintln!("build #{id} was interrupted again; not requeued"),
                }
            }
            eprintln!("autobuild listening on http://{addr}");
            if shared {
                eprintln!("the queue is shared (PostgreSQL): this server receives; `hoist autobuild worker` builds");
            }
        },
    )?;
    Ok(())
}

fn duration(record: &BuildRecord) -> String {
    match record.duration_ms() {
        Some(ms) if ms >= 60_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1000) % 60),
        Some(ms) => format!("{:.1}s", ms as f64 / 1000.0),
        None => "-".into(),
    }
}

fn list(queue: &Queue, repo: Option<&str>, limit: usize, format: Format) -> anyhow::Result<()> {
    let records = queue.list(repo, limit)?;
    let mut out = io::stdout().lock();
    if format == Format::Json {
        serde_json::to_writer_pretty(&mut out, &records)?;
        writeln!(out)?;
        return Ok(());
    }
    // Builds of a PostgreSQL queue name the worker that ran them.
    let workers = records.iter().any(|r| r.worker.is_some());
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![
                r.id.to_string(),
                r.repo.clone(),
                r.ref_name().to_string(),
                r.short_sha().to_string(),
                r.state.as_str().to_string(),
                r.trigger.clone(),
                duration(r),
                r.digest
                    .as_deref()
                    .map(|d| d.get(..19).unwrap_or(d).to_string())
                    .unwrap_or_else(|| "-".into()),
            ];
            if workers {
                row.push(
                    hoist_cache::text::escape(r.worker.as_deref().unwrap_or("-")).into_owned(),
                );
            }
            row
        })
        .collect();
    let mut header = vec![
        "ID", "REPO", "REF", "COMMIT", "STATE", "TRIGGER", "DURATION", "DIGEST",
    ];
    if workers {
        header.push("WORKER");
    }
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}   "));
            }
        }
        text
    };
    writeln!(out, "{}", line(header.clone()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn logs(queue: &Queue, id: i64, follow: bool) -> anyhow::Result<()> {
    let mut offset = 0;
    let mut out = io::stdout().lock();
    loop {
        let chunk = hoist_autobuild::read_log_in(queue, id, offset)?;
        out.write_all(&chunk.data)?;
        out.flush()?;
        offset = chunk.next_offset;
        if !follow || chunk.finished {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn hook(server: &str, repo: &str, secret: Option<&str>) -> anyhow::Result<()> {
    let results = hoist_autobuild::run_hook(io::stdin().lock(), server, repo, secret)?;
    let mut refused = 0;
    for r in &results {
        let short = r.sha.get(..7).unwrap_or(&r.sha);
        let what = match r.status {
            202 => "build queued".to_string(),
            200 => "nothing to build".to_string(),
            s => {
                refused += 1;
                format!("refused ({s})")
            }
        };
        // A hook's stderr is shown to the pusher as `remote: ...`.
        eprintln!(
            "autobuild: {} {short}: {what}: {}",
            r.git_ref,
            r.body.trim()
        );
    }
    if refused > 0 {
        bail!("the autobuild server refused {refused} ref(s)");
    }
    Ok(())
}
