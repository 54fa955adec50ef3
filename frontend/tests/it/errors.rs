//! Every user error names FILE:LINE:COL, quotes the line and points a caret.

use crate::util::*;

#[test]
fn unknown_instruction_suggests() {
    let e = build_err("FROM alpine\nRUNN echo hi\n");
    assert_eq!(
        e.render("Dockerfile"),
        "Dockerfile:2:1: unknown instruction \"RUNN\" (did you mean RUN?)\n2 | RUNN echo hi\n    ^"
    );
}

#[test]
fn unknown_flag_suggests() {
    let e = build_err("FROM alpine\nCOPY --chwon=1:1 a /b\n");
    assert_eq!(
        e.render("Dockerfile"),
        "Dockerfile:2:6: unknown flag `--chwon` for COPY (did you mean --chown?)\n2 | COPY --chwon=1:1 a /b\n         ^"
    );
    let e = build_err("FROM alpine\nRUN --mnt=type=cache,target=/x true\n");
    assert!(
        e.message.contains("(did you mean --mount?)"),
        "{}",
        e.message
    );
}

#[test]
fn missing_argument() {
    let e = build_err("FROM alpine\nCOPY onlyone\n");
    assert!(
        e.message
            .starts_with("COPY requires at least two arguments"),
        "{}",
        e.message
    );
    assert_eq!(e.span.unwrap().start.line, 2);
    let e = build_err("FROM alpine\nWORKDIR\n");
    assert_eq!(e.message, "WORKDIR requires exactly one argument");
    let e = build_err("FROM\n");
    assert!(e
        .message
        .starts_with("FROM requires either one or three arguments"));
}

#[test]
fn bad_json_in_exec_form() {
    // Non-string JSON is rejected by the parser itself, like BuildKit.
    let e = build_err("FROM alpine\nCMD [\"echo\", 1]\n");
    assert!(
        e.message
            .contains("arrays must be comprised of strings only"),
        "{}",
        e.message
    );
    assert_eq!(
        e.render("Dockerfile").lines().next().unwrap(),
        "Dockerfile:2:1: when using JSON array syntax, arrays must be comprised of strings only"
    );
    // SHELL demands JSON.
    let e = build_err("FROM alpine\nSHELL /bin/bash -c\n");
    assert_eq!(e.message, "SHELL requires the arguments to be in JSON form");
}

#[test]
fn unterminated_heredoc() {
    let e = build_err("FROM alpine\nRUN <<EOF\necho hi\n");
    assert!(e
        .render("Dockerfile")
        .starts_with("Dockerfile:2:1: unterminated heredoc \"EOF\"\n2 | RUN <<EOF\n"));
}

#[test]
fn from_index_past_last_stage() {
    let e = build_err("FROM alpine\nCOPY --from=3 /a /b\n");
    assert!(
        e.message.starts_with("invalid stage index 3"),
        "{}",
        e.message
    );
    assert_eq!(e.span.unwrap().start.line, 2);
}

#[test]
fn from_with_variable() {
    let e = build_err("ARG SRC=builder\nFROM alpine\nCOPY --from=$SRC /a /b\n");
    assert!(
        e.message.contains("variables are not expanded in --from"),
        "{}",
        e.message
    );
    assert_eq!(e.span.unwrap().start.line, 3);
}

#[test]
fn stage_copying_from_itself() {
    let e = build_err("FROM alpine AS app\nCOPY --from=app /a /b\n");
    assert!(
        e.message
            .contains("circular dependency detected on stage: app"),
        "{}",
        e.message
    );
    let e = build_err("FROM alpine\nCOPY --from=0 /a /b\n");
    assert!(e.message.contains("circular dependency"), "{}", e.message);
}

#[test]
fn from_arg_expanding_to_nothing() {
    let e = build_err("ARG BASE\nFROM ${BASE}\n");
    assert_eq!(
        e.render("Dockerfile"),
        "Dockerfile:2:1: base name (${BASE}) should not be blank\n2 | FROM ${BASE}\n    ^"
    );
}

#[test]
fn arg_used_before_declared_is_a_warning() {
    let g = build("FROM alpine\nENV A=$VERSION\nARG VERSION=1\nENV B=$VERSION\n");
    assert_eq!(g.warnings.len(), 1, "{:?}", g.warnings);
    assert_eq!(g.warnings[0].rule, "UndefinedVar");
    assert_eq!(
        g.warnings[0].message,
        "Usage of undefined variable '$VERSION'"
    );
    assert_eq!(g.warnings[0].span.unwrap().start.line, 2);
    assert_eq!(
        g.warnings[0].render("Dockerfile"),
        "Dockerfile:2:1: warning: Usage of undefined variable '$VERSION' [UndefinedVar]"
    );
    assert_eq!(g.target_stage().config.env_value("A"), Some(""));
    assert_eq!(g.target_stage().config.env_value("B"), Some("1"));
    // FROM using an undeclared ARG.
    let g = build("FROM alpine:${TAG:-3}\n");
    assert_eq!(g.warnings[0].rule, "UndefinedArgInFrom");
    assert_eq!(g.warnings[0].message, "FROM argument 'TAG' is not declared");
}

#[test]
fn unknown_target_suggests() {
    let mut o = opts();
    o.target = Some("buidl".into());
    let e = build_err_with("FROM alpine AS build\nFROM alpine\n", &o);
    assert_eq!(
        e.message,
        "target stage \"buidl\" could not be found (did you mean build?)"
    );
}

#[test]
fn instruction_before_from() {
    let e = build_err("RUN true\nFROM alpine\n");
    assert!(e.message.contains("must come after FROM"), "{}", e.message);
}

#[test]
fn check_directive_skips_or_fails() {
    let src = "FROM alpine\nENV A=$MISSING\n";
    assert_eq!(build(src).warnings.len(), 1);
    let g = build(&format!("# check=skip=UndefinedVar\n{src}"));
    assert!(g.warnings.is_empty());
    let g = build(&format!("# check=skip=all\n{src}"));
    assert!(g.warnings.is_empty());
    let e = build_err(&format!("# check=error=true\n{src}"));
    assert_eq!(
        e.message,
        "lint violation found for rules: UndefinedVar (Usage of undefined variable '$MISSING')"
    );
    assert_eq!(e.span.unwrap().start.line, 3);
    let e = build_err(&format!("# check=bogus=1\n{src}"));
    assert!(
        e.message.starts_with("invalid check directive"),
        "{}",
        e.message
    );
}

#[test]
fn empty_continuation_line_is_a_warning() {
    let g = build("FROM alpine\nRUN echo a \\\n\n  b\n");
    assert_eq!(g.warnings[0].rule, "NoEmptyContinuation");
    assert_eq!(history(&g), vec!["RUN /bin/sh -c echo a   b # buildkit"]);
}

#[test]
fn style_checks_as_warnings() {
    let g = build(concat!(
        "FROM alpine as Build\n",
        "MAINTAINER me\n",
        "ENV A b\n",
        "WORKDIR app\n",
        "CMD echo one\n",
        "CMD [\"two\"]\n",
        "FROM alpine AS build\n",
    ));
    let rules: Vec<(&str, usize)> = g
        .warnings
        .iter()
        .map(|w| (w.rule.as_str(), w.span.unwrap().start.line))
        .collect();
    assert_eq!(
        rules,
        vec![
            ("StageNameCasing", 1),
            ("FromAsCasing", 1),
            ("MaintainerDeprecated", 2),
            ("LegacyKeyValueFormat", 3),
            ("DuplicateStageName", 7),
        ],
        "{:?}",
        g.warnings
    );
    // The first stage is pruned above, so the checks made while applying
    // instructions did not run for it; they do for a stage that is built.
    let g = build("FROM alpine\nWORKDIR app\nCMD echo one\nCMD [\"two\"]\n");
    let rules: Vec<&str> = g.warnings.iter().map(|w| w.rule.as_str()).collect();
    assert_eq!(
        rules,
        vec![
            "WorkdirRelativePath",
            "JSONArgsRecommended",
            "MultipleInstructionsDisallowed"
        ]
    );
    assert_eq!(
        g.warnings[1].message,
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
    );
    assert_eq!(g.warnings[2].span.unwrap().start.line, 3);
}

#[test]
fn casing_and_redundant_platform_checks() {
    let g = build("FROM --platform=$TARGETPLATFORM alpine\nrun true\nRUN false\n");
    let got: Vec<(&str, &str)> = g
        .warnings
        .iter()
        .map(|w| (w.rule.as_str(), w.message.as_str()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("ConsistentInstructionCasing", "Command 'run' should match the case of the command majority (uppercase)"),
            ("RedundantTargetPlatform", "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
        ]
    );
}
