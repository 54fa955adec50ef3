//! [`Ast`] → typed instructions grouped into stages, with BuildKit's checks:
//! unknown instructions and flags (with suggestions), argument counts, flag
//! value types, stage names.

use crate::error::{suggest, Error, ErrorKind};
use crate::parser::{chomp_heredoc_content, parse_heredoc, Ast, Heredoc, Node, Span};

type Result<T> = std::result::Result<T, Error>;

/// Every instruction keyword, upper case.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// A command line of RUN, CMD, ENTRYPOINT or HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLine {
    /// Exec-form arguments, or the shell-form line as one element.
    pub args: Vec<String>,
    /// Shell form: the stage's shell is put in front.
    pub prepend_shell: bool,
    /// Heredocs that belong to the line.
    pub heredocs: Vec<Heredoc>,
}

/// RUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The command.
    pub command: CommandLine,
    /// Raw `--mount` values, in order.
    pub mounts: Vec<String>,
    /// `--network`.
    pub network: Option<String>,
    /// `--security`.
    pub security: Option<String>,
}

/// A heredoc used as a COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineSource {
    /// File name (the heredoc delimiter).
    pub name: String,
    /// Content, with leading tabs removed for `<<-`.
    pub data: String,
    /// Whether variables in `data` are expanded.
    pub expand: bool,
}

/// COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    /// ADD rather than COPY.
    pub add: bool,
    /// Source paths (or URLs for ADD), unexpanded.
    pub sources: Vec<String>,
    /// Heredoc sources.
    pub inline: Vec<InlineSource>,
    /// Destination, unexpanded.
    pub dest: String,
    /// `--from` (COPY only).
    pub from: Option<String>,
    /// `--chown`.
    pub chown: Option<String>,
    /// `--chmod`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude`, in order.
    pub exclude: Vec<String>,
    /// `--checksum` (ADD only).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD only).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD only).
    pub unpack: Option<bool>,
}

/// HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `["NONE"]`, `["CMD", …]` or `["CMD-SHELL", line]`.
    pub test: Vec<String>,
    /// `--interval` in nanoseconds (0 = inherit the default).
    pub interval: u64,
    /// `--timeout` in nanoseconds.
    pub timeout: u64,
    /// `--start-period` in nanoseconds.
    pub start_period: u64,
    /// `--start-interval` in nanoseconds.
    pub start_interval: u64,
    /// `--retries`.
    pub retries: u32,
}

/// A typed instruction inside a stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// ADD / COPY.
    Copy(Copy),
    /// ARG: names with optional defaults.
    Arg(Vec<(String, Option<String>)>),
    /// CMD.
    Cmd(CommandLine),
    /// ENTRYPOINT.
    Entrypoint(CommandLine),
    /// ENV pairs.
    Env(Vec<(String, String)>),
    /// EXPOSE port specs, unexpanded.
    Expose(Vec<String>),
    /// HEALTHCHECK.
    Healthcheck(Health),
    /// LABEL pairs.
    Label(Vec<(String, String)>),
    /// MAINTAINER.
    Maintainer(String),
    /// ONBUILD: the trigger's source text.
    Onbuild(String),
    /// RUN.
    Run(Run),
    /// SHELL.
    Shell(Vec<String>),
    /// STOPSIGNAL.
    StopSignal(String),
    /// USER.
    User(String),
    /// VOLUME paths.
    Volume(Vec<String>),
    /// WORKDIR.
    Workdir(String),
}

/// An instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The instruction.
    pub instruction: Instruction,
    /// Its span in the Dockerfile.
    pub span: Span,
    /// The logical source line (for history and plans).
    pub original: String,
    /// The keyword as written.
    pub keyword: String,
    /// Byte range in the Dockerfile, `(0, 0)` for ONBUILD triggers of a base image.
    pub range: (usize, usize),
}

/// A stage: FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageDef {
    /// The base as written (`alpine:$V`, `builder`, `scratch`).
    pub base: String,
    /// The lower-cased name after `AS`.
    pub name: Option<String>,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// Span of the FROM line.
    pub span: Span,
    /// Instructions of the stage.
    pub commands: Vec<Command>,
}

/// A Dockerfile as stages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// ARGs before the first FROM.
    pub meta_args: Vec<Command>,
    /// The stages in order.
    pub stages: Vec<StageDef>,
    /// Style warnings found while converting (BuildKit's check names).
    pub warnings: Vec<crate::graph::Warning>,
}

#[derive(Clone, Copy, PartialEq)]
enum FlagKind {
    Bool,
    Str,
    List,
}

struct Flags {
    values: Vec<(String, Option<String>)>,
}

impl Flags {
    fn str(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.clone())
    }
    fn list(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(k, _)| k == name)
            .filter_map(|(_, v)| v.clone())
            .collect()
    }
    fn bool(&self, name: &str) -> bool {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref() == Some("true"))
            .unwrap_or(false)
    }
    fn has(&self, name: &str) -> bool {
        self.values.iter().any(|(k, _)| k == name)
    }
}

pub(crate) struct Ctx<'a> {
    pub(crate) ast: &'a Ast,
}

impl Ctx<'_> {
    fn err(&self, node: &Node, kind: ErrorKind, message: String) -> Error {
        Error::new(kind, message).at(node.span, self.ast.line_text(node.span.start.line))
    }

    fn err_at(&self, node: &Node, needle: &str, message: String) -> Error {
        let pos = self.ast.locate(node, needle);
        Error::new(ErrorKind::Instruction, message).at(
            Span {
                start: pos,
                end: node.span.end,
            },
            self.ast.line_text(pos.line),
        )
    }

    fn flags(&self, node: &Node, allowed: &[(&str, FlagKind)]) -> Result<Flags> {
        let mut values: Vec<(String, Option<String>)> = Vec::new();
        for raw in &node.flags {
            let body = raw.strip_prefix("--").unwrap_or(raw);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if name.is_empty() {
                return Err(self.err_at(node, raw, "empty flag name specified".to_string()));
            }
            let Some(&(_, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let names: Vec<&str> = allowed.iter().map(|(n, _)| *n).collect();
                let mut msg = format!(
                    "unknown flag `--{name}` for {}",
                    node.keyword.to_uppercase()
                );
                if let Some(s) = suggest(&name, &names) {
                    msg.push_str(&format!(" (did you mean --{s}?)"));
                }
                return Err(self.err_at(node, &format!("--{name}"), msg));
            };
            if kind != FlagKind::List && values.iter().any(|(k, _)| *k == name) {
                return Err(self.err_at(
                    node,
                    &format!("--{name}"),
                    format!("duplicate flag specified: --{name}"),
                ));
            }
            let value = match kind {
                FlagKind::Bool => match value.as_deref().map(str::to_ascii_lowercase) {
                    None => Some("true".to_string()),
                    Some(v) if v == "true" || v == "false" => Some(v),
                    Some(v) => {
                        return Err(self.err_at(
                            node,
                            raw,
                            format!("expecting boolean value for flag --{name}, not: {v}"),
                        ))
                    }
                },
                FlagKind::Str | FlagKind::List => match value {
                    Some(v) => Some(v),
                    None => {
                        return Err(self.err_at(
                            node,
                            raw,
                            format!("missing a value on flag --{name}"),
                        ))
                    }
                },
            };
            values.push((name, value));
        }
        Ok(Flags { values })
    }
}

fn cmdline(node: &Node) -> CommandLine {
    CommandLine {
        args: node.args.clone(),
        prepend_shell: !node.json,
        heredocs: node.heredocs.clone(),
    }
}

fn is_valid_stage_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'))
}

/// Parses a Go duration (`1m30s`, `500ms`, `2h`) into nanoseconds, with
/// the workspace's one duration parser.
pub fn parse_go_duration(s: &str) -> Result<u64> {
    crate::units::parse_duration(s)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .map_err(|e| Error::new(ErrorKind::Instruction, e.to_string()))
}

fn interval(ctx: &Ctx, node: &Node, flags: &Flags, name: &str) -> Result<u64> {
    let Some(v) = flags.str(name) else {
        return Ok(0);
    };
    if v.is_empty() {
        return Ok(0);
    }
    let d = parse_go_duration(&v)
        .map_err(|e| ctx.err_at(node, &format!("--{name}"), format!("{e} for --{name}")))?;
    if d != 0 && d < 1_000_000 {
        return Err(ctx.err_at(
            node,
            &format!("--{name}"),
            format!("interval --{name} cannot be less than 1ms"),
        ));
    }
    Ok(d)
}

/// Converts one node (not FROM) into a typed instruction.
pub(crate) fn convert_node(ctx: &Ctx, node: &Node) -> Result<Instruction> {
    use FlagKind::*;
    let kw = node.keyword.to_uppercase();
    let missing = |what: &str| ctx.err(node, ErrorKind::Instruction, format!("{kw} {what}"));
    let none: &[(&str, FlagKind)] = &[];
    let ins = match node.name().as_str() {
        "env" | "label" => {
            ctx.flags(node, none)?;
            if node.args.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            let mut pairs = Vec::new();
            for c in node.args.chunks(3) {
                if c[0].is_empty() {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        format!("{kw} names can not be blank"),
                    ));
                }
                pairs.push((c[0].clone(), c.get(1).cloned().unwrap_or_default()));
            }
            if kw == "ENV" {
                Instruction::Env(pairs)
            } else {
                Instruction::Label(pairs)
            }
        }
        "maintainer" => {
            ctx.flags(node, none)?;
            if node.args.len() != 1 {
                return Err(missing("requires exactly one argument"));
            }
            Instruction::Maintainer(node.args[0].clone())
        }
        "add" | "copy" => {
            let add = kw == "ADD";
            let flags = if add {
                ctx.flags(
                    node,
                    &[
                        ("chown", Str),
                        ("chmod", Str),
                        ("link", Bool),
                        ("keep-git-dir", Bool),
                        ("checksum", Str),
                        ("exclude", List),
                        ("unpack", Bool),
                    ],
                )?
            } else {
                ctx.flags(
                    node,
                    &[
                        ("chown", Str),
                        ("chmod", Str),
                        ("from", Str),
                        ("link", Bool),
                        ("parents", Bool),
                        ("exclude", List),
                    ],
                )?
            };
            if node.args.len() < 2 {
                return Err(missing(
                    "requires at least two arguments, but only one was provided. Destination could not be determined",
                ));
            }
            let dest = node.args[node.args.len() - 1].clone();
            if !node.json && matches!(parse_heredoc(&dest), Ok(Some(_))) {
                return Err(ctx.err(
                    node,
                    ErrorKind::Instruction,
                    format!("{kw} cannot accept a heredoc as a destination"),
                ));
            }
            let mut sources = Vec::new();
            let mut inline = Vec::new();
            for src in &node.args[..node.args.len() - 1] {
                match (node.json, parse_heredoc(src)) {
                    (false, Ok(Some(h))) => {
                        let doc = node.heredocs.iter().find(|d| d.name == h.name);
                        let mut data = doc.map(|d| d.content.clone()).unwrap_or_default();
                        if h.chomp {
                            data = chomp_heredoc_content(&data);
                        }
                        inline.push(InlineSource {
                            name: h.name,
                            data,
                            expand: h.expand,
                        });
                    }
                    _ => sources.push(src.clone()),
                }
            }
            Instruction::Copy(Copy {
                add,
                sources,
                inline,
                dest,
                from: flags.str("from"),
                chown: flags.str("chown"),
                chmod: flags.str("chmod"),
                link: flags.bool("link"),
                parents: flags.bool("parents"),
                exclude: flags.list("exclude"),
                checksum: flags.str("checksum"),
                keep_git_dir: flags.bool("keep-git-dir"),
                unpack: flags.has("unpack").then(|| flags.bool("unpack")),
            })
        }
        "onbuild" => {
            ctx.flags(node, none)?;
            let Some(sub) = &node.sub else {
                return Err(missing("requires at least one argument"));
            };
            let trigger = sub.keyword.to_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                    ))
                }
                "MAINTAINER" | "FROM" => {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    ))
                }
                _ => {}
            }
            // Validate the trigger now so errors point at this line.
            convert_node(ctx, sub)?;
            let trimmed = node.original.trim_start();
            let mut expr = trimmed[node.keyword.len().min(trimmed.len())..]
                .trim_start()
                .to_string();
            for h in &node.heredocs {
                expr.push('\n');
                expr.push_str(&h.content);
                expr.push_str(&h.name);
            }
            Instruction::Onbuild(expr)
        }
        "workdir" => {
            ctx.flags(node, none)?;
            if node.args.len() != 1 {
                return Err(missing("requires exactly one argument"));
            }
            Instruction::Workdir(node.args[0].clone())
        }
        "run" => {
            let flags = ctx.flags(
                node,
                &[("mount", List), ("network", Str), ("security", Str)],
            )?;
            if node.args.is_empty() && node.heredocs.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            Instruction::Run(Run {
                command: cmdline(node),
                mounts: flags.list("mount"),
                network: flags.str("network"),
                security: flags.str("security"),
            })
        }
        "cmd" => {
            ctx.flags(node, none)?;
            Instruction::Cmd(cmdline(node))
        }
        "entrypoint" => {
            ctx.flags(node, none)?;
            Instruction::Entrypoint(cmdline(node))
        }
        "healthcheck" => {
            if node.args.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            let typ = node.args[0].to_uppercase();
            let rest = &node.args[1..];
            if typ == "NONE" {
                ctx.flags(node, none)?;
                if !rest.is_empty() {
                    return Err(missing("NONE takes no arguments"));
                }
                Instruction::Healthcheck(Health {
                    test: vec!["NONE".into()],
                    interval: 0,
                    timeout: 0,
                    start_period: 0,
                    start_interval: 0,
                    retries: 0,
                })
            } else {
                let flags = ctx.flags(
                    node,
                    &[
                        ("interval", Str),
                        ("timeout", Str),
                        ("start-period", Str),
                        ("start-interval", Str),
                        ("retries", Str),
                    ],
                )?;
                if typ != "CMD" {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        format!("unknown type {typ:?} in HEALTHCHECK (try CMD)"),
                    ));
                }
                if rest.is_empty() {
                    return Err(missing("CMD is missing its command"));
                }
                let mut test = vec![if node.json { "CMD" } else { "CMD-SHELL" }.to_string()];
                test.extend(rest.iter().cloned());
                let retries = match flags.str("retries") {
                    Some(v) if !v.is_empty() => {
                        let n: i64 = v.parse().map_err(|_| {
                            ctx.err_at(node, "--retries", format!("invalid --retries value {v:?}"))
                        })?;
                        if n < 0 {
                            return Err(ctx.err_at(
                                node,
                                "--retries",
                                format!("--retries cannot be negative ({n})"),
                            ));
                        }
                        n as u32
                    }
                    _ => 0,
                };
                Instruction::Healthcheck(Health {
                    test,
                    interval: interval(ctx, node, &flags, "interval")?,
                    timeout: interval(ctx, node, &flags, "timeout")?,
                    start_period: interval(ctx, node, &flags, "start-period")?,
                    start_interval: interval(ctx, node, &flags, "start-interval")?,
                    retries,
                })
            }
        }
        "expose" => {
            ctx.flags(node, none)?;
            if node.args.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            Instruction::Expose(node.args.clone())
        }
        "user" => {
            ctx.flags(node, none)?;
            if node.args.len() != 1 {
                return Err(missing("requires exactly one argument"));
            }
            Instruction::User(node.args[0].clone())
        }
        "volume" => {
            ctx.flags(node, none)?;
            if node.args.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            Instruction::Volume(node.args.clone())
        }
        "stopsignal" => {
            ctx.flags(node, none)?;
            if node.args.len() != 1 {
                return Err(missing("requires exactly one argument"));
            }
            Instruction::StopSignal(node.args[0].clone())
        }
        "arg" => {
            ctx.flags(node, none)?;
            if node.args.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            let mut out = Vec::new();
            for w in &node.args {
                let (k, v) = match w.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (w.clone(), None),
                };
                if k.is_empty() {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        "ARG names can not be blank".into(),
                    ));
                }
                out.push((k, v));
            }
            Instruction::Arg(out)
        }
        "shell" => {
            ctx.flags(node, none)?;
            if !node.json {
                return Err(missing("requires the arguments to be in JSON form"));
            }
            if node.args.is_empty() {
                return Err(missing("requires at least one argument"));
            }
            Instruction::Shell(node.args.clone())
        }
        "from" => {
            return Err(ctx.err(
                node,
                ErrorKind::Instruction,
                "FROM is only valid at the start of a stage".into(),
            ))
        }
        _ => {
            let mut msg = format!("unknown instruction {:?}", node.keyword);
            if let Some(s) = suggest(&node.keyword, INSTRUCTIONS) {
                msg.push_str(&format!(" (did you mean {s}?)"));
            }
            return Err(ctx.err(node, ErrorKind::Instruction, msg));
        }
    };
    Ok(ins)
}

/// Groups the AST into stages and checks every instruction.
pub fn convert(ast: &Ast) -> Result<Dockerfile> {
    let ctx = Ctx { ast };
    let mut meta_args = Vec::new();
    let mut stages: Vec<StageDef> = Vec::new();
    let mut warnings = Vec::new();
    let mut warn = |rule: &str, node: &Node, message: String| {
        warnings.push(crate::graph::Warning {
            rule: rule.into(),
            message,
            span: Some(node.span),
        })
    };
    for node in &ast.nodes {
        let name = node.name();
        match name.as_str() {
            "maintainer" => warn(
                "MaintainerDeprecated",
                node,
                "Maintainer instruction is deprecated in favor of using label".into(),
            ),
            "env" | "label" if node.args.len() == 3 && node.args[2].is_empty() => {
                let kw = node.keyword.to_uppercase();
                warn(
                    "LegacyKeyValueFormat",
                    node,
                    format!("\"{kw} key=value\" should be used instead of legacy \"{kw} key value\" format"),
                )
            }
            _ => {}
        }
        if name == "from" {
            let flags = ctx.flags(node, &[("platform", FlagKind::Str)])?;
            let args = &node.args;
            let stage_name = match args.len() {
                1 => None,
                3 if args[1].eq_ignore_ascii_case("as") => {
                    let n = args[2].to_lowercase();
                    if !is_valid_stage_name(&n) {
                        return Err(ctx.err_at(
                            node,
                            &args[2],
                            format!("invalid name for build stage: {:?}, name can't start with a number or contain symbols", args[2]),
                        ));
                    }
                    if args[2] != n {
                        warn(
                            "StageNameCasing",
                            node,
                            format!("Stage name '{}' should be lowercase", args[2]),
                        );
                    }
                    let from_upper = node.keyword == node.keyword.to_uppercase();
                    let as_upper = args[1] == args[1].to_uppercase();
                    let consistent = |w: &str| w == w.to_uppercase() || w == w.to_lowercase();
                    if consistent(&node.keyword) && consistent(&args[1]) && from_upper != as_upper {
                        warn(
                            "FromAsCasing",
                            node,
                            format!(
                                "'{}' and '{}' keywords' casing do not match",
                                args[1], node.keyword
                            ),
                        );
                    }
                    if n == "context" || n == "scratch" {
                        warn(
                            "ReservedStageName",
                            node,
                            format!(
                                "Stage name should not use the same name as reserved stage {n:?}"
                            ),
                        );
                    }
                    if stages.iter().any(|s| s.name.as_deref() == Some(n.as_str())) {
                        warn(
                            "DuplicateStageName",
                            node,
                            format!("Duplicate stage name {n:?}, stage names should be unique"),
                        );
                    }
                    Some(n)
                }
                0 => {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        "FROM requires either one or three arguments: missing the base image"
                            .into(),
                    ))
                }
                _ => {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        "FROM requires either one or three arguments".into(),
                    ))
                }
            };
            stages.push(StageDef {
                base: args[0].clone(),
                name: stage_name,
                platform: flags.str("platform"),
                span: node.span,
                commands: Vec::new(),
            });
            continue;
        }
        let instruction = convert_node(&ctx, node)?;
        let command = Command {
            instruction,
            span: node.span,
            original: node.original.trim().to_string(),
            keyword: node.keyword.clone(),
            range: node.range,
        };
        match stages.last_mut() {
            Some(stage) => stage.commands.push(command),
            None => {
                if matches!(command.instruction, Instruction::Arg(_)) {
                    meta_args.push(command);
                } else {
                    return Err(ctx.err(
                        node,
                        ErrorKind::Instruction,
                        format!(
                            "no build stage in current context: {} must come after FROM",
                            node.keyword.to_uppercase()
                        ),
                    ));
                }
            }
        }
    }
    if stages.is_empty() {
        return Err(Error::new(
            ErrorKind::Stage,
            "dockerfile contains no stages to build",
        ));
    }
    // Keywords should all be upper case or all lower case, like the majority.
    let consistent = |k: &str| k == k.to_uppercase() || k == k.to_lowercase();
    let (mut lower, mut upper) = (0, 0);
    for n in &ast.nodes {
        if consistent(&n.keyword) {
            if n.keyword == n.keyword.to_lowercase() {
                lower += 1;
            } else {
                upper += 1;
            }
        }
    }
    let majority_lower = lower > upper;
    for n in &ast.nodes {
        let wanted = if majority_lower {
            (n.keyword != n.keyword.to_lowercase()).then_some("lowercase")
        } else {
            (n.keyword != n.keyword.to_uppercase()).then_some("uppercase")
        };
        if let Some(case) = wanted {
            warnings.push(crate::graph::Warning {
                rule: "ConsistentInstructionCasing".into(),
                message: format!(
                    "Command '{}' should match the case of the command majority ({case})",
                    n.keyword
                ),
                span: Some(n.span),
            });
        }
    }
    Ok(Dockerfile {
        meta_args,
        stages,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    fn conv(src: &str) -> Result<Dockerfile> {
        convert(&parse(src).map_err(Error::from)?)
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_go_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_go_duration("1.5s").unwrap(), 1_500_000_000);
        assert_eq!(parse_go_duration("+2s").unwrap(), 2_000_000_000);
        assert!(parse_go_duration("5").is_err());
        let e = conv("FROM a\nHEALTHCHECK --interval=99999999999999h CMD true\n").unwrap_err();
        assert!(
            e.message
                .contains("invalid duration `99999999999999h`: too large (the most is 2562047h) for --interval"),
            "{}",
            e.message
        );
    }

    #[test]
    fn flags_and_args() {
        let d =
            conv("FROM a\nCOPY --from=b --chown=1:2 --link --exclude=x --exclude=y s1 s2 /d/\n")
                .unwrap();
        let Instruction::Copy(c) = &d.stages[0].commands[0].instruction else {
            panic!()
        };
        assert_eq!(c.from.as_deref(), Some("b"));
        assert_eq!(c.sources, vec!["s1", "s2"]);
        assert_eq!(c.exclude, vec!["x", "y"]);
        assert!(c.link);
        let e = conv("FROM a\nCOPY --form=b x y\n").unwrap_err();
        assert_eq!(
            e.message,
            "unknown flag `--form` for COPY (did you mean --from?)"
        );
        assert_eq!(e.span.unwrap().start.column, 6);
        let e = conv("FROM a\nCOPY --link=maybe x y\n").unwrap_err();
        assert!(e.message.contains("expecting boolean"), "{}", e.message);
        let e = conv("FROM a\nCOPY --chown x y\n").unwrap_err();
        assert!(e.message.contains("missing a value"), "{}", e.message);
    }

    #[test]
    fn heredoc_copy_sources() {
        let d = conv("FROM a\nCOPY <<-EOF /dst\n\thello $X\n\tEOF\n").unwrap();
        let Instruction::Copy(c) = &d.stages[0].commands[0].instruction else {
            panic!()
        };
        assert!(c.sources.is_empty());
        assert_eq!(c.inline[0].data, "hello $X\n");
        assert!(c.inline[0].expand);
    }

    #[test]
    fn onbuild_expression() {
        let d = conv("FROM a\nONBUILD RUN echo hi\n").unwrap();
        assert_eq!(
            d.stages[0].commands[0].instruction,
            Instruction::Onbuild("RUN echo hi".into())
        );
        assert!(conv("FROM a\nONBUILD ONBUILD RUN x\n").is_err());
        assert!(conv("FROM a\nONBUILD FROM x\n").is_err());
    }
}
