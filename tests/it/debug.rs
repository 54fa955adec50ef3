//! `hoist debug dump-ast`: BuildKit's parser dump format, from the CLI.

use crate::util::Hoist;

/// Every positive case of BuildKit's parser test data dumps exactly as
/// BuildKit's `result` file says (the frontend crate checks this in-process;
/// here it is the command a user runs).
#[test]
fn dump_ast_matches_buildkit_results() {
    // `shared/` sits beside the clone; a worktree may sit deeper.
    let found = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("shared/conformance/buildkit/parser/testfiles"))
        .find(|d| d.is_dir());
    let Some(dir) = found else {
        if std::env::var_os("HOIST_REQUIRE_ROOT_TESTS").is_some_and(|v| v == "1") {
            panic!("BuildKit conformance data missing beside the clone");
        }
        eprintln!("skipping: BuildKit conformance data missing beside the clone");
        return;
    };
    let entries = std::fs::read_dir(&dir).unwrap();
    let h = Hoist::new();
    let mut checked = 0;
    for entry in entries {
        let case = entry.unwrap().path();
        let (file, result) = (case.join("Dockerfile"), case.join("result"));
        if !result.exists() {
            continue;
        }
        let out = h.ok(&["debug", "dump-ast", file.to_str().unwrap()]);
        assert_eq!(
            out,
            std::fs::read_to_string(&result).unwrap(),
            "{}",
            case.display()
        );
        checked += 1;
    }
    assert!(
        checked > 20,
        "only {checked} cases found in {}",
        dir.display()
    );
}

#[test]
fn dump_ast_names_file_line_and_column_on_error() {
    let h = Hoist::new();
    let file = h.path("Dockerfile");
    std::fs::write(&file, "FROM busybox\nRUN <<EOF\necho hi\n").unwrap();
    let err = h.fails(&["debug", "dump-ast", file.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "error: {}:2:1: unterminated heredoc \"EOF\"",
            file.display()
        )),
        "{err}"
    );
}
