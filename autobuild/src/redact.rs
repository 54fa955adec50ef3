//! What the server shows of text it did not write: credentials in URLs
//! redacted, control characters escaped.

/// Every `scheme://user:password@host` in `text` shown as
/// `scheme://user:***@host`, and `https://token@host` as
/// `https://***@host` (a lone user name over http(s) is usually a token).
/// An ssh user name (`ssh://git@host`) is kept: it is not a secret.
///
/// Used for everything the server shows that may hold a repository URL:
/// the build log, build errors, tracing, the status page and the API.
pub fn redact_credentials(text: &str) -> String {
    if !text.contains("://") || !text.contains('@') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let scheme: String = before[..i]
            .chars()
            .rev()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
            .to_ascii_lowercase();
        // The authority ends at the path, query, fragment, or whatever
        // cannot be in a URL (quotes and spaces around it in a message).
        let end = after
            .find(|c: char| {
                matches!(c, '/' | '?' | '#' | '\'' | '"' | '`' | '<' | '>') || c.is_whitespace()
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None if scheme.contains("ssh") => out.push_str(userinfo),
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// `s` with control characters (and bidi overrides) escaped as Rust
/// does (`\n`, `\u{1b}`), for text from a webhook, a git remote or a
/// registry that goes into a log line or an error.
pub(crate) fn escape_control(s: &str) -> String {
    hoist_untrusted::escape(s).into_owned()
}

/// Like [`escape_control`] but keeps newlines and tabs (multi-line text:
/// commit messages, logs).
pub(crate) fn escape_control_keep_lines(s: &str) -> String {
    hoist_untrusted::escape_keep_lines(s).into_owned()
}

/// For log and error text: credentials redacted, then control characters
/// escaped.
pub(crate) fn shown(text: &str) -> String {
    escape_control(&redact_credentials(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_redacted() {
        let r = redact_credentials;
        assert_eq!(
            r("https://user:pa55@host/repo.git"),
            "https://user:***@host/repo.git"
        );
        assert_eq!(
            r("https://ghp_tok@github.com/a/b"),
            "https://***@github.com/a/b"
        );
        assert_eq!(r("ssh://git@host:22/r.git"), "ssh://git@host:22/r.git");
        assert_eq!(r("ssh://git:pw@host/r.git"), "ssh://git:***@host/r.git");
        assert_eq!(
            r("fatal: unable to access 'http://u:p@127.0.0.1:1/x.git/': refused"),
            "fatal: unable to access 'http://u:***@127.0.0.1:1/x.git/': refused"
        );
        assert_eq!(
            r("a https://a:b@h b http://c:d@i"),
            "a https://a:***@h b http://c:***@i"
        );
        assert_eq!(r("https://host/a@b"), "https://host/a@b");
        assert_eq!(r("mail me@host, /srv/git"), "mail me@host, /srv/git");
        assert_eq!(r("git@host:repo.git"), "git@host:repo.git");
        // A password with `@` (not percent-encoded): the last `@` ends it.
        assert_eq!(r("https://u:p@ss@host/r"), "https://u:***@host/r");
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_control("a\u{1b}[2Jb\nc"), "a\\u{1b}[2Jb\\nc");
        assert_eq!(escape_control_keep_lines("a\u{7}\nb\tc"), "a\\u{7}\nb\tc");
        assert_eq!(escape_control("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(shown("https://u:p@h/\u{1b}"), "https://u:***@h/\\u{1b}");
    }
}
