//! `hoist build --check` and `--call check|outline|targets[,format=json]`:
//! BuildKit's build checks and subrequests, printed as buildx prints them;
//! and the check warnings a normal build prints after its summary.
//!
//! The rules, the outline and the targets are the frontend's
//! ([`hoist_frontend::checks`]); this module only renders them. Nothing runs
//! and nothing is pulled: base images come from the store when it has them
//! (their ENV then counts for `UndefinedVar`).

use std::io::{self, Write};
use std::sync::Arc;

use anyhow::{bail, Context as _};
use base64::Engine as _;
use hoist_builder::engine::build::BuildRequest;
use hoist_builder::engine::dryrun::Lenient;
use hoist_cache::Store;
use hoist_frontend::checks::{self, Report};
use hoist_frontend::graph::Warning;
use serde_json::{json, Value};

use super::ExitWith;
use hoist_cache::text::escape;

/// What `--call` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Method {
    Build,
    Check,
    Outline,
    Targets,
}

/// `--call NAME[,format=json|text]` (buildx's syntax).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Call {
    pub method: Method,
    pub json: bool,
}

impl Call {
    /// `--check` (which wins, keeping a `format=`) and `--call`.
    pub fn from_flags(check: bool, call: Option<&str>) -> anyhow::Result<Call> {
        let mut parsed = Call::parse(call.unwrap_or("build"))?;
        if check {
            parsed.method = Method::Check;
        }
        Ok(parsed)
    }

    pub fn parse(text: &str) -> anyhow::Result<Call> {
        let mut parts = text.split(',').map(str::trim);
        let method = match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
            "build" => Method::Build,
            "check" | "lint" => Method::Check,
            "outline" => Method::Outline,
            "targets" => Method::Targets,
            other => bail!(
                "invalid --call `{}`: expected build, check, outline or targets",
                escape(other)
            ),
        };
        let mut json = false;
        for part in parts.filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("format", "json")) => json = true,
                Some(("format", "text")) => json = false,
                _ => bail!(
                    "invalid --call option `{}`: the one option is format=json|text",
                    escape(part)
                ),
            }
        }
        Ok(Call { method, json })
    }
}

fn parse_ast(request: &BuildRequest) -> anyhow::Result<hoist_frontend::Ast> {
    hoist_frontend::parse(&request.dockerfile)
        .map_err(|e| anyhow::anyhow!("{}", e.render(&request.dockerfile_name)))
}

fn frontend_error(request: &BuildRequest, e: hoist_frontend::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.render(&request.dockerfile_name))
}

/// The check warnings of `request`: every stage (`--check` without
/// `--target`) or the stages the target needs (a build).
pub(super) fn report(
    store: &Arc<Store>,
    request: &BuildRequest,
    all_stages: bool,
) -> anyhow::Result<Report> {
    let ast = parse_ast(request)?;
    // Named contexts replace stages and images for the checks as for a build.
    let options = hoist_builder::engine::build::frontend_options(request);
    checks::check(
        &ast,
        &options,
        &Lenient::new(store.clone()),
        request.dockerignore.as_deref(),
        all_stages,
    )
    .map_err(|e| frontend_error(request, e))
}

/// `check=error=true` fails a build before anything runs, as buildx: the
/// warnings, then `lint violation found for rules: …`. A Dockerfile error is
/// left for the build to report.
pub(super) fn refuse_violation(store: &Arc<Store>, request: &BuildRequest) -> anyhow::Result<()> {
    if let Ok(report) = report(store, request, false) {
        if let Some(violation) = report.violation() {
            print_build_warnings(&mut io::stderr().lock(), request, &report.warnings)?;
            bail!("{violation}");
        }
    }
    Ok(())
}

/// The warnings after a build's summary, the base images now in the store.
pub(super) fn print_after_build(store: &Arc<Store>, request: &BuildRequest) -> io::Result<()> {
    match report(store, request, false) {
        Ok(report) => print_build_warnings(&mut io::stderr().lock(), request, &report.warnings),
        Err(_) => Ok(()),
    }
}

/// Runs a `--call` other than `build`, printing on stdout as buildx does.
pub(super) fn run(store: Arc<Store>, request: &BuildRequest, call: Call) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match call.method {
        Method::Build => unreachable!("a build is not a call"),
        Method::Check => {
            let report = report(&store, request, request.options.target.is_none())?;
            if call.json {
                let value = lint_json(request, &report);
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                print_check(&mut out, request, &report)?;
            }
            out.flush()?;
            if let Some(e) = &report.error {
                if !call.json && !report.warnings.is_empty() {
                    writeln!(out)?;
                }
                out.flush()?;
                bail!("{}", e.render(&request.dockerfile_name));
            }
            if let Some(message) = report.violation() {
                bail!("{message}");
            }
            if !report.warnings.is_empty() {
                // buildx: the result's status code, 1 when anything was found.
                return Err(ExitWith {
                    code: 1,
                    error: None,
                }
                .into());
            }
        }
        Method::Outline => {
            let ast = parse_ast(request)?;
            let options = hoist_builder::engine::build::frontend_options(request);
            let outline = checks::outline(&ast, &options, &Lenient::new(store.clone()))
                .map_err(|e| frontend_error(request, e))?;
            if call.json {
                let mut value = serde_json::to_value(&outline)?;
                for key in ["args", "secrets", "ssh"] {
                    locate(&mut value, key, |i| match key {
                        "args" => outline.args[i].line,
                        "secrets" => outline.secrets[i].line,
                        _ => outline.ssh[i].line,
                    });
                }
                value["sources"] = json!([base64(&request.dockerfile)]);
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                print_outline(&mut out, &outline)?;
            }
        }
        Method::Targets => {
            let ast = parse_ast(request)?;
            let targets = checks::targets(&ast).map_err(|e| frontend_error(request, e))?;
            if call.json {
                let mut list = serde_json::to_value(&targets)?;
                if let Value::Array(items) = &mut list {
                    for (t, item) in targets.iter().zip(items.iter_mut()) {
                        item["location"] = location(t.span.start.line, t.span.end.line);
                    }
                }
                let value = json!({
                    "targets": list,
                    "sources": [base64(&request.dockerfile)],
                });
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                let mut rows = vec![["TARGET".to_string(), "DESCRIPTION".to_string()]];
                rows.extend(targets.iter().map(|t| {
                    let name = match (t.name.is_empty(), t.default) {
                        (true, true) => "(default)".to_string(),
                        (false, true) => format!("{} (default)", t.name),
                        _ => t.name.clone(),
                    };
                    [name, t.description.clone()]
                }));
                write_table(&mut out, &rows)?;
            }
        }
    }
    out.flush().context("failed to write the result")?;
    Ok(())
}

fn base64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// A `pb.Location` as BuildKit's JSON has it (source index 0 left out).
fn location(start: usize, end: usize) -> Value {
    json!({"ranges": [{"start": {"line": start}, "end": {"line": end.max(start)}}]})
}

fn locate(value: &mut Value, key: &str, line: impl Fn(usize) -> usize) {
    if let Some(Value::Array(items)) = value.get_mut(key) {
        for (i, item) in items.iter_mut().enumerate() {
            item["location"] = location(line(i), line(i));
        }
    }
}

/// BuildKit's `LintResults` JSON.
fn lint_json(request: &BuildRequest, report: &Report) -> Value {
    let warnings: Vec<Value> = report
        .warnings
        .iter()
        .map(|w| {
            let rule = checks::find_rule(&w.rule);
            let mut v = json!({
                "ruleName": w.rule,
                "description": rule.map(|r| r.description).unwrap_or_default(),
                "url": rule.map(|r| r.url()).unwrap_or_default(),
                "detail": w.message,
            });
            if let Some(s) = w.span {
                v["location"] = location(s.start.line, s.end.line);
            }
            v
        })
        .collect();
    let mut value = json!({
        "warnings": warnings,
        "sources": [{
            "filename": request.dockerfile_name,
            "language": "Dockerfile",
            "data": base64(&request.dockerfile),
        }],
    });
    if let (Some(message), Some(first)) = (report.violation(), report.warnings.first()) {
        let line = first.span.map_or(0, |s| s.start.line);
        value["buildError"] = json!({"message": message, "location": location(line, line)});
    }
    value
}

/// `Check complete, …` and one `WARNING:` block per warning (buildx's
/// `--check` text).
fn print_check(out: &mut dyn Write, request: &BuildRequest, report: &Report) -> io::Result<()> {
    match report.warnings.len() {
        0 => return writeln!(out, "Check complete, no warnings found."),
        1 => writeln!(out, "Check complete, 1 warning has been found!")?,
        n => writeln!(out, "Check complete, {n} warnings have been found!")?,
    }
    for w in &report.warnings {
        // Messages quote the Dockerfile: no control character reaches the terminal.
        write!(out, "\nWARNING: {}", escape(&w.rule))?;
        if let Some(rule) = checks::find_rule(&w.rule) {
            write!(out, " - {}", rule.url())?;
        }
        writeln!(out, "\n{}", escape(&w.message))?;
        print_source(out, &request.dockerfile_name, &request.dockerfile, w)?;
    }
    if report.violation().is_some() && report.error.is_none() {
        writeln!(out)?;
    }
    Ok(())
}

/// The lines around a warning, as BuildKit's `errdefs.Source.Print`: the
/// file and first line, then the lines with `>>>` on the warning's own.
fn print_source(out: &mut dyn Write, file: &str, source: &str, w: &Warning) -> io::Result<()> {
    let Some(span) = w.span else { return Ok(()) };
    let lines: Vec<&str> = source.split('\n').collect();
    let (first, last) = (span.start.line, span.end.line.max(span.start.line));
    if first < 1 || first > lines.len() {
        return Ok(());
    }
    let (mut start, mut end) = (first, last.min(lines.len()));
    let pad = if end == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if start > 1 {
            start -= 1;
            p += 1;
        }
        if end != lines.len() {
            end += 1;
            p += 1;
        }
        p += 1;
    }
    writeln!(out, "{file}:{first}\n--------------------")?;
    for i in start..=end {
        let mark = if (first..=last).contains(&i) {
            ">>>"
        } else {
            "   "
        };
        writeln!(
            out,
            " {i:>3} | {mark} {}",
            hoist_cache::text::escape_except(lines[i - 1].trim_end_matches('\r'), &['\t'])
        )?;
    }
    writeln!(out, "--------------------")
}

/// Go's `text/tabwriter` with one space of padding, as buildx prints
/// targets (the three-space tables are [`crate::util::print_table`]).
fn write_table(out: &mut dyn Write, rows: &[[String; 2]]) -> io::Result<()> {
    let rows: Vec<[String; 2]> = rows
        .iter()
        .map(|r| r.clone().map(|c| escape(&c).into_owned()))
        .collect();
    let width = rows.iter().map(|r| r[0].chars().count()).max().unwrap_or(0) + 1;
    for [first, second] in rows {
        writeln!(out, "{first:<width$}{second}")?;
    }
    Ok(())
}

/// buildx's `PrintOutline`.
fn print_outline(out: &mut dyn Write, o: &checks::Outline) -> io::Result<()> {
    if !o.name.is_empty() || !o.description.is_empty() {
        let name = if o.name.is_empty() {
            "(default)"
        } else {
            &o.name
        };
        let mut rows = vec![["TARGET:".to_string(), name.to_string()]];
        if !o.description.is_empty() {
            rows.push(["DESCRIPTION:".into(), o.description.clone()]);
        }
        write_table(out, &rows)?;
        writeln!(out)?;
    }
    if !o.args.is_empty() {
        let rows: Vec<Vec<String>> = o
            .args
            .iter()
            .map(|a| vec![a.name.clone(), a.value.clone(), a.description.clone()])
            .collect();
        crate::util::print_table(
            &mut &mut *out,
            &["BUILD ARG", "VALUE", "DESCRIPTION"],
            &rows,
        )?;
        writeln!(out)?;
    }
    for (title, list) in [("SECRET", &o.secrets), ("SSH", &o.ssh)] {
        if list.is_empty() {
            continue;
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                let required = if s.required { "true" } else { "" };
                vec![s.name.clone(), required.to_string()]
            })
            .collect();
        crate::util::print_table(&mut &mut *out, &[title, "REQUIRED"], &rows)?;
        writeln!(out)?;
    }
    Ok(())
}

/// The warnings block a build prints after its summary (buildx's
/// `printWarnings`): one line per warning, expanded with the description,
/// the rule's page and the source lines under `--log-level debug`.
pub(super) fn print_build_warnings(
    err: &mut dyn Write,
    request: &BuildRequest,
    warnings: &[Warning],
) -> io::Result<()> {
    if warnings.is_empty() {
        return Ok(());
    }
    let expand = tracing::enabled!(tracing::Level::DEBUG);
    let mut head = match warnings.len() {
        1 => "1 warning found".to_string(),
        n => format!("{n} warnings found"),
    };
    if !expand {
        head.push_str(" (use --log-level debug to expand)");
    }
    head.push(':');
    writeln!(err, "\n {}", console::style(head).yellow())?;
    for w in warnings {
        let line = w.span.map(|s| s.start.line).unwrap_or(0);
        let mut short = format!("{}: {}", escape(&w.rule), escape(&w.message));
        if line > 0 {
            short.push_str(&format!(" ({}:{line})", request.dockerfile_name));
        }
        writeln!(err, " - {short}")?;
        if !expand {
            continue;
        }
        if let Some(rule) = checks::find_rule(&w.rule) {
            writeln!(err, "{}\nMore info: {}", rule.description, rule.url())?;
        }
        print_source(err, &request.dockerfile_name, &request.dockerfile, w)?;
        writeln!(err)?;
    }
    Ok(())
}
