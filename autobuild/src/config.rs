//! The autobuild configuration file (TOML) and Docker Hub style build rules.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hoist_builder::pipeline::{CacheSpec, Direction};
use regex::Regex;
use serde::Deserialize;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9870";

/// Errors reading or checking a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read the autobuild config `{}`", path.display())]
    Read {
        /// The config file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is malformed or a key has the wrong type.
    #[error("invalid autobuild config `{}`: {message}", path.display())]
    Parse {
        /// The config file.
        path: PathBuf,
        /// toml's message (names the key and the line).
        message: String,
    },
    /// A key has a value that is not usable.
    #[error("invalid autobuild config `{}`: `{key}`: {message}", path.display())]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// The key, e.g. `repo[0].rule[1].match`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    concurrency: Option<usize>,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    queue: RawQueue,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    repo: Vec<RawRepo>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    #[serde(default)]
    shared: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    url: Option<String>,
    lease: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    header_timeout: Option<String>,
    body_timeout: Option<String>,
    max_connections: Option<usize>,
    max_body: Option<String>,
    rate_limit: Option<u32>,
    rate_burst: Option<u32>,
    read_token: Option<String>,
    read_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepo {
    name: String,
    url: String,
    secret: Option<String>,
    secret_file: Option<PathBuf>,
    trigger_token: Option<String>,
    trigger_token_file: Option<PathBuf>,
    dockerfile: Option<String>,
    context: Option<String>,
    #[serde(default)]
    build_args: BTreeMap<String, String>,
    #[serde(default)]
    watch_base: bool,
    on_base_change: Option<String>,
    poll_interval: Option<String>,
    #[serde(default)]
    cache_from: Vec<String>,
    cache_to: Option<String>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    source: String,
    #[serde(rename = "match")]
    pattern: String,
    tag: String,
    #[serde(default)]
    push: bool,
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server listens.
    pub listen: String,
    /// Builds at once (at least 1).
    pub concurrency: usize,
    /// The `[server]` table: limits and the read token.
    pub server: ServerConfig,
    /// The repositories, by unique name.
    pub repos: Vec<RepoConfig>,
    /// The `[queue]` table: where builds are queued.
    pub queue: QueueConfig,
    /// The `[cache]` table.
    pub cache: CacheConfig,
}

/// `[cache]`: the build cache workers share.
#[derive(Debug, Clone, Default)]
pub struct CacheConfig {
    /// `shared = true`: a repository without `cache_from`/`cache_to` imports
    /// and exports (`mode=max`) a registry cache at `REPO:buildcache`, REPO
    /// being the repository of its build's first pushed tag, so a step built
    /// on one worker is cached on every other.
    pub shared: bool,
}

impl CacheConfig {
    /// The registry cache reference for a build pushing `push_tags`
    /// (`REPO:buildcache`), when `shared` is on.
    pub fn shared_ref(&self, push_tags: &[String]) -> Option<String> {
        if !self.shared {
            return None;
        }
        let tag = push_tags.first()?;
        let name = tag.split_once('@').map_or(tag.as_str(), |(n, _)| n);
        let repo = match (name.rfind(':'), name.rfind('/')) {
            (Some(colon), slash) if slash.is_none_or(|s| colon > s) => &name[..colon],
            _ => name,
        };
        Some(format!("{repo}:buildcache"))
    }
}

/// The environment variable that overrides `[queue] url`.
pub const QUEUE_ENV: &str = "HOIST_AUTOBUILD_QUEUE";

/// `[queue]`: the store's SQLite database (default) or a PostgreSQL
/// database shared by receivers and workers.
#[derive(Clone)]
pub struct QueueConfig {
    /// `postgres://…` (or `postgresql://…`); `None` for the store's
    /// `meta.db`. [`Config::load`] takes [`QUEUE_ENV`] over the file's value.
    pub url: Option<String>,
    /// How old a worker's heartbeat may get before its builds are requeued
    /// (`lease`, default 30 s).
    pub lease: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            url: None,
            lease: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for QueueConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold the database password.
        f.debug_struct("QueueConfig")
            .field(
                "url",
                &self.url.as_deref().map(crate::redact::redact_credentials),
            )
            .field("lease", &self.lease)
            .finish()
    }
}

/// Check a queue URL: `postgres://` or `postgresql://`, parsed by the
/// PostgreSQL client.
pub fn check_queue_url(url: &str) -> Result<(), String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err(format!(
            "`{}` is not a postgres:// URL",
            crate::redact::escape_control(&crate::redact::redact_credentials(url))
        ));
    }
    url.parse::<postgres::Config>()
        .map(|_| ())
        .map_err(|e| format!("invalid PostgreSQL URL: {e}"))
}

/// `[server]`: what the HTTP server allows a client (defaults in
/// [`ServerConfig::default`]).
#[derive(Clone)]
pub struct ServerConfig {
    /// Longest wait for a request's headers (`header_timeout`, default 10 s);
    /// the connection is closed after it.
    pub header_timeout: Duration,
    /// Longest wait for a request's body (`body_timeout`, default 30 s);
    /// 408 after it.
    pub body_timeout: Duration,
    /// Connections served at once (`max_connections`, default 256). When
    /// all are taken, the connection idle or waiting for its headers the
    /// longest is closed to make room; when every one is busy, new
    /// connections wait.
    pub max_connections: usize,
    /// Largest request body (`max_body`, default 25 MiB, GitHub's webhook
    /// cap); 413 above.
    pub max_body: usize,
    /// Requests per minute per source address on `/hooks/...` and
    /// `/trigger/...` (`rate_limit`, default 60; 0 turns it off); 429 with
    /// `Retry-After` above.
    pub rate_limit: u32,
    /// Requests a source may send at once before the rate applies
    /// (`rate_burst`, default 30).
    pub rate_burst: u32,
    /// When set, the status pages, the API and the logs want it
    /// (`Authorization: Bearer T`, `?token=T` or the cookie set by the
    /// latter); `read_token` or `read_token_file`.
    pub read_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 256,
            max_body: 25 << 20,
            rate_limit: 60,
            rate_burst: 30,
            read_token: None,
        }
    }
}

impl std::fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("header_timeout", &self.header_timeout)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .field("max_body", &self.max_body)
            .field("rate_limit", &self.rate_limit)
            .field("rate_burst", &self.rate_burst)
            .field(
                "read_token",
                &self.read_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One watched repository.
#[derive(Debug, Clone)]
pub struct RepoConfig {
    /// Unique name (used in URLs).
    pub name: String,
    /// Anything `git clone` takes.
    pub url: String,
    /// The webhook secret (HMAC key, or GitLab's token).
    pub secret: Option<String>,
    /// The token `POST /trigger/NAME` and the post-receive hook must send;
    /// `trigger_token`, else the secret.
    pub trigger_token: Option<String>,
    /// The Dockerfile, relative to the repository root.
    pub dockerfile: String,
    /// The build context, relative to the repository root.
    pub context: String,
    /// Build args before substitution.
    pub build_args: BTreeMap<String, String>,
    /// Rebuild when a base image changes (see [`crate::watch`]).
    pub watch_base: bool,
    /// What a changed base image queues: a rebuild, or a rebase of the
    /// last image (`on_base_change`, default `"rebuild"`).
    pub on_base_change: OnBaseChange,
    /// How often base images are checked.
    pub poll_interval: Duration,
    /// Build caches imported before each build, in `--cache-from` syntax
    /// (`type=registry,ref=REF`, `type=local,src=DIR`).
    pub cache_from: Vec<String>,
    /// Where each build's cache is exported, in `--cache-to` syntax.
    pub cache_to: Option<String>,
    /// Build rules; a ref builds only when one matches.
    pub rules: Vec<Rule>,
}

/// What a watched base image that moved queues (`on_base_change`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnBaseChange {
    /// Build the HEAD branch again (trigger `base:IMAGE`).
    #[default]
    Rebuild,
    /// Move the last images onto the new base without running any step,
    /// as `hoist rebase` does (trigger `rebase:IMAGE`).
    Rebase,
}

impl OnBaseChange {
    /// The prefix of the trigger a base change queues with.
    pub fn trigger_prefix(self) -> &'static str {
        match self {
            OnBaseChange::Rebuild => "base:",
            OnBaseChange::Rebase => "rebase:",
        }
    }
}

/// Whether a ref is a branch or a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// `refs/heads/...`
    Branch,
    /// `refs/tags/...`
    Tag,
}

impl SourceKind {
    /// Split a full ref into its kind and short name.
    pub fn split(full_ref: &str) -> Option<(SourceKind, &str)> {
        if let Some(name) = full_ref.strip_prefix("refs/heads/") {
            Some((SourceKind::Branch, name))
        } else {
            full_ref
                .strip_prefix("refs/tags/")
                .map(|name| (SourceKind::Tag, name))
        }
    }
}

/// One build rule (Docker Hub's build rules).
#[derive(Debug, Clone)]
pub struct Rule {
    /// Branch or tag.
    pub source: SourceKind,
    /// Regex on the branch or tag name.
    pub pattern: Regex,
    /// Tag template.
    pub tag: String,
    /// Push the tag after the build.
    pub push: bool,
}

/// The values substituted into tags and build args for one build.
#[derive(Debug, Clone)]
pub struct Substitution<'a> {
    /// Branch or tag name.
    pub sourceref: &'a str,
    /// Full commit id.
    pub sha: &'a str,
    /// Regex groups of the matching rule (`{\0}` is the whole match).
    pub groups: Vec<String>,
}

impl Substitution<'_> {
    /// Replace `{sourceref}`, `{sha}`, `{short_sha}` and `{\N}` in `template`.
    /// Unknown placeholders are left as they are.
    pub fn apply(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len());
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let key = &after[..end];
            let value = match key {
                "sourceref" => Some(self.sourceref.to_string()),
                "sha" => Some(self.sha.to_string()),
                "short_sha" => Some(self.sha.chars().take(7).collect()),
                _ => key
                    .strip_prefix('\\')
                    .and_then(|n| n.parse::<usize>().ok())
                    .map(|n| self.groups.get(n).cloned().unwrap_or_default()),
            };
            match value {
                Some(v) => out.push_str(&v),
                None => out.push_str(&rest[start..start + end + 2]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// What the rules say about one ref: the tags to produce (substituted) and
/// whether to push them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Tags from every matching rule, in rule order, without duplicates.
    pub tags: Vec<String>,
    /// Tags to push (a subset of `tags`).
    pub push_tags: Vec<String>,
    /// Build args with substitutions applied.
    pub build_args: BTreeMap<String, String>,
}

impl RepoConfig {
    /// The plan for `full_ref` at `sha`, or `None` when the repository has
    /// rules and none matches (Docker Hub builds nothing then). A repository
    /// without rules builds every ref, untagged.
    pub fn plan(&self, full_ref: &str, sha: &str) -> Option<Plan> {
        let (kind, name) = SourceKind::split(full_ref)?;
        let base = Substitution {
            sourceref: name,
            sha,
            groups: vec![name.to_string()],
        };
        let mut plan = Plan {
            build_args: self
                .build_args
                .iter()
                .map(|(k, v)| (k.clone(), base.apply(v)))
                .collect(),
            ..Plan::default()
        };
        if self.rules.is_empty() {
            return Some(plan);
        }
        let mut matched = false;
        for rule in self.rules.iter().filter(|r| r.source == kind) {
            let Some(captures) = rule.pattern.captures(name) else {
                continue;
            };
            matched = true;
            let subst = Substitution {
                groups: captures
                    .iter()
                    .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
                    .collect(),
                ..base.clone()
            };
            let tag = subst.apply(&rule.tag);
            if !plan.tags.contains(&tag) {
                plan.tags.push(tag.clone());
            }
            if rule.push && !plan.push_tags.contains(&tag) {
                plan.push_tags.push(tag);
            }
        }
        matched.then_some(plan)
    }
}

impl Config {
    /// Read and check the config file at `path`. Relative `secret_file`s are
    /// relative to the config file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Config::parse(&text, path)?;
        if let Some(url) = std::env::var_os(QUEUE_ENV) {
            let url = url.to_string_lossy().into_owned();
            if !url.is_empty() {
                check_queue_url(&url).map_err(|message| ConfigError::Invalid {
                    path: path.to_path_buf(),
                    key: QUEUE_ENV.into(),
                    message,
                })?;
                config.queue.url = Some(url);
            }
        }
        Ok(config)
    }

    /// Parse config text; `path` names the file in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let invalid = |key: String, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let concurrency = raw.concurrency.unwrap_or(1);
        if concurrency == 0 {
            return Err(invalid("concurrency".into(), "must be at least 1".into()));
        }
        let server = parse_server(raw.server, base_dir, &invalid)?;
        let mut queue = QueueConfig::default();
        if let Some(url) = raw.queue.url {
            check_queue_url(&url).map_err(|m| invalid("queue.url".into(), m))?;
            queue.url = Some(url);
        }
        if let Some(s) = raw.queue.lease {
            queue.lease = parse_duration(&s).filter(|d| !d.is_zero()).ok_or_else(|| {
                invalid(
                    "queue.lease".into(),
                    format!("`{s}` is not a duration like `30s`, `10m` or `1h`"),
                )
            })?;
        }
        let mut repos: Vec<RepoConfig> = Vec::new();
        for (i, r) in raw.repo.into_iter().enumerate() {
            let key = |k: &str| format!("repo[{i}].{k}");
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(invalid(
                    key("name"),
                    format!(
                        "`{}` must be non-empty letters, digits, `-`, `_` or `.`",
                        r.name
                    ),
                ));
            }
            if repos.iter().any(|o| o.name == r.name) {
                return Err(invalid(key("name"), format!("`{}` is used twice", r.name)));
            }
            if r.url.is_empty() || r.url.starts_with('-') {
                return Err(invalid(key("url"), "must be a git URL or path".into()));
            }
            let read_secret = |inline: Option<String>,
                               file: Option<PathBuf>,
                               name: &str|
             -> Result<Option<String>, ConfigError> {
                match (inline, file) {
                    (Some(_), Some(_)) => Err(invalid(
                        key(&format!("{name}_file")),
                        format!("give `{name}` or `{name}_file`, not both"),
                    )),
                    (Some(s), None) => Ok(Some(s)),
                    (None, Some(f)) => {
                        let f = base_dir.join(f);
                        let s = std::fs::read_to_string(&f).map_err(|e| {
                            invalid(
                                key(&format!("{name}_file")),
                                format!("cannot read `{}`: {e}", f.display()),
                            )
                        })?;
                        Ok(Some(s.trim_end_matches(['\n', '\r']).to_string()))
                    }
                    (None, None) => Ok(None),
                }
            };
            let secret = read_secret(r.secret, r.secret_file, "secret")?;
            let trigger_token =
                read_secret(r.trigger_token, r.trigger_token_file, "trigger_token")?
                    .or_else(|| secret.clone());
            for (k, v) in [("secret", &secret), ("trigger_token", &trigger_token)] {
                if v.as_deref() == Some("") {
                    return Err(invalid(key(k), "must not be empty".into()));
                }
            }
            let dockerfile = r.dockerfile.unwrap_or_else(|| "Dockerfile".into());
            let context = r.context.unwrap_or_else(|| ".".into());
            for (k, v) in [("dockerfile", &dockerfile), ("context", &context)] {
                if Path::new(v).is_absolute()
                    || Path::new(v)
                        .components()
                        .any(|c| matches!(c, std::path::Component::ParentDir))
                {
                    return Err(invalid(
                        key(k),
                        format!("`{v}` must be a path inside the repository"),
                    ));
                }
            }
            let poll_interval = match r.poll_interval {
                None => Duration::from_secs(3600),
                Some(s) => parse_duration(&s).ok_or_else(|| {
                    invalid(
                        key("poll_interval"),
                        format!("`{s}` is not a duration like `30s`, `10m` or `1h`"),
                    )
                })?,
            };
            let on_base_change = match r.on_base_change.as_deref() {
                None | Some("rebuild") => OnBaseChange::Rebuild,
                Some("rebase") => OnBaseChange::Rebase,
                Some(other) => {
                    return Err(invalid(
                        key("on_base_change"),
                        format!(
                            "`{}` must be \"rebuild\" or \"rebase\"",
                            hoist_untrusted::text::escape(other)
                        ),
                    ))
                }
            };
            // Checked here, so a typo stops the server at start instead of
            // failing every build.
            for (j, spec) in r.cache_from.iter().enumerate() {
                CacheSpec::parse(spec, Direction::From)
                    .map_err(|e| invalid(format!("repo[{i}].cache_from[{j}]"), e.to_string()))?;
            }
            if let Some(spec) = &r.cache_to {
                CacheSpec::parse(spec, Direction::To)
                    .map_err(|e| invalid(key("cache_to"), e.to_string()))?;
            }
            let mut rules = Vec::new();
            for (j, rule) in r.rule.into_iter().enumerate() {
                let rkey = |k: &str| format!("repo[{i}].rule[{j}].{k}");
                let source = match rule.source.as_str() {
                    "branch" => SourceKind::Branch,
                    "tag" => SourceKind::Tag,
                    other => {
                        return Err(invalid(
                            rkey("source"),
                            format!("`{other}` must be \"branch\" or \"tag\""),
                        ))
                    }
                };
                let pattern = Regex::new(&rule.pattern)
                    .map_err(|e| invalid(rkey("match"), format!("bad regex: {e}")))?;
                if rule.tag.is_empty() {
                    return Err(invalid(rkey("tag"), "must not be empty".into()));
                }
                rules.push(Rule {
                    source,
                    pattern,
                    tag: rule.tag,
                    push: rule.push,
                });
            }
            repos.push(RepoConfig {
                name: r.name,
                url: r.url,
                secret,
                trigger_token,
                dockerfile,
                context,
                build_args: r.build_args,
                watch_base: r.watch_base,
                on_base_change,
                poll_interval,
                cache_from: r.cache_from,
                cache_to: r.cache_to,
                rules,
            });
        }
        Ok(Config {
            listen: raw.listen.unwrap_or_else(|| DEFAULT_LISTEN.into()),
            concurrency,
            server,
            repos,
            queue,
            cache: CacheConfig {
                shared: raw.cache.shared,
            },
        })
    }

    /// The repository named `name`.
    pub fn repo(&self, name: &str) -> Option<&RepoConfig> {
        self.repos.iter().find(|r| r.name == name)
    }
}

fn parse_server(
    raw: RawServer,
    base_dir: &Path,
    invalid: &dyn Fn(String, String) -> ConfigError,
) -> Result<ServerConfig, ConfigError> {
    let mut server = ServerConfig::default();
    let key = |k: &str| format!("server.{k}");
    for (name, value, slot) in [
        (
            "header_timeout",
            raw.header_timeout,
            &mut server.header_timeout,
        ),
        ("body_timeout", raw.body_timeout, &mut server.body_timeout),
    ] {
        if let Some(v) = value {
            *slot = parse_duration(&v).ok_or_else(|| {
                invalid(
                    key(name),
                    format!("`{v}` is not a duration like `10s` or `1m`"),
                )
            })?;
        }
    }
    if let Some(n) = raw.max_connections {
        if n == 0 {
            return Err(invalid(key("max_connections"), "must be at least 1".into()));
        }
        server.max_connections = n;
    }
    if let Some(v) = raw.max_body {
        server.max_body = hoist_untrusted::units::parse_size(&v)
            .ok()
            .filter(|n| *n > 0)
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| {
                invalid(
                    key("max_body"),
                    format!("`{v}` is not a size like `25MiB` or `1MB`"),
                )
            })?;
    }
    if let Some(n) = raw.rate_limit {
        server.rate_limit = n;
    }
    if let Some(n) = raw.rate_burst {
        if n == 0 {
            return Err(invalid(key("rate_burst"), "must be at least 1".into()));
        }
        server.rate_burst = n;
    }
    server.read_token = match (raw.read_token, raw.read_token_file) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                key("read_token_file"),
                "give `read_token` or `read_token_file`, not both".into(),
            ))
        }
        (Some(t), None) => Some(t),
        (None, Some(f)) => {
            let f = base_dir.join(f);
            let t = std::fs::read_to_string(&f).map_err(|e| {
                invalid(
                    key("read_token_file"),
                    format!("cannot read `{}`: {e}", f.display()),
                )
            })?;
            Some(t.trim_end_matches(['\n', '\r']).to_string())
        }
        (None, None) => None,
    };
    if server.read_token.as_deref() == Some("") {
        return Err(invalid(key("read_token"), "must not be empty".into()));
    }
    Ok(server)
}

/// `30s`, `10m`, `1h30m` (hoist's one duration parser), or the config's own
/// forms on top of it: `1d` and a plain number of seconds.
fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let d = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        Duration::from_secs(s.parse().ok()?)
    } else if let Some(days) = s.strip_suffix('d') {
        Duration::from_secs(days.parse::<u64>().ok()?.checked_mul(86_400)?)
    } else {
        hoist_untrusted::units::parse_duration(s).ok()?
    };
    (!d.is_zero()).then_some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const EXAMPLE: &str = r#"
listen = "127.0.0.1:9870"
concurrency = 1
[[repo]]
name = "demo"
url = "/srv/git/demo.git"
secret = "s3cret"
dockerfile = "Dockerfile"
context = "."
build_args = { VERSION = "{sourceref}" }
[[repo.rule]]
source = "branch"
match = "^main$"
tag = "127.0.0.1:5000/demo:latest"
push = true
[[repo.rule]]
source = "tag"
match = '^v([0-9]+)\.([0-9]+)$'
tag = '127.0.0.1:5000/demo:{\1}.{\2}-{short_sha}'
"#;

    #[test]
    fn parses_the_issue_example_and_plans() {
        let c = Config::parse(EXAMPLE, Path::new("/etc/a.toml")).unwrap();
        let r = c.repo("demo").unwrap();
        assert_eq!(r.trigger_token.as_deref(), Some("s3cret"));
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let p = r.plan("refs/heads/main", sha).unwrap();
        assert_eq!(p.tags, vec!["127.0.0.1:5000/demo:latest"]);
        assert_eq!(p.push_tags, p.tags);
        assert_eq!(p.build_args["VERSION"], "main");
        let p = r.plan("refs/tags/v1.2", sha).unwrap();
        assert_eq!(p.tags, vec!["127.0.0.1:5000/demo:1.2-0123456"]);
        assert!(p.push_tags.is_empty());
        assert!(r.plan("refs/heads/dev", sha).is_none());
        assert!(r.plan("refs/tags/main", sha).is_none());
    }

    #[test]
    fn on_base_change_is_rebuild_or_rebase() {
        let c = Config::parse(EXAMPLE, Path::new("/etc/a.toml")).unwrap();
        assert_eq!(
            c.repo("demo").unwrap().on_base_change,
            OnBaseChange::Rebuild
        );
        let with = |v: &str| {
            Config::parse(
                &EXAMPLE.replace(
                    "dockerfile = \"Dockerfile\"",
                    &format!("dockerfile = \"Dockerfile\"\non_base_change = \"{v}\""),
                ),
                Path::new("/etc/a.toml"),
            )
        };
        let r = with("rebase").unwrap();
        assert_eq!(r.repo("demo").unwrap().on_base_change, OnBaseChange::Rebase);
        assert_eq!(OnBaseChange::Rebase.trigger_prefix(), "rebase:");
        let e = with("rebuid").unwrap_err().to_string();
        assert!(
            e.contains("repo[0].on_base_change") && e.contains("rebuid"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_file_and_key() {
        let bad = EXAMPLE.replace("^main$", "(");
        let e = Config::parse(&bad, Path::new("/etc/a.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/a.toml") && e.contains("repo[0].rule[0].match"),
            "{e}"
        );
        let bad = EXAMPLE.replace("concurrency = 1", "concurrency = \"x\"");
        let e = Config::parse(&bad, Path::new("/etc/a.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("/etc/a.toml") && e.contains("concurrency"),
            "{e}"
        );
        let bad = EXAMPLE.replace("secret = ", "secrett = ");
        let e = Config::parse(&bad, Path::new("/etc/a.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("secrett"), "{e}");
    }

    #[test]
    fn server_table_defaults_values_and_errors() {
        let c = Config::parse(EXAMPLE, Path::new("/etc/a.toml")).unwrap();
        assert_eq!(c.server.header_timeout, Duration::from_secs(10));
        assert_eq!(c.server.max_connections, 256);
        assert_eq!(c.server.max_body, 25 << 20);
        assert_eq!(c.server.read_token, None);
        let with = |table: &str| {
            Config::parse(
                &format!("{EXAMPLE}[server]\n{table}\n"),
                Path::new("/etc/a.toml"),
            )
        };
        let c =
            with("header_timeout = \"3s\"\nmax_body = \"1MB\"\nrate_limit = 0\nread_token = \"t\"")
                .unwrap();
        assert_eq!(c.server.header_timeout, Duration::from_secs(3));
        assert_eq!(c.server.max_body, 1_000_000);
        assert_eq!(c.server.rate_limit, 0);
        assert_eq!(c.server.read_token.as_deref(), Some("t"));
        assert!(
            !format!("{c:?}").contains("\"t\""),
            "the token is not printed"
        );
        for (table, key) in [
            ("header_timeout = \"soon\"", "server.header_timeout"),
            ("max_body = \"lots\"", "server.max_body"),
            ("max_connections = 0", "server.max_connections"),
            ("read_token = \"\"", "server.read_token"),
            (
                "read_token = \"a\"\nread_token_file = \"f\"",
                "server.read_token_file",
            ),
        ] {
            let e = with(table).unwrap_err().to_string();
            assert!(e.contains("/etc/a.toml") && e.contains(key), "{table}: {e}");
        }
        let e = with("max_conections = 1").unwrap_err().to_string();
        assert!(e.contains("max_conections"), "{e}");
    }

    #[test]
    fn substitution_leaves_unknown_placeholders() {
        let s = Substitution {
            sourceref: "main",
            sha: "abcdef0123",
            groups: vec![],
        };
        assert_eq!(
            s.apply("{x}-{sha}-{short_sha}-{\\3}-{"),
            "{x}-abcdef0123-abcdef0--{"
        );
    }
}

#[cfg(test)]
mod file_tests {
    use super::*;

    #[test]
    fn secret_file_is_relative_to_the_config() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "from-file\n").unwrap();
        let path = dir.path().join("autobuild.toml");
        std::fs::write(
            &path,
            "[[repo]]\nname = \"a\"\nurl = \"/x\"\nsecret_file = \"secret\"\ntrigger_token = \"t\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.repos[0].secret.as_deref(), Some("from-file"));
        assert_eq!(c.repos[0].trigger_token.as_deref(), Some("t"));
        std::fs::remove_file(dir.path().join("secret")).unwrap();
        let e = Config::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("autobuild.toml") && e.contains("repo[0].secret_file"),
            "{e}"
        );
    }

    #[test]
    fn queue_and_cache_tables() {
        let text = format!(
            "{}[queue]\nurl = \"postgres://hoist:pw@db/autobuild\"\nlease = \"5s\"\n\
             [cache]\nshared = true\n",
            super::tests::EXAMPLE
        );
        let c = Config::parse(&text, Path::new("a.toml")).unwrap();
        assert_eq!(
            c.queue.url.as_deref(),
            Some("postgres://hoist:pw@db/autobuild")
        );
        assert_eq!(c.queue.lease, Duration::from_secs(5));
        assert!(!format!("{:?}", c.queue).contains("pw"), "{:?}", c.queue);
        let tags = |t: &str| vec![t.to_string()];
        assert_eq!(
            c.cache
                .shared_ref(&tags("127.0.0.1:5000/demo:main"))
                .as_deref(),
            Some("127.0.0.1:5000/demo:buildcache")
        );
        assert_eq!(
            c.cache.shared_ref(&tags("localhost:5000/app")).as_deref(),
            Some("localhost:5000/app:buildcache")
        );
        assert_eq!(
            c.cache
                .shared_ref(&tags(&format!("reg.example/app@sha256:{}", "a".repeat(64))))
                .as_deref(),
            Some("reg.example/app:buildcache")
        );
        assert_eq!(c.cache.shared_ref(&[]), None, "nothing pushed, no cache");
        assert_eq!(CacheConfig::default().shared_ref(&tags("r/a:b")), None);

        for (bad, key) in [
            ("[queue]\nurl = \"mysql://x\"\n", "queue.url"),
            ("[queue]\nlease = \"soon\"\n", "queue.lease"),
            ("[queue]\nlease = \"0s\"\n", "queue.lease"),
        ] {
            let err = Config::parse(
                &format!("{}{bad}", super::tests::EXAMPLE),
                Path::new("a.toml"),
            )
            .unwrap_err()
            .to_string();
            assert!(err.contains(key), "{err}");
        }
    }
}
