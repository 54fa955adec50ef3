//! The crate's error type, rendering of located errors and "did you mean" suggestions.

use crate::parser::{ParseError, Pos, Span};

/// What kind of failure an [`Error`] is, for callers that branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The text could not be parsed.
    Parse,
    /// An instruction is malformed (unknown instruction or flag, missing argument, bad value).
    Instruction,
    /// Word expansion failed (bad substitution, `${X:?}` on an unset variable, …).
    Expansion,
    /// Stages do not fit together (unknown target, bad `--from`, cycles, empty base name).
    Stage,
    /// The image resolver failed.
    Resolve,
}

/// A frontend error: what is wrong and, for user errors, where in the Dockerfile.
///
/// Its message, [`Error::render`] and [`render_located`] escape control
/// characters of the Dockerfile text they quote (`\u{1b}`), so printing one
/// cannot drive a terminal.
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::text::escape(message))]
pub struct Error {
    /// The category.
    pub kind: ErrorKind,
    /// What is wrong, e.g. `unknown instruction "RUNN" (did you mean RUN?)`.
    pub message: String,
    /// Where, when the error comes from a Dockerfile line.
    pub span: Option<Span>,
    /// The text of the line `span` starts on (empty when unknown).
    pub line_text: String,
    /// The underlying failure (e.g. from the image resolver).
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            span: None,
            line_text: String::new(),
            source: None,
        }
    }

    pub(crate) fn at(mut self, span: Span, line_text: &str) -> Self {
        if self.span.is_none() {
            self.span = Some(span);
            self.line_text = line_text.to_string();
        }
        self
    }

    /// Renders `FILE:LINE:COL: message`, the quoted line and a caret; without a
    /// location just `FILE: message`.
    pub fn render(&self, file: &str) -> String {
        match self.span {
            Some(span) => render_located(file, span.start, &self.message, &self.line_text),
            None => format!(
                "{}: {}",
                crate::text::escape(file),
                crate::text::escape(&self.message)
            ),
        }
    }
}

impl From<ParseError> for Error {
    fn from(e: ParseError) -> Self {
        Error {
            kind: ErrorKind::Parse,
            message: e.message,
            span: Some(e.span),
            line_text: e.line_text,
            source: None,
        }
    }
}

/// Renders `FILE:LINE:COL: message`, then the quoted line and a caret under the column.
/// Control characters of all three are escaped (tabs of the line stay).
pub fn render_located(file: &str, pos: Pos, message: &str, line_text: &str) -> String {
    use crate::text::{escape, escape_except};
    let mut out = format!(
        "{}:{}:{}: {}",
        escape(file),
        pos.line,
        pos.column,
        escape(message)
    );
    if !line_text.is_empty() {
        let gutter = format!("{} | ", pos.line);
        out.push('\n');
        out.push_str(&gutter);
        out.push_str(&escape_except(line_text, &['\t']));
        out.push('\n');
        out.push_str(&" ".repeat(gutter.len()));
        // Tabs keep their width and an escaped character is as wide as its
        // escape, so the caret lines up under the column.
        for c in line_text.chars().take(pos.column.saturating_sub(1)) {
            match c {
                '\t' => out.push('\t'),
                c => {
                    let width = escape(c.encode_utf8(&mut [0; 4])).chars().count();
                    out.extend(std::iter::repeat_n(' ', width));
                }
            }
        }
        out.push('^');
    }
    out
}

/// Edit distance counting insertions, deletions, substitutions and swaps of
/// neighbours (optimal string alignment), case-insensitive.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// The candidate closest to `word` when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let len = word.chars().count();
    let limit = if len <= 2 { 1 } else { (len / 3).clamp(2, 3) };
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("RUNN", &["RUN", "CMD"]), Some("RUN"));
        assert_eq!(suggest("cpy", &["COPY", "ADD"]), Some("COPY"));
        assert_eq!(suggest("xyzzy", &["COPY", "ADD"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("form", "from"), 1);
    }

    #[test]
    fn quoted_input_is_escaped_and_the_caret_still_lines_up() {
        let s = render_located(
            "Docker\x1bfile",
            Pos { line: 2, column: 8 },
            "unknown \x1b[2J",
            "RUN \x1b[2Jx",
        );
        assert_eq!(
            s,
            "Docker\\u{1b}file:2:8: unknown \\u{1b}[2J\n2 | RUN \\u{1b}[2Jx\n                ^"
        );
        let e = Error::new(ErrorKind::Instruction, "bad \r\x07");
        assert_eq!(e.to_string(), "bad \\r\\u{7}");
        assert_eq!(e.render("Dockerfile"), "Dockerfile: bad \\r\\u{7}");
    }

    #[test]
    fn caret() {
        let s = render_located("Dockerfile", Pos { line: 3, column: 5 }, "boom", "RUN  x");
        assert_eq!(s, "Dockerfile:3:5: boom\n3 | RUN  x\n        ^");
    }
}
