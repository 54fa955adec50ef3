//! Untrusted text in messages: the one escaper every error that quotes input
//! (a path, a tar header name, a Dockerfile line, an image name, a server's
//! answer) formats through.
//!
//! Input reaches a terminal through our messages, and a name that carries
//! `ESC [ 2 J`, a carriage return or a newline could clear the screen, hide
//! the rest of the message or forge a line of output. Control characters are
//! written the way Rust's `escape_debug` writes them (`\n`, `\r`, `\t`, `\0`,
//! `\u{1b}`), as are the Unicode bidirectional overrides and line separators
//! that reorder or split what a reader sees. Everything else, printable
//! UTF-8 included, is left alone, so an ordinary name reads as itself.
//! Bytes that are not UTF-8 become `\xNN`.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::path::Path;

/// Whether `c` is written escaped: C0 and C1 controls, DEL, the bidi
/// embedding/override/isolate marks (which reorder what a terminal shows,
/// "Trojan Source") and the Unicode line and paragraph separators.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}' | '\u{202a}'
                ..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        '\0' => out.write_str("\\0"),
        c => write!(out, "\\u{{{:x}}}", c as u32),
    }
}

/// Like [`escape`], but the characters in `keep` stay as they are: `\n` for
/// whole messages meant to span lines (a syntax error with its caret line)
/// where they are printed, `\t` for a quoted line a caret lines up under.
pub fn escape_except<'a>(text: &'a str, keep: &[char]) -> Cow<'a, str> {
    if !text.chars().any(|c| needs_escape(c) && !keep.contains(&c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if needs_escape(c) && !keep.contains(&c) {
            // Writing into a String cannot fail.
            let _ = write_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `text` with its control characters escaped (see the module docs);
/// borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    escape_except(text, &[])
}

/// [`escape`] for multi-line text (logs, commit messages): newlines and tabs
/// are kept.
pub fn escape_keep_lines(text: &str) -> Cow<'_, str> {
    escape_except(text, &['\n', '\t'])
}

/// Bytes of unknown encoding (a tar header name, a server's body): valid
/// UTF-8 is [`escape`]d, every other byte is written `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> Cow<'_, str> {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return escape(text);
    }
    let mut out = String::with_capacity(bytes.len() + 8);
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    Cow::Owned(out)
}

/// A path, escaped as [`escape_bytes`] does (a Unix path is bytes).
pub fn escape_path(path: &Path) -> Cow<'_, str> {
    use std::os::unix::ffi::OsStrExt as _;
    escape_bytes(path.as_os_str().as_bytes())
}

/// Displays a string escaped as [`escape`] does, without allocating:
/// `format!("no file `{}`", Escaped(name))`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if needs_escape(c) {
                write_escaped(f, c)?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// An error and its causes on one line (`failed to pull x: connection
/// refused`), a cause already in the text not repeated: how warnings and
/// logs show an error they do not stop for.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("outer")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn error_chain_joins_causes_once() {
        let error = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&error), "outer: inner");
        let error = Outer(std::io::Error::other("out"));
        assert_eq!(error_chain(&error), "outer", "a cause already said");
    }

    #[test]
    fn multi_line_text_keeps_its_lines() {
        assert_eq!(escape_keep_lines("l1\n\tl2\x1b"), "l1\n\tl2\\u{1b}");
    }

    #[test]
    fn plain_text_is_borrowed_and_unchanged() {
        for s in [
            "",
            "busybox:latest",
            "café/naïve 日本",
            "a\\nb",
            "quote `x` \"y\"",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(t) if t == s), "{s}");
            assert_eq!(Escaped(s).to_string(), s);
        }
    }

    #[test]
    fn controls_are_escaped_like_escape_debug() {
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\u{1b}[31mred\\u{1b}[0m");
        assert_eq!(escape("a\nb\rc\td\0e"), "a\\nb\\rc\\td\\0e");
        assert_eq!(escape("\x7f\u{9b}"), "\\u{7f}\\u{9b}");
        assert_eq!(escape("abc\u{202e}def"), "abc\\u{202e}def");
        assert_eq!(escape("x\u{2028}y"), "x\\u{2028}y");
        assert_eq!(
            Escaped("\x1b]0;title\x07").to_string(),
            "\\u{1b}]0;title\\u{7}"
        );
    }

    #[test]
    fn newlines_stay_only_when_asked() {
        assert_eq!(
            escape_except("line 1\nline\x1b 2", &['\n']),
            "line 1\nline\\u{1b} 2"
        );
        assert_eq!(escape("line 1\nline 2"), "line 1\\nline 2");
    }

    #[test]
    fn bytes_that_are_not_utf8_become_hex() {
        assert_eq!(escape_bytes(b"ok"), "ok");
        assert_eq!(escape_bytes(b"\xff\xfe\x1b[2J"), "\\xff\\xfe\\u{1b}[2J");
        assert_eq!(escape_bytes(b"caf\xc3\xa9\xc3"), "café\\xc3");
        assert_eq!(escape_path(Path::new("dir/\u{1b}name")), "dir/\\u{1b}name");
    }
}
