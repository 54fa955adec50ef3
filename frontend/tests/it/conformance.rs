//! BuildKit's own parser and shell-lexer test data, 100 % of it.

use std::path::{Path, PathBuf};

use hoist_frontend::shell::{Lexer, LexerOptions};
use hoist_frontend::{dump_ast, parse};

/// `shared/conformance/buildkit` beside the repository clone. CI clones the
/// repository with `shared/` beside it (`<crate>/../../shared`); a worktree
/// may sit deeper, so the nearest ancestor holding `shared/` is used.
fn data_dir() -> Option<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let primary = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/conformance/buildkit"
    ));
    let found = std::iter::once(primary.to_path_buf())
        .chain(
            manifest
                .ancestors()
                .map(|a| a.join("shared/conformance/buildkit")),
        )
        .find(|d| d.is_dir());
    if let Some(dir) = found {
        return Some(dir);
    }
    if std::env::var_os("HOIST_REQUIRE_ROOT_TESTS").is_some_and(|v| v == "1") {
        panic!("conformance data missing at {}", primary.display());
    }
    eprintln!(
        "skipping: conformance data missing at {}",
        primary.display()
    );
    None
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn testfiles_dump_matches_result() {
    let Some(root) = data_dir() else { return };
    let cases = subdirs(&root.join("parser/testfiles"));
    assert!(
        cases.len() >= 33,
        "expected 33 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        let want = std::fs::read_to_string(case.join("result")).unwrap();
        match parse(&src) {
            Ok(ast) => {
                let got = dump_ast(&ast);
                if got != want {
                    failures.push(format!(
                        "{}:\n--- want\n{want}--- got\n{got}",
                        case.display()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: parse error {e}", case.display())),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn testfiles_negative_are_rejected() {
    let Some(root) = data_dir() else { return };
    let cases = subdirs(&root.join("parser/testfiles-negative"));
    assert!(cases.len() >= 4);
    for case in &cases {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        assert!(
            parse(&src).is_err(),
            "{} was accepted but must be rejected",
            case.display()
        );
    }
}

#[test]
fn testfile_line_spans() {
    let Some(root) = data_dir() else { return };
    let src = std::fs::read_to_string(root.join("parser/testfile-line/Dockerfile")).unwrap();
    let ast = parse(&src).unwrap();
    assert_eq!(ast.lines, (5, 31));
    let spans: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.span.start.line, n.span.end.line))
        .collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)]);
}

#[test]
fn shell_env_var_test() {
    let Some(root) = data_dir() else { return };
    let text = std::fs::read_to_string(root.join("shell/envVarTest")).unwrap();
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lex = Lexer::new('\\', LexerOptions::default());
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let parts: Vec<&str> = line.splitn(3, '|').collect();
        assert_eq!(parts.len(), 3, "bad vector line {line:?}");
        let platform = parts[0].trim();
        if platform != "A" && platform != "U" {
            continue;
        }
        let (input, want) = (parts[1].trim(), parts[2].trim());
        checked += 1;
        match (lex.process_word(input, &env), want) {
            (Err(_), "error") => {}
            (Ok(got), w) if got == w => {}
            (got, w) => failures.push(format!("{input:?}: want {w:?}, got {got:?}")),
        }
    }
    assert!(checked > 200, "only {checked} vectors found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_words_test() {
    let Some(root) = data_dir() else { return };
    let text = std::fs::read_to_string(root.join("shell/wordsTest")).unwrap();
    let lex = Lexer::new('\\', LexerOptions::default());
    let mut env: Vec<(String, String)> = Vec::new();
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let rest = rest.trim_start();
            let (k, v) = rest.split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, want)) = line.split_once('|') else {
            continue;
        };
        let input = input.trim();
        let want = want.trim_start();
        checked += 1;
        let got = lex.process_words(input, &env);
        let ok = match &got {
            Err(_) => want == "error",
            Ok(words) => *words == want.split(',').collect::<Vec<_>>(),
        };
        if !ok {
            failures.push(format!("{input:?}: want {want:?}, got {got:?}"));
        }
    }
    assert!(checked >= 20, "only {checked} vectors found");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
