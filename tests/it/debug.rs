//! `hoist debug dump-ast`: BuildKit's parser dump format, from the CLI.

use crate::util::Hoist;

/// Every positive case of BuildKit's parser test data dumps exactly as
/// BuildKit's `result` file says (the frontend crate checks this in-process;
/// here it is the command a user runs).
#[test]
fn dump_ast_matches_buildkit_results() {
    // Vendored in the repository (testdata/buildkit-conformance/SOURCE.md).
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/buildkit-conformance/parser/testfiles");
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("BuildKit conformance data at {}: {e}", dir.display()));
    let h = Hoist::new();
    let (mut cases, mut files_present) = (0, 0);
    for entry in entries {
        let case = entry.unwrap().path();
        files_present += std::fs::read_dir(&case).unwrap().count();
        let (file, result) = (case.join("Dockerfile"), case.join("result"));
        let out = h.ok(&["debug", "dump-ast", file.to_str().unwrap()]);
        assert_eq!(
            out,
            std::fs::read_to_string(&result)
                .unwrap_or_else(|e| panic!("{}: {e}", result.display())),
            "{}",
            case.display()
        );
        cases += 1;
    }
    // Each case is a Dockerfile and its result: every file present was read.
    println!(
        "checked {} of {files_present} files ({cases} cases) in {}",
        2 * cases,
        dir.display()
    );
    assert!(cases > 0, "no cases in {}", dir.display());
    assert_eq!(2 * cases, files_present, "stray files in {}", dir.display());
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
