//! The seam between the queue and the image builder: [`BuildExecutor`].
//!
//! The server hands each claimed build to an executor as a [`BuildJob`]
//! (everything the config and the rules decided) with a [`LogSink`] that
//! writes the build's log file. [`GitCheckoutExecutor`] does the part every
//! executor needs, a shallow checkout of the exact commit with the git CLI,
//! and then calls a build function over the checked-out tree; the CLI plugs
//! `hoist-builder` and the registry push in there.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// Everything one build needs, decided before it starts.
#[derive(Debug, Clone, Serialize)]
pub struct BuildJob {
    /// The build record id.
    pub id: i64,
    /// Repository name.
    pub repo: String,
    /// What to clone (config `url`).
    pub url: String,
    /// Full ref (`refs/heads/main`), already checked with `git check-ref-format`.
    pub git_ref: String,
    /// Full commit id (40 or 64 hex digits).
    pub sha: String,
    /// The Dockerfile, relative to the repository root.
    pub dockerfile: String,
    /// The context, relative to the repository root.
    pub context: String,
    /// Build args with `{sourceref}`, `{sha}`, ... substituted.
    pub build_args: BTreeMap<String, String>,
    /// Tags to produce.
    pub tags: Vec<String>,
    /// Tags to push after the build.
    pub push_tags: Vec<String>,
    /// The repository's `cache_from` specs.
    pub cache_from: Vec<String>,
    /// The repository's `cache_to` spec.
    pub cache_to: Option<String>,
    /// What queued it (`github`, `trigger`, `base:IMAGE`, `rebase:IMAGE`, …).
    pub trigger: String,
    /// Where an executor may create its checkout (a fresh directory is made
    /// inside it per build).
    pub work_dir: PathBuf,
}

impl BuildJob {
    /// True when the rules asked for at least one push.
    pub fn push(&self) -> bool {
        !self.push_tags.is_empty()
    }
}

/// What a successful build produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BuildOutcome {
    /// The image (manifest) digest.
    pub digest: String,
    /// Tags pushed to their registries.
    pub pushed_tags: Vec<String>,
    /// The base images the build used (normalised reference → manifest
    /// digest), remembered for base-image watching.
    pub bases: BTreeMap<String, String>,
}

/// A failed build; the message is stored in the record and the log.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildFailure {
    /// What went wrong, for people.
    pub message: String,
}

impl BuildFailure {
    /// A failure with this message.
    pub fn new(message: impl Into<String>) -> Self {
        BuildFailure {
            message: message.into(),
        }
    }
}

/// Where a build writes its log: a file under `<store>/autobuild/logs/`,
/// cloneable and usable from any thread. Write errors are ignored on purpose:
/// a full disk must not turn a good build into a failed one.
#[derive(Debug, Clone)]
pub struct LogSink {
    file: Arc<Mutex<std::fs::File>>,
    path: PathBuf,
}

impl LogSink {
    /// Append to (creating) the log file at `path`.
    pub fn open(path: &Path) -> std::io::Result<LogSink> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(LogSink {
            file: Arc::new(Mutex::new(file)),
            path: path.to_path_buf(),
        })
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one line (a newline is added).
    pub fn line(&self, text: &str) {
        self.bytes(format!("{text}\n").as_bytes());
    }

    /// Append raw output. Credentials in URLs (`https://user:pass@…`, from
    /// the repository URL or git's messages) are redacted on the way in, so
    /// the stored log never holds them.
    pub fn bytes(&self, data: &[u8]) {
        let redacted = if data.windows(3).any(|w| w == b"://") && data.contains(&b'@') {
            let text = String::from_utf8_lossy(data);
            let r = crate::redact::redact_credentials(&text);
            (r != text).then_some(r)
        } else {
            None
        };
        let data = redacted.as_ref().map_or(data, |r| r.as_bytes());
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let _ = f.write_all(data);
    }
}

/// Runs one build. Implementations must not touch the queue: the server
/// records the result.
#[async_trait::async_trait]
pub trait BuildExecutor: Send + Sync {
    /// Build `job`, writing progress to `log`.
    async fn build(&self, job: &BuildJob, log: LogSink) -> Result<BuildOutcome, BuildFailure>;
}

/// The build function [`GitCheckoutExecutor`] calls with the job, the
/// checkout's root, the Dockerfile's bytes and the log. It runs on a blocking
/// thread.
pub type BuildFn =
    dyn Fn(&BuildJob, &Path, &[u8], &LogSink) -> Result<BuildOutcome, BuildFailure> + Send + Sync;

/// Checks out the exact commit (shallow) into a fresh directory under the
/// job's `work_dir` with the git CLI, reads the Dockerfile and calls the
/// build function; the checkout is removed afterwards.
pub struct GitCheckoutExecutor {
    build: Arc<BuildFn>,
    git: PathBuf,
}

impl GitCheckoutExecutor {
    /// An executor calling `build` over each checkout.
    pub fn new(build: Arc<BuildFn>) -> Self {
        GitCheckoutExecutor {
            build,
            git: PathBuf::from("git"),
        }
    }
}

#[async_trait::async_trait]
impl BuildExecutor for GitCheckoutExecutor {
    async fn build(&self, job: &BuildJob, log: LogSink) -> Result<BuildOutcome, BuildFailure> {
        let job = job.clone();
        let build = Arc::clone(&self.build);
        let git = self.git.clone();
        tokio::task::spawn_blocking(move || {
            let checkout = checkout(&git, &job, &log)?;
            let root = checkout.path();
            // Read inside the checkout: a pushed symlink cannot make the
            // build read (and log) a file of the server.
            let files =
                hoist_builder::engine::read_build_files(root, &job.dockerfile, &job.context)
                    .map_err(|e| {
                        BuildFailure::new(format!(
                            "cannot read the Dockerfile `{}` and context `{}` at {}: {}",
                            job.dockerfile,
                            job.context,
                            job.sha,
                            hoist_untrusted::text::error_chain(&e)
                        ))
                    })?;
            let dockerfile = files.dockerfile.into_bytes();
            log.line(&format!("building {} ({})", job.dockerfile, job.context));
            build(&job, root, &dockerfile, &log)
        })
        .await
        .map_err(|e| BuildFailure::new(format!("the build task panicked: {e}")))?
    }
}

/// True when `sha` looks like a full SHA-1 or SHA-256 commit id.
pub fn is_full_sha(sha: &str) -> bool {
    matches!(sha.len(), 40 | 64) && sha.bytes().all(|b| b.is_ascii_hexdigit())
}

/// `git check-ref-format` on a full ref (argv, never a shell).
pub fn check_ref_format(git_ref: &str) -> bool {
    // check-ref-format has no `--`; a leading `-` would be read as an option.
    if git_ref.starts_with('-') {
        return false;
    }
    Command::new("git")
        .args(["check-ref-format", git_ref])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn run_git(git: &Path, dir: &Path, args: &[&str], log: &LogSink) -> Result<(), BuildFailure> {
    log.line(&format!("$ git {}", args.join(" ")));
    let out = Command::new(git)
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| BuildFailure::new(format!("cannot run git: {e}")))?;
    log.bytes(&out.stdout);
    log.bytes(&out.stderr);
    if out.status.success() {
        Ok(())
    } else {
        Err(BuildFailure::new(format!(
            "`git {}` failed ({}): {}",
            args.first().copied().unwrap_or(""),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Shallow-fetch exactly `job.sha` into a new temp dir and check it out.
pub(crate) fn checkout(
    git: &Path,
    job: &BuildJob,
    log: &LogSink,
) -> Result<tempfile::TempDir, BuildFailure> {
    if !is_full_sha(&job.sha) {
        return Err(BuildFailure::new(format!(
            "`{}` is not a full commit id",
            job.sha
        )));
    }
    if !check_ref_format(&job.git_ref) {
        return Err(BuildFailure::new(format!(
            "`{}` is not a valid git ref",
            job.git_ref
        )));
    }
    std::fs::create_dir_all(&job.work_dir).map_err(|e| {
        BuildFailure::new(format!("cannot create `{}`: {e}", job.work_dir.display()))
    })?;
    let dir = tempfile::Builder::new()
        .prefix(&format!("build-{}-", job.id))
        .tempdir_in(&job.work_dir)
        .map_err(|e| BuildFailure::new(format!("cannot create a checkout directory: {e}")))?;
    log.line(&format!(
        "checking out {} {} of {}",
        job.git_ref, job.sha, job.url
    ));
    run_git(git, dir.path(), &["init", "-q"], log)?;
    // `--` keeps a url or ref that starts with `-` from being read as an option.
    let by_sha = run_git(
        git,
        dir.path(),
        &[
            "fetch",
            "-q",
            "--depth",
            "1",
            "--no-tags",
            "--",
            &job.url,
            &job.sha,
        ],
        log,
    );
    if by_sha.is_err() {
        // Servers without allowReachableSHA1InWant: fetch the ref and check
        // that it still points at the commit.
        log.line("fetching by commit id failed; fetching the ref");
        run_git(
            git,
            dir.path(),
            &[
                "fetch",
                "-q",
                "--depth",
                "1",
                "--no-tags",
                "--",
                &job.url,
                &job.git_ref,
            ],
            log,
        )?;
    }
    let rev_parse = |what: &str| -> Result<String, BuildFailure> {
        let out = Command::new(git)
            .arg("-C")
            .arg(dir.path())
            .args(["rev-parse", "--verify", what])
            .output()
            .map_err(|e| BuildFailure::new(format!("cannot run git: {e}")))?;
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let fetched = rev_parse("FETCH_HEAD^{commit}")?;
    // An annotated tag's push names the tag object: it must be what was
    // fetched, and its commit is built.
    if fetched != job.sha && rev_parse("FETCH_HEAD")? != job.sha {
        return Err(BuildFailure::new(format!(
            "{} is at {fetched}, not {}: the commit is no longer reachable",
            job.git_ref, job.sha
        )));
    }
    run_git(
        git,
        dir.path(),
        &[
            "-c",
            "advice.detachedHead=false",
            "checkout",
            "-q",
            "--detach",
            &fetched,
        ],
        log,
    )?;
    Ok(dir)
}
