//! Dockerfile text → [`Ast`]: parser directives, line continuations, comments,
//! heredocs and the per-instruction argument forms, with spans.
//!
//! This layer is deliberately as loose as BuildKit's own parser
//! (`frontend/dockerfile/parser`): it accepts unknown instructions and unknown
//! flags and only rejects what BuildKit's parser rejects. The typed layer
//! ([`crate::instructions`]) does the strict checks, so that `dump_ast` prints
//! exactly what BuildKit's dumper prints.

use std::fmt;

use crate::json;
use crate::shell::{Lexer, LexerOptions};

/// A position in the source: 1-based line and 1-based column (in characters).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Pos {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub column: usize,
}

/// A source range; `end` is inclusive of the last line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Span {
    /// First character of the range.
    pub start: Pos,
    /// Position just after the last character of the range.
    pub end: Pos,
}

/// A parser directive found at the top of the file (`# syntax=…`, `# escape=…`, `# check=…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// Lower-cased directive name.
    pub name: String,
    /// The value, trimmed.
    pub value: String,
    /// 1-based line of the directive.
    pub line: usize,
}

/// A heredoc attached to a RUN, COPY or ADD instruction.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Heredoc {
    /// The delimiter word, with quotes removed (`EOF`).
    pub name: String,
    /// The file descriptor written before `<<` (`3<<EOF`), 0 when absent.
    pub file_descriptor: u32,
    /// Whether variables in the content are expanded (the delimiter was not quoted).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from the content.
    pub chomp: bool,
    /// The body, every line with its line ending, without the terminator line.
    pub content: String,
}

/// One instruction as BuildKit's parser sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The keyword as written (`RUN`, `run`, …).
    pub keyword: String,
    /// Raw `--flag[=value]` strings in order.
    pub flags: Vec<String>,
    /// Arguments after the line parser for this instruction ran (see the crate docs).
    pub args: Vec<String>,
    /// ONBUILD's wrapped instruction.
    pub sub: Option<Box<Node>>,
    /// The arguments were an exec-form JSON array.
    pub json: bool,
    /// Heredocs that follow the instruction, in order.
    pub heredocs: Vec<Heredoc>,
    /// The logical line (continuations joined, comments dropped).
    pub original: String,
    /// Where the instruction is, heredoc bodies included.
    pub span: Span,
    /// Byte range of the instruction in the source, heredoc bodies included.
    pub range: (usize, usize),
    /// Comments directly above the instruction.
    pub comments: Vec<String>,
}

impl Node {
    /// The keyword in lower case.
    pub fn name(&self) -> String {
        self.keyword.to_ascii_lowercase()
    }
}

/// A warning noticed while parsing (BuildKit reports the same ones).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ParseWarning {
    /// What is wrong.
    pub message: String,
    /// Where.
    pub span: Span,
}

/// A parsed Dockerfile.
#[derive(Debug, Clone)]
pub struct Ast {
    /// Parser directives from the top of the file.
    pub directives: Vec<Directive>,
    /// The escape character (`\` or `` ` ``).
    pub escape: char,
    /// Instructions in order.
    pub nodes: Vec<Node>,
    /// Warnings such as empty continuation lines.
    pub warnings: Vec<ParseWarning>,
    /// First and last line holding an instruction.
    pub lines: (usize, usize),
    pub(crate) source: String,
    line_starts: Vec<usize>,
}

impl Ast {
    /// The source text the AST was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The value of a parser directive, if present.
    pub fn directive(&self, name: &str) -> Option<&str> {
        self.directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.as_str())
    }

    /// The text of a 1-based source line, without its line ending.
    pub fn line_text(&self, line: usize) -> &str {
        line_text(&self.source, &self.line_starts, line)
    }

    /// Position of a byte offset.
    pub fn pos_of(&self, offset: usize) -> Pos {
        pos_of(&self.source, &self.line_starts, offset)
    }

    /// Where `needle` first occurs inside `node` (for errors pointing at a flag
    /// or argument); the node's start when it does not occur verbatim.
    pub fn locate(&self, node: &Node, needle: &str) -> Pos {
        let (start, end) = node.range;
        let hay = &self.source[start..end];
        match hay.find(needle) {
            Some(i) if !needle.is_empty() => self.pos_of(start + i),
            _ => node.span.start,
        }
    }
}

/// A parse error with its location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ParseError {
    /// What is wrong, e.g. `unterminated heredoc`.
    pub message: String,
    /// Where it is.
    pub span: Span,
    /// The text of the first line of the span.
    pub line_text: String,
}

impl ParseError {
    /// Renders `FILE:LINE:COL: message`, the line and a caret.
    pub fn render(&self, file: &str) -> String {
        crate::error::render_located(file, self.span.start, &self.message, &self.line_text)
    }
}

fn line_text<'a>(source: &'a str, starts: &[usize], line: usize) -> &'a str {
    if line == 0 || line > starts.len() {
        return "";
    }
    let s = starts[line - 1];
    let e = starts.get(line).copied().unwrap_or(source.len());
    source[s..e].trim_end_matches(['\r', '\n'])
}

fn pos_of(source: &str, starts: &[usize], offset: usize) -> Pos {
    let idx = match starts.binary_search(&offset) {
        Ok(i) => i,
        Err(i) => i.saturating_sub(1),
    };
    let ls = starts.get(idx).copied().unwrap_or(0);
    let off = offset.min(source.len());
    let column = source.get(ls..off).map(|s| s.chars().count()).unwrap_or(0) + 1;
    Pos {
        line: idx + 1,
        column,
    }
}

/// BuildKit's instructions that may carry heredocs.
fn heredoc_capable(name: &str) -> bool {
    matches!(name, "run" | "copy" | "add")
}

struct DirectiveState {
    done: bool,
    seen: Vec<String>,
    escape: char,
}

fn is_go_space(c: char) -> bool {
    c.is_whitespace()
}

/// `[\t\v\f\r ]`, the whitespace class of BuildKit's splitting regex.
fn is_token_ws(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

fn trim_newline(s: &str) -> &str {
    s.trim_end_matches(['\r', '\n'])
}

fn is_comment(line: &str) -> bool {
    trim_newline(line)
        .trim_start_matches(is_go_space)
        .starts_with('#')
}

impl DirectiveState {
    /// Recognises `#name=value` lines while directives may still appear.
    fn check(&mut self, line: &str, line_no: usize) -> Result<Option<Directive>, String> {
        if self.done {
            return Ok(None);
        }
        let Some(rest) = line.strip_prefix('#') else {
            self.done = true;
            return Ok(None);
        };
        let rest = rest.trim_start_matches(is_go_space);
        let Some((name, value)) = split_directive(rest) else {
            self.done = true;
            return Ok(None);
        };
        let name = name.to_ascii_lowercase();
        if !matches!(name.as_str(), "syntax" | "escape" | "check") {
            self.done = true;
            return Ok(None);
        }
        if self.seen.contains(&name) {
            return Err(format!("only one {name} parser directive can be used"));
        }
        self.seen.push(name.clone());
        if name == "escape" {
            match value {
                "\\" => self.escape = '\\',
                "`" => self.escape = '`',
                other => {
                    return Err(format!(
                        "invalid escape token '{other}' does not match ` or \\"
                    ))
                }
            }
        }
        Ok(Some(Directive {
            name,
            value: value.to_string(),
            line: line_no,
        }))
    }
}

/// Matches `^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$` (Go's `\s` is ASCII only).
fn split_directive(s: &str) -> Option<(&str, &str)> {
    let go_s = |c: char| matches!(c, '\t' | '\n' | '\u{c}' | '\r' | ' ');
    let mut chars = s.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() => {}
        _ => return None,
    }
    let name_end = s
        .char_indices()
        .find(|&(_, c)| !c.is_ascii_alphanumeric())
        .map(|(i, _)| i)
        .unwrap_or(s.len());
    let name = &s[..name_end];
    let rest = s[name_end..].trim_start_matches(go_s);
    let rest = rest.strip_prefix('=')?;
    let value = rest.trim_start_matches(go_s).trim_end_matches(go_s);
    if value.is_empty() {
        return None;
    }
    Some((name, value))
}

/// The continuation rule: the escape character as the last non-blank
/// character, unless it is itself escaped. Returns the line without it.
fn trim_continuation(line: &str, escape: char) -> (&str, bool) {
    let t = line.trim_end_matches([' ', '\t']);
    if let Some(before) = t.strip_suffix(escape) {
        if before.is_empty() || !before.ends_with(escape) {
            return (before, false);
        }
    }
    (line, true)
}

/// Parses a Dockerfile.
///
/// ```
/// let ast = hoist_frontend::parse("FROM alpine\nRUN echo hi\n").unwrap();
/// assert_eq!(hoist_frontend::dump_ast(&ast), "(from \"alpine\")\n(run \"echo hi\")\n");
/// ```
pub fn parse(source: &str) -> Result<Ast, ParseError> {
    let source_owned = source
        .strip_prefix('\u{feff}')
        .unwrap_or(source)
        .to_string();
    let src = source_owned.as_str();
    let mut line_starts = vec![0usize];
    for (i, b) in src.bytes().enumerate() {
        if b == b'\n' && i + 1 < src.len() {
            line_starts.push(i + 1);
        }
    }
    let raw_lines: Vec<&str> = src.split_inclusive('\n').collect();
    // BuildKit reads lines with a 64 KiB scanner buffer and rejects longer ones.
    if let Some(i) = raw_lines.iter().position(|l| l.len() > 65536) {
        let pos = Pos {
            line: i + 1,
            column: 1,
        };
        return Err(ParseError {
            message: "dockerfile line greater than max allowed size of 65535".into(),
            span: Span {
                start: pos,
                end: pos,
            },
            line_text: String::new(),
        });
    }
    let err_at = |message: String, start: usize, end: usize| -> ParseError {
        let start_line = start.max(1);
        let text = line_text(src, &line_starts, start_line).to_string();
        let col = text.chars().take_while(|c| c.is_whitespace()).count() + 1;
        ParseError {
            message,
            span: Span {
                start: Pos {
                    line: start_line,
                    column: col,
                },
                end: Pos {
                    line: end.max(start_line),
                    column: 1,
                },
            },
            line_text: text,
        }
    };

    let mut d = DirectiveState {
        done: false,
        seen: Vec::new(),
        escape: '\\',
    };
    let mut directives = Vec::new();
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut comments: Vec<String> = Vec::new();
    let mut i = 0usize; // index of the next raw line
    while i < raw_lines.len() {
        let raw = raw_lines[i];
        let line_no = i + 1;
        i += 1;
        let mut was_directive = false;
        if is_comment(raw) {
            let c = trim_newline(raw).trim_start_matches(is_go_space)[1..].trim();
            if c.is_empty() {
                comments.clear();
            } else {
                comments.push(c.to_string());
            }
        }
        let token = trim_newline(raw).trim_start_matches(is_go_space);
        match d.check(token, line_no) {
            Ok(Some(dir)) => {
                directives.push(dir);
                was_directive = true;
            }
            Ok(None) => {}
            Err(m) => return Err(err_at(m, line_no, line_no)),
        }
        if was_directive {
            comments.pop();
        }
        let token = if is_comment(token) { "" } else { token };
        let start_line = line_no;
        let start_offset = line_starts[i - 1];
        let (first, mut end_of_line) = trim_continuation(token, d.escape);
        if end_of_line && first.is_empty() {
            continue;
        }
        let mut line = first.to_string();
        let mut empty_continuation = false;
        let mut current_line = line_no;
        while !end_of_line && i < raw_lines.len() {
            let raw = raw_lines[i];
            i += 1;
            current_line = i;
            if is_comment(raw) {
                continue;
            }
            let token = trim_newline(raw);
            if token.trim_start_matches(is_go_space).is_empty() {
                empty_continuation = true;
                continue;
            }
            let (part, eol) = trim_continuation(token, d.escape);
            end_of_line = eol;
            line.push_str(part);
        }
        if empty_continuation {
            warnings.push(ParseWarning {
                message: format!("Empty continuation line found in: {line}"),
                span: Span {
                    start: Pos {
                        line: start_line,
                        column: 1,
                    },
                    end: Pos {
                        line: current_line,
                        column: 1,
                    },
                },
            });
        }
        let mut node = node_from_line(&line, d.escape, std::mem::take(&mut comments))
            .map_err(|m| err_at(m, start_line, current_line))?;

        if can_contain_heredoc(&node) && line.contains("<<") {
            let docs =
                heredocs_from_line(&line).map_err(|m| err_at(m, start_line, current_line))?;
            for mut doc in docs {
                let mut terminated = false;
                while i < raw_lines.len() {
                    let raw = raw_lines[i];
                    i += 1;
                    current_line = i;
                    let mut candidate = trim_newline(raw);
                    if doc.chomp {
                        candidate = candidate.trim_start_matches('\t');
                    }
                    if candidate == doc.name {
                        terminated = true;
                        break;
                    }
                    doc.content.push_str(raw);
                }
                if !terminated {
                    return Err(err_at(
                        format!("unterminated heredoc {:?}", doc.name),
                        start_line,
                        current_line,
                    ));
                }
                node.heredocs.push(doc);
            }
        }
        let end_offset = line_starts.get(i).copied().unwrap_or(src.len());
        let first_text = line_text(src, &line_starts, start_line);
        let start_col = first_text.chars().take_while(|c| c.is_whitespace()).count() + 1;
        let last_text = line_text(src, &line_starts, current_line);
        node.span = Span {
            start: Pos {
                line: start_line,
                column: start_col,
            },
            end: Pos {
                line: current_line,
                column: last_text.chars().count() + 1,
            },
        };
        node.range = (start_offset, end_offset);
        nodes.push(node);
    }
    if nodes.is_empty() {
        let last = raw_lines.len();
        return Err(err_at("file with no instructions".to_string(), last, last));
    }
    let lines = (
        nodes[0].span.start.line,
        nodes.last().map(|n| n.span.end.line).unwrap_or(0),
    );
    Ok(Ast {
        directives,
        escape: d.escape,
        nodes,
        warnings,
        lines,
        source: source_owned.clone(),
        line_starts,
    })
}

fn can_contain_heredoc(node: &Node) -> bool {
    let mut n = node;
    if node.name() == "onbuild" {
        if let Some(sub) = &node.sub {
            n = sub;
        }
    }
    heredoc_capable(&n.name()) && !n.json
}

/// Finds the heredoc words of an instruction line (`<<EOF`, `<<-"EOF"`, `3<<EOF`).
fn heredocs_from_line(line: &str) -> Result<Vec<Heredoc>, String> {
    let raw = Lexer::new(
        '\\',
        LexerOptions {
            raw_quotes: true,
            raw_escapes: true,
            skip_unset_env: true,
            heredoc_words: true,
            ..Default::default()
        },
    );
    let words = raw
        .process_words(line, &crate::shell::EmptyEnv)
        .unwrap_or_default();
    let mut docs = Vec::new();
    for word in words {
        if let Some(doc) = parse_heredoc(&word)? {
            docs.push(doc);
        }
    }
    Ok(docs)
}

/// Parses one heredoc word, `^(\d*)<<(-?)([^<]*)$`.
pub(crate) fn parse_heredoc(word: &str) -> Result<Option<Heredoc>, String> {
    let digits_end = word
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map(|(i, _)| i)
        .unwrap_or(word.len());
    let Some(after) = word[digits_end..].strip_prefix("<<") else {
        return Ok(None);
    };
    let (chomp, rest) = match after.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, after),
    };
    // `\s*` in BuildKit's pattern: blanks between `<<` and the word.
    let rest = rest.trim_start_matches([' ', '\t', '\n', '\r', '\u{c}']);
    if rest.contains('<') || rest.is_empty() {
        return Ok(None);
    }
    let fd = word[..digits_end].parse::<u32>().unwrap_or(0);
    let plain = Lexer::new(
        '\\',
        LexerOptions {
            skip_unset_env: true,
            ..Default::default()
        },
    );
    let words = plain
        .process_words(rest, &crate::shell::EmptyEnv)
        .map_err(|e| e.to_string())?;
    if words.len() != 1 {
        return Ok(None);
    }
    let raw = Lexer::new(
        '\\',
        LexerOptions {
            skip_unset_env: true,
            raw_quotes: true,
            ..Default::default()
        },
    );
    let raw_words = raw
        .process_words(rest, &crate::shell::EmptyEnv)
        .map_err(|e| e.to_string())?;
    if raw_words.len() != 1 {
        return Err(format!(
            "internal lexing of heredoc produced inconsistent results: {rest}"
        ));
    }
    let quotes = |s: &str| s.chars().filter(|&c| c == '\'' || c == '"').count();
    Ok(Some(Heredoc {
        name: words[0].clone(),
        file_descriptor: fd,
        expand: quotes(&words[0]) == quotes(&raw_words[0]),
        chomp,
        content: String::new(),
    }))
}

/// Removes leading tabs from every line (`<<-`).
pub fn chomp_heredoc_content(content: &str) -> String {
    content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}

fn empty_node(keyword: &str, original: &str) -> Node {
    Node {
        keyword: keyword.to_string(),
        flags: Vec::new(),
        args: Vec::new(),
        sub: None,
        json: false,
        heredocs: Vec::new(),
        original: original.to_string(),
        span: Span::default(),
        range: (0, 0),
        comments: Vec::new(),
    }
}

/// BuildKit recurses without bound on `ONBUILD ONBUILD …`; a limit keeps a
/// hostile file from exhausting the stack (real files nest at most once).
const MAX_NESTING: usize = 64;

fn node_from_line(line: &str, escape: char, comments: Vec<String>) -> Result<Node, String> {
    node_from_line_at(line, escape, comments, 0)
}

fn node_from_line_at(
    line: &str,
    escape: char,
    comments: Vec<String>,
    depth: usize,
) -> Result<Node, String> {
    if depth > MAX_NESTING {
        return Err(format!(
            "instructions nested more than {MAX_NESTING} levels deep"
        ));
    }
    let (keyword, flags, rest) = split_command(line);
    let mut node = empty_node(keyword, line);
    node.flags = flags;
    node.comments = comments;
    match node.name().as_str() {
        "add" | "copy" | "volume" => {
            let (args, json) = parse_maybe_json_to_list(&rest)?;
            node.args = args;
            node.json = json;
        }
        "arg" => node.args = parse_words(&rest, escape),
        "cmd" | "entrypoint" | "run" | "shell" => {
            let (args, json) = parse_maybe_json(&rest)?;
            node.args = args;
            node.json = json;
        }
        "env" => node.args = parse_name_val(&rest, "ENV", escape)?,
        "label" => node.args = parse_name_val(&rest, "LABEL", escape)?,
        "expose" | "from" => node.args = split_ws(&rest),
        "healthcheck" => {
            let rest_trim = rest.as_str();
            let sep = rest_trim
                .char_indices()
                .find(|(_, c)| c.is_whitespace())
                .map(|(i, _)| i)
                .unwrap_or(rest_trim.len());
            if sep > 0 {
                let typ = &rest_trim[..sep];
                let after = rest_trim[sep..].trim_start_matches(char::is_whitespace);
                let (mut args, json) = parse_maybe_json(after)?;
                args.insert(0, typ.to_string());
                node.args = args;
                node.json = json;
            }
        }
        "maintainer" | "stopsignal" | "user" | "workdir" => {
            if !rest.is_empty() {
                node.args = vec![rest];
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                node.sub = Some(Box::new(node_from_line_at(
                    &rest,
                    escape,
                    Vec::new(),
                    depth + 1,
                )?));
            }
        }
        // Unknown instructions keep one empty argument, as BuildKit's dumper shows them.
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

/// Splits the keyword from the rest and extracts leading `--flags`.
fn split_command(line: &str) -> (&str, Vec<String>, String) {
    let trimmed = line.trim();
    let (cmd, rest) = match trimmed.find(is_token_ws) {
        Some(i) => (
            &trimmed[..i],
            Some(trimmed[i..].trim_start_matches(is_token_ws)),
        ),
        None => (trimmed, None),
    };
    match rest {
        Some(rest) => {
            let (args, flags) = extract_flags(rest);
            (cmd, flags, args.trim().to_string())
        }
        None => (cmd, Vec::new(), String::new()),
    }
}

/// Pulls `--name[=value]` words off the front of `line`; a bare `--` ends them.
fn extract_flags(line: &str) -> (&str, Vec<String>) {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut word = String::new();
    let mut quote = '\0';
    let mut blank_ok = false;
    let chars: Vec<(usize, char)> = line.char_indices().collect();
    let mut k = 0usize;
    loop {
        let at_end = k >= chars.len();
        let (pos, ch) = if at_end { (line.len(), '\0') } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            let next_dash = chars.get(k + 1).map(|&(_, c)| c == '-').unwrap_or(false);
            if ch != '-' || !next_dash {
                return (&line[pos..], words);
            }
            phase = Phase::Word;
        }
        if at_end {
            if word != "--" && (blank_ok || !word.is_empty()) {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if word == "--" {
                    return (&line[pos..], words);
                }
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                word.clear();
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
                k += 1;
                continue;
            }
            let mut c = ch;
            if ch == '\\' {
                if k + 1 >= chars.len() {
                    k += 1;
                    continue;
                }
                k += 1;
                c = chars[k].1;
            }
            word.push(c);
            k += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
            k += 1;
            continue;
        }
        let mut c = ch;
        if ch == '\\' {
            if k + 1 >= chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            k += 1;
            c = chars[k].1;
        }
        word.push(c);
        k += 1;
    }
    ("", words)
}

/// Splits on runs of `[\t\v\f\r ]`.
fn split_ws(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_ws = false;
    for c in rest.chars() {
        if is_token_ws(c) {
            if !in_ws {
                out.push(std::mem::take(&mut cur));
            }
            in_ws = true;
        } else {
            in_ws = false;
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

/// Parses an exec-form JSON array of strings; `Ok(None)` when `rest` is not JSON.
fn parse_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let rest = rest.trim_start_matches(char::is_whitespace);
    if !rest.starts_with('[') {
        return Ok(None);
    }
    match json::parse_array(rest) {
        Ok(values) => {
            let mut out = Vec::new();
            for v in values {
                match v {
                    Some(s) => out.push(s),
                    None => return Err(
                        "when using JSON array syntax, arrays must be comprised of strings only"
                            .to_string(),
                    ),
                }
            }
            Ok(Some(out))
        }
        Err(_) => Ok(None),
    }
}

fn parse_maybe_json(rest: &str) -> Result<(Vec<String>, bool), String> {
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    match parse_json(rest)? {
        Some(v) => Ok((v, true)),
        None => Ok((vec![rest.to_string()], false)),
    }
}

fn parse_maybe_json_to_list(rest: &str) -> Result<(Vec<String>, bool), String> {
    match parse_json(rest)? {
        Some(v) => Ok((v, true)),
        None => Ok((split_ws(rest), false)),
    }
}

/// Splits into words, keeping quotes and escapes (they are removed at expansion time).
pub(crate) fn parse_words(rest: &str, escape: char) -> Vec<String> {
    #[derive(PartialEq)]
    enum Phase {
        Spaces,
        Word,
        Quote,
    }
    let mut words = Vec::new();
    let mut phase = Phase::Spaces;
    let mut quote = '\0';
    let mut blank_ok = false;
    let mut word = String::new();
    let chars: Vec<char> = rest.chars().collect();
    let mut k = 0usize;
    loop {
        let at_end = k >= chars.len();
        let ch = if at_end { '\0' } else { chars[k] };
        if phase == Phase::Spaces {
            if at_end {
                break;
            }
            if ch.is_whitespace() {
                k += 1;
                continue;
            }
            phase = Phase::Word;
        }
        if at_end {
            if blank_ok || !word.is_empty() {
                words.push(word);
            }
            break;
        }
        if phase == Phase::Word {
            if ch.is_whitespace() {
                phase = Phase::Spaces;
                if blank_ok || !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
                blank_ok = false;
                k += 1;
                continue;
            }
            if ch == '\'' || ch == '"' {
                quote = ch;
                blank_ok = true;
                phase = Phase::Quote;
            }
            let mut c = ch;
            if ch == escape {
                if k + 1 == chars.len() {
                    k += 1;
                    continue;
                }
                word.push(ch);
                k += 1;
                c = chars[k];
            }
            word.push(c);
            k += 1;
            continue;
        }
        // Phase::Quote
        if ch == quote {
            phase = Phase::Word;
        }
        let mut c = ch;
        if ch == escape && quote != '\'' {
            if k + 1 == chars.len() {
                phase = Phase::Word;
                k += 1;
                continue;
            }
            word.push(ch);
            k += 1;
            c = chars[k];
        }
        word.push(c);
        k += 1;
    }
    words
}

fn parse_name_val(rest: &str, key: &str, escape: char) -> Result<Vec<String>, String> {
    let words = parse_words(rest, escape);
    if words.is_empty() {
        return Ok(Vec::new());
    }
    if !words[0].contains('=') {
        let Some(i) = rest.find(is_token_ws) else {
            return Err(format!("{key} must have two arguments"));
        };
        let name = &rest[..i];
        let value = rest[i..].trim_start_matches(is_token_ws);
        return Ok(vec![name.to_string(), value.to_string(), String::new()]);
    }
    let mut out = Vec::new();
    for word in words {
        let Some((k, v)) = word.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {word:?}. Must be of the form: name=value"
            ));
        };
        out.push(k.to_string());
        out.push(v.to_string());
        out.push("=".to_string());
    }
    Ok(out)
}

/// Prints the AST in BuildKit's dump format, one `(instruction …)` per line.
pub fn dump_ast(ast: &Ast) -> String {
    let mut out = String::new();
    for n in &ast.nodes {
        out.push('(');
        out.push_str(&dump_node(n));
        out.push_str(")\n");
    }
    out
}

fn dump_node(n: &Node) -> String {
    let mut s = n.keyword.to_lowercase();
    if !n.flags.is_empty() {
        s.push_str(" [");
        let quoted: Vec<String> = n.flags.iter().map(|f| go_quote(f)).collect();
        s.push_str(&quoted.join(" "));
        s.push(']');
    }
    for a in &n.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    if let Some(sub) = &n.sub {
        s.push_str(" (");
        s.push_str(&dump_node(sub));
        s.push(')');
    }
    s.trim().to_string()
}

/// Quotes a string the way Go's `strconv.Quote` does.
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if is_go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) < 0x10000 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Go's `unicode.IsPrint`: letters, marks, numbers, punctuation, symbols and the ASCII space.
fn is_go_printable(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    if c == ' ' {
        return true;
    }
    !matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::Surrogate
            | G::PrivateUse
            | G::Unassigned
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
    )
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_basic() {
        let ast = parse("FROM a\nRUN <<EOF\necho hi\nEOF\nRUN x\n").unwrap();
        assert_eq!(ast.nodes.len(), 3);
        let h = &ast.nodes[1].heredocs[0];
        assert_eq!(h.name, "EOF");
        assert_eq!(h.content, "echo hi\n");
        assert!(h.expand);
        assert_eq!(ast.nodes[1].span.start.line, 2);
        assert_eq!(ast.nodes[1].span.end.line, 4);
    }

    #[test]
    fn heredoc_several_quoted_chomp() {
        let src = "FROM a\nCOPY <<-\"A\" 3<<'B' /dst/\n\tone\n\tA\ntwo $X\nB\n";
        let ast = parse(src).unwrap();
        let n = &ast.nodes[1];
        assert_eq!(n.heredocs.len(), 2);
        assert_eq!(n.heredocs[0].name, "A");
        assert!(n.heredocs[0].chomp);
        assert!(!n.heredocs[0].expand);
        assert_eq!(n.heredocs[0].content, "\tone\n");
        assert_eq!(chomp_heredoc_content(&n.heredocs[0].content), "one\n");
        assert_eq!(n.heredocs[1].name, "B");
        assert_eq!(n.heredocs[1].file_descriptor, 3);
        assert_eq!(n.heredocs[1].content, "two $X\n");
    }

    #[test]
    fn unterminated_heredoc() {
        let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert!(e.message.contains("unterminated heredoc"), "{e}");
        assert_eq!(e.span.start.line, 2);
    }

    #[test]
    fn json_run_has_no_heredoc() {
        let ast = parse("FROM a\nRUN [\"<<EOF\"]\nRUN b\n").unwrap();
        assert!(ast.nodes[1].heredocs.is_empty());
        assert_eq!(ast.nodes.len(), 3);
    }

    #[test]
    fn directives_and_check() {
        let ast =
            parse("# syntax=docker/dockerfile:1\n# check=skip=all\n#escape=`\nFROM a\n").unwrap();
        assert_eq!(ast.directive("syntax"), Some("docker/dockerfile:1"));
        assert_eq!(ast.directive("check"), Some("skip=all"));
        assert_eq!(ast.escape, '`');
        let e = parse("# escape=\\\n# escape=`\nFROM a\n").unwrap_err();
        assert!(e.message.contains("only one escape"));
        let e = parse("# escape=x\nFROM a\n").unwrap_err();
        assert!(e.message.contains("invalid escape token"));
    }

    #[test]
    fn words_keep_quotes_and_escapes() {
        let cases: &[(&str, &[&str])] = &[
            ("foo", &["foo"]),
            ("foo bar", &["foo", "bar"]),
            ("foo\\ bar", &["foo\\ bar"]),
            ("foo=bar", &["foo=bar"]),
            ("foo bar 'abc xyz'", &["foo", "bar", "'abc xyz'"]),
            ("foo bar \"abc xyz\"", &["foo", "bar", "\"abc xyz\""]),
            ("föo bàr \"âbc xÿz\"", &["föo", "bàr", "\"âbc xÿz\""]),
        ];
        for (input, want) in cases {
            assert_eq!(parse_words(input, '\\'), *want, "{input}");
        }
    }

    #[test]
    fn empty_continuation_warnings() {
        let src = "FROM alpine:3.6\nRUN valid \\\n    continuation\nRUN something \\\n\n    following \\\n\n    more\nRUN another \\\n\n    thing\nRUN non-indented \\\n# this is a comment\n   after-comment\nRUN indented \\\n    # this is an indented comment\n    comment\n";
        let ast = parse(src).unwrap();
        assert_eq!(ast.warnings.len(), 2);
        assert!(ast.warnings[0]
            .message
            .contains("RUN something     following     more"));
        assert!(ast.warnings[1].message.contains("RUN another     thing"));
        assert_eq!(ast.nodes[4].args, vec!["non-indented    after-comment"]);
        assert_eq!(ast.nodes[5].args, vec!["indented     comment"]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(5000));
        let e = parse(&src).unwrap_err();
        assert!(e.message.contains("nested"), "{}", e.message);
        let ast = parse("FROM a\nONBUILD ONBUILD RUN x\n").unwrap();
        assert_eq!(
            dump_ast(&ast),
            "(from \"a\")\n(onbuild (onbuild (run \"x\")))\n"
        );
        let src = format!(
            "FROM a\nENV A={}x{}\n",
            "${B:-".repeat(5000),
            "}".repeat(5000)
        );
        let ast = parse(&src).unwrap();
        let e = crate::lower::lower(&ast, &Default::default(), &crate::NoResolver).unwrap_err();
        assert!(e.message.contains("nested"), "{}", e.message);
    }

    #[test]
    fn long_lines_and_bom() {
        let long = format!("FROM image\nLABEL test={}\n", "a".repeat(65536));
        let e = parse(&long).unwrap_err();
        assert_eq!(
            e.message,
            "dockerfile line greater than max allowed size of 65535"
        );
        let ast = parse("\u{feff}FROM a\n").unwrap();
        assert_eq!(dump_ast(&ast), "(from \"a\")\n");
    }

    #[test]
    fn columns_and_go_quote() {
        let ast = parse("FROM a\n   RUN  --mount=type=cache,target=/x echo\n").unwrap();
        assert_eq!(ast.nodes[1].span.start, Pos { line: 2, column: 4 });
        let p = ast.locate(&ast.nodes[1], "--mount");
        assert_eq!(p, Pos { line: 2, column: 9 });
        assert_eq!(
            go_quote("a\u{0}\u{a0}é\u{1F600}"),
            "\"a\\x00\\u00a0é\u{1F600}\""
        );
    }
}
