//! Typed stages → [`BuildGraph`]: ARG/ENV scoping and expansion, stage
//! resolution and pruning, ONBUILD triggers, image config and history.
//!
//! The rules follow BuildKit's `dockerfile2llb`: which arguments are expanded,
//! how ARG values flow (global ARGs before the first FROM are visible to FROM
//! lines and to stages that re-declare them; `--build-arg` overrides defaults;
//! ENV wins over ARG in the config; the ARG values are in the environment of
//! RUN), and history lines worded as BuildKit writes them.
//!
//! One module per instruction family, each with its unit tests beside it:
//! `stages.rs` (FROM, global ARGs, `--from`, ONBUILD triggers, stage order and
//! pruning), `run.rs` (RUN and its mounts), `copy.rs` (COPY and ADD) and
//! `config.rs` (ENV, ARG, CMD, WORKDIR and the other instructions that set the
//! image config), and `named.rs` (named contexts replacing stages and images). This file holds the entry points, the state shared while
//! lowering, and the dispatch of each instruction to its family.

mod config;
mod copy;
mod named;
mod run;
mod stages;

pub use config::go_duration;
pub use named::{named_context_key, NamedContext};
pub use stages::normalize_reference;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub(crate) use crate::dockerignore::clean as clean_path;
use crate::error::{suggest, Error, ErrorKind};
use crate::graph::*;
use crate::instructions::{self, Command, Instruction, StageDef};
use crate::parser::{parse, Ast, Span};
use crate::shell::{Lexer, LexerOptions};

type Result<T> = std::result::Result<T, Error>;

/// `PATH` given to stages whose image does not set one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

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
    /// `--build-context NAME=VALUE`, by [`named_context_key`]: what replaces
    /// the stage or image called NAME.
    pub named_contexts: BTreeMap<String, NamedContext>,
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

#[derive(Debug, Clone, PartialEq)]
enum BaseKind {
    Scratch,
    Stage(usize),
    Image(String),
    /// A named context that is no image (by key).
    Named(String),
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
    /// A named context that is no image (by key).
    Named(String),
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
    /// How much to lower and what to report (see [`LintMode`]).
    lint: LintMode,
    /// Per dispatched stage: its base image's config is unknown (not resolved).
    unknown_env: HashMap<usize, bool>,
    /// The stage being dispatched has an unknown environment.
    env_unknown: bool,
}

/// What [`lower_unchecked`] lowers and reports, for the build checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct LintMode {
    /// Lower every stage, not only those the target needs (BuildKit's lint
    /// without `--target`).
    pub all_stages: bool,
    /// No `UndefinedVar` in stages whose base image config is unknown (an
    /// image the resolver does not have): its ENV could define the variable.
    pub quiet_unknown_env: bool,
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
    let mut graph = lower_unchecked(ast, opts, resolver, LintMode::default())?;
    let check = CheckConfig::for_build(ast, &opts.build_args)?;
    graph.warnings.retain(|w| check.enabled(&w.rule));
    if let Some(e) = check.violation(ast, &graph.warnings) {
        return Err(e);
    }
    Ok(graph)
}

/// [`lower`] without the `# check=` filtering: every warning, in source order
/// for the parser's and in the order found for the others.
pub(crate) fn lower_unchecked(
    ast: &Ast,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
    lint: LintMode,
) -> Result<BuildGraph> {
    lower_partial(ast, opts, resolver, lint).map_err(|b| b.0)
}

/// [`lower_unchecked`] that keeps, on failure, the warnings found before it
/// (the build checks report them with the error, as BuildKit's lint does).
pub(crate) fn lower_partial(
    ast: &Ast,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
    lint: LintMode,
) -> std::result::Result<BuildGraph, Box<(Error, Vec<Warning>)>> {
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
    let df = instructions::convert(ast).map_err(|e| Box::new((e, warnings.clone())))?;
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
        lint,
        unknown_env: HashMap::new(),
        env_unknown: false,
    };
    match l.run(df) {
        Ok(mut graph) => {
            warnings.append(&mut graph.warnings);
            graph.warnings = warnings;
            Ok(graph)
        }
        Err(e) => {
            warnings.append(&mut l.warnings);
            Err(Box::new((e, warnings)))
        }
    }
}

pub use crate::checks::CheckConfig;

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
            if special || self.env_unknown || declared.iter().any(|(k, _)| *k == name) {
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
        let unknown = self.lint.quiet_unknown_env
            && match &plan.base_kind {
                BaseKind::Image(_) => plan.resolved.is_none(),
                BaseKind::Stage(b) => self.unknown_env.get(b).copied().unwrap_or(false),
                // A named context that is no image has no config, so no ENV.
                BaseKind::Scratch | BaseKind::Named(_) => false,
            };
        self.unknown_env.insert(s, unknown);
        self.env_unknown = unknown;
        let mut st = self.stage_start(plan, done)?;
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
        self.config_checks(st, cmd);
        match &cmd.instruction {
            Instruction::Run(run) => self.run_instruction(plans, st, run, span, label, done)?,
            Instruction::Copy(c) => self.copy_instruction(plans, st, c, span, label, done)?,
            Instruction::Env(pairs) => self.apply_env(st, pairs, span)?,
            Instruction::Label(pairs) => self.apply_label(st, pairs, span)?,
            Instruction::Maintainer(m) => Self::apply_maintainer(st, m),
            Instruction::Arg(pairs) => self.apply_arg(st, pairs, span)?,
            Instruction::Cmd(c) => Self::apply_cmd(st, c),
            Instruction::Entrypoint(c) => Self::apply_entrypoint(st, c),
            Instruction::Shell(sh) => Self::apply_shell(st, sh),
            Instruction::Healthcheck(h) => Self::apply_healthcheck(st, h),
            Instruction::Expose(specs) => self.apply_expose(st, specs, span)?,
            Instruction::User(u) => self.apply_user(st, u, span)?,
            Instruction::Volume(vols) => self.apply_volume(st, vols, span)?,
            Instruction::StopSignal(sig) => self.apply_stop_signal(st, sig, span)?,
            Instruction::Onbuild(expr) => Self::apply_onbuild(st, expr),
            Instruction::Workdir(w) => self.apply_workdir(st, w, span, label)?,
        }
        Ok(())
    }
}
