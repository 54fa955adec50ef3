//! BuildKit's own parser and shell-lexer test data, 100 % of it.

use std::path::{Path, PathBuf};

use hoist_frontend::shell::{Lexer, LexerOptions};
use hoist_frontend::{dump_ast, parse};

/// The vendored copy in `testdata/buildkit-conformance` (SOURCE.md there
/// names the upstream commit). It is part of the repository, so a missing
/// directory is a broken checkout and fails every test here.
fn data_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/buildkit-conformance");
    assert!(
        dir.is_dir(),
        "BuildKit conformance data missing at {}",
        dir.display()
    );
    dir
}

/// Every regular file below `dir`, so that a test can prove it read all of
/// them (a case dropped by a filter would otherwise pass unnoticed).
fn files_under(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| if p.is_dir() { files_under(&p) } else { 1 })
        .sum()
}

/// Prints how many files a test checked and fails unless that is every file
/// present in `dir`, and at least one.
fn report_checked(what: &str, dir: &Path, checked: usize) {
    let present = files_under(dir);
    println!(
        "{what}: checked {checked} of {present} files in {}",
        dir.display()
    );
    assert!(checked > 0, "{what}: no files checked in {}", dir.display());
    assert_eq!(
        checked,
        present,
        "{what}: checked {checked} files but {} holds {present}",
        dir.display()
    );
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
    let root = data_dir();
    let dir = root.join("parser/testfiles");
    let cases = subdirs(&dir);
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
    // Each case is a Dockerfile and its result.
    report_checked("parser/testfiles", &dir, 2 * cases.len());
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
    let root = data_dir();
    let dir = root.join("parser/testfiles-negative");
    let cases = subdirs(&dir);
    for case in &cases {
        let src = std::fs::read_to_string(case.join("Dockerfile")).unwrap();
        assert!(
            parse(&src).is_err(),
            "{} was accepted but must be rejected",
            case.display()
        );
    }
    report_checked("parser/testfiles-negative", &dir, cases.len());
}

#[test]
fn testfile_line_spans() {
    let root = data_dir();
    let src = std::fs::read_to_string(root.join("parser/testfile-line/Dockerfile")).unwrap();
    let ast = parse(&src).unwrap();
    assert_eq!(ast.lines, (5, 31));
    let spans: Vec<(usize, usize)> = ast
        .nodes
        .iter()
        .map(|n| (n.span.start.line, n.span.end.line))
        .collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)]);
    report_checked(
        "parser/testfile-line",
        &root.join("parser/testfile-line"),
        1,
    );
}

#[test]
fn shell_env_var_test() {
    let root = data_dir();
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
    println!("shell/envVarTest: {checked} vectors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn shell_words_test() {
    let root = data_dir();
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
    println!("shell/wordsTest: {checked} vectors");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Every file of the vendored data is read by one of the tests above, so a
/// file added on a refresh from upstream cannot sit there unchecked.
#[test]
fn every_vendored_file_is_checked() {
    let root = data_dir();
    let parser = |d: &str| files_under(&root.join("parser").join(d));
    let shell: Vec<String> = std::fs::read_dir(root.join("shell"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut shell_sorted = shell.clone();
    shell_sorted.sort();
    assert_eq!(shell_sorted, ["envVarTest", "wordsTest"]);
    let known = parser("testfiles")
        + parser("testfiles-negative")
        + parser("testfile-line")
        + shell.len()
        + ["LICENSE", "SOURCE.md"]
            .iter()
            .filter(|f| root.join(f).is_file())
            .count();
    report_checked("buildkit-conformance", &root, known);
}
