//! BuildKit's Dockerfile build checks (`docker buildx build --check`) and the
//! `outline` and `targets` subrequests (`--call outline|targets`).
//!
//! The rules are BuildKit's (`frontend/dockerfile/linter/ruleset.go`): the
//! same names, descriptions, documentation URLs and messages. Most are found
//! where BuildKit finds them, while the typed instructions are built
//! ([`crate::instructions::convert`]: casing, stage names, MAINTAINER, legacy
//! key/value forms) or while stages are lowered ([`crate::lower()`]: variables,
//! WORKDIR, CMD/ENTRYPOINT, secrets in ARG/ENV); this module adds the ones
//! that need the `.dockerignore` or the comments above an instruction, and
//! the `# check=` / `BUILDKIT_DOCKERFILE_CHECK` configuration.
//!
//! Like BuildKit's lint, [`check`] without a target looks at every stage; a
//! build (and `check` with a target) only at the stages the target needs.

use std::collections::{BTreeMap, BTreeSet};

use crate::dockerignore::Matcher;
use crate::error::{Error, ErrorKind};
use crate::graph::{MountKind, Op, Warning};
use crate::instructions::{self, Instruction};
use crate::lower::{lower_partial, lower_unchecked, BuildOptions, ImageResolver, LintMode};
use crate::parser::{Ast, Node, Pos, Span};
use crate::shell::{Lexer, LexerOptions};

/// The build argument that replaces the `# check=` directive.
pub const CHECK_BUILD_ARG: &str = "BUILDKIT_DOCKERFILE_CHECK";

/// One of BuildKit's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// `StageNameCasing`.
    pub name: &'static str,
    /// What the rule wants, as BuildKit describes it.
    pub description: &'static str,
    /// Off unless enabled with `experimental=` (and then `skip=` does not apply).
    pub experimental: bool,
}

impl Rule {
    /// `https://docs.docker.com/go/dockerfile/rule/stage-name-casing/`.
    pub fn url(&self) -> String {
        let mut kebab = String::new();
        let chars: Vec<char> = self.name.chars().collect();
        for (i, c) in chars.iter().enumerate() {
            if c.is_ascii_uppercase() {
                let prev_lower = i > 0 && chars[i - 1].is_ascii_lowercase();
                let next_lower = chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
                if i != 0 && (prev_lower || next_lower) {
                    kebab.push('-');
                }
                kebab.push(c.to_ascii_lowercase());
            } else {
                kebab.push(*c);
            }
        }
        format!("https://docs.docker.com/go/dockerfile/rule/{kebab}/")
    }
}

const fn rule(name: &'static str, description: &'static str) -> Rule {
    Rule {
        name,
        description,
        experimental: false,
    }
}

/// Every rule hoist evaluates, in BuildKit's order.
pub const RULES: &[Rule] = &[
    rule("StageNameCasing", "Stage names should be lowercase"),
    rule(
        "FromAsCasing",
        "The 'as' keyword should match the case of the 'from' keyword",
    ),
    rule(
        "NoEmptyContinuation",
        "Empty continuation lines will become errors in a future release",
    ),
    rule(
        "ConsistentInstructionCasing",
        "All commands within the Dockerfile should use the same casing (either upper or lower)",
    ),
    rule("DuplicateStageName", "Stage names should be unique"),
    rule(
        "ReservedStageName",
        "Reserved words should not be used as stage names",
    ),
    rule(
        "JSONArgsRecommended",
        "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals",
    ),
    rule(
        "MaintainerDeprecated",
        "The MAINTAINER instruction is deprecated, use a label instead to define an image author",
    ),
    rule("UndefinedArgInFrom", "FROM command must use declared ARGs"),
    rule(
        "WorkdirRelativePath",
        "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes",
    ),
    rule("UndefinedVar", "Variables should be defined before their use"),
    rule(
        "MultipleInstructionsDisallowed",
        "Multiple instructions of the same type should not be used in the same stage",
    ),
    rule(
        "LegacyKeyValueFormat",
        "Legacy key/value format with whitespace separator should not be used",
    ),
    rule(
        "RedundantTargetPlatform",
        "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior",
    ),
    rule(
        "SecretsUsedInArgOrEnv",
        "Sensitive data should not be used in the ARG or ENV commands",
    ),
    rule(
        "InvalidDefaultArgInFrom",
        "Default value for global ARG results in an empty or invalid base image name",
    ),
    rule(
        "FromPlatformFlagConstDisallowed",
        "FROM --platform flag should not use a constant value",
    ),
    rule(
        "CopyIgnoredFile",
        "Attempting to Copy file that is excluded by .dockerignore",
    ),
    Rule {
        name: "InvalidDefinitionDescription",
        description: "Comment for build stage or argument should follow the format: `# <arg/stage name> <description>`. If this is not intended to be a description comment, add an empty line or comment between the instruction and the comment.",
        experimental: true,
    },
    rule(
        "ExposeProtoCasing",
        "Protocol in EXPOSE instruction should be lowercase",
    ),
    rule(
        "ExposeInvalidFormat",
        "IP address and host-port mapping should not be used in EXPOSE instruction. This will become an error in a future release",
    ),
];

/// The rule of that name.
pub fn find_rule(name: &str) -> Option<&'static Rule> {
    RULES.iter().find(|r| r.name == name)
}

/// The `# check=skip=RULE,…;error=true;experimental=RULE,…` parser directive,
/// or the `BUILDKIT_DOCKERFILE_CHECK` build argument, which replaces it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckConfig {
    /// `skip=all`.
    pub skip_all: bool,
    /// Rules to leave out.
    pub skip: Vec<String>,
    /// Turn remaining warnings into an error.
    pub error: bool,
    /// `experimental=all`.
    pub experimental_all: bool,
    /// Experimental rules to run.
    pub experimental: Vec<String>,
}

fn names(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_string)
        .collect()
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
                    let rules = names(v);
                    c.skip_all |= rules.iter().any(|r| r.eq_ignore_ascii_case("all"));
                    c.skip.extend(rules);
                }
                "experimental" => {
                    let rules = names(v);
                    c.experimental_all |= rules.iter().any(|r| r.eq_ignore_ascii_case("all"));
                    c.experimental.extend(rules);
                }
                "error" => {
                    c.error = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        other => return Err(format!("invalid boolean {other:?} for error")),
                    }
                }
                other => return Err(format!("unknown key {other:?}")),
            }
        }
        Ok(c)
    }

    /// The configuration of a build: `BUILDKIT_DOCKERFILE_CHECK` when it is
    /// among the build arguments (it replaces the directive, as in BuildKit),
    /// else the directive.
    pub fn for_build(
        ast: &Ast,
        build_args: &BTreeMap<String, String>,
    ) -> Result<CheckConfig, Error> {
        if let Some(v) = build_args.get(CHECK_BUILD_ARG) {
            return CheckConfig::parse(v).map_err(|m| {
                Error::new(
                    ErrorKind::Instruction,
                    format!("invalid {CHECK_BUILD_ARG} build argument: {m}"),
                )
            });
        }
        let Some(v) = ast.directive("check") else {
            return Ok(CheckConfig::default());
        };
        CheckConfig::parse(v).map_err(|m| {
            let line = ast
                .directives
                .iter()
                .find(|d| d.name == "check")
                .map(|d| d.line)
                .unwrap_or(1);
            let pos = Pos { line, column: 1 };
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
        })
    }

    /// Whether warnings of `rule` are reported: an experimental rule only when
    /// enabled (whatever `skip` says), any other unless skipped.
    pub fn enabled(&self, rule: &str) -> bool {
        let listed = |list: &[String]| list.iter().any(|r| r.eq_ignore_ascii_case(rule));
        if find_rule(rule).is_some_and(|r| r.experimental) {
            self.experimental_all || listed(&self.experimental)
        } else {
            !(self.skip_all || listed(&self.skip))
        }
    }

    /// Whether warnings of `rule` are left out.
    pub fn skips(&self, rule: &str) -> bool {
        !self.enabled(rule)
    }

    /// BuildKit's `lint violation found for rules: A, B` when `error=true`
    /// and there are warnings.
    pub fn violation_message(&self, warnings: &[Warning]) -> Option<String> {
        if !self.error || warnings.is_empty() {
            return None;
        }
        let rules: BTreeSet<&str> = warnings.iter().map(|w| w.rule.as_str()).collect();
        let rules: Vec<&str> = rules.into_iter().collect();
        Some(format!(
            "lint violation found for rules: {}",
            rules.join(", ")
        ))
    }

    /// The error a build fails with under `error=true`, at the first warning.
    pub(crate) fn violation(&self, ast: &Ast, warnings: &[Warning]) -> Option<Error> {
        let message = self.violation_message(warnings)?;
        let first = &warnings[0];
        let mut e = Error::new(
            ErrorKind::Instruction,
            format!("{message} ({})", first.message),
        );
        if let Some(span) = first.span {
            e = e.at(span, ast.line_text(span.start.line));
        }
        Some(e)
    }
}

/// What [`check`] found.
#[derive(Debug)]
pub struct Report {
    /// The warnings the configuration lets through, by line.
    pub warnings: Vec<Warning>,
    /// The configuration in effect.
    pub config: CheckConfig,
    /// The Dockerfile could not be lowered (a build would fail so): the
    /// warnings are those found before.
    pub error: Option<Error>,
}

impl Report {
    /// `lint violation found for rules: …` when `error=true` and something was found.
    pub fn violation(&self) -> Option<String> {
        self.config.violation_message(&self.warnings)
    }
}

/// Runs the build checks without building anything.
///
/// `all_stages`: every stage (BuildKit's lint without `--target`), else the
/// target's stages as a build sees them. `dockerignore` is the text of the
/// ignore file, for `CopyIgnoredFile`. Base images come from `resolver`; a
/// variable used in a stage whose base image it does not know is not
/// reported as undefined (the image's ENV may define it).
pub fn check(
    ast: &Ast,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
    dockerignore: Option<&str>,
    all_stages: bool,
) -> Result<Report, Error> {
    let config = CheckConfig::for_build(ast, &opts.build_args)?;
    let mode = LintMode {
        all_stages,
        quiet_unknown_env: true,
    };
    let (lowered, mut warnings, error) = match lower_partial(ast, opts, resolver, mode) {
        Ok(graph) => (
            graph
                .stages
                .iter()
                .map(|s| s.index)
                .collect::<BTreeSet<usize>>(),
            graph.warnings,
            None,
        ),
        Err(failed) => {
            let (e, found) = *failed;
            (BTreeSet::new(), found, Some(e))
        }
    };
    let ignore = match dockerignore {
        Some(text) => Some(Matcher::parse(text).map_err(|e| {
            Error::new(
                ErrorKind::Instruction,
                format!("invalid .dockerignore: {e}"),
            )
        })?),
        None => None,
    };
    // Lines of the instructions (not the FROM) of stages a build skips: as
    // in BuildKit, only a lint of every stage reads them.
    let mut skipped_lines = BTreeSet::new();
    let mut stage: Option<usize> = None;
    for node in &ast.nodes {
        let name = node.name();
        if name == "from" {
            stage = Some(stage.map_or(0, |s| s + 1));
        }
        definition_description(node, &mut warnings);
        if !stage.is_some_and(|s| lowered.contains(&s)) {
            if name != "from" && stage.is_some() && error.is_none() {
                skipped_lines.extend(node.span.start.line..=node.span.end.line);
            }
            continue;
        }
        match name.as_str() {
            "from" => from_platform_const(node, &mut warnings),
            "copy" | "add" => {
                if let Some(m) = &ignore {
                    copy_ignored(node, m, &mut warnings)
                }
            }
            "expose" => expose(node, &mut warnings),
            _ => {}
        }
    }
    let mut seen = BTreeSet::new();
    warnings.retain(|w| {
        seen.insert((
            w.rule.clone(),
            w.message.clone(),
            w.span.map(|s| s.start.line),
        ))
    });
    warnings.retain(|w| {
        matches!(
            w.rule.as_str(),
            "ConsistentInstructionCasing" | "NoEmptyContinuation"
        ) || !w
            .span
            .is_some_and(|s| skipped_lines.contains(&s.start.line))
    });
    warnings.sort_by_key(|w| w.span.map_or(0, |s| s.start.line));
    warnings.retain(|w| config.enabled(&w.rule));
    Ok(Report {
        warnings,
        config,
        error,
    })
}

fn warn(out: &mut Vec<Warning>, rule: &str, node: &Node, message: String) {
    out.push(Warning {
        rule: rule.into(),
        message,
        span: Some(node.span),
    });
}

/// `--name=value` flags of a node.
fn flag<'a>(node: &'a Node, name: &str) -> Option<&'a str> {
    node.flags.iter().find_map(|f| {
        let f = f.strip_prefix("--")?;
        let (k, v) = f.split_once('=').unwrap_or((f, ""));
        (k == name).then_some(v)
    })
}

/// A constant `FROM --platform=os/arch`, unless the stage is named after its
/// OS or architecture (one stage per platform, picked by a variable later).
fn from_platform_const(node: &Node, out: &mut Vec<Warning>) {
    let Some(platform) = flag(node, "platform") else {
        return;
    };
    if platform.contains('$') || platform.is_empty() {
        return;
    }
    let stage_name = match node.args.as_slice() {
        [_, kw, name] if kw.eq_ignore_ascii_case("as") => name.to_lowercase(),
        _ => String::new(),
    };
    let mut parts = platform.split('/');
    let os = parts.next().unwrap_or("").to_lowercase();
    let arch = parts.next().unwrap_or("").to_lowercase();
    if !stage_name.is_empty()
        && ((!os.is_empty() && stage_name.contains(&os))
            || (!arch.is_empty() && stage_name.contains(&arch)))
    {
        return;
    }
    warn(
        out,
        "FromPlatformFlagConstDisallowed",
        node,
        format!("FROM --platform flag should not use constant value {platform:?}"),
    );
}

/// COPY/ADD of a context file the `.dockerignore` leaves out: the build
/// would not find it.
fn copy_ignored(node: &Node, ignore: &Matcher, out: &mut Vec<Warning>) {
    if flag(node, "from").is_some() || node.args.len() < 2 {
        return;
    }
    let verb = if node.name() == "add" { "Add" } else { "Copy" };
    let sources = if node.json || node.heredocs.is_empty() {
        &node.args[..node.args.len() - 1]
    } else {
        // Heredoc sources are inline files, not context files.
        return;
    };
    for src in sources {
        let lower = src.to_ascii_lowercase();
        if src.starts_with("<<")
            || src.contains('$')
            || lower.starts_with("http://")
            || lower.starts_with("https://")
            || lower.starts_with("git@")
        {
            continue;
        }
        let path = src.trim_start_matches("./").trim_start_matches('/');
        if path.is_empty() || path == "." {
            continue;
        }
        if ignore.is_excluded(path) {
            warn(
                out,
                "CopyIgnoredFile",
                node,
                format!("Attempting to {verb} file {src:?} that is excluded by .dockerignore"),
            );
        }
    }
}

fn expose(node: &Node, out: &mut Vec<Warning>) {
    for port in &node.args {
        if port.contains(':') {
            warn(
                out,
                "ExposeInvalidFormat",
                node,
                format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{port}'"),
            );
        }
        if let Some((_, proto)) = port.split_once('/') {
            if proto != proto.to_lowercase() {
                warn(
                    out,
                    "ExposeProtoCasing",
                    node,
                    format!("Defined protocol '{port}' in EXPOSE instruction should be lowercase"),
                );
            }
        }
    }
}

/// The keys a definition comment may describe: the stage name of `FROM … AS
/// name`, the names of an ARG.
fn definition_keys(node: &Node) -> Vec<String> {
    match node.name().as_str() {
        "from" => match node.args.as_slice() {
            [_, kw, name] if kw.eq_ignore_ascii_case("as") => vec![name.to_lowercase()],
            _ => vec![],
        },
        "arg" => node
            .args
            .iter()
            .map(|w| w.split_once('=').map_or(w.as_str(), |(k, _)| k).to_string())
            .collect(),
        _ => vec![],
    }
}

fn definition_description(node: &Node, out: &mut Vec<Warning>) {
    let keys = definition_keys(node);
    let Some(last) = node.comments.last() else {
        return;
    };
    if keys.is_empty() {
        return;
    }
    let first_word = last.split(' ').next().unwrap_or("");
    if keys.iter().any(|k| k == first_word) {
        return;
    }
    let example = if keys.len() > 1 {
        "<arg_key>".to_string()
    } else {
        keys[0].clone()
    };
    warn(
        out,
        "InvalidDefinitionDescription",
        node,
        format!(
            "Comment for {} should follow the format: `# {example} <description>`",
            node.keyword.to_uppercase()
        ),
    );
}

/// BuildKit's description of a definition: the text after `NAME ` in the
/// first comment line above it that starts so.
fn description(comments: &[String], name: &str) -> String {
    if name.is_empty() {
        return String::new();
    }
    let prefix = format!("{name} ");
    comments
        .iter()
        .find_map(|c| c.strip_prefix(&prefix))
        .unwrap_or("")
        .to_string()
}

/// A stage, as `--call targets` lists it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Target {
    /// Stage name (empty for an unnamed stage).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The last stage, built without `--target`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// From the comment above its FROM (`# NAME description`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// What it starts from, as written.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub base: String,
    /// `FROM --platform`, as written.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    /// Where its FROM is.
    #[serde(skip)]
    pub span: Span,
}

/// Every stage with its description, in order (`--call targets`).
pub fn targets(ast: &Ast) -> Result<Vec<Target>, Error> {
    let df = instructions::convert(ast)?;
    let froms: Vec<&Node> = ast.nodes.iter().filter(|n| n.name() == "from").collect();
    let last = df.stages.len().saturating_sub(1);
    Ok(df
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let name = s.name.clone().unwrap_or_default();
            Target {
                description: froms
                    .get(i)
                    .map(|n| description(&n.comments, &name))
                    .unwrap_or_default(),
                name,
                default: i == last,
                base: s.base.clone(),
                platform: s.platform.clone().unwrap_or_default(),
                span: s.span,
            }
        })
        .collect())
}

/// A build argument the target uses, with its value.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutlineArg {
    /// Its name.
    pub name: String,
    /// From the comment above its ARG (`# NAME description`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its value: the `--build-arg` given, else its default.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub value: String,
    /// Where it is declared.
    #[serde(skip)]
    pub line: usize,
}

/// A secret or ssh agent a RUN of the target mounts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OutlineMount {
    /// The id.
    pub name: String,
    /// `required=true`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
    /// Where the first RUN mounting it is.
    #[serde(skip)]
    pub line: usize,
}

/// What a target takes (`--call outline`).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct Outline {
    /// The target stage's name.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The target stage's description.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Build arguments, in source order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<OutlineArg>,
    /// Secrets, in source order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<OutlineMount>,
    /// SSH agents, in source order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ssh: Vec<OutlineMount>,
}

/// The build arguments, secrets and ssh agents the target (and the stages it
/// needs) uses, as BuildKit's outline finds them: a global ARG counts when a
/// needed FROM uses it, a needed stage re-declares it, or another counted
/// ARG's default refers to it.
pub fn outline(
    ast: &Ast,
    opts: &BuildOptions,
    resolver: &dyn ImageResolver,
) -> Result<Outline, Error> {
    let df = instructions::convert(ast)?;
    let graph = lower_unchecked(ast, opts, resolver, LintMode::default())?;
    let needed: BTreeSet<usize> = graph.stages.iter().map(|s| s.index).collect();
    let lexer = Lexer::new(ast.escape, LexerOptions::default());
    let comments: BTreeMap<usize, &[String]> = ast
        .nodes
        .iter()
        .map(|n| (n.span.start.line, n.comments.as_slice()))
        .collect();
    let comments_at = |line: usize| comments.get(&line).copied().unwrap_or(&[]);
    let refs = |word: &str, env: &Vec<(String, String)>| -> BTreeSet<String> {
        lexer
            .process(word, env)
            .map(|e| e.matched.into_iter().chain(e.unmatched).collect())
            .unwrap_or_default()
    };

    // Global ARGs: values in order, each definition's references.
    let mut genv: Vec<(String, String)> = Vec::new();
    let mut globals: BTreeMap<String, (OutlineArg, BTreeSet<String>)> = BTreeMap::new();
    for cmd in &df.meta_args {
        let Instruction::Arg(pairs) = &cmd.instruction else {
            continue;
        };
        for (k, default) in pairs {
            let deps = default
                .as_deref()
                .map(|d| refs(d, &genv))
                .unwrap_or_default();
            let value = match (opts.build_args.get(k), default) {
                (Some(v), _) => v.clone(),
                (None, Some(d)) => lexer.process_word(d, &genv).unwrap_or_default(),
                (None, None) => String::new(),
            };
            set(&mut genv, k, &value);
            let entry = globals.entry(k.clone()).or_insert_with(|| {
                (
                    OutlineArg {
                        name: k.clone(),
                        description: String::new(),
                        value: String::new(),
                        line: cmd.span.start.line,
                    },
                    BTreeSet::new(),
                )
            });
            entry.0.value = value;
            let d = description(comments_at(cmd.span.start.line), k);
            if !d.is_empty() {
                entry.0.description = d;
            }
            entry.1.extend(deps);
        }
    }

    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut args: Vec<OutlineArg> = Vec::new();
    let mut target_def = None;
    for (i, stage) in df.stages.iter().enumerate() {
        if !needed.contains(&i) {
            continue;
        }
        if i == graph.target_stage().index {
            target_def = Some(stage);
        }
        used.extend(refs(&stage.base, &genv));
        if let Some(p) = &stage.platform {
            used.extend(refs(p, &genv));
        }
        let mut env: Vec<(String, String)> = Vec::new();
        for cmd in &stage.commands {
            let Instruction::Arg(pairs) = &cmd.instruction else {
                continue;
            };
            for (k, default) in pairs {
                if globals.contains_key(k) && default.is_none() {
                    used.insert(k.clone());
                    if let Some((_, v)) = genv.iter().find(|(g, _)| g == k) {
                        set(&mut env, k, &v.clone());
                    }
                    continue;
                }
                let value = match (opts.build_args.get(k), default) {
                    (Some(v), _) => v.clone(),
                    (None, Some(d)) => lexer.process_word(d, &env).unwrap_or_default(),
                    (None, None) => String::new(),
                };
                set(&mut env, k, &value);
                if let Some(a) = args.iter_mut().find(|a| a.name == *k) {
                    a.value = value;
                    continue;
                }
                args.push(OutlineArg {
                    name: k.clone(),
                    description: description(comments_at(cmd.span.start.line), k),
                    value,
                    line: cmd.span.start.line,
                });
            }
        }
    }
    // A counted global's default may use others.
    let mut todo: Vec<String> = used.iter().cloned().collect();
    while let Some(k) = todo.pop() {
        if let Some((_, deps)) = globals.get(&k) {
            for d in deps {
                if used.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
    }
    for (k, (arg, _)) in &globals {
        if used.contains(k) && !args.iter().any(|a| a.name == *k) {
            args.push(arg.clone());
        }
    }
    args.sort_by_key(|a| a.line);

    let mut secrets: Vec<OutlineMount> = Vec::new();
    let mut ssh: Vec<OutlineMount> = Vec::new();
    for v in &graph.vertices {
        let Op::Exec(exec) = &v.op else { continue };
        let line = v.span.map_or(0, |s| s.start.line);
        for m in &exec.mounts {
            let (list, id, required) = match &m.kind {
                MountKind::Secret { id, required, .. } => (&mut secrets, id, *required),
                MountKind::Ssh { id, required, .. } => (&mut ssh, id, *required),
                _ => continue,
            };
            match list.iter_mut().find(|s| s.name == *id) {
                Some(s) => {
                    s.required |= required;
                    s.line = s.line.min(line);
                }
                None => list.push(OutlineMount {
                    name: id.clone(),
                    required,
                    line,
                }),
            }
        }
    }
    secrets.sort_by_key(|s| s.line);
    ssh.sort_by_key(|s| s.line);

    let (name, description) = match target_def {
        Some(def) => {
            let name = def.name.clone().unwrap_or_default();
            let d = description(comments_at(def.span.start.line), &name);
            (name, d)
        }
        None => Default::default(),
    };
    Ok(Outline {
        name,
        description,
        args,
        secrets,
        ssh,
    })
}

fn set(env: &mut Vec<(String, String)>, k: &str, v: &str) {
    match env.iter_mut().find(|(key, _)| key == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lower::NoResolver;
    use crate::parse;

    fn lint(src: &str, ignore: Option<&str>) -> Vec<(String, usize, String)> {
        let ast = parse(src).unwrap();
        check(&ast, &BuildOptions::default(), &NoResolver, ignore, true)
            .unwrap()
            .warnings
            .into_iter()
            .map(|w| (w.rule, w.span.unwrap().start.line, w.message))
            .collect()
    }

    #[test]
    fn urls_are_buildkits() {
        let url = |n| find_rule(n).unwrap().url();
        assert_eq!(
            url("JSONArgsRecommended"),
            "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
        );
        assert_eq!(
            url("FromPlatformFlagConstDisallowed"),
            "https://docs.docker.com/go/dockerfile/rule/from-platform-flag-const-disallowed/"
        );
        assert_eq!(
            url("SecretsUsedInArgOrEnv"),
            "https://docs.docker.com/go/dockerfile/rule/secrets-used-in-arg-or-env/"
        );
    }

    #[test]
    fn constant_platform_warns_unless_the_stage_is_named_for_it() {
        let w = lint("FROM --platform=linux/amd64 scratch\n", None);
        assert_eq!(
            w,
            vec![(
                "FromPlatformFlagConstDisallowed".into(),
                1,
                "FROM --platform flag should not use constant value \"linux/amd64\"".into()
            )]
        );
        assert!(lint(
            "FROM --platform=linux/amd64 scratch AS my_amd64_stage\n",
            None
        )
        .is_empty());
        assert!(lint("FROM --platform=linux/amd64 scratch AS linux\n", None).is_empty());
        assert!(lint("FROM --platform=$BUILDPLATFORM scratch\n", None).is_empty());
    }

    #[test]
    fn copy_of_an_ignored_file_warns_with_the_verb() {
        let w = lint(
            "FROM scratch\nCOPY Dockerfile .\nADD Dockerfile /windy\nCOPY --from=x /Dockerfile /\nCOPY . /src\n",
            Some("Dockerfile\n"),
        );
        let got: Vec<(usize, &str)> = w.iter().map(|w| (w.1, w.2.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (
                    2,
                    "Attempting to Copy file \"Dockerfile\" that is excluded by .dockerignore"
                ),
                (
                    3,
                    "Attempting to Add file \"Dockerfile\" that is excluded by .dockerignore"
                ),
            ]
        );
    }

    #[test]
    fn definition_descriptions_are_experimental_and_buildkits() {
        let bad = "# bar this is the bar\nARG foo=bar\n# BasE this is the BasE image\nFROM scratch AS base\n# definitely a bad comment\nARG version=latest\n# definitely a bad comment\nARG foo=baz bar=qux baz=quux\n";
        assert!(lint(bad, None).is_empty(), "experimental: off by default");
        let w = lint(
            &format!("# check=experimental=InvalidDefinitionDescription\n{bad}"),
            None,
        );
        let got: Vec<(usize, &str)> = w.iter().map(|w| (w.1, w.2.as_str())).collect();
        assert_eq!(
            got,
            vec![
                (
                    3,
                    "Comment for ARG should follow the format: `# foo <description>`"
                ),
                (
                    5,
                    "Comment for FROM should follow the format: `# base <description>`"
                ),
                (
                    7,
                    "Comment for ARG should follow the format: `# version <description>`"
                ),
                (
                    9,
                    "Comment for ARG should follow the format: `# <arg_key> <description>`"
                ),
            ]
        );
        let good = "# check=experimental=all\n# foo this is the foo\nARG foo=bar\n# base this is the base image\nFROM scratch AS base\n# baz this is the baz\nARG foo=baz bar=qux baz=quux\n#\nARG bit=bat\n# comment for something else\nCOPY a .\n";
        assert!(lint(good, None).is_empty());
    }

    #[test]
    fn the_build_argument_replaces_the_directive() {
        let src = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n";
        let ast = parse(src).unwrap();
        let mut opts = BuildOptions::default();
        opts.build_args.insert(
            CHECK_BUILD_ARG.into(),
            "skip=ConsistentInstructionCasing;error=true".into(),
        );
        let r = check(&ast, &opts, &NoResolver, None, true).unwrap();
        assert_eq!(r.warnings.len(), 1);
        assert_eq!(r.warnings[0].rule, "FromAsCasing");
        assert_eq!(
            r.violation().as_deref(),
            Some("lint violation found for rules: FromAsCasing")
        );
        assert!(lint(src, None).is_empty());
    }

    #[test]
    fn lint_without_target_sees_every_stage() {
        let src = "FROM scratch AS first\nCOPY $foo .\n\nFROM scratch AS second\nCOPY $bar .\n";
        let rules: Vec<usize> = lint(src, None).iter().map(|w| w.1).collect();
        assert_eq!(rules, vec![2, 5]);
        let ast = parse(src).unwrap();
        let r = check(&ast, &BuildOptions::default(), &NoResolver, None, false).unwrap();
        let lines: Vec<usize> = r
            .warnings
            .iter()
            .map(|w| w.span.unwrap().start.line)
            .collect();
        assert_eq!(lines, vec![5]);
    }

    #[test]
    fn a_build_reads_only_the_stages_it_builds() {
        let src =
            "FROM scratch AS a\n\nFROM a AS b\nENV testkey value\nLABEL key value\n\nFROM a AS c\n";
        let ast = parse(src).unwrap();
        let r = check(&ast, &BuildOptions::default(), &NoResolver, None, false).unwrap();
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
        let lines: Vec<usize> = lint(src, None).iter().map(|w| w.1).collect();
        assert_eq!(lines, vec![4, 5]);
    }

    #[test]
    fn outline_is_buildkits() {
        let src = "\nARG inherited=box\nARG inherited2=box2\nARG unused=abc${inherited2}\n# sfx is a suffix\nARG sfx=\"usy${inherited}\"\n\nFROM b${sfx} AS first\n# this is not assigned to anything\nARG FOO=123\n# BAR is a number\nARG BAR=456\nRUN true\n\nFROM alpine${unused} AS second\nARG BAZ\nRUN true\n\nFROM scratch AS third\nARG ABC=a\n\n# target defines build target\nFROM third AS target\nCOPY --from=first /etc/passwd /\n\nFROM second\n";
        let ast = parse(src).unwrap();
        let mut opts = BuildOptions {
            target: Some("target".into()),
            ..Default::default()
        };
        opts.build_args.insert("BAR".into(), "678".into());
        let o = outline(&ast, &opts, &NoResolver).unwrap();
        assert_eq!(o.name, "target");
        assert_eq!(o.description, "defines build target");
        let args: Vec<(&str, &str, &str, usize)> = o
            .args
            .iter()
            .map(|a| {
                (
                    a.name.as_str(),
                    a.value.as_str(),
                    a.description.as_str(),
                    a.line,
                )
            })
            .collect();
        assert_eq!(
            args,
            vec![
                ("inherited", "box", "", 2),
                ("sfx", "usybox", "is a suffix", 6),
                ("FOO", "123", "", 10),
                ("BAR", "678", "is a number", 12),
                ("ABC", "a", "", 20),
            ]
        );
    }

    #[test]
    fn outline_lists_secrets_and_ssh() {
        let src = "\nFROM busybox AS first\nRUN --mount=type=secret,target=/etc/passwd,required=true --mount=type=ssh true\n\nFROM alpine AS second\nRUN --mount=type=secret,id=unused --mount=type=ssh,id=ssh2 true\n\nFROM scratch AS third\nARG BAR\nRUN --mount=type=secret,id=second${BAR} true\n\nFROM third AS target\nCOPY --from=first /foo /\nRUN --mount=type=ssh,id=ssh3,required true\n\nFROM second\n";
        let ast = parse(src).unwrap();
        let mut opts = BuildOptions {
            target: Some("target".into()),
            ..Default::default()
        };
        opts.build_args.insert("BAR".into(), "678".into());
        let o = outline(&ast, &opts, &NoResolver).unwrap();
        let s: Vec<(&str, bool, usize)> = o
            .secrets
            .iter()
            .map(|s| (s.name.as_str(), s.required, s.line))
            .collect();
        assert_eq!(s, vec![("passwd", true, 3), ("second678", false, 10)]);
        let s: Vec<(&str, bool, usize)> = o
            .ssh
            .iter()
            .map(|s| (s.name.as_str(), s.required, s.line))
            .collect();
        assert_eq!(s, vec![("default", false, 3), ("ssh3", true, 14)]);
    }

    #[test]
    fn targets_are_buildkits() {
        let src = "\n# build defines stage for compiling the binary\nFROM alpine AS build\nRUN true\n\nFROM busybox as second\nRUN false\n\nFROM alpine\nRUN false\n\n# binary returns the compiled binary\nFROM second AS binary\n";
        let t = targets(&parse(src).unwrap()).unwrap();
        let got: Vec<(&str, &str, &str, bool, usize)> = t
            .iter()
            .map(|t| {
                (
                    t.name.as_str(),
                    t.base.as_str(),
                    t.description.as_str(),
                    t.default,
                    t.span.start.line,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "build",
                    "alpine",
                    "defines stage for compiling the binary",
                    false,
                    3
                ),
                ("second", "busybox", "", false, 6),
                ("", "alpine", "", false, 9),
                ("binary", "second", "returns the compiled binary", true, 13),
            ]
        );
    }
}
