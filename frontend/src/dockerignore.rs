//! `.dockerignore` with Docker's semantics (moby/patternmatcher), which are not
//! .gitignore's:
//!
//! - patterns are paths relative to the context root: a leading `/` is
//!   dropped, `./a/../b` means `b`, and `foo` matches only `foo` at the root
//!   (use `**/foo` for any depth);
//! - `*` and `?` never cross `/`; `**` matches any number of directories;
//!   `[a-z]` classes and `\` escapes work as in Go's `filepath.Match`;
//! - a path is excluded when it or one of its parent directories matches;
//! - `!pattern` re-includes, and the last matching line wins;
//! - lines starting with `#` are comments, surrounding spaces are trimmed.
//!
//! Reading the file is the caller's job; [`ignore_file_candidates`] says which
//! file to read for a given Dockerfile (`NAME.dockerignore` beside a Dockerfile
//! named NAME takes precedence over the context's `.dockerignore`).
//!
//! ```
//! use hoist_frontend::dockerignore::Matcher;
//! let m = Matcher::parse("node_modules\n**/*.log\n!keep.log\n").unwrap();
//! assert!(m.is_excluded("node_modules/x/y.js"));
//! assert!(m.is_excluded("a/b/debug.log"));
//! assert!(!m.is_excluded("keep.log"));
//! assert!(!m.is_excluded("src/node_modules"));
//! ```

/// A bad pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid .dockerignore pattern {pattern:?} on line {line}: {reason}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// 1-based line.
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

/// Where an ignore file is looked up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IgnoreFileLocation {
    /// A path next to the Dockerfile (the Dockerfile's path plus `.dockerignore`).
    BesideDockerfile(String),
    /// A path relative to the root of the build context.
    ContextRoot(String),
}

/// The ignore files to try, in order; use the first that exists.
///
/// ```
/// use hoist_frontend::dockerignore::{ignore_file_candidates, IgnoreFileLocation::*};
/// assert_eq!(
///     ignore_file_candidates("docker/app.Dockerfile"),
///     vec![BesideDockerfile("docker/app.Dockerfile.dockerignore".into()), ContextRoot(".dockerignore".into())]
/// );
/// ```
pub fn ignore_file_candidates(dockerfile_path: &str) -> Vec<IgnoreFileLocation> {
    let mut out = Vec::new();
    let name = dockerfile_path.trim_end_matches('/');
    if !name.is_empty() && name != "-" {
        out.push(IgnoreFileLocation::BesideDockerfile(format!(
            "{name}.dockerignore"
        )));
    }
    out.push(IgnoreFileLocation::ContextRoot(".dockerignore".into()));
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character except `/`.
    One,
    /// `*`: any run without `/`.
    Star,
    /// `**` followed by more pattern: empty or anything ending in `/`.
    Dirs,
    /// `**` at the end: anything.
    Any,
    /// `[...]`.
    Class(Vec<(char, char)>, bool),
}

#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    exclusion: bool,
    toks: Vec<Tok>,
}

/// Compiled `.dockerignore` patterns.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

/// Go's `filepath.Clean` for slash paths (the frontend's one path cleaner).
pub(crate) fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let abs = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !abs {
                    parts.push("..");
                }
            }
            other => parts.push(other),
        }
    }
    let j = parts.join("/");
    match (abs, j.is_empty()) {
        (true, _) => format!("/{j}"),
        (false, true) => ".".into(),
        _ => j,
    }
}

fn compile(p: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = p.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => {
                if chars.get(i) == Some(&'*') {
                    i += 1;
                    if chars.get(i) == Some(&'/') {
                        i += 1;
                    }
                    if i >= chars.len() {
                        toks.push(Tok::Any);
                    } else {
                        toks.push(Tok::Dirs);
                    }
                } else {
                    toks.push(Tok::Star);
                }
            }
            '?' => toks.push(Tok::One),
            '\\' => match chars.get(i) {
                Some(&n) => {
                    toks.push(Tok::Lit(n));
                    i += 1;
                }
                None => toks.push(Tok::Lit('\\')),
            },
            '[' => {
                let mut negated = false;
                if matches!(chars.get(i), Some('^')) {
                    negated = true;
                    i += 1;
                }
                let mut ranges = Vec::new();
                let mut closed = false;
                let mut first = true;
                while i < chars.len() {
                    let mut lo = chars[i];
                    if lo == ']' && !first {
                        closed = true;
                        i += 1;
                        break;
                    }
                    first = false;
                    i += 1;
                    if lo == '\\' {
                        lo = *chars.get(i).ok_or("syntax error in pattern")?;
                        i += 1;
                    }
                    let mut hi = lo;
                    if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|c| *c != ']') {
                        hi = chars[i + 1];
                        i += 2;
                        if hi == '\\' {
                            hi = *chars.get(i).ok_or("syntax error in pattern")?;
                            i += 1;
                        }
                        if hi < lo {
                            return Err("syntax error in pattern".into());
                        }
                    }
                    ranges.push((lo, hi));
                }
                if !closed {
                    return Err("syntax error in pattern".into());
                }
                toks.push(Tok::Class(ranges, negated));
            }
            c => toks.push(Tok::Lit(c)),
        }
    }
    Ok(toks)
}

/// Whether `toks` matches all of `s` (an NFA walk; `Dirs` has an "inside"
/// state it can leave only right after a `/`, as `(.*/)?` does).
fn matches(toks: &[Tok], s: &[char]) -> bool {
    let n = toks.len();
    let closure = |entry: &mut Vec<bool>| {
        for j in 0..n {
            if entry[j] && matches!(toks[j], Tok::Star | Tok::Dirs | Tok::Any) {
                entry[j + 1] = true;
            }
        }
    };
    let mut entry = vec![false; n + 1];
    let mut inside = vec![false; n + 1];
    entry[0] = true;
    closure(&mut entry);
    for &c in s {
        let mut next_entry = vec![false; n + 1];
        let mut next_inside = vec![false; n + 1];
        for j in 0..n {
            if !entry[j] && !inside[j] {
                continue;
            }
            match &toks[j] {
                Tok::Dirs => {
                    next_inside[j] = true;
                    if c == '/' {
                        next_entry[j + 1] = true;
                    }
                }
                _ if !entry[j] => {}
                Tok::Lit(l) if *l == c => next_entry[j + 1] = true,
                Tok::One if c != '/' => next_entry[j + 1] = true,
                Tok::Star if c != '/' => next_entry[j] = true,
                Tok::Any => next_entry[j] = true,
                Tok::Class(ranges, neg) => {
                    let hit = ranges.iter().any(|(lo, hi)| *lo <= c && c <= *hi);
                    if hit != *neg && c != '/' {
                        next_entry[j + 1] = true;
                    }
                }
                _ => {}
            }
        }
        closure(&mut next_entry);
        if !next_entry.iter().chain(next_inside.iter()).any(|&b| b) {
            return false;
        }
        entry = next_entry;
        inside = next_inside;
    }
    entry[n]
}

impl Pattern {
    fn matches(&self, path: &str) -> bool {
        // Docker's special cases: `**foo` (only literals after a leading `**`)
        // is a suffix match, and `**/foo` also matches `foo` itself.
        let chars: Vec<char> = path.chars().collect();
        if matches(&self.toks, &chars) {
            return true;
        }
        if let Some(suffix) = self.text.strip_prefix("**") {
            if !suffix.is_empty()
                && !suffix.contains(['*', '?', '[', ']', '\\'])
                && path.ends_with(suffix)
            {
                return true;
            }
        }
        false
    }
}

impl Matcher {
    /// Parses the text of a `.dockerignore` file.
    pub fn parse(text: &str) -> Result<Matcher, PatternError> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let raw = if i == 0 {
                raw.strip_prefix('\u{feff}').unwrap_or(raw)
            } else {
                raw
            };
            if raw.starts_with('#') {
                continue;
            }
            let p = raw.trim();
            if p.is_empty() {
                continue;
            }
            let (invert, mut p) = match p.strip_prefix('!') {
                Some(rest) => (true, rest.trim().to_string()),
                None => (false, p.to_string()),
            };
            if !p.is_empty() {
                p = clean(&p);
                if p.len() > 1 && p.starts_with('/') {
                    p.remove(0);
                }
            }
            if invert {
                p.insert(0, '!');
            }
            lines.push((i + 1, p));
        }
        Self::from_patterns_with_lines(lines)
    }

    /// Builds a matcher from already-split patterns (e.g. `--exclude` flags).
    pub fn from_patterns<I, S>(patterns: I) -> Result<Matcher, PatternError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::from_patterns_with_lines(
            patterns
                .into_iter()
                .enumerate()
                .map(|(i, p)| (i + 1, p.as_ref().to_string()))
                .collect(),
        )
    }

    fn from_patterns_with_lines(lines: Vec<(usize, String)>) -> Result<Matcher, PatternError> {
        let mut patterns = Vec::new();
        for (line, p) in lines {
            let p = p.trim();
            if p.is_empty() {
                continue;
            }
            let p = clean(p);
            let (exclusion, body) = match p.strip_prefix('!') {
                Some("") => {
                    return Err(PatternError {
                        pattern: p.clone(),
                        line,
                        reason: "illegal exclusion pattern: \"!\"".into(),
                    })
                }
                Some(rest) => (true, rest.to_string()),
                None => (false, p.clone()),
            };
            let toks = compile(&body).map_err(|reason| PatternError {
                pattern: p.clone(),
                line,
                reason,
            })?;
            patterns.push(Pattern {
                text: body,
                exclusion,
                toks,
            });
        }
        Ok(Matcher { patterns })
    }

    /// The patterns, exclusions with their `!`.
    pub fn patterns(&self) -> Vec<String> {
        self.patterns
            .iter()
            .map(|p| {
                if p.exclusion {
                    format!("!{}", p.text)
                } else {
                    p.text.clone()
                }
            })
            .collect()
    }

    /// Whether the context path (relative, `/`-separated) is left out of the
    /// context: it or a parent directory matches, and the last matching
    /// pattern is not a `!` exception.
    pub fn is_excluded(&self, path: &str) -> bool {
        let file = clean(path.trim_start_matches('/'));
        if file == "." {
            return false;
        }
        let parents: Vec<&str> = file.split('/').collect();
        let mut matched = false;
        for p in &self.patterns {
            // An inclusion only matters while not matched, an exclusion only after.
            if p.exclusion != matched {
                continue;
            }
            let mut m = p.matches(&file);
            if !m && parents.len() > 1 {
                for i in 1..parents.len() {
                    if p.matches(&parents[..i].join("/")) {
                        m = true;
                        break;
                    }
                }
            }
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// For walkers: an excluded directory can be skipped entirely unless an
    /// exception pattern might re-include something below it.
    pub fn can_skip_dir(&self, dir: &str) -> bool {
        if !self.is_excluded(dir) {
            return false;
        }
        let prefix = format!("{}/", clean(dir.trim_start_matches('/')));
        !self.patterns.iter().any(|p| {
            p.exclusion && (format!("{}/", p.text).starts_with(&prefix) || p.text.starts_with("**"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Matcher {
        Matcher::parse(s).unwrap()
    }

    #[test]
    fn relative_to_root_and_cleaned() {
        let x = m("/foo\n./bar/../baz\n");
        assert_eq!(x.patterns(), vec!["foo", "baz"]);
        assert!(x.is_excluded("foo"));
        assert!(x.is_excluded("foo/inner/file"));
        assert!(!x.is_excluded("a/foo"));
        assert!(x.is_excluded("baz"));
    }

    #[test]
    fn stars_and_double_stars() {
        let x = m("*.md\n**/*.tmp\ndocs/**\na/**/z\n");
        assert!(x.is_excluded("README.md"));
        assert!(!x.is_excluded("sub/README.md"), "* does not cross /");
        assert!(x.is_excluded("x.tmp"));
        assert!(x.is_excluded("a/b/c/x.tmp"));
        assert!(x.is_excluded("docs/a/b"));
        assert!(!x.is_excluded("docs"), "docs/** needs something below docs");
        assert!(x.is_excluded("a/z"));
        assert!(x.is_excluded("a/b/c/z"));
        assert!(!x.is_excluded("a/bz"));
        let y = m("**\n!src\n");
        assert!(y.is_excluded("anything/at/all"));
        assert!(!y.is_excluded("src"));
        // The parent `src` matches the exception, so children are included too.
        assert!(!y.is_excluded("src/main.rs"));
    }

    #[test]
    fn exceptions_and_order() {
        let x = m("*.log\n!important.log\n");
        assert!(x.is_excluded("debug.log"));
        assert!(!x.is_excluded("important.log"));
        let y = m("!important.log\n*.log\n");
        assert!(y.is_excluded("important.log"), "later lines win");
        // Excluding a directory excludes its contents even with an exception for
        // a file inside, unless the exception names the path.
        let z = m("build\n!build/keep.txt\n");
        assert!(z.is_excluded("build/other"));
        assert!(!z.is_excluded("build/keep.txt"));
        assert!(!z.can_skip_dir("build"));
        assert!(m("build\n").can_skip_dir("build"));
    }

    #[test]
    fn classes_escapes_comments() {
        let x = m("# comment\n  spaced.txt  \nfile[0-9].txt\nq\\*\n?x\n");
        assert!(x.is_excluded("spaced.txt"));
        assert!(x.is_excluded("file7.txt"));
        assert!(!x.is_excluded("filex.txt"));
        assert!(x.is_excluded("q*"));
        assert!(!x.is_excluded("qq"));
        assert!(x.is_excluded("ax"));
        assert!(!x.is_excluded("/x") && !x.is_excluded("abx"));
        assert!(Matcher::parse("[a-\n").is_err());
        assert!(
            Matcher::parse("!\n").is_err(),
            "a lone ! is illegal, as in Docker"
        );
    }

    #[test]
    fn docker_documentation_example() {
        // The example from Docker's .dockerignore documentation.
        let x = m("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
        assert!(x.is_excluded("somedir/temporary.txt"));
        assert!(x.is_excluded("somedir/temp"));
        assert!(!x.is_excluded("temporary.txt"));
        assert!(x.is_excluded("somedir/subdir/temporary.txt"));
        assert!(x.is_excluded("tempa"));
        assert!(!x.is_excluded("tempab"));
        let y = m("*.md\n!README*.md\nREADME-secret.md\n");
        assert!(y.is_excluded("CHANGES.md"));
        assert!(!y.is_excluded("README-public.md"));
        assert!(y.is_excluded("README-secret.md"));
    }

    #[test]
    fn suffix_form() {
        let x = m("**foo\n");
        assert!(x.is_excluded("barfoo"));
        assert!(x.is_excluded("a/b/foo"));
        let y = m("**/foo\n");
        assert!(y.is_excluded("foo"));
        assert!(y.is_excluded("a/foo"));
        assert!(!y.is_excluded("afoo"));
    }
}
