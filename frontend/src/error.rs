//! Rendering of located errors and "did you mean" suggestions.

use crate::parser::Pos;

/// Renders `FILE:LINE:COL: message`, then the quoted line and a caret under the column.
pub fn render_located(file: &str, pos: Pos, message: &str, line_text: &str) -> String {
    let mut out = format!("{file}:{}:{}: {message}", pos.line, pos.column);
    if !line_text.is_empty() {
        let gutter = format!("{} | ", pos.line);
        out.push('\n');
        out.push_str(&gutter);
        out.push_str(line_text);
        out.push('\n');
        out.push_str(&" ".repeat(gutter.len()));
        // Tabs keep their width so the caret lines up under the column.
        for c in line_text.chars().take(pos.column.saturating_sub(1)) {
            out.push(if c == '\t' { '\t' } else { ' ' });
        }
        out.push('^');
    }
    out
}

/// Levenshtein distance between two strings, case-insensitive.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The candidate closest to `word` when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
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
    }

    #[test]
    fn caret() {
        let s = render_located("Dockerfile", Pos { line: 3, column: 5 }, "boom", "RUN  x");
        assert_eq!(s, "Dockerfile:3:5: boom\n3 | RUN  x\n        ^");
    }
}
