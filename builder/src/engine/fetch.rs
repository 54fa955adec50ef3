//! Remote sources: `ADD https://…` (a file), `ADD https://….git#ref:dir` (a
//! checkout through the git CLI), and build contexts given as a git URL or a
//! tarball URL.
//!
//! A download lands in a scratch file first and its digest is computed while
//! it streams; `--checksum` is compared before anything reaches the store.
//! Nothing remote is ever held whole in memory: bodies stream to disk (one
//! announced larger than the free space there is refused before a byte is
//! written), a context archive streams from that file through the
//! snapshotter's layer apply, and a Dockerfile given instead of an archive
//! is read up to [`MAX_DOCKERFILE`] bytes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use futures::StreamExt;
use hoist_cache::text::{escape, escape_except};
use sha2::{Digest as _, Sha256};

use super::{io_error, EngineError};

/// A downloaded file.
#[derive(Clone, Debug)]
pub struct Download {
    /// Where it was written.
    pub path: PathBuf,
    /// `sha256:<hex>` of its bytes.
    pub digest: String,
    /// `Last-Modified`, if the server sent one.
    pub modified: Option<SystemTime>,
}

/// Errors of fetching remote sources. URLs and what servers and git say are
/// shown with control characters escaped.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The request failed before a response.
    #[error("failed to fetch {}", escape(url))]
    Request {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an error status.
    #[error("failed to fetch {}: server answered {}", escape(url), escape(status))]
    Status {
        /// The URL.
        url: String,
        /// `404 Not Found`.
        status: String,
    },
    /// The content does not match `--checksum`.
    #[error(
        "failed to verify {}: checksum mismatch: expected {}, got {actual}",
        escape(url),
        escape(expected)
    )]
    Checksum {
        /// The URL.
        url: String,
        /// What `--checksum` says.
        expected: String,
        /// What was downloaded.
        actual: String,
    },
    /// A `git` command failed.
    #[error(
        "failed to {} {}: {}",
        escape(action),
        escape(url),
        escape_except(stderr, &['\n'])
    )]
    Git {
        /// What was attempted.
        action: String,
        /// The repository.
        url: String,
        /// git's message.
        stderr: String,
    },
    /// The server announces more bytes than the disk has free.
    #[error(
        "failed to fetch {}: the server announces {size} bytes, more than the {available} bytes free in {}",
        escape(url),
        hoist_cache::text::escape_path(dir)
    )]
    TooLarge {
        /// The URL.
        url: String,
        /// `Content-Length`.
        size: u64,
        /// Free bytes where it would be written.
        available: u64,
        /// Where it would be written.
        dir: PathBuf,
    },
    /// A proxy variable is unusable.
    #[error(transparent)]
    Proxy(#[from] hoist_registry::proxy::ProxyError),
    /// Local I/O.
    #[error(transparent)]
    Engine(Box<EngineError>),
}

impl From<EngineError> for FetchError {
    fn from(e: EngineError) -> Self {
        FetchError::Engine(Box::new(e))
    }
}

/// The proxies of the environment apply as they do to registries
/// (`hoist_registry::proxy`: loopback direct, `NO_PROXY` honoured).
fn client(url: &str) -> Result<reqwest::Client, FetchError> {
    let builder =
        reqwest::Client::builder().user_agent(concat!("hoist/", env!("CARGO_PKG_VERSION")));
    hoist_registry::proxy::ProxySettings::from_env()
        .apply(builder)?
        .build()
        .map_err(|source| FetchError::Request {
            url: url.to_owned(),
            source,
        })
}

/// What an earlier download of a URL left to validate it with (BuildKit keeps
/// the same: the ETag, else the date, and the digest it stands for).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HttpRecord {
    /// `ETag` as the server sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified` as the server sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// `sha256:<hex>` of the content.
    pub digest: String,
}

impl HttpRecord {
    /// The modification time `Last-Modified` names.
    pub fn modified(&self) -> Option<SystemTime> {
        self.last_modified
            .as_deref()
            .and_then(|v| httpdate::parse_http_date(v).ok())
    }

    fn path(dir: &Path, url: &str) -> PathBuf {
        dir.join(format!(
            "{}.json",
            hex::encode(Sha256::digest(url.as_bytes()))
        ))
    }

    /// The record of `url` kept in `dir`, if any (an unreadable one is none).
    pub fn load(dir: &Path, url: &str) -> Option<HttpRecord> {
        let bytes = std::fs::read(Self::path(dir, url)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Keeps this record of `url` in `dir` (through a temporary file, so a
    /// concurrent build reads the old record or the new one).
    pub fn save(&self, dir: &Path, url: &str) -> Result<(), FetchError> {
        std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
        let path = Self::path(dir, url);
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(io_error("create a file in", dir))?;
        // Plain data with string fields: serialising cannot fail.
        tmp.write_all(&serde_json::to_vec(self).unwrap_or_default())
            .map_err(io_error("write", tmp.path()))?;
        tmp.persist(&path)
            .map_err(|e| e.error)
            .map_err(io_error("write", &path))?;
        Ok(())
    }
}

/// The outcome of a [`download_if_changed`].
#[derive(Clone, Debug)]
pub enum Fetched {
    /// The server says the recorded content is current (`304`): nothing was
    /// downloaded.
    NotModified(HttpRecord),
    /// The content, downloaded, with the record that validates it next time.
    Downloaded(Download, HttpRecord),
}

/// Downloads `url` into `dest` unless it is unchanged since `known` was
/// recorded: the request carries `If-None-Match` (the recorded ETag) and
/// `If-Modified-Since` (the recorded `Last-Modified`).
pub async fn download_if_changed(
    url: &str,
    dest: &Path,
    known: Option<&HttpRecord>,
) -> Result<Fetched, FetchError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(record) = known {
        if let Some(v) = record.etag.as_deref().and_then(|v| v.parse().ok()) {
            headers.insert(reqwest::header::IF_NONE_MATCH, v);
        }
        if let Some(v) = record.last_modified.as_deref().and_then(|v| v.parse().ok()) {
            headers.insert(reqwest::header::IF_MODIFIED_SINCE, v);
        }
    }
    let conditional = !headers.is_empty();
    let response = get(url, headers).await?;
    if conditional && response.status() == reqwest::StatusCode::NOT_MODIFIED {
        if let Some(record) = known {
            return Ok(Fetched::NotModified(record.clone()));
        }
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let download = save_body(url, response, dest, None).await?;
    let record = HttpRecord {
        etag,
        last_modified,
        digest: download.digest.clone(),
    };
    Ok(Fetched::Downloaded(download, record))
}

async fn get(
    url: &str,
    headers: reqwest::header::HeaderMap,
) -> Result<reqwest::Response, FetchError> {
    let request_error = |source| FetchError::Request {
        url: url.to_owned(),
        source,
    };
    client(url)?
        .get(url)
        .headers(headers)
        .send()
        .await
        .map_err(request_error)
}

/// Downloads `url` into `dest`; with `checksum` (`sha256:<hex>`), a mismatch
/// is an error and `dest` is removed.
pub async fn download(
    url: &str,
    dest: &Path,
    checksum: Option<&str>,
) -> Result<Download, FetchError> {
    let response = get(url, reqwest::header::HeaderMap::new()).await?;
    save_body(url, response, dest, checksum).await
}

async fn save_body(
    url: &str,
    response: reqwest::Response,
    dest: &Path,
    checksum: Option<&str>,
) -> Result<Download, FetchError> {
    let request_error = |source| FetchError::Request {
        url: url.to_owned(),
        source,
    };
    let status = response.status();
    if !status.is_success() {
        return Err(FetchError::Status {
            url: url.to_owned(),
            status: status.to_string(),
        });
    }
    let modified = response
        .headers()
        .get(reqwest::header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    if let Some(size) = response.content_length() {
        let dir = dest.parent().unwrap_or(Path::new("."));
        if let Ok(stat) = rustix::fs::statvfs(dir) {
            let available = stat.f_bavail.saturating_mul(stat.f_frsize);
            if size > available {
                return Err(FetchError::TooLarge {
                    url: url.to_owned(),
                    size,
                    available,
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    let mut file = std::fs::File::create(dest).map_err(io_error("create", dest))?;
    let mut hasher = Sha256::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(request_error)?;
        hasher.update(&chunk);
        file.write_all(&chunk).map_err(io_error("write", dest))?;
    }
    file.flush().map_err(io_error("write", dest))?;
    drop(file);
    let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
    if let Some(expected) = checksum {
        let expected_norm = if expected.contains(':') {
            expected.to_owned()
        } else {
            format!("sha256:{expected}")
        };
        if expected_norm != digest {
            let _ = std::fs::remove_file(dest);
            return Err(FetchError::Checksum {
                url: url.to_owned(),
                expected: expected.to_owned(),
                actual: digest,
            });
        }
    }
    Ok(Download {
        path: dest.to_path_buf(),
        digest,
        modified,
    })
}

/// [`download`] for callers without an async runtime.
pub fn download_blocking(
    url: &str,
    dest: &Path,
    checksum: Option<&str>,
) -> Result<Download, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error("start an async runtime for", dest))?;
    runtime.block_on(download(url, dest, checksum))
}

/// [`download_if_changed`] for callers without an async runtime.
pub fn download_if_changed_blocking(
    url: &str,
    dest: &Path,
    known: Option<&HttpRecord>,
) -> Result<Fetched, FetchError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io_error("start an async runtime for", dest))?;
    runtime.block_on(download_if_changed(url, dest, known))
}

/// How git reaches `ssh://` and `git@` remotes: through the build's
/// `--ssh default` agent when it has one, else the host's ssh setup.
#[derive(Clone, Copy, Debug, Default)]
pub struct GitSsh<'a> {
    /// The agent socket (`SSH_AUTH_SOCK` for git's ssh).
    pub agent: Option<&'a Path>,
}

/// The ssh command git runs with a build's agent, as BuildKit's git source
/// does (no ssh config, host keys not checked as no known_hosts is
/// forwarded), plus `BatchMode` so nothing ever prompts.
pub const GIT_SSH_COMMAND: &str = "ssh -F /dev/null -o StrictHostKeyChecking=no -o BatchMode=yes";

fn git(
    args: &[&str],
    dir: Option<&Path>,
    action: &str,
    url: &str,
    ssh: GitSsh<'_>,
) -> Result<String, FetchError> {
    let mut command = Command::new("git");
    command
        .args(args)
        // Never prompt: a build has no terminal to answer on.
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    if let Some(agent) = ssh.agent {
        command
            .env("SSH_AUTH_SOCK", agent)
            .env("GIT_SSH_COMMAND", GIT_SSH_COMMAND);
    }
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let failed = |stderr: String| FetchError::Git {
        action: action.to_owned(),
        url: url.to_owned(),
        stderr,
    };
    // Bounded: the server's `remote:` lines reach git's stderr, and a hostile
    // one could send them without end.
    let mut child = command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| failed(format!("cannot run git: {e}")))?;
    let stderr = child.stderr.take().map(|mut pipe| {
        std::thread::spawn(move || read_tail(&mut pipe, GIT_STDERR_TAIL).unwrap_or_default())
    });
    let stdout = match child.stdout.take() {
        Some(mut pipe) => read_tail(&mut pipe, GIT_STDOUT_MAX + 1).unwrap_or_default(),
        None => Vec::new(),
    };
    let status = child
        .wait()
        .map_err(|e| failed(format!("cannot run git: {e}")))?;
    let stderr = stderr.and_then(|t| t.join().ok()).unwrap_or_default();
    if !status.success() {
        return Err(failed(String::from_utf8_lossy(&stderr).trim().to_owned()));
    }
    if stdout.len() > GIT_STDOUT_MAX {
        return Err(failed(format!(
            "git printed more than {} MiB",
            GIT_STDOUT_MAX >> 20
        )));
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// The most of git's stdout kept (`ls-remote` of one ref prints a line).
const GIT_STDOUT_MAX: usize = 16 << 20;
/// How much of git's stderr is kept for an error message: its end.
const GIT_STDERR_TAIL: usize = 64 << 10;

/// Reads `input` to its end, keeping at most its last `max` bytes.
fn read_tail(input: &mut dyn Read, max: usize) -> std::io::Result<Vec<u8>> {
    let mut kept = Vec::new();
    let mut buf = [0u8; 16 << 10];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => return Ok(kept),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        kept.extend_from_slice(&buf[..n]);
        if kept.len() > 2 * max {
            kept.drain(..kept.len() - max);
        }
    }
}

/// The commit `reference` (branch, tag, commit; empty: HEAD) names in `url`.
pub fn resolve_git_ref(url: &str, reference: &str, ssh: GitSsh<'_>) -> Result<String, FetchError> {
    let is_hex = reference.len() >= 7 && reference.chars().all(|c| c.is_ascii_hexdigit());
    let wanted = if reference.is_empty() {
        "HEAD"
    } else {
        reference
    };
    let listing = git(&["ls-remote", url, wanted], None, "list refs of", url, ssh)?;
    let mut found: Option<String> = None;
    for line in listing.lines() {
        let Some((hash, name)) = line.split_once('\t') else {
            continue;
        };
        let exact = name == wanted
            || name == format!("refs/heads/{wanted}")
            || name == format!("refs/tags/{wanted}");
        if name == format!("refs/tags/{wanted}^{{}}") {
            // The commit an annotated tag points at.
            return Ok(hash.to_owned());
        }
        if exact && found.is_none() {
            found = Some(hash.to_owned());
        }
    }
    match found {
        Some(hash) => Ok(hash),
        None if is_hex => Ok(reference.to_owned()),
        None => Err(FetchError::Git {
            action: format!("find ref `{wanted}` in"),
            url: url.to_owned(),
            stderr: "no such branch, tag or commit".into(),
        }),
    }
}

/// Checks `commit` of `url` out into `dir` (which must not exist); the
/// `.git` directory is removed unless `keep_git_dir`.
pub fn checkout(
    url: &str,
    reference: &str,
    commit: &str,
    dir: &Path,
    keep_git_dir: bool,
    ssh: GitSsh<'_>,
) -> Result<(), FetchError> {
    std::fs::create_dir_all(dir).map_err(io_error("create", dir))?;
    git(
        &["init", "-q"],
        Some(dir),
        "prepare a checkout of",
        url,
        ssh,
    )?;
    git(
        &["remote", "add", "origin", url],
        Some(dir),
        "prepare a checkout of",
        url,
        ssh,
    )?;
    // Fetch the commit itself; servers that refuse unadvertised commits get
    // the ref by name instead.
    if git(
        &["fetch", "-q", "--depth=1", "origin", commit],
        Some(dir),
        "fetch",
        url,
        ssh,
    )
    .is_err()
    {
        let name = if reference.is_empty() {
            "HEAD"
        } else {
            reference
        };
        git(
            &["fetch", "-q", "origin", name],
            Some(dir),
            "fetch",
            url,
            ssh,
        )?;
    }
    git(
        &["-c", "advice.detachedHead=false", "checkout", "-q", commit],
        Some(dir),
        &format!("check out {commit} of"),
        url,
        ssh,
    )?;
    if dir.join(".gitmodules").exists() {
        git(
            &["submodule", "update", "--init", "--recursive", "--depth=1"],
            Some(dir),
            "fetch the submodules of",
            url,
            ssh,
        )?;
    }
    if keep_git_dir {
        // BuildKit keeps the branch name checked out when it can.
        if !reference.is_empty() && reference != commit {
            let _ = git(
                &["checkout", "-q", "-B", reference],
                Some(dir),
                "name the branch",
                url,
                ssh,
            );
        }
    } else {
        let git_dir = dir.join(".git");
        std::fs::remove_dir_all(&git_dir).map_err(io_error("remove", &git_dir))?;
    }
    Ok(())
}

/// Splits `https://host/repo.git#ref:subdir` into (url, ref, subdir).
pub fn split_git_url(spec: &str) -> (String, String, String) {
    let (url, fragment) = match spec.split_once('#') {
        Some((u, f)) => (u.to_owned(), f.to_owned()),
        None => (spec.to_owned(), String::new()),
    };
    let (reference, subdir) = match fragment.split_once(':') {
        Some((r, d)) => (r.to_owned(), d.to_owned()),
        None => (fragment, String::new()),
    };
    (url, reference, subdir)
}

/// Whether a `hoist build` context argument names a git repository
/// (Docker's rules: `git://`, `git@`, `github.com/`, or a URL ending in
/// `.git` with an optional `#fragment`).
pub fn is_git_context(spec: &str) -> bool {
    let url = spec.split('#').next().unwrap_or(spec);
    spec.starts_with("git://")
        || spec.starts_with("git@")
        || spec.starts_with("github.com/")
        || ((url.starts_with("https://")
            || url.starts_with("http://")
            || url.starts_with("ssh://")
            || url.starts_with("file://"))
            && url.ends_with(".git"))
}

/// Makes `dir` the checkout of a git context (`URL#ref:subdir`); returns the
/// directory to use as the context (the subdirectory, if any).
pub fn git_context(spec: &str, dir: &Path, ssh: GitSsh<'_>) -> Result<PathBuf, FetchError> {
    let (url, reference, subdir) = split_git_url(spec);
    let url = if url.starts_with("github.com/") {
        format!("https://{url}")
    } else {
        url
    };
    let commit = resolve_git_ref(&url, &reference, ssh)?;
    let checkout_dir = dir.join("checkout");
    checkout(&url, &reference, &commit, &checkout_dir, false, ssh)?;
    match super::files::resolve_in_root(&checkout_dir, &subdir, true) {
        Ok(context) if context.is_dir() => Ok(context),
        _ => Err(FetchError::Git {
            action: format!("use `{subdir}` as the context of"),
            url,
            stderr: "no such directory in the repository".into(),
        }),
    }
}

/// Makes `dir` the context downloaded from `url`: a tar archive (plain,
/// gzip or zstd) is extracted there; anything else is taken as the
/// Dockerfile, which is returned. The download goes to a scratch file beside
/// `dir` (never inside the context) and is removed afterwards.
pub fn url_context(url: &str, dir: &Path) -> Result<Option<String>, FetchError> {
    let scratch = dir.parent().unwrap_or(dir);
    let file =
        tempfile::NamedTempFile::new_in(scratch).map_err(io_error("create a file in", scratch))?;
    download_blocking(url, file.path(), None)?;
    let mut reader = file.reopen().map_err(io_error("read", file.path()))?;
    match unpack_context(&mut reader, dir)
        .map_err(io_error(format!("extract {} into", escape(url)), dir))?
    {
        Some(dockerfile) => Ok(Some(String::from_utf8_lossy(&dockerfile).into_owned())),
        None => Ok(None),
    }
}

/// The most bytes a Dockerfile sent in place of a context archive (on stdin,
/// from a URL) may have; BuildKit's frontend gives up on much smaller ones.
pub const MAX_DOCKERFILE: u64 = 16 << 20;

/// A build context sent as a stream (a download, stdin): a tar archive,
/// plain, gzip or zstd, is extracted into `dir` as it is read; any other
/// bytes are given back, being a Dockerfile rather than a context (refused
/// beyond [`MAX_DOCKERFILE`]).
///
/// The archive goes through the snapshotter's layer apply, so every entry
/// is created inside `dir` (no `..`, no symlink leading out, hardlinks only
/// to entries inside) and file data is streamed, never held. Owners are not
/// kept (COPY gives context files 0:0 or its `--chown`), and device nodes
/// and FIFOs are never created: a context holds files, and a device node
/// of the host's disk in it would be read by whatever reads the context.
pub fn unpack_context(
    input: &mut (dyn Read + Send),
    dir: &Path,
) -> std::io::Result<Option<Vec<u8>>> {
    let mut head = Vec::with_capacity(512);
    input.take(512).read_to_end(&mut head)?;
    let compressed =
        hoist_untrusted::Compression::sniff(&head) != hoist_untrusted::Compression::None;
    let plain_tar = head.get(257..262) == Some(b"ustar".as_slice());
    let mut stream = std::io::Cursor::new(head).chain(input);
    if !compressed && !plain_tar {
        let mut dockerfile = Vec::new();
        stream
            .take(MAX_DOCKERFILE + 1)
            .read_to_end(&mut dockerfile)?;
        if dockerfile.len() as u64 > MAX_DOCKERFILE {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not a tar archive, and larger than a Dockerfile may be ({} MiB)",
                    MAX_DOCKERFILE >> 20
                ),
            ));
        }
        return Ok(Some(dockerfile));
    }
    let target = hoist_snapshotter::ApplyTarget {
        root: dir.to_path_buf(),
        whiteouts: hoist_snapshotter::WhiteoutStyle::Delete,
        lowers: Vec::new(),
    };
    let options = hoist_snapshotter::ApplyOptions {
        same_owner: false,
        special_files: false,
    };
    hoist_snapshotter::apply_layer(&target, &mut stream, &options)
        .map_err(std::io::Error::other)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_tail_keeps_the_end_of_an_endless_stream_in_bounded_memory() {
        // 64 MiB of `remote:` noise then the line that matters.
        let noise = std::io::repeat(b'x').take(64 << 20);
        let mut input = noise.chain(&b"\nfatal: the end\n"[..]);
        let kept = read_tail(&mut input, 1024).unwrap();
        assert!(kept.len() <= 2 * 1024);
        assert!(kept.ends_with(b"xx\nfatal: the end\n"));
        let mut short = &b"ok\n"[..];
        assert_eq!(read_tail(&mut short, 1024).unwrap(), b"ok\n");
    }

    #[test]
    fn git_urls() {
        assert_eq!(
            split_git_url("https://h/r.git#v1:sub/dir"),
            ("https://h/r.git".into(), "v1".into(), "sub/dir".into())
        );
        assert_eq!(
            split_git_url("https://h/r.git"),
            ("https://h/r.git".into(), String::new(), String::new())
        );
        assert!(is_git_context("https://h/r.git#main"));
        assert!(is_git_context("git@github.com:a/b"));
        assert!(is_git_context("file:///srv/r.git"));
        assert!(!is_git_context("https://h/ctx.tar.gz"));
        assert!(!is_git_context("."));
    }
}
