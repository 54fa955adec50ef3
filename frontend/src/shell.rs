//! Word expansion as BuildKit's shell lexer does it (`frontend/dockerfile/shell`).
//!
//! Supported: `$VAR`, `${VAR}`, `${VAR:-w}`, `${VAR-w}`, `${VAR:+w}`, `${VAR+w}`,
//! `${VAR:?w}`, `${VAR?w}`, `${VAR#p}`, `${VAR##p}`, `${VAR%p}`, `${VAR%%p}`,
//! `${VAR/p/r}`, `${VAR//p/r}`, single and double quotes, the escape character,
//! positional and special parameters (always unset). Patterns use `*` and `?`
//! (no bracket expressions), and, as in Go's regexp, neither matches a newline.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use unicode_general_category::{get_general_category, GeneralCategory as G};

/// Variables visible to an expansion.
pub trait Env {
    /// The value of `name`, `None` when unset.
    fn lookup(&self, name: &str) -> Option<&str>;
}

/// An environment with no variables.
#[derive(Debug, Clone, Copy, Default)]
pub struct EmptyEnv;

impl Env for EmptyEnv {
    fn lookup(&self, _: &str) -> Option<&str> {
        None
    }
}

impl Env for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.get(name).map(String::as_str)
    }
}

impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

impl Env for &[(String, String)] {
    fn lookup(&self, name: &str) -> Option<&str> {
        (**self).lookup(name)
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<&str> {
        self.as_slice().lookup(name)
    }
}

/// Switches of the lexer; the defaults give ordinary Dockerfile expansion.
#[derive(Debug, Clone, Copy, Default)]
pub struct LexerOptions {
    /// Keep quote characters in the result.
    pub raw_quotes: bool,
    /// Keep escape characters in the result.
    pub raw_escapes: bool,
    /// Treat quotes as ordinary characters.
    pub skip_process_quotes: bool,
    /// Leave references to unset variables as written.
    pub skip_unset_env: bool,
    /// Keep `<<` and the blanks after it in the following word (`<<  EOF` is
    /// one word), as BuildKit's lexer does when looking for heredocs.
    pub heredoc_words: bool,
}

/// An expansion failure, e.g. `bad substitution` or an unterminated quote.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to process {word:?}: {reason}")]
pub struct ExpandError {
    /// The word being expanded.
    pub word: String,
    /// Why it failed.
    pub reason: String,
}

/// The outcome of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The expanded word as one string (quotes removed, spacing kept).
    pub result: String,
    /// The expansion split into words (unquoted expansions split on whitespace).
    pub words: Vec<String>,
    /// Variables that were referenced and set.
    pub matched: BTreeSet<String>,
    /// Variables that were referenced and unset.
    pub unmatched: BTreeSet<String>,
}

/// BuildKit's shell lexer.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    escape: char,
    options: LexerOptions,
}

impl Lexer {
    /// A lexer using `escape` (`\` or `` ` ``) as the escape character.
    pub fn new(escape: char, options: LexerOptions) -> Self {
        Lexer { escape, options }
    }

    /// Expands `word` into one string.
    ///
    /// ```
    /// use hoist_frontend::shell::{Lexer, LexerOptions};
    /// let env = vec![("X".to_string(), "a/b/c".to_string())];
    /// let lex = Lexer::new('\\', LexerOptions::default());
    /// assert_eq!(lex.process_word("${X##*/}-'$X'", &env).unwrap(), "c-$X");
    /// ```
    pub fn process_word(&self, word: &str, env: &dyn Env) -> Result<String, ExpandError> {
        self.process(word, env).map(|e| e.result)
    }

    /// Expands `word` and splits the result into words.
    pub fn process_words(&self, word: &str, env: &dyn Env) -> Result<Vec<String>, ExpandError> {
        self.process(word, env).map(|e| e.words)
    }

    /// Expands `word`, returning the string, the words and which variables were used.
    pub fn process(&self, word: &str, env: &dyn Env) -> Result<Expansion, ExpandError> {
        let mut run = Run {
            depth: 0,
            chars: word.chars().collect(),
            pos: 0,
            escape: self.escape,
            options: self.options,
            raw_escapes: self.options.raw_escapes,
            env,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
        };
        let raw = run.raw_escapes;
        match run.stop_on(None, raw) {
            Ok((result, words)) => Ok(Expansion {
                result,
                words,
                matched: run.matched,
                unmatched: run.unmatched,
            }),
            Err(reason) => Err(ExpandError {
                word: word.to_string(),
                reason,
            }),
        }
    }
}

/// BuildKit's lexer recurses without bound on `${a:-${b:-…}}`; a limit keeps
/// a hostile word from exhausting the stack.
const MAX_NESTING: usize = 256;

struct Run<'a> {
    depth: usize,
    chars: Vec<char>,
    pos: usize,
    escape: char,
    options: LexerOptions,
    raw_escapes: bool,
    env: &'a dyn Env,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
}

#[derive(Default)]
struct Words {
    word: String,
    words: Vec<String>,
    in_word: bool,
}

impl Words {
    fn add_char(&mut self, ch: char) {
        if ch.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(ch);
        }
    }
    fn add_raw_char(&mut self, ch: char) {
        self.word.push(ch);
        self.in_word = true;
    }
    fn add_string(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_string(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = true;
    }
    fn finish(mut self) -> Vec<String> {
        if !self.word.is_empty() {
            self.words.push(self.word);
        }
        self.words
    }
}

type R<T> = Result<T, String>;

impl Run<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn stop_on(&mut self, stop: Option<char>, raw_escapes: bool) -> R<(String, Vec<String>)> {
        if self.depth > MAX_NESTING {
            return Err(format!(
                "substitutions nested more than {MAX_NESTING} levels deep"
            ));
        }
        self.depth += 1;
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.stop_on_inner(stop);
        self.raw_escapes = saved;
        self.depth -= 1;
        r
    }

    fn stop_on_inner(&mut self, stop: Option<char>) -> R<(String, Vec<String>)> {
        let mut result = String::new();
        let mut words = Words::default();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.pos += 1;
                return Ok((result, words.finish()));
            }
            let quotes = !self.options.skip_process_quotes;
            if ch == '$' {
                let tmp = self.dollar()?;
                result.push_str(&tmp);
                words.add_string(&tmp);
            } else if quotes && ch == '\'' {
                let tmp = self.single_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if quotes && ch == '"' {
                let tmp = self.double_quote()?;
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else if self.options.heredoc_words
                && ch == '<'
                && self.chars.get(self.pos + 1) == Some(&'<')
            {
                self.pos += 2;
                let mut tmp = String::from("<<");
                while let Some(c @ (' ' | '\t')) = self.peek() {
                    tmp.push(c);
                    self.pos += 1;
                }
                result.push_str(&tmp);
                words.add_raw_string(&tmp);
            } else {
                self.pos += 1;
                let mut c = ch;
                if c == self.escape {
                    if self.raw_escapes {
                        words.add_raw_char(c);
                        result.push(c);
                    }
                    match self.next() {
                        None => break,
                        Some(n) => c = n,
                    }
                    words.add_raw_char(c);
                } else {
                    words.add_char(c);
                }
                result.push(c);
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, words.finish()))
    }

    fn single_quote(&mut self) -> R<String> {
        let mut out = String::new();
        let q = self.next();
        if self.options.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => {
                    if self.options.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> R<String> {
        let mut out = String::new();
        let q = self.next();
        if self.options.raw_quotes {
            out.extend(q);
        }
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.pos += 1;
                    if self.options.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let v = self.dollar()?;
                    out.push_str(&v);
                }
                Some(mut c) => {
                    self.pos += 1;
                    if c == self.escape {
                        if self.raw_escapes {
                            out.push(c);
                        }
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                self.pos += 1;
                                c = n;
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn get_env(&mut self, name: &str) -> Option<String> {
        match self.env.lookup(name) {
            Some(v) => {
                self.matched.insert(name.to_string());
                Some(v.to_string())
            }
            None => {
                self.unmatched.insert(name.to_string());
                None
            }
        }
    }

    fn dollar(&mut self) -> R<String> {
        self.pos += 1; // '$'
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name) {
                Some(v) => v,
                None if self.options.skip_unset_env => format!("${name}"),
                None => String::new(),
            });
        }
        self.pos += 1; // '{'
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            _ => {}
        }
        let name = self.name();
        let first = self.next();
        let mut modifier = first.map(String::from).unwrap_or_else(|| "\u{FFFD}".into());
        let mut op = first;
        let mut null_is_unset = false;
        match first {
            Some('}') => {
                return Ok(match self.get_env(&name) {
                    Some(v) => v,
                    None if self.options.skip_unset_env => format!("${{{name}}}"),
                    None => String::new(),
                })
            }
            Some(':') => {
                null_is_unset = true;
                op = self.next();
                modifier.push(op.unwrap_or('\u{FFFD}'));
            }
            Some('+' | '-' | '?' | '#' | '%') => {}
            Some('/') => return self.replace(name),
            _ => return Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
        let raw = matches!(op, Some('#' | '%'));
        let word = match self.stop_on(Some('}'), raw) {
            Ok((w, _)) => w,
            Err(e) => {
                if self.peek().is_none() {
                    return Err("syntax error: missing '}'".into());
                }
                return Err(e);
            }
        };
        let value = self.get_env(&name);
        if self.options.skip_unset_env && value.is_none() {
            return Ok(format!("${{{name}{modifier}{word}}}"));
        }
        let empty = value.as_deref().map(str::is_empty).unwrap_or(true);
        match op {
            Some('-') => {
                if value.is_none() || (null_is_unset && empty) {
                    Ok(word)
                } else {
                    Ok(value.unwrap_or_default())
                }
            }
            Some('+') => {
                if value.is_none() || (null_is_unset && empty) {
                    Ok(String::new())
                } else {
                    Ok(word)
                }
            }
            Some('?') => match value {
                None => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => Err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            Some(c @ ('%' | '#')) => {
                let mut pattern = word.as_str();
                let mut greedy = false;
                if let Some(p) = pattern.strip_prefix(c) {
                    greedy = true;
                    pattern = p;
                }
                let value = value.unwrap_or_default();
                let tokens = compile_pattern(pattern)
                    .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
                let chars: Vec<char> = value.chars().collect();
                if c == '#' {
                    match prefix_match(&tokens, &chars, greedy) {
                        Some(end) => Ok(chars[end..].iter().collect()),
                        None => Ok(value),
                    }
                } else {
                    match suffix_match(&tokens, &chars, greedy) {
                        Some(start) => Ok(chars[..start].iter().collect()),
                        None => Ok(value),
                    }
                }
            }
            _ => Err(format!("unsupported modifier ({modifier}) in substitution")),
        }
    }

    fn replace(&mut self, name: String) -> R<String> {
        let all = self.peek() == Some('/');
        if all {
            self.pos += 1;
        }
        let pattern = match self.stop_on(Some('/'), true) {
            Ok((p, _)) => p,
            Err(e) => {
                if self.peek().is_none() {
                    return Err("syntax error: missing '/' in ${}".into());
                }
                return Err(e);
            }
        };
        let replacement = match self.stop_on(Some('}'), true) {
            Ok((r, _)) => r,
            Err(e) => {
                if self.peek().is_none() {
                    return Err("syntax error: missing '}'".into());
                }
                return Err(e);
            }
        };
        let value = self.get_env(&name);
        let Some(value) = value else {
            if self.options.skip_unset_env {
                return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
            }
            return Ok(String::new());
        };
        let tokens = compile_pattern(&pattern)
            .map_err(|e| format!("invalid pattern ({pattern}) in substitution: {e}"))?;
        let chars: Vec<char> = value.chars().collect();
        let find = |from: usize| -> Option<(usize, usize)> {
            (from..=chars.len())
                .find_map(|s| longest_from(&tokens, &chars, s, true).map(|e| (s, e)))
        };
        if !all {
            return Ok(match find(0) {
                Some((s, e)) => {
                    let mut out: String = chars[..s].iter().collect();
                    out.push_str(&replacement);
                    out.extend(&chars[e..]);
                    out
                }
                None => value,
            });
        }
        // Go's ReplaceAllString: successive non-overlapping matches; an empty
        // match right after a previous match is not replaced.
        let mut out = String::new();
        let mut search = 0usize;
        let mut last_end = 0usize;
        while search <= chars.len() {
            let Some((s, e)) = find(search) else { break };
            out.extend(&chars[last_end..s]);
            if e > last_end || s == 0 {
                out.push_str(&replacement);
            }
            last_end = e;
            if search + 1 > e {
                search += 1;
            } else {
                search = e;
            }
        }
        if last_end <= chars.len() {
            out.extend(&chars[last_end..]);
        }
        Ok(out)
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if name.is_empty() && is_go_digit(ch) {
                while let Some(d) = self.peek() {
                    if !is_go_digit(d) {
                        break;
                    }
                    name.push(d);
                    self.pos += 1;
                }
                return name;
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.pos += 1;
                return ch.to_string();
            }
            if !is_go_letter(ch) && !is_go_digit(ch) && ch != '_' {
                break;
            }
            name.push(ch);
            self.pos += 1;
        }
        name
    }
}

fn is_go_digit(c: char) -> bool {
    c.is_ascii_digit() || (!c.is_ascii() && get_general_category(c) == G::DecimalNumber)
}

fn is_go_letter(c: char) -> bool {
    c.is_ascii_alphabetic()
        || (!c.is_ascii()
            && matches!(
                get_general_category(c),
                G::UppercaseLetter
                    | G::LowercaseLetter
                    | G::TitlecaseLetter
                    | G::ModifierLetter
                    | G::OtherLetter
            ))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Star,
    Any,
    Lit(char),
}

/// Shell pattern → tokens. `\}` and `\/` drop the backslash; `\*`, `\?`, `\\`
/// are literals; any other escape is an error, as in BuildKit.
fn compile_pattern(p: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push(Tok::Star),
            '?' => out.push(Tok::Any),
            '\\' => {
                if matches!(chars.get(i), Some('}' | '/')) {
                    continue;
                }
                match chars.get(i) {
                    Some(&n @ ('*' | '?' | '\\')) => {
                        out.push(Tok::Lit(n));
                        i += 1;
                    }
                    Some(&n) => return Err(format!("invalid escape '\\{n}'")),
                    None => return Err("invalid escape '\\'".into()),
                }
            }
            c => out.push(Tok::Lit(c)),
        }
    }
    Ok(out)
}

/// All end positions `e` such that `s[start..e]` matches `tokens`; returns the
/// largest (`greedy`) or smallest.
fn longest_from(tokens: &[Tok], s: &[char], start: usize, greedy: bool) -> Option<usize> {
    // states[j]: tokens[..j] matched up to the current position.
    let n = tokens.len();
    let mut states = vec![false; n + 1];
    states[0] = true;
    let close = |states: &mut Vec<bool>| {
        for j in 0..n {
            if states[j] && tokens[j] == Tok::Star {
                states[j + 1] = true;
            }
        }
    };
    close(&mut states);
    let mut best = None;
    let mut pos = start;
    loop {
        if states[n] {
            best = Some(pos);
            if !greedy {
                return best;
            }
        }
        if pos >= s.len() || !states.iter().any(|&b| b) {
            break;
        }
        let c = s[pos];
        let mut next = vec![false; n + 1];
        for j in 0..n {
            if !states[j] {
                continue;
            }
            match tokens[j] {
                Tok::Star if c != '\n' => next[j] = true,
                Tok::Any if c != '\n' => next[j + 1] = true,
                Tok::Lit(l) if l == c => next[j + 1] = true,
                _ => {}
            }
        }
        close(&mut next);
        states = next;
        pos += 1;
    }
    best
}

fn prefix_match(tokens: &[Tok], s: &[char], greedy: bool) -> Option<usize> {
    longest_from(tokens, s, 0, greedy)
}

/// Start of the suffix of `s` matching `tokens`: the longest (`greedy`) or shortest.
fn suffix_match(tokens: &[Tok], s: &[char], greedy: bool) -> Option<usize> {
    let rt: Vec<Tok> = tokens.iter().rev().copied().collect();
    let rs: Vec<char> = s.iter().rev().copied().collect();
    longest_from(&rt, &rs, 0, greedy).map(|len| s.len() - len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(word: &str, env: &[(&str, &str)]) -> Result<String, ExpandError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Lexer::new('\\', LexerOptions::default()).process_word(word, &env)
    }

    #[test]
    fn pattern_forms() {
        let e = [("P", "/usr/local/bin/tool.tar.gz")];
        assert_eq!(ex("${P#*/}", &e).unwrap(), "usr/local/bin/tool.tar.gz");
        assert_eq!(ex("${P##*/}", &e).unwrap(), "tool.tar.gz");
        assert_eq!(ex("${P%.*}", &e).unwrap(), "/usr/local/bin/tool.tar");
        assert_eq!(ex("${P%%.*}", &e).unwrap(), "/usr/local/bin/tool");
        assert_eq!(
            ex("${P/local/opt}", &e).unwrap(),
            "/usr/opt/bin/tool.tar.gz"
        );
        assert_eq!(ex("${P//\\//_}", &e).unwrap(), "_usr_local_bin_tool.tar.gz");
        assert_eq!(ex("${P/x*/y}", &e).unwrap(), "/usr/local/bin/tool.tar.gz");
        assert_eq!(ex("${P#\\*}", &e).unwrap(), "/usr/local/bin/tool.tar.gz");
        assert!(ex("${P#\\a}", &e).is_err());
        assert_eq!(ex("${U##*/}", &e).unwrap(), "");
        assert!(ex("${P//o}", &e).is_err());
    }

    #[test]
    fn backtick_escape() {
        let env = vec![("X".to_string(), "v".to_string())];
        let lex = Lexer::new('`', LexerOptions::default());
        assert_eq!(lex.process_word("a`$X \\b $X", &env).unwrap(), "a$X \\b v");
        assert_eq!(lex.process_word("\"q`\"\"", &env).unwrap(), "q\"");
        let words = lex.process_words("one` two three", &env).unwrap();
        assert_eq!(words, vec!["one two", "three"]);
    }

    #[test]
    fn unset_kept_when_asked() {
        let lex = Lexer::new(
            '\\',
            LexerOptions {
                skip_unset_env: true,
                ..Default::default()
            },
        );
        let e = lex.process("$A ${B} ${C:-x} ${D/a/b}", &EmptyEnv).unwrap();
        assert_eq!(e.result, "$A ${B} ${C:-x} ${D/a/b}");
        assert_eq!(e.unmatched.len(), 4);
    }

    #[test]
    fn replace_all_empty_matches() {
        let e = [("V", "abc")];
        // Go: regexp `.*?`-free pattern "" matches empty everywhere.
        assert_eq!(ex("${V//x*/-}", &e).unwrap(), "abc");
        assert_eq!(ex("${V//b/-}", &e).unwrap(), "a-c");
    }
}
