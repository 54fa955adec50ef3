//! Typed stages → [`BuildGraph`]: ARG/ENV scoping and expansion, stage
//! resolution and pruning, ONBUILD triggers, image config and history.
//!
//! The rules follow BuildKit's `dockerfile2llb`: which arguments are expanded,
//! how ARG values flow (global ARGs before the first FROM are visible to FROM
//! lines and to stages that re-declare them; `--build-arg` overrides defaults;
//! ENV wins over ARG in the config; the ARG values are in the environment of
//! RUN), and history lines worded as BuildKit writes them.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::{suggest, Error, ErrorKind};
use crate::graph::*;
use crate::instructions::{self, Command, CommandLine, Copy, Instruction, StageDef};
use crate::parser::{go_quote, parse, parse_heredoc, Ast, Span};
use crate::shell::{Lexer, LexerOptions};

type Result<T> = std::result::Result<T, Error>;

/// `PATH` given to stages whose image does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Proxy variables usable without an ARG declaration; kept out of history.
const PROXY_ARGS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "no_proxy",
    "all_proxy",
];

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `--build-arg KEY=VALUE` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target` stage name; the last stage when `None`.
    pub target: Option<String>,
    /// Platform to build for; the host's when `None`.
    pub platform: Option<Platform>,
    /// Platform the build runs on; the host's when `None`.
    pub build_platform: Option<Platform>,
    /// `--label K=V`: added to the target stage's config.
    pub labels: BTreeMap<String, String>,
}

/// A base image as the resolver found it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedImage {
    /// The reference to pull, ideally pinned (`docker.io/library/alpine:3.20@sha256:…`).
    pub reference: String,
    /// Its config (ENV, WORKDIR, USER, SHELL, ONBUILD, …).
    pub config: ImageConfig,
    /// The image has no layers (then the stage starts from an empty filesystem).
    pub empty: bool,
}

/// Looks up base images. The builder implements it (registry or local store);
/// the frontend itself does no I/O. Called only for stages the target needs,
/// at most once per (reference, platform).
pub trait ImageResolver {
    /// The image for a normalised reference, `Ok(None)` when the resolver has no
    /// information (the image is then treated as having an empty config).
    fn resolve(
        &self,
        reference: &str,
        platform: &Platform,
    ) -> std::result::Result<Option<ResolvedImage>, Box<dyn std::error::Error + Send + Sync>>;
}

/// A resolver that knows nothing (every image has an empty config).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoResolver;

impl ImageResolver for NoResolver {
    fn resolve(
        &self,
        _: &str,
        _: &Platform,
    ) -> std::result::Result<Option<ResolvedImage>, Box<dyn std::error::Error + Send + Sync>> {
        Ok(None)
    }
}

/// Normalises an image reference as Docker does (`alpine` →
/// `docker.io/library/alpine:latest`).
pub fn normalize_reference(reference: &str) -> std::result::Result<String, String> {
    let r = reference.trim();
    if r.is_empty() {
        return Err("invalid reference format: empty reference".into());
    }
    let (name_tag, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    let (name, tag) = match name_tag.rfind(':') {
        Some(i) if !name_tag[i + 1..].contains('/') => (&name_tag[..i], Some(&name_tag[i + 1..])),
        _ => (name_tag, None),
    };
    if name.is_empty() || name.ends_with('/') || name.starts_with('/') {
        return Err(format!("invalid reference format: {reference:?}"));
    }
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (first.to_string(), rest.to_string())
        }
        _ => ("docker.io".to_string(), name.to_string()),
    };
    let path = if domain == "docker.io" && !path.contains('/') {
        format!("library/{path}")
    } else {
        path
    };
    let path_ok = path.split('/').all(|c| {
        !c.is_empty()
            && c.chars().all(|ch| {
                ch.is_ascii_lowercase() || ch.is_ascii_digit() || matches!(ch, '.' | '_' | '-')
            })
            && c.chars()
                .next()
                .is_some_and(|ch| ch.is_ascii_alphanumeric())
    });
    if !path_ok {
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(format!(
                "invalid reference format: repository name ({path}) must be lowercase"
            ));
        }
        return Err(format!("invalid reference format: {reference:?}"));
    }
    if let Some(t) = tag {
        let ok = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
            && !t.starts_with(['.', '-']);
        if !ok {
            return Err(format!(
                "invalid reference format: bad tag in {reference:?}"
            ));
        }
    }
    let mut out = format!("{domain}/{path}");
    match (tag, digest) {
        (Some(t), _) => {
            out.push(':');
            out.push_str(t);
        }
        (None, None) => out.push_str(":latest"),
        (None, Some(_)) => {}
    }
    if let Some(d) = digest {
        if !d.contains(':') {
            return Err(format!(
                "invalid reference format: bad digest in {reference:?}"
            ));
        }
        out.push('@');
        out.push_str(d);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum BaseKind {
    Scratch,
    Stage(usize),
    Image(String),
}

#[derive(Debug, Clone)]
struct Plan {
    def: StageDef,
    display_name: String,
    base: String,
    base_kind: BaseKind,
    platform: Platform,
    commands: Vec<Command>,
    /// (stage index, span of the instruction creating the dependency)
    deps: Vec<(usize, Span)>,
    triggers_done: bool,
    resolved: Option<ResolvedImage>,
}

/// Where COPY --from or a mount's `from=` points.
#[derive(Debug, Clone, PartialEq)]
enum FromRef {
    Stage(usize),
    Image(String),
}

struct Lowerer<'a> {
    ast: &'a Ast,
    opts: &'a BuildOptions,
    resolver: &'a dyn ImageResolver,
    lexer: Lexer,
    vertices: Vec<Vertex>,
    warnings: Vec<Warning>,
    global_args: Vec<(String, String)>,
    declared_global: BTreeSet<String>,
    context_vertex: Option<VertexId>,
    context_paths: BTreeSet<String>,
    context_whole: bool,
    scratch_vertex: Option<VertexId>,
    image_vertices: HashMap<(String, String), VertexId>,
    resolved_cache: HashMap<(String, String), Option<ResolvedImage>>,
    /// Platform of the stage being dispatched (for images named by `--from`).
    stage_platform: Platform,
    /// Source range of the instruction being applied.
    current_range: (usize, usize),
}

/// State of a stage while its instructions are applied.
#[derive(Debug, Clone)]
struct StageState {
    config: ImageConfig,
    root: VertexId,
    /// Environment for expansion and RUN: config env plus ARG values.
    env: Vec<(String, String)>,
    /// ARGs declared in the stage with their values.
    args: Vec<(String, Option<String>)>,
    history: Vec<HistoryEntry>,
    cmd_set: bool,
    has_base_image: bool,
    base_vertex: Option<VertexId>,
    /// Where CMD, ENTRYPOINT and HEALTHCHECK were last set in this stage.
    used_once: HashMap<&'static str, Span>,
    workdir_set: bool,
}

fn env_pairs(config: &ImageConfig) -> Vec<(String, String)> {
    config
        .env
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.clone(), String::new()),
        })
        .collect()
}

fn set_pair(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    if let Some(e) = env.iter_mut().find(|(key, _)| key == k) {
        e.1 = v.to_string();
    } else {
        env.push((k.to_string(), v.to_string()));
    }
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
fn go_quote_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b]`.
fn go_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()`.
pub fn go_duration(nanos: u64) -> String {
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, div) = if nanos < 1_000 {
            ("ns", 1u64)
        } else if nanos < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{}{unit}", trim_frac(nanos, div));
    }
    let mut out = String::new();
    let h = nanos / 3_600_000_000_000;
    let rem = nanos % 3_600_000_000_000;
    let m = rem / 60_000_000_000;
    let s_n = rem % 60_000_000_000;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&format!("{}s", trim_frac(s_n, 1_000_000_000)));
    out
}

fn trim_frac(n: u64, div: u64) -> String {
    let whole = n / div;
    let frac = n % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.to_string().len() - 1;
    let f = format!("{frac:0width$}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Go's `%q` of an int (a quoted rune).
fn go_quote_rune(n: u32) -> String {
    match char::from_u32(n) {
        Some(c) => {
            let q = go_quote(&c.to_string());
            let inner = &q[1..q.len() - 1];
            let inner = if inner == "\\\"" { "\"" } else { inner };
            let inner = if c == '\'' { "\\'" } else { inner };
            format!("'{inner}'")
        }
        None => "'\u{FFFD}'".into(),
    }
}

fn clean_path(p: &str) -> String {
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    match (abs, joined.is_empty()) {
        (true, _) => format!("/{joined}"),
        (false, true) => ".".into(),
        (false, false) => joined,
    }
}

/// Joins `p` to the working directory and cleans it, keeping a trailing slash.
fn relative_to_workdir(workdir: &str, p: &str) -> String {
    let p = if p.is_empty() || p == "." { "./" } else { p };
    let keep_slash = p.ends_with('/') || p.ends_with("/.");
    let joined = if p.starts_with('/') {
        clean_path(p)
    } else {
        let base = if workdir.is_empty() { "/" } else { workdir };
        clean_path(&format!("{base}/{p}"))
    };
    if keep_slash && !joined.ends_with('/') {
        format!("{joined}/")
    } else {
        joined
    }
}

fn is_http_source(s: &str) -> bool {
    (s.starts_with("http://") || s.starts_with("https://")) && git_source(s).is_none()
}

/// Recognises git sources for ADD: `git@host:repo`, `git://…`, `ssh://…`, and
/// http(s) URLs ending in `.git` (optionally with `#ref[:subdir]`).
fn git_source(s: &str) -> Option<(String, String)> {
    let (url, fragment) = match s.split_once('#') {
        Some((u, f)) => (u, f.to_string()),
        None => (s, String::new()),
    };
    let is_git = url.starts_with("git@")
        || url.starts_with("git://")
        || url.starts_with("ssh://")
        || ((url.starts_with("https://") || url.starts_with("http://")) && url.ends_with(".git"));
    is_git.then(|| (url.to_string(), fragment))
}

const SIGNALS: &[&str] = &[
    "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL",
    "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP",
    "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if SIGNALS.contains(&name) {
        return true;
    }
    for base in ["RTMIN", "RTMAX"] {
        if name == base {
            return true;
        }
        if let Some(rest) = name.strip_prefix(base) {
            if let Some(n) = rest.strip_prefix(['+', '-']) {
                return n.parse::<u32>().is_ok_and(|n| n <= 30);
            }
        }
    }
    false
}

/// Expands EXPOSE specs (`80`, `80/tcp`, `53/udp`, `8000-8010`, `ip:host:ctr`).
fn parse_ports(spec: &str) -> std::result::Result<Vec<String>, String> {
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let container = body.rsplit(':').next().unwrap_or(body);
    let parse_port = |p: &str| -> std::result::Result<u32, String> {
        p.parse::<u32>()
            .ok()
            .filter(|n| *n <= 65535)
            .ok_or_else(|| format!("invalid containerPort: {container}"))
    };
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (parse_port(a)?, parse_port(b)?),
        None => {
            let p = parse_port(container)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid range specified for containerPort: {container}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// BuildKit's `SecretsUsedInArgOrEnv` test: a `_`-separated token of the name
/// is a secret-like word (optionally followed by digits at the end), and no
/// token is `public`.
fn looks_secret(name: &str) -> bool {
    const DENY: &[&str] = &[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ];
    let lower = name.to_ascii_lowercase();
    let tokens: Vec<&str> = lower.split('_').collect();
    let hit = |words: &[&str]| {
        tokens.iter().enumerate().any(|(i, t)| {
            words.iter().any(|w| {
                *t == *w
                    || (i + 1 == tokens.len()
                        && t.strip_prefix(w).is_some_and(|d| {
                            !d.is_empty() && d.chars().all(|c| c.is_ascii_digit())
                        }))
            })
        })
    };
    hit(DENY) && !hit(&["public"])
}

/// Splits a `--mount` value on commas outside double quotes.
fn split_csv(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.trim_end_matches('b').chars().last()? {
        'k' => (&s[..s.trim_end_matches('b').len() - 1], 1u64 << 10),
        'm' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 20),
        'g' => (&s[..s.trim_end_matches('b').len() - 1], 1 << 30),
        _ => (s.trim_end_matches('b'), 1),
    };
    num.parse::<f64>().ok().map(|n| (n * mult as f64) as u64)
}

/// Lowers a parsed Dockerfile into a build graph.
///
/// ```
/// use hoist_frontend::{lower, parse, BuildOptions, NoResolver};
/// let ast = parse("FROM alpine AS base\nRUN echo hi\nFROM base\nCMD [\"sh\"]\n").unwrap();
/// let graph = lower(&ast, &BuildOptions::default(), &NoResolver).unwrap();
/// assert_eq!(graph.stages.len(), 2);
/// assert_eq!(graph.target_stage().config.cmd, Some(vec!["sh".to_string()]));
/// println!("{}", graph.render_plan());
/// ```
pub fn lower(ast: &Ast, opts: &BuildOptions, resolver: &dyn ImageResolver) -> Result<BuildGraph> {
    let df = instructions::convert(ast)?;
    let mut l = Lowerer {
        ast,
        opts,
        resolver,
        lexer: Lexer::new(ast.escape, LexerOptions::default()),
        vertices: Vec::new(),
        warnings: Vec::new(),
        global_args: Vec::new(),
        declared_global: BTreeSet::new(),
        context_vertex: None,
        context_paths: BTreeSet::new(),
        context_whole: false,
        scratch_vertex: None,
        image_vertices: HashMap::new(),
        resolved_cache: HashMap::new(),
        stage_platform: Platform::default(),
        current_range: (0, 0),
    };
    let mut graph = l.run(df)?;
    // Parser findings come first, in source order, like BuildKit's checks.
    let mut warnings: Vec<Warning> = ast
        .warnings
        .iter()
        .map(|w| Warning {
            rule: "NoEmptyContinuation".into(),
            message: "Empty continuation line".into(),
            span: Some(w.span),
        })
        .collect();
    warnings.append(&mut graph.warnings);
    let check = match ast.directive("check") {
        Some(v) => CheckConfig::parse(v).map_err(|m| {
            let line = ast
                .directives
                .iter()
                .find(|d| d.name == "check")
                .map(|d| d.line)
                .unwrap_or(1);
            let pos = crate::parser::Pos { line, column: 1 };
            Error::new(
                ErrorKind::Instruction,
                format!("invalid check directive: {m}"),
            )
            .at(
                Span {
                    start: pos,
                    end: pos,
                },
                ast.line_text(line),
            )
        })?,
        None => CheckConfig::default(),
    };
    warnings.retain(|w| !check.skips(&w.rule));
    if check.error && !warnings.is_empty() {
        let mut rules: Vec<&str> = warnings.iter().map(|w| w.rule.as_str()).collect();
        rules.dedup();
        let first = &warnings[0];
        let mut e = Error::new(
            ErrorKind::Instruction,
            format!(
                "lint violation found for rules: {} ({})",
                rules.join(", "),
                first.message
            ),
        );
        if let Some(span) = first.span {
            e = e.at(span, ast.line_text(span.start.line));
        }
        return Err(e);
    }
    graph.warnings = warnings;
    Ok(graph)
}

/// The `# check=skip=RULE,…;error=true` parser directive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// Rules to leave out.
    pub skip: Vec<String>,
    /// Turn remaining warnings into an error.
    pub error: bool,
}

impl CheckConfig {
    /// Parses the directive's value.
    pub fn parse(value: &str) -> std::result::Result<CheckConfig, String> {
        let mut c = CheckConfig::default();
        for part in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("expected key=value, got {part:?}"))?;
            match k.trim().to_ascii_lowercase().as_str() {
                "skip" => {
                    for r in v.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                        if r.eq_ignore_ascii_case("all") {
                            c.skip_all = true;
                        } else {
                            c.skip.push(r.to_string());
                        }
                    }
                }
                "error" => {
                    c.error = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(format!("invalid boolean {other:?} for error")),
                    }
                }
                "experimental" => {}
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        Ok(c)
    }

    /// Whether warnings of `rule` are left out.
    pub fn skips(&self, rule: &str) -> bool {
        self.skip_all || self.skip.iter().any(|r| r.eq_ignore_ascii_case(rule))
    }
}

/// Parses and lowers in one call.
pub fn build_graph(
    source: &str,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<BuildGraph> {
    let ast = parse(source)?;
    lower(&ast, opts, resolver)
}

impl Lowerer<'_> {
    fn line(&self, span: Span) -> &str {
        self.ast.line_text(span.start.line)
    }

    /// The span of `needle` (e.g. `--from=`) inside an instruction, so the
    /// caret points at it; the instruction's span when it is not found.
    fn span_of(&self, span: Span, range: (usize, usize), needle: &str) -> Span {
        let (a, b) = range;
        match self.ast.source().get(a..b).and_then(|t| t.find(needle)) {
            Some(i) if b > a => Span {
                start: self.ast.pos_of(a + i),
                end: span.end,
            },
            _ => span,
        }
    }

    fn err(&self, kind: ErrorKind, span: Span, message: impl Into<String>) -> Error {
        Error::new(kind, message).at(span, self.line(span))
    }

    fn warn(&mut self, rule: &str, span: Span, message: String) {
        let w = Warning {
            rule: rule.into(),
            message,
            span: Some(span),
        };
        if !self.warnings.contains(&w) {
            self.warnings.push(w);
        }
    }

    fn target_platform(&self) -> Platform {
        self.opts.platform.clone().unwrap_or_else(Platform::host)
    }

    fn predefined_args(&self, target_stage: &str) -> Vec<(String, String)> {
        let build = self
            .opts
            .build_platform
            .clone()
            .unwrap_or_else(Platform::host);
        let target = self.target_platform();
        let mut v: Vec<(String, String)> = vec![
            ("BUILDPLATFORM".into(), build.to_string()),
            ("BUILDOS".into(), build.os.clone()),
            ("BUILDARCH".into(), build.architecture.clone()),
            (
                "BUILDVARIANT".into(),
                build.variant.clone().unwrap_or_default(),
            ),
            ("TARGETPLATFORM".into(), target.to_string()),
            ("TARGETOS".into(), target.os.clone()),
            ("TARGETARCH".into(), target.architecture.clone()),
            (
                "TARGETVARIANT".into(),
                target.variant.clone().unwrap_or_default(),
            ),
            ("TARGETSTAGE".into(), target_stage.to_string()),
        ];
        // A build arg may override a predefined one.
        for (k, val) in v.iter_mut() {
            if let Some(b) = self.opts.build_args.get(k.as_str()) {
                *val = b.clone();
            }
        }
        v
    }

    /// Expands one word, reporting variables that are neither set nor declared.
    fn expand(
        &mut self,
        word: &str,
        env: &[(String, String)],
        declared: &[(String, Option<String>)],
        span: Span,
    ) -> Result<String> {
        let e = self
            .lexer
            .process(word, &env)
            .map_err(|e| self.err(ErrorKind::Expansion, span, e.to_string()))?;
        for name in e.unmatched {
            let special = name.chars().next().is_some_and(|c| c.is_ascii_digit())
                || matches!(name.as_str(), "@" | "*" | "#" | "?" | "-" | "$" | "!");
            if special || declared.iter().any(|(k, _)| *k == name) {
                continue;
            }
            let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
            let mut msg = format!("Usage of undefined variable '${name}'");
            if let Some(s) = suggest(&name, &keys) {
                msg.push_str(&format!(" (did you mean ${s}?)"));
            }
            self.warn("UndefinedVar", span, msg);
        }
        Ok(e.result)
    }

    fn add_vertex(
        &mut self,
        op: Op,
        inputs: Vec<VertexId>,
        name: String,
        span: Option<Span>,
    ) -> VertexId {
        self.vertices.push(Vertex {
            op,
            inputs,
            name,
            span,
        });
        self.vertices.len() - 1
    }

    fn scratch(&mut self) -> VertexId {
        if let Some(v) = self.scratch_vertex {
            return v;
        }
        let v = self.add_vertex(Op::Scratch, vec![], "scratch".into(), None);
        self.scratch_vertex = Some(v);
        v
    }

    fn context(&mut self) -> VertexId {
        if let Some(v) = self.context_vertex {
            return v;
        }
        let v = self.add_vertex(
            Op::Context {
                name: "context".into(),
                paths: vec![],
            },
            vec![],
            "load build context".into(),
            None,
        );
        self.context_vertex = Some(v);
        v
    }

    fn resolve(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Span,
    ) -> Result<Option<ResolvedImage>> {
        let key = (reference.to_string(), platform.to_string());
        if let Some(r) = self.resolved_cache.get(&key) {
            return Ok(r.clone());
        }
        let r = self.resolver.resolve(reference, platform).map_err(|e| {
            let mut err = self.err(
                ErrorKind::Resolve,
                span,
                format!("failed to resolve image {reference} for {platform}"),
            );
            err.source = Some(e);
            err
        })?;
        self.resolved_cache.insert(key, r.clone());
        Ok(r)
    }

    fn image_vertex(
        &mut self,
        reference: &str,
        platform: &Platform,
        span: Option<Span>,
    ) -> VertexId {
        let key = (reference.to_string(), platform.to_string());
        if let Some(v) = self.image_vertices.get(&key) {
            return *v;
        }
        let v = self.add_vertex(
            Op::Image {
                reference: reference.to_string(),
                platform: platform.clone(),
            },
            vec![],
            format!("FROM {reference}"),
            span,
        );
        self.image_vertices.insert(key, v);
        v
    }

    fn find_stage(plans: &[Plan], name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        plans
            .iter()
            .position(|p| p.def.name.as_deref() == Some(lower.as_str()))
    }

    /// Resolves a `--from` / `from=` value.
    fn resolve_from(&self, plans: &[Plan], value: &str, span: Span) -> Result<FromRef> {
        if value.contains('$') {
            return Err(self.err(
                ErrorKind::Stage,
                span,
                format!(
                    "--from={value}: variables are not expanded in --from; declare `FROM {value} AS name` and copy from that stage"
                ),
            ));
        }
        let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
        if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
            let idx: i64 = value.parse().unwrap_or(-1);
            if idx < 0 || idx as usize >= plans.len() {
                return Err(self.err(
                    ErrorKind::Stage,
                    span,
                    format!(
                        "invalid stage index {value}: the Dockerfile has {} stage(s), numbered from 0",
                        plans.len()
                    ),
                ));
            }
            return Ok(FromRef::Stage(idx as usize));
        }
        if let Some(i) = Self::find_stage(plans, value) {
            return Ok(FromRef::Stage(i));
        }
        // As in BuildKit, an unknown stage name is an image reference.
        let r = normalize_reference(value).map_err(|m| {
            let names: Vec<&str> = plans.iter().filter_map(|p| p.def.name.as_deref()).collect();
            let mut msg = format!("--from={value}: {m}");
            if let Some(s) = suggest(value, &names) {
                msg.push_str(&format!(" (did you mean stage {s}?)"));
            }
            self.err(ErrorKind::Stage, span, msg)
        })?;
        Ok(FromRef::Image(r))
    }

    /// The `from=` of a `--mount`, read exactly as [`Self::parse_mount`] reads
    /// it (trimmed fields, last one wins) so dependencies and mounts agree.
    fn mount_from(mount: &str) -> Option<String> {
        split_csv(mount)
            .iter()
            .filter_map(|f| {
                let (k, v) = f.trim().split_once('=')?;
                (k.trim().eq_ignore_ascii_case("from")).then(|| v.to_string())
            })
            .next_back()
    }

    /// The root of an already dispatched stage.
    fn stage_root(
        &self,
        done: &HashMap<usize, StageState>,
        i: usize,
        span: Span,
    ) -> Result<VertexId> {
        done.get(&i).map(|st| st.root).ok_or_else(|| {
            // Dependencies are dispatched first, so this means a bug here.
            self.err(
                ErrorKind::Stage,
                span,
                format!("internal error: stage {i} used before it was built"),
            )
        })
    }

    fn compute_deps(&self, plans: &[Plan], i: usize) -> Result<Vec<(usize, Span)>> {
        let mut deps = Vec::new();
        if let BaseKind::Stage(b) = plans[i].base_kind {
            deps.push((b, plans[i].def.span));
        }
        for c in &plans[i].commands {
            let froms: Vec<String> = match &c.instruction {
                Instruction::Copy(cp) => cp.from.iter().cloned().collect(),
                Instruction::Run(r) => r
                    .mounts
                    .iter()
                    .filter_map(|m| Self::mount_from(m))
                    .collect(),
                _ => vec![],
            };
            for f in froms {
                let at = self.span_of(c.span, c.range, &format!("from={f}"));
                if let FromRef::Stage(s) = self.resolve_from(plans, &f, at)? {
                    deps.push((s, at));
                }
            }
        }
        Ok(deps)
    }

    fn reachable(plans: &[Plan], target: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![target];
        while let Some(s) = stack.pop() {
            if seen.insert(s) {
                stack.extend(plans[s].deps.iter().map(|(d, _)| *d));
            }
        }
        seen
    }

    fn run(&mut self, mut df: instructions::Dockerfile) -> Result<BuildGraph> {
        self.warnings.append(&mut df.warnings);
        // Which stage is the target decides TARGETSTAGE, so find it first.
        let target_name = match &self.opts.target {
            Some(t) => t.to_lowercase(),
            None => df
                .stages
                .last()
                .and_then(|s| s.name.clone())
                .unwrap_or_default(),
        };
        self.global_args = self.predefined_args(&target_name);
        // Global ARGs: --build-arg wins, else the default expanded with what is known so far.
        for cmd in &df.meta_args {
            let Instruction::Arg(pairs) = &cmd.instruction else {
                continue;
            };
            for (k, default) in pairs {
                self.declared_global.insert(k.clone());
                let value = match (self.opts.build_args.get(k), default) {
                    (Some(v), _) => Some(v.clone()),
                    (None, Some(d)) => {
                        let env = self.global_args.clone();
                        Some(self.expand(d, &env, &[], cmd.span)?)
                    }
                    (None, None) => None,
                };
                if let Some(v) = value {
                    set_pair(&mut self.global_args, k, &v);
                }
            }
        }

        // Like BuildKit, check that every FROM still names an image when no
        // --build-arg is given (defaults only).
        let mut defaults_env = self.predefined_args(&target_name);
        for cmd in &df.meta_args {
            let Instruction::Arg(pairs) = &cmd.instruction else {
                continue;
            };
            for (k, default) in pairs {
                if let Some(d) = default {
                    if let Ok(v) = self.lexer.process_word(d, &defaults_env) {
                        set_pair(&mut defaults_env, k, &v);
                    }
                }
            }
        }
        for (i, def) in df.stages.iter().enumerate() {
            if !def.base.contains('$') {
                continue;
            }
            let Ok(v) = self.lexer.process_word(&def.base, &defaults_env) else {
                continue;
            };
            let earlier_stage = df.stages[..i]
                .iter()
                .any(|s| s.name.as_deref() == Some(v.to_lowercase().as_str()));
            let ok = !v.is_empty()
                && (earlier_stage
                    || v.eq_ignore_ascii_case("scratch")
                    || normalize_reference(&v).is_ok());
            if !ok {
                self.warn(
                    "InvalidDefaultArgInFrom",
                    def.span,
                    format!(
                        "Default value for ARG {} results in empty or invalid base image name",
                        def.base
                    ),
                );
            }
        }

        let target_platform = self.target_platform();
        let mut plans: Vec<Plan> = Vec::new();
        for (i, def) in df.stages.iter().enumerate() {
            let genv = self.global_args.clone();
            let e = self
                .lexer
                .process(&def.base, &genv)
                .map_err(|e| self.err(ErrorKind::Expansion, def.span, e.to_string()))?;
            for name in &e.unmatched {
                if !self.declared_global.contains(name) {
                    let keys: Vec<&str> = genv.iter().map(|(k, _)| k.as_str()).collect();
                    let mut msg = format!("FROM argument '{name}' is not declared");
                    if let Some(s) = suggest(name, &keys) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    self.warn("UndefinedArgInFrom", def.span, msg);
                }
            }
            if e.result.is_empty() {
                return Err(self.err(
                    ErrorKind::Stage,
                    def.span,
                    format!("base name ({}) should not be blank", def.base),
                ));
            }
            if let Some(p) = &def.platform {
                if p == "$TARGETPLATFORM" || p == "${TARGETPLATFORM}" {
                    self.warn(
                        "RedundantTargetPlatform",
                        def.span,
                        format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                    );
                }
            }
            let platform = match &def.platform {
                Some(p) => {
                    let v = self
                        .lexer
                        .process_word(p, &genv)
                        .map_err(|e| self.err(ErrorKind::Expansion, def.span, e.to_string()))?;
                    if v.is_empty() {
                        return Err(self.err(
                            ErrorKind::Stage,
                            def.span,
                            format!("empty platform value from expression {p}"),
                        ));
                    }
                    Platform::parse(&v).ok_or_else(|| {
                        self.err(
                            ErrorKind::Stage,
                            def.span,
                            format!("failed to parse platform {v}"),
                        )
                    })?
                }
                None => target_platform.clone(),
            };
            let base = e.result;
            let base_kind = if base.eq_ignore_ascii_case("scratch") {
                BaseKind::Scratch
            } else if let Some(b) = Self::find_stage(&plans, &base) {
                BaseKind::Stage(b)
            } else {
                BaseKind::Image(
                    normalize_reference(&base)
                        .map_err(|m| self.err(ErrorKind::Stage, def.span, m))?,
                )
            };
            plans.push(Plan {
                display_name: def.name.clone().unwrap_or_else(|| format!("stage-{i}")),
                def: def.clone(),
                base,
                base_kind,
                platform,
                commands: def.commands.clone(),
                deps: Vec::new(),
                triggers_done: false,
                resolved: None,
            });
        }

        let target = match &self.opts.target {
            Some(t) => Self::find_stage(&plans, t).ok_or_else(|| {
                let names: Vec<&str> = plans.iter().filter_map(|p| p.def.name.as_deref()).collect();
                let mut msg = format!("target stage {t:?} could not be found");
                if let Some(s) = suggest(t, &names) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                Error::new(ErrorKind::Stage, msg)
            })?,
            None => plans.len() - 1,
        };

        for i in 0..plans.len() {
            plans[i].deps = self.compute_deps(&plans, i)?;
        }

        // Resolve bases of needed stages and expand ONBUILD triggers; triggers
        // may copy from other stages, so repeat until nothing new is needed.
        loop {
            let reach = Self::reachable(&plans, target);
            let mut changed = false;
            for &s in &reach {
                if plans[s].triggers_done {
                    continue;
                }
                plans[s].triggers_done = true;
                let span = plans[s].def.span;
                let triggers: Vec<String> = match plans[s].base_kind.clone() {
                    BaseKind::Scratch => vec![],
                    BaseKind::Image(r) => {
                        let platform = plans[s].platform.clone();
                        let resolved = self.resolve(&r, &platform, span)?;
                        let t = resolved
                            .as_ref()
                            .map(|r| r.config.on_build.clone())
                            .unwrap_or_default();
                        plans[s].resolved = resolved;
                        t
                    }
                    BaseKind::Stage(b) => plans[b]
                        .def
                        .commands
                        .iter()
                        .filter_map(|c| match &c.instruction {
                            Instruction::Onbuild(e) => Some(e.clone()),
                            _ => None,
                        })
                        .collect(),
                };
                if triggers.is_empty() {
                    continue;
                }
                let mut cmds = Vec::new();
                for t in &triggers {
                    cmds.extend(self.trigger_commands(t, span)?);
                }
                cmds.append(&mut plans[s].commands);
                plans[s].commands = cmds;
                plans[s].deps = self.compute_deps(&plans, s)?;
                changed = true;
            }
            if !changed {
                break;
            }
        }

        let reach = Self::reachable(&plans, target);
        // Cycles (a stage copying from itself or from a stage that needs it).
        let order = self.topo_order(&plans, target)?;

        let mut states: HashMap<usize, StageState> = HashMap::new();
        let mut stages_out = Vec::new();
        for &s in &order {
            let st = self.dispatch(&plans, s, &states)?;
            let plan = &plans[s];
            stages_out.push(Stage {
                index: s,
                name: plan.def.name.clone(),
                base: plan.base.clone(),
                platform: plan.platform.clone(),
                root: st.root,
                config: st.config.clone(),
                history: st.history.clone(),
                has_base_image: st.has_base_image,
                base_image: st.base_vertex,
                span: Some(plan.def.span),
            });
            states.insert(s, st);
        }
        if let Some(cv) = self.context_vertex {
            let paths = if self.context_whole {
                vec![]
            } else {
                self.context_paths.iter().cloned().collect()
            };
            if let Op::Context { paths: p, .. } = &mut self.vertices[cv].op {
                *p = paths;
            }
        }
        let pruned = (0..plans.len())
            .filter(|i| !reach.contains(i))
            .map(|i| PrunedStage {
                index: i,
                name: plans[i].def.name.clone(),
            })
            .collect();
        let target_pos = stages_out.len() - 1;
        for (k, v) in &self.opts.labels {
            stages_out[target_pos]
                .config
                .labels
                .insert(k.clone(), v.clone());
        }
        Ok(BuildGraph {
            vertices: std::mem::take(&mut self.vertices),
            stages: stages_out,
            target: target_pos,
            pruned,
            warnings: std::mem::take(&mut self.warnings),
        })
    }

    fn trigger_commands(&self, expr: &str, span: Span) -> Result<Vec<Command>> {
        let ast = parse(expr).map_err(|e| {
            self.err(
                ErrorKind::Instruction,
                span,
                format!("invalid ONBUILD trigger {expr:?}: {}", e.message),
            )
        })?;
        let ctx = instructions::Ctx { ast: &ast };
        let mut out = Vec::new();
        for node in &ast.nodes {
            let ins = instructions::convert_node(&ctx, node).map_err(|e| {
                self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("invalid ONBUILD trigger {expr:?}: {}", e.message),
                )
            })?;
            if matches!(ins, Instruction::Onbuild(_)) {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                ));
            }
            out.push(Command {
                instruction: ins,
                span,
                original: node.original.trim().to_string(),
                keyword: node.keyword.clone(),
                range: (0, 0),
            });
        }
        Ok(out)
    }

    /// Dependencies first (depth-first, iterative so long stage chains cannot
    /// exhaust the stack); a dependency back onto the current path is a cycle.
    fn topo_order(&self, plans: &[Plan], target: usize) -> Result<Vec<usize>> {
        // 0 = unvisited, 1 = on the path, 2 = done
        let mut mark = vec![0u8; plans.len()];
        let mut order = Vec::new();
        let sorted_deps = |s: usize| {
            let mut d = plans[s].deps.clone();
            d.sort_by_key(|(x, _)| *x);
            d
        };
        // (stage, its sorted deps, index of the next dep to look at)
        let mut stack = vec![(target, sorted_deps(target), 0usize)];
        mark[target] = 1;
        while let Some((s, deps, next)) = stack.last_mut() {
            let s = *s;
            if *next == deps.len() {
                mark[s] = 2;
                order.push(s);
                stack.pop();
                continue;
            }
            let (d, span) = deps[*next];
            *next += 1;
            match mark[d] {
                1 => {
                    return Err(self.err(
                        ErrorKind::Stage,
                        span,
                        if d == s {
                            format!(
                                "circular dependency detected on stage: {} copies from itself",
                                plans[s].display_name
                            )
                        } else {
                            format!(
                                "circular dependency detected on stage: {}",
                                plans[d].display_name
                            )
                        },
                    ))
                }
                0 => {
                    mark[d] = 1;
                    stack.push((d, sorted_deps(d), 0));
                }
                _ => {}
            }
        }
        Ok(order)
    }

    fn history(st: &mut StageState, created_by: String, layer: bool) {
        st.history.push(HistoryEntry {
            created_by,
            comment: HISTORY_COMMENT.into(),
            empty_layer: !layer,
        });
    }

    fn with_shell(config: &ImageConfig, args: &[String]) -> Vec<String> {
        let mut v = if config.shell.is_empty() {
            vec!["/bin/sh".to_string(), "-c".to_string()]
        } else {
            config.shell.clone()
        };
        v.push(args.join(" "));
        v
    }

    fn dispatch(
        &mut self,
        plans: &[Plan],
        s: usize,
        done: &HashMap<usize, StageState>,
    ) -> Result<StageState> {
        let plan = &plans[s];
        self.stage_platform = plan.platform.clone();
        let mut st = match &plan.base_kind {
            BaseKind::Scratch => {
                let root = self.scratch();
                StageState {
                    // BuildKit's empty image has `/` as its working directory.
                    config: ImageConfig {
                        working_dir: "/".into(),
                        ..Default::default()
                    },
                    root,
                    env: vec![],
                    args: vec![],
                    history: vec![],
                    cmd_set: false,
                    has_base_image: false,
                    base_vertex: None,
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
            BaseKind::Stage(b) => {
                let Some(base) = done.get(b) else {
                    // The base stage is a dependency, so it is dispatched first.
                    return Err(self.err(
                        ErrorKind::Stage,
                        plan.def.span,
                        format!("internal error: base stage {b} used before it was built"),
                    ));
                };
                let mut config = base.config.clone();
                config.on_build.clear();
                StageState {
                    env: env_pairs(&config),
                    config,
                    root: base.root,
                    args: vec![],
                    history: base.history.clone(),
                    cmd_set: false,
                    has_base_image: base.has_base_image,
                    base_vertex: base.base_vertex,
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
            BaseKind::Image(r) => {
                let resolved = plan.resolved.clone();
                let mut config = resolved
                    .as_ref()
                    .map(|r| r.config.clone())
                    .unwrap_or_default();
                config.on_build.clear();
                let reference = resolved
                    .as_ref()
                    .map(|r| r.reference.clone())
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| r.clone());
                let empty = resolved.as_ref().is_some_and(|r| r.empty);
                let root = if empty {
                    self.scratch()
                } else {
                    self.image_vertex(&reference, &plan.platform, Some(plan.def.span))
                };
                StageState {
                    env: env_pairs(&config),
                    config,
                    root,
                    args: vec![],
                    history: vec![],
                    cmd_set: false,
                    has_base_image: !empty,
                    base_vertex: (!empty).then_some(root),
                    used_once: HashMap::new(),
                    workdir_set: false,
                }
            }
        };
        if st.config.env_value("PATH").is_none() {
            st.config.env.push(format!("PATH={DEFAULT_PATH}"));
            set_pair(&mut st.env, "PATH", DEFAULT_PATH);
        }
        let total = plan
            .commands
            .iter()
            .filter(|c| {
                matches!(
                    c.instruction,
                    Instruction::Copy(_) | Instruction::Run(_) | Instruction::Workdir(_)
                )
            })
            .count();
        let mut step = 0;
        for cmd in &plan.commands {
            let label = if matches!(
                cmd.instruction,
                Instruction::Copy(_) | Instruction::Run(_) | Instruction::Workdir(_)
            ) {
                step += 1;
                format!("[{} {step}/{total}] {}", plan.display_name, cmd.original)
            } else {
                cmd.original.clone()
            };
            self.apply(plans, &mut st, cmd, label, done)?;
        }
        Ok(st)
    }

    fn apply(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        cmd: &Command,
        label: String,
        done: &HashMap<usize, StageState>,
    ) -> Result<()> {
        let span = cmd.span;
        self.current_range = cmd.range;
        let once = match &cmd.instruction {
            Instruction::Cmd(_) => Some("CMD"),
            Instruction::Entrypoint(_) => Some("ENTRYPOINT"),
            Instruction::Healthcheck(_) => Some("HEALTHCHECK"),
            _ => None,
        };
        if let Some(kw) = once {
            if let Some(prev) = st.used_once.insert(kw, span) {
                self.warn(
                    "MultipleInstructionsDisallowed",
                    prev,
                    format!("Multiple {kw} instructions should not be used in the same stage because only the last one will be used"),
                );
            }
        }
        if let Instruction::Cmd(c) | Instruction::Entrypoint(c) = &cmd.instruction {
            if c.prepend_shell && st.config.shell.is_empty() {
                self.warn(
                    "JSONArgsRecommended",
                    span,
                    format!(
                        "JSON arguments recommended for {} to prevent unintended behavior related to OS signals",
                        once.unwrap_or_default()
                    ),
                );
            }
        }
        match &cmd.instruction {
            Instruction::Env(pairs) => {
                let mut msg = String::from("ENV");
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(k, &st.env, &st.args, span)?;
                    let v = self.expand(v, &st.env, &st.args, span)?;
                    expanded.push((k, v));
                }
                for (k, v) in expanded {
                    if looks_secret(&k) {
                        self.warn(
                            "SecretsUsedInArgOrEnv",
                            span,
                            format!(
                                "Do not use ARG or ENV instructions for sensitive data (ENV {k:?})"
                            ),
                        );
                    }
                    st.config.set_env(&k, &v);
                    set_pair(&mut st.env, &k, &v);
                    msg.push_str(&format!(" {k}={v}"));
                }
                Self::history(st, msg, false);
            }
            Instruction::Label(pairs) => {
                let mut msg = String::from("LABEL");
                for (k, v) in pairs {
                    let k = self.expand(k, &st.env, &st.args, span)?;
                    let v = self.expand(v, &st.env, &st.args, span)?;
                    msg.push_str(&format!(" {k}={v}"));
                    st.config.labels.insert(k, v);
                }
                Self::history(st, msg, false);
            }
            Instruction::Maintainer(m) => {
                st.config.author = m.clone();
                Self::history(st, format!("MAINTAINER {m}"), false);
            }
            Instruction::Arg(pairs) => {
                let mut parts = Vec::new();
                for (k, default) in pairs {
                    if looks_secret(k) {
                        self.warn(
                            "SecretsUsedInArgOrEnv",
                            span,
                            format!(
                                "Do not use ARG or ENV instructions for sensitive data (ARG {k:?})"
                            ),
                        );
                    }
                    let mut value = default.clone();
                    let from_build_arg = self.opts.build_args.get(k).cloned();
                    if value.is_none() && from_build_arg.is_none() {
                        value = self
                            .global_args
                            .iter()
                            .find(|(gk, _)| gk == k)
                            .map(|(_, v)| v.clone());
                    } else if let Some(b) = from_build_arg {
                        value = Some(b);
                    } else if let Some(d) = &value {
                        value = Some(self.expand(d, &st.env, &st.args, span)?);
                    }
                    if let Some(v) = &value {
                        set_pair(&mut st.env, k, v);
                        parts.push(format!("{k}={v}"));
                    } else {
                        parts.push(k.clone());
                    }
                    st.args.push((k.clone(), value));
                }
                Self::history(st, format!("ARG {}", parts.join(" ")), false);
            }
            Instruction::Run(run) => self.run_instruction(plans, st, run, span, label, done)?,
            Instruction::Cmd(c) => {
                let args = Self::command_args(&st.config, c);
                st.config.cmd = Some(args.clone());
                st.config.args_escaped = true;
                st.cmd_set = true;
                Self::history(st, format!("CMD {}", go_quote_list(&args)), false);
            }
            Instruction::Entrypoint(c) => {
                let args = Self::command_args(&st.config, c);
                // `ENTRYPOINT []` removes the entrypoint (BuildKit keeps nil there).
                st.config.entrypoint = if args.is_empty() {
                    None
                } else {
                    Some(args.clone())
                };
                if !st.cmd_set {
                    st.config.cmd = None;
                }
                Self::history(st, format!("ENTRYPOINT {}", go_quote_list(&args)), false);
            }
            Instruction::Shell(sh) => {
                st.config.shell = sh.clone();
                Self::history(st, format!("SHELL {}", go_list(sh)), false);
            }
            Instruction::Healthcheck(h) => {
                let hc = Healthcheck {
                    test: h.test.clone(),
                    interval: h.interval,
                    timeout: h.timeout,
                    start_period: h.start_period,
                    start_interval: h.start_interval,
                    retries: h.retries,
                };
                let msg = format!(
                    "HEALTHCHECK &{{{} {} {} {} {} {}}}",
                    go_quote_list(&hc.test),
                    go_quote(&go_duration(hc.interval)),
                    go_quote(&go_duration(hc.timeout)),
                    go_quote(&go_duration(hc.start_period)),
                    go_quote(&go_duration(hc.start_interval)),
                    go_quote_rune(hc.retries),
                );
                st.config.healthcheck = Some(hc);
                Self::history(st, msg, false);
            }
            Instruction::Expose(specs) => {
                let mut ports = BTreeSet::new();
                for p in specs {
                    let words = self
                        .lexer
                        .process_words(p, &st.env)
                        .map_err(|e| self.err(ErrorKind::Expansion, span, e.to_string()))?;
                    for w in words {
                        for port in parse_ports(&w)
                            .map_err(|m| self.err(ErrorKind::Instruction, span, m))?
                        {
                            ports.insert(port);
                        }
                    }
                }
                let listed: Vec<String> = ports.iter().map(|p| format!("{p}:{{}}")).collect();
                st.config.exposed_ports.extend(ports);
                Self::history(st, format!("EXPOSE map[{}]", listed.join(" ")), false);
            }
            Instruction::User(u) => {
                let u = self.expand(u, &st.env, &st.args, span)?;
                st.config.user = u.clone();
                Self::history(st, format!("USER {u}"), false);
            }
            Instruction::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(v, &st.env, &st.args, span)?;
                    if v.is_empty() {
                        return Err(self.err(
                            ErrorKind::Instruction,
                            span,
                            "VOLUME specified can not be an empty string",
                        ));
                    }
                    st.config.volumes.insert(v.clone());
                    out.push(v);
                }
                Self::history(st, format!("VOLUME {}", go_list(&out)), false);
            }
            Instruction::StopSignal(sig) => {
                let sig = self.expand(sig, &st.env, &st.args, span)?;
                if !valid_signal(&sig) {
                    return Err(self.err(
                        ErrorKind::Instruction,
                        span,
                        format!("invalid signal: {sig}"),
                    ));
                }
                st.config.stop_signal = sig.clone();
                Self::history(st, format!("STOPSIGNAL {sig}"), false);
            }
            Instruction::Onbuild(expr) => st.config.on_build.push(expr.clone()),
            Instruction::Workdir(w) => {
                let w = self.expand(w, &st.env, &st.args, span)?;
                if !st.workdir_set && !w.starts_with('/') {
                    self.warn(
                        "WorkdirRelativePath",
                        span,
                        format!("Relative workdir {w:?} can have unexpected results if the base image changes"),
                    );
                }
                st.workdir_set = true;
                let wd = relative_to_workdir(&st.config.working_dir, &w);
                let wd = if wd.len() > 1 {
                    wd.trim_end_matches('/').to_string()
                } else {
                    wd
                };
                st.config.working_dir = wd.clone();
                let layer = wd != "/";
                if layer {
                    let chown = (!st.config.user.is_empty()).then(|| st.config.user.clone());
                    st.root = self.add_vertex(
                        Op::File(FileOp {
                            root: Some(0),
                            actions: vec![FileAction::Mkdir {
                                path: wd.clone(),
                                mode: 0o755,
                                make_parents: true,
                                chown,
                            }],
                            owner_from: None,
                        }),
                        vec![st.root],
                        label,
                        Some(span),
                    );
                }
                Self::history(st, format!("WORKDIR {wd}"), layer);
            }
            Instruction::Copy(c) => self.copy_instruction(plans, st, c, span, label, done)?,
        }
        Ok(())
    }

    fn command_args(config: &ImageConfig, c: &CommandLine) -> Vec<String> {
        if c.prepend_shell {
            Self::with_shell(config, &c.args)
        } else {
            c.args.clone()
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn run_instruction(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        run: &instructions::Run,
        span: Span,
        label: String,
        done: &HashMap<usize, StageState>,
    ) -> Result<()> {
        let mut args = run.command.args.clone();
        let files = &run.command.heredocs;
        if !files.is_empty() {
            if args.len() != 1 || !run.command.prepend_shell {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "parsing produced an invalid run command",
                ));
            }
            let mut mounts_extra = None;
            if matches!(parse_heredoc(&args[0]), Ok(Some(_))) {
                let mut data = files[0].content.clone();
                if files[0].chomp {
                    data = crate::parser::chomp_heredoc_content(&data);
                }
                if data.starts_with("#!") {
                    // A script with a shebang runs as a file, as BuildKit does.
                    let scratch = self.scratch();
                    let v = self.add_vertex(
                        Op::File(FileOp {
                            root: Some(0),
                            actions: vec![FileAction::Mkfile {
                                path: format!("/{}", files[0].name),
                                mode: 0o755,
                                data,
                            }],
                            owner_from: None,
                        }),
                        vec![scratch],
                        "preparing inline document".into(),
                        Some(span),
                    );
                    mounts_extra = Some(v);
                    args = vec![format!("/dev/pipes/{}", files[0].name)];
                } else {
                    args = vec![data];
                }
            } else {
                let mut full = args[0].clone();
                for f in files {
                    full.push('\n');
                    full.push_str(&f.content);
                    full.push_str(&f.name);
                }
                args = vec![full];
            }
            if let Some(v) = mounts_extra {
                return self.finish_run(plans, st, run, span, label, done, args, Some(v));
            }
        }
        self.finish_run(plans, st, run, span, label, done, args, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn finish_run(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        run: &instructions::Run,
        span: Span,
        label: String,
        done: &HashMap<usize, StageState>,
        args: Vec<String>,
        script: Option<VertexId>,
    ) -> Result<()> {
        let argv = if run.command.prepend_shell && script.is_none() {
            Self::with_shell(&st.config, &args)
        } else {
            args.clone()
        };
        let mut inputs = vec![st.root];
        let mut mounts = Vec::new();
        if let Some(v) = script {
            inputs.push(v);
            mounts.push(Mount {
                target: "/dev/pipes/".into(),
                kind: MountKind::Bind {
                    input: inputs.len() - 1,
                    source: "/".into(),
                    readonly: true,
                },
            });
        }
        let env = &st.env;
        let declared = &st.args;
        let mut ssh_count = 0;
        for raw in &run.mounts {
            let mut m = self.parse_mount(
                plans,
                raw,
                env,
                declared,
                span,
                done,
                &mut inputs,
                &mut ssh_count,
            )?;
            // Relative mount targets are relative to the working directory.
            if !m.target.starts_with('/') {
                m.target = relative_to_workdir(&st.config.working_dir, &m.target);
            }
            mounts.push(m);
        }
        let network = match run.network.as_deref() {
            None | Some("default") => NetworkMode::Default,
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            Some(other) => {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("unsupported network mode {other:?} (expected default, none or host)"),
                ))
            }
        };
        let security = match run.security.as_deref() {
            None | Some("sandbox") => SecurityMode::Sandbox,
            Some("insecure") => SecurityMode::Insecure,
            Some(other) => {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("unsupported security mode {other:?} (expected sandbox or insecure)"),
                ))
            }
        };
        let proxy_env: Vec<String> = self
            .opts
            .build_args
            .iter()
            .filter(|(k, _)| PROXY_ARGS.iter().any(|p| p.eq_ignore_ascii_case(k)))
            .filter(|(k, _)| !st.env.iter().any(|(e, _)| e == *k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let exec = ExecOp {
            root: 0,
            mounts,
            argv: argv.clone(),
            env: st.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
            cwd: if st.config.working_dir.is_empty() {
                "/".into()
            } else {
                st.config.working_dir.clone()
            },
            user: st.config.user.clone(),
            network,
            security,
            proxy_env,
        };
        st.root = self.add_vertex(Op::Exec(exec), inputs, label, Some(span));
        // BuildKit's wording: `RUN |N K=V … argv… # buildkit`.
        let mut build_env: Vec<String> = Vec::new();
        let mut idx: HashMap<String, usize> = HashMap::new();
        for (k, default) in &st.args {
            let v = st
                .env
                .iter()
                .find(|(e, _)| e == k)
                .map(|(_, v)| v.clone())
                .or_else(|| default.clone())
                .unwrap_or_default();
            match idx.get(k) {
                Some(&i) => build_env[i] = format!("{k}={v}"),
                None => {
                    idx.insert(k.clone(), build_env.len());
                    build_env.push(format!("{k}={v}"));
                }
            }
        }
        let mut words = Vec::new();
        if !build_env.is_empty() {
            words.push(format!("|{}", build_env.len()));
            words.extend(build_env);
        }
        words.extend(argv);
        Self::history(st, format!("RUN {} # buildkit", words.join(" ")), true);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn parse_mount(
        &mut self,
        plans: &[Plan],
        raw: &str,
        env: &[(String, String)],
        declared: &[(String, Option<String>)],
        span: Span,
        done: &HashMap<usize, StageState>,
        inputs: &mut Vec<VertexId>,
        ssh_count: &mut usize,
    ) -> Result<Mount> {
        let mut fields: BTreeMap<String, String> = BTreeMap::new();
        let mut kind = "bind".to_string();
        let mut readonly: Option<bool> = None;
        for f in split_csv(raw) {
            let f = f.trim();
            if f.is_empty() {
                continue;
            }
            let (k, v) = match f.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_string())),
                None => (f.to_ascii_lowercase(), None),
            };
            let v = match v {
                Some(v) if k != "from" => Some(self.expand(&v, env, declared, span)?),
                other => other,
            };
            let bool_of = |v: &Option<String>| -> std::result::Result<bool, String> {
                match v.as_deref().map(str::to_ascii_lowercase).as_deref() {
                    None | Some("true") | Some("1") => Ok(true),
                    Some("false") | Some("0") => Ok(false),
                    Some(o) => Err(format!("invalid value {o:?} for `{k}` in --mount")),
                }
            };
            match k.as_str() {
                "type" => kind = v.unwrap_or_default().to_ascii_lowercase(),
                "readonly" | "ro" => {
                    readonly =
                        Some(bool_of(&v).map_err(|m| self.err(ErrorKind::Instruction, span, m))?)
                }
                "readwrite" | "rw" => {
                    readonly =
                        Some(!bool_of(&v).map_err(|m| self.err(ErrorKind::Instruction, span, m))?)
                }
                "target" | "dst" | "destination" => {
                    fields.insert("target".into(), v.unwrap_or_default());
                }
                "source" | "src" => {
                    fields.insert("source".into(), v.unwrap_or_default());
                }
                "from" | "id" | "sharing" | "mode" | "uid" | "gid" | "size" | "env" => {
                    fields.insert(k.clone(), v.unwrap_or_default());
                }
                "required" => {
                    let b = bool_of(&v).map_err(|m| self.err(ErrorKind::Instruction, span, m))?;
                    fields.insert("required".into(), b.to_string());
                }
                other => {
                    let keys = [
                        "type", "target", "source", "from", "readonly", "rw", "id", "sharing",
                        "mode", "uid", "gid", "required", "size", "env",
                    ];
                    let mut msg = format!("unexpected key '{other}' in '{raw}'");
                    if let Some(s) = suggest(other, &keys) {
                        msg.push_str(&format!(" (did you mean {s}?)"));
                    }
                    return Err(self.err(ErrorKind::Instruction, span, msg));
                }
            }
        }
        let num = |l: &Self, key: &str, radix: u32, default: u32| -> Result<u32> {
            match fields.get(key) {
                None => Ok(default),
                Some(v) => u32::from_str_radix(v, radix).map_err(|_| {
                    l.err(
                        ErrorKind::Instruction,
                        span,
                        format!("invalid {key} {v:?} in --mount"),
                    )
                }),
            }
        };
        let target = fields.get("target").cloned().unwrap_or_default();
        let from_input = |l: &mut Self, inputs: &mut Vec<VertexId>| -> Result<Option<usize>> {
            let Some(from) = fields.get("from") else {
                return Ok(None);
            };
            let at = l.span_of(span, l.current_range, &format!("from={from}"));
            let v = match l.resolve_from(plans, from, at)? {
                FromRef::Stage(i) => l.stage_root(done, i, span)?,
                FromRef::Image(r) => {
                    let p = l.stage_platform.clone();
                    let resolved = l.resolve(&r, &p, span)?;
                    let r = resolved
                        .map(|x| x.reference)
                        .filter(|x| !x.is_empty())
                        .unwrap_or(r);
                    l.image_vertex(&r, &p, Some(span))
                }
            };
            inputs.push(v);
            Ok(Some(inputs.len() - 1))
        };
        let required_target = |l: &Self| -> Result<()> {
            if target.is_empty() {
                return Err(l.err(
                    ErrorKind::Instruction,
                    span,
                    format!("--mount={raw}: mount target must be specified"),
                ));
            }
            Ok(())
        };
        let mount = match kind.as_str() {
            "bind" => {
                required_target(self)?;
                let source = clean_path(&format!(
                    "/{}",
                    fields.get("source").map(String::as_str).unwrap_or("")
                ));
                let input = match from_input(self, inputs)? {
                    Some(i) => i,
                    None => {
                        let c = self.context();
                        if source == "/" {
                            self.context_whole = true;
                        } else {
                            self.context_paths
                                .insert(source.trim_start_matches('/').to_string());
                        }
                        inputs.push(c);
                        inputs.len() - 1
                    }
                };
                Mount {
                    target: target.clone(),
                    kind: MountKind::Bind {
                        input,
                        source,
                        readonly: readonly.unwrap_or(true),
                    },
                }
            }
            "cache" => {
                required_target(self)?;
                let sharing = match fields
                    .get("sharing")
                    .map(|s| s.to_ascii_lowercase())
                    .as_deref()
                {
                    None | Some("shared") => CacheSharing::Shared,
                    Some("private") => CacheSharing::Private,
                    Some("locked") => CacheSharing::Locked,
                    Some(o) => {
                        return Err(self.err(
                            ErrorKind::Instruction,
                            span,
                            format!("unsupported sharing value {o:?}"),
                        ))
                    }
                };
                Mount {
                    target: target.clone(),
                    kind: MountKind::Cache {
                        id: fields
                            .get("id")
                            .cloned()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| target.clone()),
                        sharing,
                        input: from_input(self, inputs)?,
                        source: fields.get("source").cloned().unwrap_or_else(|| "/".into()),
                        readonly: readonly.unwrap_or(false),
                        mode: num(self, "mode", 8, 0o755)?,
                        uid: num(self, "uid", 10, 0)?,
                        gid: num(self, "gid", 10, 0)?,
                    },
                }
            }
            "tmpfs" => {
                required_target(self)?;
                let size = match fields.get("size") {
                    None => 0,
                    Some(v) => parse_size(v).ok_or_else(|| {
                        self.err(
                            ErrorKind::Instruction,
                            span,
                            format!("invalid size {v:?} in --mount"),
                        )
                    })?,
                };
                Mount {
                    target: target.clone(),
                    kind: MountKind::Tmpfs { size },
                }
            }
            "secret" => {
                let mut id = fields.get("id").cloned().unwrap_or_default();
                let env_name = fields.get("env").cloned().filter(|s| !s.is_empty());
                if id.is_empty() {
                    id = target.rsplit('/').next().unwrap_or("").to_string();
                }
                if id.is_empty() {
                    return Err(self.err(
                        ErrorKind::Instruction,
                        span,
                        format!("--mount={raw}: secret mount needs an id or a target"),
                    ));
                }
                let target = if target.is_empty() && env_name.is_none() {
                    format!("/run/secrets/{id}")
                } else {
                    target.clone()
                };
                Mount {
                    target,
                    kind: MountKind::Secret {
                        required: fields.get("required").is_some_and(|v| v == "true"),
                        mode: num(self, "mode", 8, 0o400)?,
                        uid: num(self, "uid", 10, 0)?,
                        gid: num(self, "gid", 10, 0)?,
                        id,
                        env: env_name,
                    },
                }
            }
            "ssh" => {
                *ssh_count += 1;
                let target = if target.is_empty() {
                    format!("/run/buildkit/ssh_agent.{}", *ssh_count - 1)
                } else {
                    target.clone()
                };
                Mount {
                    target,
                    kind: MountKind::Ssh {
                        id: fields
                            .get("id")
                            .cloned()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "default".into()),
                        required: fields.get("required").is_some_and(|v| v == "true"),
                        mode: num(self, "mode", 8, 0o600)?,
                        uid: num(self, "uid", 10, 0)?,
                        gid: num(self, "gid", 10, 0)?,
                    },
                }
            }
            other => {
                let mut msg = format!("unsupported mount type {other:?}");
                if let Some(s) = suggest(other, &["bind", "cache", "tmpfs", "secret", "ssh"]) {
                    msg.push_str(&format!(" (did you mean {s}?)"));
                }
                return Err(self.err(ErrorKind::Instruction, span, msg));
            }
        };
        Ok(mount)
    }

    fn copy_instruction(
        &mut self,
        plans: &[Plan],
        st: &mut StageState,
        c: &Copy,
        span: Span,
        label: String,
        done: &HashMap<usize, StageState>,
    ) -> Result<()> {
        let env = &st.env;
        let declared = &st.args;
        let kw = if c.add { "ADD" } else { "COPY" };
        let mut sources = Vec::new();
        for s in &c.sources {
            sources.push(self.expand(s, env, declared, span)?);
        }
        let dest_raw = self.expand(&c.dest, env, declared, span)?;
        let chown = match &c.chown {
            Some(v) => Some(self.expand(v, env, declared, span)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(v) => Some(self.expand(v, env, declared, span)?),
            None => None,
        };
        if let Some(m) = &chmod {
            match u32::from_str_radix(m, 8) {
                Ok(p) if p <= 0o7777 => {}
                Ok(_) => {
                    return Err(self.err(
                        ErrorKind::Instruction,
                        span,
                        format!("invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"),
                    ))
                }
                Err(_) => {
                    let symbolic = m.split(',').all(|part| {
                        let p = part.trim_start_matches(['u', 'g', 'o', 'a']);
                        p.starts_with(['+', '-', '='])
                            && p[1..].chars().all(|ch| matches!(ch, 'r' | 'w' | 'x' | 'X' | 's' | 't'))
                    });
                    if !symbolic {
                        return Err(self.err(
                            ErrorKind::Instruction,
                            span,
                            format!("invalid chmod parameter: '{m}'. it should be octal string and between 0 and 07777"),
                        ));
                    }
                }
            }
        }
        let checksum = match &c.checksum {
            Some(v) => Some(self.expand(v, env, declared, span)?),
            None => None,
        };
        let mut exclude = Vec::new();
        for e in &c.exclude {
            exclude.push(self.expand(e, env, declared, span)?);
        }
        if checksum.is_some() {
            if sources.len() != 1 {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "checksum can't be specified for multiple sources",
                ));
            }
            if !is_http_source(&sources[0]) && git_source(&sources[0]).is_none() {
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    "checksum can't be specified for non-HTTP(S) sources",
                ));
            }
        }
        let dest = relative_to_workdir(&st.config.working_dir, &dest_raw);

        let mut msg = String::from(kw);
        if c.parents {
            msg.push_str(" --parents");
        }

        if let Some(o) = &chown {
            msg.push_str(&format!(" --chown={o}"));
        }
        if let Some(m) = &chmod {
            msg.push_str(&format!(" --chmod={m}"));
        }

        let mut inputs = vec![st.root];
        let mut actions = Vec::new();
        let source_vertex = match &c.from {
            Some(f) => Some(
                match self.resolve_from(
                    plans,
                    f,
                    self.span_of(span, self.current_range, &format!("from={f}")),
                )? {
                    FromRef::Stage(i) => self.stage_root(done, i, span)?,
                    FromRef::Image(r) => {
                        let p = self.stage_platform.clone();
                        let resolved = self.resolve(&r, &p, span)?;
                        let r = resolved
                            .map(|x| x.reference)
                            .filter(|x| !x.is_empty())
                            .unwrap_or(r);
                        self.image_vertex(&r, &p, Some(span))
                    }
                },
            ),
            None => None,
        };
        let input_of = |inputs: &mut Vec<VertexId>, v: VertexId| -> usize {
            match inputs.iter().position(|x| *x == v) {
                Some(i) if i > 0 => i,
                _ => {
                    inputs.push(v);
                    inputs.len() - 1
                }
            }
        };
        for src in &sources {
            msg.push(' ');
            msg.push_str(src);
            let copy = |input: usize, source: String, include: Vec<String>, local: bool| {
                FileAction::Copy {
                    input,
                    source,
                    dest: dest.clone(),
                    chown: chown.clone(),
                    chmod: chmod.clone(),
                    exclude: exclude.clone(),
                    include,
                    follow_symlinks: local,
                    dir_contents_only: local,
                    attempt_unpack: local && c.add && c.unpack != Some(false),
                    create_dest_path: true,
                    allow_wildcard: local,
                    allow_empty_wildcard: local,
                }
            };
            if source_vertex.is_none() && c.add {
                if let Some((url, fragment)) = git_source(src) {
                    let (reference, subdir) = match fragment.split_once(':') {
                        Some((r, d)) => (r.to_string(), d.to_string()),
                        None => (fragment.clone(), String::new()),
                    };
                    let v = self.add_vertex(
                        Op::Git {
                            url,
                            reference,
                            keep_git_dir: c.keep_git_dir,
                        },
                        vec![],
                        format!("git {src}"),
                        Some(span),
                    );
                    let i = input_of(&mut inputs, v);
                    let source = if subdir.is_empty() {
                        "/".to_string()
                    } else {
                        clean_path(&format!("/{subdir}"))
                    };
                    let mut action = copy(i, source, vec![], false);
                    // A checkout's directory is copied by its contents, like a
                    // local directory.
                    if let FileAction::Copy {
                        dir_contents_only, ..
                    } = &mut action
                    {
                        *dir_contents_only = true;
                    }
                    actions.push(action);
                    continue;
                }
                if is_http_source(src) {
                    let path = src.split(['?', '#']).next().unwrap_or(src);
                    let base = path.rsplit('/').next().unwrap_or("");
                    let filename = if base.is_empty() || path.ends_with("://") || base.contains(':')
                    {
                        "__unnamed__".to_string()
                    } else {
                        base.to_string()
                    };
                    let v = self.add_vertex(
                        Op::Http {
                            url: src.clone(),
                            checksum: checksum.clone(),
                            filename: filename.clone(),
                        },
                        vec![],
                        format!("https {src}"),
                        Some(span),
                    );
                    let i = input_of(&mut inputs, v);
                    let mut action = copy(i, filename, vec![], false);
                    // A downloaded archive is extracted only when asked to.
                    if let FileAction::Copy { attempt_unpack, .. } = &mut action {
                        *attempt_unpack = c.unpack == Some(true);
                    }
                    actions.push(action);
                    continue;
                }
            } else if source_vertex.is_none() && (is_http_source(src) || git_source(src).is_some())
            {
                let what = if is_http_source(src) {
                    "a URL"
                } else {
                    "a git ref"
                };
                return Err(self.err(
                    ErrorKind::Instruction,
                    span,
                    format!("source can't be {what} for COPY"),
                ));
            }
            let (src_path, include) = if c.parents {
                match src.split_once("/./") {
                    Some((parent, pattern)) => (
                        parent.to_string(),
                        vec![clean_path(&format!("/{pattern}"))
                            .trim_start_matches('/')
                            .to_string()],
                    ),
                    None => (
                        "/".to_string(),
                        vec![clean_path(&format!("/{src}"))
                            .trim_start_matches('/')
                            .to_string()],
                    ),
                }
            } else {
                (src.clone(), vec![])
            };
            let cleaned = clean_path(&format!("/{src_path}"));
            let v = match source_vertex {
                Some(v) => v,
                None => {
                    let ctx = self.context();
                    if cleaned == "/" {
                        self.context_whole = true;
                    } else {
                        self.context_paths
                            .insert(cleaned.trim_start_matches('/').to_string());
                    }
                    ctx
                }
            };
            let i = input_of(&mut inputs, v);
            actions.push(copy(i, cleaned, include, true));
        }
        for inline in &c.inline {
            msg.push_str(&format!(" <<{}", inline.name));
            let data = if inline.expand {
                let raw = Lexer::new(
                    '\\',
                    LexerOptions {
                        skip_process_quotes: true,
                        ..Default::default()
                    },
                );
                raw.process_word(&inline.data, env)
                    .map_err(|e| self.err(ErrorKind::Expansion, span, e.to_string()))?
            } else {
                inline.data.clone()
            };
            let scratch = self.scratch();
            let file = clean_path(&format!("/{}", inline.name));
            let v = self.add_vertex(
                Op::File(FileOp {
                    root: Some(0),
                    actions: vec![FileAction::Mkfile {
                        path: file.clone(),
                        mode: 0o644,
                        data,
                    }],
                    owner_from: None,
                }),
                vec![scratch],
                "preparing inline document".into(),
                Some(span),
            );
            let i = input_of(&mut inputs, v);
            actions.push(FileAction::Copy {
                input: i,
                source: file,
                dest: dest.clone(),
                chown: chown.clone(),
                chmod: chmod.clone(),
                exclude: vec![],
                include: vec![],
                follow_symlinks: false,
                dir_contents_only: false,
                attempt_unpack: false,
                create_dest_path: true,
                allow_wildcard: false,
                allow_empty_wildcard: false,
            });
        }
        msg.push(' ');
        msg.push_str(&dest_raw);
        if c.link {
            // The files go into a layer of their own made on an empty root,
            // so its cache key does not depend on the layers below.
            let base = inputs.remove(0);
            for a in &mut actions {
                if let FileAction::Copy { input, .. } = a {
                    *input -= 1;
                }
            }
            // A name in --chown is looked up in the stage below, which then
            // enters the key only through the ids it resolves to.
            let named = chown.as_deref().is_some_and(|c| {
                c.split(':')
                    .any(|part| !part.is_empty() && part.parse::<u32>().is_err())
            });
            let owner_from = named.then(|| {
                inputs.push(base);
                inputs.len() - 1
            });
            let layer = self.add_vertex(
                Op::File(FileOp {
                    root: None,
                    actions,
                    owner_from,
                }),
                inputs,
                label.clone(),
                Some(span),
            );
            st.root = self.add_vertex(
                Op::Merge,
                vec![base, layer],
                format!("{label} (link)"),
                Some(span),
            );
        } else {
            st.root = self.add_vertex(
                Op::File(FileOp {
                    root: Some(0),
                    actions,
                    owner_from: None,
                }),
                inputs,
                label,
                Some(span),
            );
        }
        Self::history(st, format!("{msg} # buildkit"), true);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            normalize_reference("alpine").unwrap(),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(
            normalize_reference("alpine:3.20").unwrap(),
            "docker.io/library/alpine:3.20"
        );
        assert_eq!(
            normalize_reference("user/app").unwrap(),
            "docker.io/user/app:latest"
        );
        assert_eq!(
            normalize_reference("localhost:5000/app:v1").unwrap(),
            "localhost:5000/app:v1"
        );
        assert_eq!(
            normalize_reference("quay.io/a/b@sha256:abc").unwrap(),
            "quay.io/a/b@sha256:abc"
        );
        assert!(normalize_reference("Alpine").is_err());
        assert!(normalize_reference("$X").is_err());
    }

    #[test]
    fn durations_and_quotes() {
        assert_eq!(go_duration(5_000_000_000), "5s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000_000), "1.5s");
        assert_eq!(go_duration(500_000_000), "500ms");
        assert_eq!(go_quote_rune(3), "'\\x03'");
        assert_eq!(go_quote_rune(65), "'A'");
    }

    #[test]
    fn secret_names() {
        for n in [
            "API_KEY",
            "GITHUB_TOKEN",
            "password",
            "AWS_SECRET_ACCESS_KEY",
            "KEY2",
            "auth",
        ] {
            assert!(looks_secret(n), "{n}");
        }
        for n in [
            "KEYS",
            "MONKEY",
            "PUBLIC_KEY",
            "TOKENIZER",
            "KEY2_X",
            "PATH",
        ] {
            assert!(!looks_secret(n), "{n}");
        }
    }

    #[test]
    fn paths_ports_signals() {
        assert_eq!(relative_to_workdir("/app", "sub/"), "/app/sub/");
        assert_eq!(relative_to_workdir("/app", "."), "/app/");
        assert_eq!(relative_to_workdir("", "x"), "/x");
        assert_eq!(relative_to_workdir("/a", "/b/../c"), "/c");
        assert_eq!(parse_ports("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_ports("53/udp").unwrap(), vec!["53/udp"]);
        assert_eq!(parse_ports("8000-8002").unwrap().len(), 3);
        assert!(parse_ports("80/xyz").is_err());
        assert!(valid_signal("SIGTERM") && valid_signal("9") && valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("SIGFOO"));
    }
}
