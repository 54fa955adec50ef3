//! Escaping of text that came from untrusted input before it is shown.

use std::borrow::Cow;
use std::fmt;

/// `s` with every control character (C0, DEL, C1) escaped as Rust's
/// `escape_debug` writes it (`\n`, `\t`, `\u{1b}`); printable text, non-ASCII
/// letters included, is unchanged. Borrowed when there is nothing to escape.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(needs_escape) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_char(&mut out, c);
    }
    Cow::Owned(out)
}

/// [`escape`] for multi-line text (logs, commit messages): newlines and tabs
/// are kept, every other control character is escaped.
pub fn escape_keep_lines(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| needs_escape(c) && !matches!(c, '\n' | '\t'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if matches!(c, '\n' | '\t') {
            out.push(c);
        } else {
            push_char(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// Bytes that may not be UTF-8 (tar names, raw input), escaped as [`escape`]
/// does, with each invalid byte written as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => escape(s),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len() + 8);
            for chunk in bytes.utf8_chunks() {
                for c in chunk.valid().chars() {
                    push_char(&mut out, c);
                }
                for b in chunk.invalid() {
                    out.push_str(&format!("\\x{b:02x}"));
                }
            }
            Cow::Owned(out)
        }
    }
}

/// A `Display` wrapper that writes its text through [`escape`], for format
/// strings: `format!("{}", Escaped(name))`.
#[derive(Clone, Copy, Debug)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(self.0))
    }
}

fn needs_escape(c: char) -> bool {
    c.is_control()
        // Bidirectional overrides and isolates: they reorder what a terminal
        // shows (CVE-2021-42574, "Trojan Source").
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn push_char(out: &mut String, c: char) {
    if needs_escape(c) {
        out.extend(c.escape_debug());
    } else {
        out.push(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(escape("a/b c.txt"), "a/b c.txt");
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(escape("x\x1b[2Jy"), "x\\u{1b}[2Jy");
        assert_eq!(escape("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape("\u{7f}\u{9b}"), "\\u{7f}\\u{9b}");
        assert_eq!(escape("héllo wörld ✓"), "héllo wörld ✓");
        assert_eq!(escape("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(Escaped("a\x07").to_string(), "a\\u{7}");
        assert_eq!(escape_keep_lines("l1\n\tl2\x1b"), "l1\n\tl2\\u{1b}");
    }

    #[test]
    fn invalid_utf8_bytes_are_shown_as_hex() {
        assert_eq!(escape_bytes(b"ok"), "ok");
        assert_eq!(escape_bytes(b"a\xffb\x1b"), "a\\xffb\\u{1b}");
    }
}
