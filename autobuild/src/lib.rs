//! hoist-autobuild: automated builds on git pushes (Docker Hub's Automated
//! Builds, as `hoist autobuild`).
//!
//! # What it owns
//! - [`config`]: the TOML config, build rules and `{sourceref}` / `{sha}` /
//!   `{short_sha}` / `{\1}` substitution.
//! - [`webhook`]: GitHub, Bitbucket, GitLab and Gitea signatures (constant
//!   time) and push payloads.
//! - [`queue`]: the persisted queue and build records in the store's metadata
//!   database (tables `autobuild_*`), supersede, interruption recovery; and
//!   [`Queue`], that queue or the PostgreSQL one behind one interface.
//! - [`pg`]: the PostgreSQL queue (`[queue] url`) shared by receivers and
//!   workers on many machines: its own migrations, claims with `FOR UPDATE
//!   SKIP LOCKED`, heartbeat leases, logs as rows.
//! - [`worker`]: `hoist autobuild worker` (claim, heartbeat, drain, hand
//!   back) and the election of the one receiver that watches base images.
//! - [`server`]: the axum server (webhooks, trigger URL, status page, JSON
//!   API, badges) and the dispatcher running `concurrency` builds at once.
//! - [`hook`]: the git post-receive hook and its installer.
//! - [`executor`]: the [`BuildExecutor`] seam and [`GitCheckoutExecutor`]
//!   (shallow checkout of the exact commit with the git CLI, then a build
//!   function).
//! - [`image`]: [`ImageBuilder`], the real build function: base images
//!   resolved and pulled with `hoist-registry`, `hoist-builder`'s public
//!   `engine::build::build` over the checkout, tags in the store, pushes with
//!   the docker config file's credentials.
//! - [`watch`]: base-image watching (`watch_base`, `poll_interval`): the
//!   `FROM` images' digests checked in their registries, a rebuild with
//!   trigger `base:IMAGE` when one changed.
//!
//! # What it does not own
//! Solving Dockerfiles (the builder), registry protocol and credentials (the
//! registry crate), argument parsing and printing (the CLI's
//! `src/commands/autobuild.rs`, which calls [`run_server`], [`list`],
//! [`read_log`], [`retry`], [`run_hook`] and [`install_hook`]).
//!
//! # Example
//! ```no_run
//! use std::sync::Arc;
//! use hoist_autobuild::{Config, GitCheckoutExecutor, BuildOutcome, Service};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::load("autobuild.toml".as_ref())?;
//! // A build function of your own (tests use one that records the tree);
//! // `hoist autobuild serve` uses `ImageBuilder::executor()` instead.
//! let executor = GitCheckoutExecutor::new(Arc::new(|job, tree, dockerfile, log| {
//!     log.line("building");
//!     Ok(BuildOutcome { digest: "sha256:…".into(), pushed_tags: job.push_tags.clone(), ..Default::default() })
//! }));
//! let (service, _recovery) = Service::open(config.clone(), "/var/lib/hoist".as_ref(), Arc::new(executor))?;
//! let listener = tokio::net::TcpListener::bind(&config.listen).await?;
//! hoist_autobuild::serve(service, listener, hoist_autobuild::server::shutdown_signal()).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod config;
mod conn;
pub mod executor;
pub mod fuzzing;
pub mod hook;
pub mod html;
pub mod image;
pub mod pg;
pub mod queue;
pub mod redact;
pub mod server;
mod sys;
pub mod watch;
pub mod webhook;
pub mod worker;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

pub use config::{Config, ConfigError, RepoConfig, ServerConfig};
pub use executor::{
    BuildExecutor, BuildFailure, BuildFn, BuildJob, BuildOutcome, GitCheckoutExecutor, LogSink,
};
pub use hook::{install_hook, run_hook, HookResult};
pub use image::ImageBuilder;
pub use queue::{BuildRecord, BuildState, Enqueued, Queue, Recovery};
pub use server::{serve, Queued, Service};
pub use webhook::{Provider, PushedRef};

/// Errors of the autobuild service and its library functions.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the config failed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Opening the store failed.
    #[error("failed to open the store `{}`", path.display())]
    Store {
        /// The store root.
        path: PathBuf,
        /// The cause.
        #[source]
        source: hoist_builder::StoreError,
    },
    /// A metadata database statement failed.
    #[error("autobuild database statement failed")]
    Db(#[from] rusqlite::Error),
    /// The PostgreSQL queue failed.
    #[error(transparent)]
    Pg(#[from] pg::PgError),
    /// Encoding JSON failed.
    #[error("failed to encode JSON")]
    Json(#[source] serde_json::Error),
    /// A ref refused by `git check-ref-format`.
    #[error("`{0}` is not a valid git ref")]
    BadRef(String),
    /// Not a full hexadecimal commit id.
    #[error("`{0}` is not a full commit id")]
    BadSha(String),
    /// `git ls-remote` could not resolve a ref.
    #[error("failed to resolve `{git_ref}` in `{url}`: {message}")]
    Resolve {
        /// The repository.
        url: String,
        /// The ref asked for.
        git_ref: String,
        /// Why.
        message: String,
    },
    /// Another server already serves this store's queue.
    #[error("another `hoist autobuild serve` or `worker` already uses the store (lock `{}` is held)", .0.display())]
    AlreadyServing(PathBuf),
    /// `hoist autobuild worker` wants a PostgreSQL queue.
    #[error("workers need a shared queue: set `[queue] url = \"postgres://…\"` in the config or HOIST_AUTOBUILD_QUEUE")]
    NotShared,
    /// No build with this id.
    #[error("no build #{0}")]
    NoSuchBuild(i64),
    /// The HTTP server failed.
    #[error("the HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// A background task failed.
    #[error("a background task failed: {0}")]
    Task(String),
    /// Reading the hook's stdin failed.
    #[error("failed to read the post-receive input")]
    HookInput(#[source] std::io::Error),
    /// The hook could not reach the server.
    #[error("failed to reach the autobuild server at `{url}`")]
    Http {
        /// The trigger URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// `install-hook` was given something that is not a git directory.
    #[error("`{}` is not a git directory (no HEAD and objects/)", .0.display())]
    NotAGitDir(PathBuf),
    /// The server could not listen.
    #[error("failed to listen on `{addr}`")]
    Listen {
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("failed to {action} `{}`", path.display())]
    Io {
        /// What hoist was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// `hoist autobuild serve`: open the service over the store at
/// `store_root` with `builder` as the build function (and its registry
/// client for base-image watching), listen on `listen` (default: the
/// config's), call `ready` with the bound address and what recovery did,
/// then serve until SIGINT or SIGTERM. Blocks; makes its own tokio runtime.
pub fn run_server(
    config: Config,
    store_root: &Path,
    builder: ImageBuilder,
    listen: Option<&str>,
    ready: impl FnOnce(std::net::SocketAddr, &Recovery),
) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            action: "start the async runtime for",
            path: store_root.to_path_buf(),
            source,
        })?;
    let listen = listen.unwrap_or(&config.listen).to_string();
    runtime.block_on(async move {
        let client = builder.client().clone();
        let (service, recovery) =
            Service::open(config, store_root, std::sync::Arc::new(builder.executor()))?;
        service.watch_bases_with(client);
        let listener = tokio::net::TcpListener::bind(&listen)
            .await
            .map_err(|source| Error::Listen {
                addr: listen.clone(),
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Listen {
            addr: listen.clone(),
            source,
        })?;
        ready(addr, &recovery);
        serve(service, listener, server::shutdown_signal()).await
    })
}

/// `hoist autobuild worker`: open the service over the PostgreSQL queue
/// of `config` with `store_root` as this worker's own store, call `ready`,
/// then claim and run builds until SIGINT or SIGTERM, drain, and return
/// what happened. Blocks; makes its own tokio runtime.
pub fn run_worker(
    config: Config,
    store_root: &Path,
    builder: ImageBuilder,
    options: worker::WorkerOptions,
    ready: impl FnOnce(&worker::WorkerOptions),
) -> Result<worker::WorkerReport, Error> {
    if config.queue.url.is_none() {
        return Err(Error::NotShared);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Io {
            action: "start the async runtime for",
            path: store_root.to_path_buf(),
            source,
        })?;
    let report = runtime.block_on(async move {
        let (service, _) =
            Service::open(config, store_root, std::sync::Arc::new(builder.executor()))?;
        ready(&options);
        worker::work(service, options, server::shutdown_signal()).await
    });
    // Builds handed back at the drain timeout may still hold blocking
    // threads: do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    report
}

pub(crate) fn open_db(store_root: &Path) -> Result<hoist_builder::Store, Error> {
    let store = hoist_builder::Store::open(store_root).map_err(|source| Error::Store {
        path: store_root.to_path_buf(),
        source,
    })?;
    Ok(store)
}

/// `hoist autobuild list`: builds, newest first.
pub fn list(
    store_root: &Path,
    repo: Option<&str>,
    limit: usize,
) -> Result<Vec<BuildRecord>, Error> {
    queue::list(open_db(store_root)?.db(), repo, limit)
}

/// One build record.
pub fn get(store_root: &Path, id: i64) -> Result<BuildRecord, Error> {
    queue::get(open_db(store_root)?.db(), id)?.ok_or(Error::NoSuchBuild(id))
}

/// `hoist autobuild retry ID`: queue a copy of a build; a running server
/// picks it up within seconds.
pub fn retry(store_root: &Path, id: i64) -> Result<Enqueued, Error> {
    queue::retry(open_db(store_root)?.db(), id)
}

/// A piece of a build log (for `hoist autobuild logs ID [--follow]`).
#[derive(Debug, Clone)]
pub struct LogChunk {
    /// The bytes from the requested offset to the current end.
    pub data: Vec<u8>,
    /// The offset to ask for next.
    pub next_offset: u64,
    /// True when the build is over, so the log will not grow: `--follow`
    /// stops after printing this chunk.
    pub finished: bool,
}

/// Read build `id`'s log from `offset`. `--follow` calls it again with
/// `next_offset` (after a short sleep) until `finished`.
pub fn read_log(store_root: &Path, id: i64, offset: u64) -> Result<LogChunk, Error> {
    read_log_in(
        &Queue::Sqlite(std::sync::Arc::new(open_db(store_root)?)),
        id,
        offset,
    )
}

/// [`read_log`] of any queue.
pub fn read_log_in(queue: &Queue, id: i64, offset: u64) -> Result<LogChunk, Error> {
    // The state is read before the log, so a `finished` chunk has every line.
    let rec = queue.get(id)?.ok_or(Error::NoSuchBuild(id))?;
    let data = queue.read_log(id, offset)?;
    Ok(LogChunk {
        next_offset: offset + data.len() as u64,
        data,
        finished: rec.state.is_final(),
    })
}

/// Find what to build for a trigger: `git_ref` may be a full ref, a branch or
/// tag name, or `None` for the remote's HEAD branch; without `sha` the ref's
/// current commit is asked with `git ls-remote` (argv, never a shell).
pub fn resolve_ref(
    url: &str,
    git_ref: Option<&str>,
    sha: Option<String>,
) -> Result<PushedRef, Error> {
    // Shown in answers and logs: credentials in the URL (and in git's
    // messages quoting it) redacted.
    let fail = |r: &str, message: String| Error::Resolve {
        url: redact::redact_credentials(url),
        git_ref: r.to_string(),
        message: redact::redact_credentials(&message),
    };
    if let (Some(r), Some(sha)) = (git_ref, &sha) {
        if r.starts_with("refs/") {
            return Ok(PushedRef {
                git_ref: r.to_string(),
                sha: sha.clone(),
                message: String::new(),
            });
        }
    }
    let wanted: Vec<String> = match git_ref {
        None => vec!["HEAD".into()],
        Some(r) if r.starts_with("refs/") => vec![r.to_string()],
        Some(r) => vec![format!("refs/heads/{r}"), format!("refs/tags/{r}")],
    };
    for w in &wanted {
        if w != "HEAD" && !executor::check_ref_format(w) {
            return Err(Error::BadRef(w.clone()));
        }
    }
    let shown = git_ref.unwrap_or("HEAD");
    let mut cmd = Command::new("git");
    cmd.arg("ls-remote");
    if git_ref.is_none() {
        cmd.arg("--symref");
    }
    // `REF^{}` asks for an annotated tag's commit too.
    let peeled_patterns: Vec<String> = wanted
        .iter()
        .filter(|w| w.starts_with("refs/tags/"))
        .map(|w| format!("{w}^{{}}"))
        .collect();
    let out = cmd
        .arg("--")
        .arg(url)
        .args(&wanted)
        .args(&peeled_patterns)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| fail(shown, format!("cannot run git: {e}")))?;
    if !out.status.success() {
        return Err(fail(
            shown,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut head_branch = None;
    let mut found: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("ref: ") {
            head_branch = rest.split('\t').next().map(str::to_string);
            continue;
        }
        if let Some((sha, name)) = line.split_once('\t') {
            found.push((sha.to_string(), name.to_string()));
        }
    }
    let full = match git_ref {
        None => head_branch.ok_or_else(|| fail(shown, "the remote HEAD is not a branch".into()))?,
        Some(_) => wanted
            .iter()
            .find(|w| found.iter().any(|(_, n)| n == *w))
            .cloned()
            .ok_or_else(|| fail(shown, "no such branch or tag".into()))?,
    };
    // An annotated tag's `^{}` line is the commit it points at.
    let peeled = format!("{full}^{{}}");
    let current = found
        .iter()
        .find(|(_, n)| *n == peeled)
        .or_else(|| {
            found
                .iter()
                .find(|(_, n)| *n == full || (git_ref.is_none() && n == "HEAD"))
        })
        .map(|(s, _)| s.clone())
        .ok_or_else(|| fail(shown, "no commit found".into()))?;
    Ok(PushedRef {
        git_ref: full,
        sha: sha.unwrap_or(current),
        message: String::new(),
    })
}
