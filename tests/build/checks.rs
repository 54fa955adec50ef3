//! `hoist build --check` / `--call check|outline|targets`: BuildKit's build
//! checks under their names and messages, each naming its Dockerfile line;
//! the `# check=` directive and `BUILDKIT_DOCKERFILE_CHECK`; buildx's exit
//! codes; the warnings after a normal build; outline and targets.

use std::path::Path;

use super::common::Env;
use hoist_testutil::cli::Run;

/// `hoist build ARGS DIR` on the env's store, DIR holding `files`.
fn in_dir(env: &Env, files: &[(&str, &str)], args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).expect("write a context file");
    }
    let mut all = vec!["build"];
    all.extend_from_slice(args);
    all.push(dir.path().to_str().expect("UTF-8 path"));
    env.hoist().run(&all)
}

fn check(env: &Env, dockerfile: &str) -> Run {
    in_dir(env, &[("Dockerfile", dockerfile)], &["--check"])
}

/// The rule's block in `--check` output: the heading with its page, the
/// message, and the source excerpt naming the line.
fn block(rule: &str, page: &str, message: &str, line: usize) -> String {
    format!(
        "WARNING: {rule} - https://docs.docker.com/go/dockerfile/rule/{page}/\n{message}\nDockerfile:{line}\n--------------------\n"
    )
}

#[test]
fn every_rule_fires_on_a_dockerfile_made_for_it_naming_its_line() {
    let env = Env::new();
    // (rule, page, Dockerfile, line, message); base images are the store's
    // busybox or scratch, so nothing is pulled.
    let cases: &[(&str, &str, &str, usize, &str)] = &[
        ("StageNameCasing", "stage-name-casing", "FROM scratch AS Base\n", 1, "Stage name 'Base' should be lowercase"),
        ("FromAsCasing", "from-as-casing", "FROM scratch AS base\nFROM base as second\n", 2, "'as' and 'FROM' keywords' casing do not match"),
        ("NoEmptyContinuation", "no-empty-continuation", "FROM busybox\nRUN echo a \\\n\n  b\n", 2, "Empty continuation line"),
        ("ConsistentInstructionCasing", "consistent-instruction-casing", "FROM busybox\nENV A=1\nlabel b=2\n", 3, "Command 'label' should match the case of the command majority (uppercase)"),
        ("DuplicateStageName", "duplicate-stage-name", "FROM scratch AS a\nFROM scratch AS a\n", 2, "Duplicate stage name \"a\", stage names should be unique"),
        ("ReservedStageName", "reserved-stage-name", "FROM scratch AS scratch\n", 1, "Stage name should not use the same name as reserved stage \"scratch\""),
        ("JSONArgsRecommended", "json-args-recommended", "FROM busybox\nCMD echo hi\n", 2, "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"),
        ("MaintainerDeprecated", "maintainer-deprecated", "FROM busybox\nMAINTAINER me@example.com\n", 2, "Maintainer instruction is deprecated in favor of using label"),
        ("UndefinedArgInFrom", "undefined-arg-in-from", "FROM busybox:${TAG:-latest}\n", 1, "FROM argument 'TAG' is not declared"),
        ("WorkdirRelativePath", "workdir-relative-path", "FROM scratch\nWORKDIR app\n", 2, "Relative workdir \"app\" can have unexpected results if the base image changes"),
        ("UndefinedVar", "undefined-var", "FROM busybox\nCOPY $nope /x\n", 2, "Usage of undefined variable '$nope'"),
        ("MultipleInstructionsDisallowed", "multiple-instructions-disallowed", "FROM busybox\nCMD [\"a\"]\nCMD [\"b\"]\n", 2, "Multiple CMD instructions should not be used in the same stage because only the last one will be used"),
        ("LegacyKeyValueFormat", "legacy-key-value-format", "FROM busybox\nENV color red\n", 2, "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format"),
        ("RedundantTargetPlatform", "redundant-target-platform", "FROM --platform=$TARGETPLATFORM busybox\n", 1, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
        ("SecretsUsedInArgOrEnv", "secrets-used-in-arg-or-env", "FROM busybox\nARG SECRET_PASSPHRASE\n", 2, "Do not use ARG or ENV instructions for sensitive data (ARG \"SECRET_PASSPHRASE\")"),
        ("InvalidDefaultArgInFrom", "invalid-default-arg-in-from", "ARG IMAGE\nFROM $IMAGE\n", 2, "Default value for ARG $IMAGE results in empty or invalid base image name"),
        ("FromPlatformFlagConstDisallowed", "from-platform-flag-const-disallowed", "FROM --platform=linux/amd64 busybox\n", 1, "FROM --platform flag should not use constant value \"linux/amd64\""),
        ("InvalidDefinitionDescription", "invalid-definition-description", "# check=experimental=InvalidDefinitionDescription\n# the base image\nFROM scratch AS base\n", 3, "Comment for FROM should follow the format: `# base <description>`"),
        ("ExposeProtoCasing", "expose-proto-casing", "FROM busybox\nEXPOSE 80/TCP\n", 2, "Defined protocol '80/TCP' in EXPOSE instruction should be lowercase"),
        ("ExposeInvalidFormat", "expose-invalid-format", "FROM busybox\nEXPOSE 127.0.0.1:80:80\n", 2, "EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:80:80'"),
    ];
    for (rule, page, dockerfile, line, message) in cases {
        let run = if *rule == "InvalidDefaultArgInFrom" {
            // As BuildKit: the default is judged, whatever --build-arg gives.
            in_dir(
                &env,
                &[("Dockerfile", dockerfile)],
                &["--check", "--build-arg", "IMAGE=busybox"],
            )
        } else {
            check(&env, dockerfile)
        };
        assert_eq!(run.code(), 1, "{rule}: {}\n{}", run.stdout, run.stderr);
        let expected = block(rule, page, message, *line);
        assert!(
            run.stdout.contains(&expected),
            "{rule}: wanted\n{expected}\nin\n{}",
            run.stdout
        );
        assert!(
            run.stdout.starts_with("Check complete, "),
            "{rule}: {}",
            run.stdout
        );
    }
}

#[test]
fn copy_of_an_ignored_file_is_named_with_its_line() {
    let env = Env::new();
    let run = in_dir(
        &env,
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY app.conf /etc/\nADD secret.txt /\n",
            ),
            (".dockerignore", "*.txt\n"),
            ("app.conf", "x"),
            ("secret.txt", "x"),
        ],
        &["--check"],
    );
    assert_eq!(run.code(), 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&block(
        "CopyIgnoredFile",
        "copy-ignored-file",
        "Attempting to Add file \"secret.txt\" that is excluded by .dockerignore",
        3
    )));
    assert!(run
        .stdout
        .starts_with("Check complete, 1 warning has been found!\n"));
}

#[test]
fn the_source_excerpt_is_buildkits() {
    let env = Env::new();
    let run = check(
        &env,
        "FROM busybox\nENV A=1\nENV B=2\nCMD echo hi\nENV C=3\nENV D=4\nENV E=5\n",
    );
    assert_eq!(
        run.stdout,
        "Check complete, 1 warning has been found!\n\
         \n\
         WARNING: JSONArgsRecommended - https://docs.docker.com/go/dockerfile/rule/json-args-recommended/\n\
         JSON arguments recommended for CMD to prevent unintended behavior related to OS signals\n\
         Dockerfile:4\n\
         --------------------\n   \
         2 |     ENV A=1\n   \
         3 |     ENV B=2\n   \
         4 | >>> CMD echo hi\n   \
         5 |     ENV C=3\n   \
         6 |     ENV D=4\n\
         --------------------\n"
    );
    assert!(run.stderr.is_empty(), "{}", run.stderr);
}

#[test]
fn clean_buildkit_dockerfiles_are_quiet_and_exit_0() {
    let env = Env::new();
    let clean = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/checks/clean");
    let mut seen = 0;
    for entry in std::fs::read_dir(&clean).expect("testdata/checks/clean") {
        let dir = entry.expect("an entry").path();
        let run = env
            .hoist()
            .run(&["build", "--check", dir.to_str().expect("UTF-8 path")]);
        assert_eq!(
            (run.code(), run.stdout.as_str()),
            (0, "Check complete, no warnings found.\n"),
            "{}: {}",
            dir.display(),
            run.stderr
        );
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} clean Dockerfiles");
}

#[test]
fn the_check_directive_skips_and_errors() {
    let env = Env::new();
    let df = "FROM scratch as base\ncopy Dockerfile .\n";
    // Both rules fire without the directive.
    let run = check(&env, df);
    assert_eq!(run.code(), 1);
    assert!(run
        .stdout
        .starts_with("Check complete, 2 warnings have been found!\n"));

    let run = check(&env, &format!("#check=skip=all\n{df}"));
    assert_eq!(
        (run.code(), run.stdout.as_str()),
        (0, "Check complete, no warnings found.\n")
    );

    let run = check(
        &env,
        &format!("#check=skip=ConsistentInstructionCasing,FromAsCasing\n{df}"),
    );
    assert_eq!(run.code(), 0, "{}", run.stdout);

    let run = check(
        &env,
        &format!("#check=skip=ConsistentInstructionCasing\n{df}"),
    );
    assert_eq!(run.code(), 1);
    assert!(run.stdout.contains("WARNING: FromAsCasing"));
    assert!(!run.stdout.contains("WARNING: ConsistentInstructionCasing"));

    // error=true: the warnings, then buildx's error, exit 1.
    let run = check(
        &env,
        &format!("#check=skip=ConsistentInstructionCasing;error=true\n{df}"),
    );
    assert_eq!(run.code(), 1);
    assert!(
        run.stdout.contains("WARNING: FromAsCasing"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("lint violation found for rules: FromAsCasing"),
        "{}",
        run.stderr
    );

    // skip=all with error=true: nothing found, nothing fails.
    let run = check(&env, &format!("#check=skip=all;error=true\n{df}"));
    assert_eq!(run.code(), 0, "{}{}", run.stdout, run.stderr);

    // Experimental rules run only when named, and skip=all does not stop them.
    let described = "# a comment that describes nothing\nFROM scratch AS base\n";
    let run = check(&env, &format!("#check=skip=all\n{described}"));
    assert_eq!(run.code(), 0, "{}", run.stdout);
    let run = check(
        &env,
        &format!("#check=skip=all;experimental=all\n{described}"),
    );
    assert_eq!(run.code(), 1);
    assert!(
        run.stdout.contains("WARNING: InvalidDefinitionDescription"),
        "{}",
        run.stdout
    );

    // A bad directive is an error naming it.
    let run = check(&env, &format!("#check=skip=all;bogus=1\n{df}"));
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr.contains("invalid check directive"),
        "{}",
        run.stderr
    );
}

#[test]
fn the_build_argument_replaces_the_directive() {
    let env = Env::new();
    let df = "#check=skip=all\nFROM scratch as base\ncopy Dockerfile .\n";
    let run = in_dir(
        &env,
        &[("Dockerfile", df)],
        &[
            "--check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=ConsistentInstructionCasing;error=true",
        ],
    );
    assert_eq!(run.code(), 1);
    assert!(
        run.stdout.contains("WARNING: FromAsCasing"),
        "{}",
        run.stdout
    );
    assert!(run
        .stderr
        .contains("lint violation found for rules: FromAsCasing"));

    let run = in_dir(
        &env,
        &[(
            "Dockerfile",
            "#check=error=true\nFROM scratch as base\ncopy Dockerfile .\n",
        )],
        &[
            "--check",
            "--build-arg",
            "BUILDKIT_DOCKERFILE_CHECK=skip=all",
        ],
    );
    assert_eq!(run.code(), 0, "{}{}", run.stdout, run.stderr);
}

#[test]
fn check_runs_no_step_and_json_is_buildkits_lint_result() {
    let env = Env::new();
    // The RUN would fail (and need the sandbox) if it ran.
    let df = "FROM busybox\nRUN exit 7\nCMD echo hi\n";
    let run = in_dir(
        &env,
        &[("Dockerfile", df)],
        &["--call", "check,format=json"],
    );
    assert_eq!(run.code(), 1, "{}", run.stderr);
    assert!(!run.stderr.contains("exit 7"), "{}", run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON on stdout");
    let w = &v["warnings"][0];
    assert_eq!(w["ruleName"], "JSONArgsRecommended");
    assert_eq!(
        w["url"],
        "https://docs.docker.com/go/dockerfile/rule/json-args-recommended/"
    );
    assert_eq!(
        w["detail"],
        "JSON arguments recommended for CMD to prevent unintended behavior related to OS signals"
    );
    assert_eq!(w["location"]["ranges"][0]["start"]["line"], 3);
    assert_eq!(v["sources"][0]["filename"], "Dockerfile");
    // Nothing was built: the store still holds busybox alone.
    let images = env.hoist().ok(&["images", "-q"]);
    assert_eq!(images.lines().count(), 1, "{images}");
}

#[test]
fn a_build_prints_the_warnings_after_its_summary() {
    let env = Env::new();
    env.dockerfile("FROM busybox\nENV color red\nCMD echo hi\n");
    let run = env.build(&["-t", "warned"]);
    run.assert_ok();
    let err = &run.stderr;
    let head = err
        .find(" 2 warnings found (use --log-level debug to expand):")
        .unwrap_or_else(|| panic!("no warnings block in\n{err}"));
    let image = err.find("writing image").expect("the build's own lines");
    assert!(head > image, "the warnings come after the build:\n{err}");
    assert!(err.contains(
        " - LegacyKeyValueFormat: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format (Dockerfile:2)\n"
    ));
    assert!(err.contains(
        " - JSONArgsRecommended: JSON arguments recommended for CMD to prevent unintended behavior related to OS signals (Dockerfile:3)\n"
    ));

    // Expanded under --log-level debug: description, page, source lines.
    let run = env.hoist().run(&[
        "--log-level",
        "debug",
        "build",
        "--progress",
        "plain",
        env.context.path().to_str().expect("UTF-8 path"),
    ]);
    run.assert_ok();
    assert!(
        run.stderr.contains(" 2 warnings found:\n"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(
        "More info: https://docs.docker.com/go/dockerfile/rule/legacy-key-value-format/\nDockerfile:2\n"
    ));

    // Quiet: the image ID alone.
    let run = env.build(&["-q"]);
    run.assert_ok();
    assert!(!run.stderr.contains("warnings found"), "{}", run.stderr);
}

#[test]
fn error_true_fails_a_build_before_any_step() {
    let env = Env::new();
    env.dockerfile("# check=error=true\nFROM busybox\nRUN exit 7\nCMD echo hi\n");
    let run = env.build(&["-t", "never"]);
    assert_ne!(run.code(), 0);
    assert!(
        run.stderr
            .contains(" - JSONArgsRecommended: JSON arguments recommended for CMD"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("lint violation found for rules: JSONArgsRecommended"),
        "{}",
        run.stderr
    );
    assert!(
        !run.stderr.contains("RUN exit 7"),
        "a step ran:\n{}",
        run.stderr
    );
    let images = env.hoist().ok(&["images", "-q"]);
    assert_eq!(images.lines().count(), 1, "{images}");
}

const OUTLINE: &str = "
ARG inherited=box
ARG inherited2=box2
ARG unused=abc${inherited2}
# sfx is a suffix
ARG sfx=\"usy${inherited}\"

FROM b${sfx} AS first
# this is not assigned to anything
ARG FOO=123
# BAR is a number
ARG BAR=456
RUN --mount=type=secret,id=npmrc,required=true --mount=type=ssh true

FROM alpine${unused} AS second
ARG BAZ
RUN --mount=type=secret,id=unused true

FROM scratch AS third
ARG ABC=a

# target defines build target
FROM third AS target
COPY --from=first /etc/passwd /

FROM second
";

#[test]
fn outline_lists_what_the_target_declares() {
    let env = Env::new();
    let run = in_dir(
        &env,
        &[("Dockerfile", OUTLINE)],
        &[
            "--call",
            "outline",
            "--target",
            "target",
            "--build-arg",
            "BAR=678",
        ],
    );
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "TARGET:      target\n\
         DESCRIPTION: defines build target\n\
         \n\
         BUILD ARG   VALUE    DESCRIPTION\n\
         inherited   box      \n\
         sfx         usybox   is a suffix\n\
         FOO         123      \n\
         BAR         678      is a number\n\
         ABC         a        \n\
         \n\
         SECRET   REQUIRED\n\
         npmrc    true\n\
         \n\
         SSH       REQUIRED\n\
         default   \n\
         \n"
    );

    let run = in_dir(
        &env,
        &[("Dockerfile", OUTLINE)],
        &["--call", "outline,format=json"],
    );
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    // The default target is the last stage (unnamed): its base's args and secret.
    let names: Vec<&str> = v["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(names, ["inherited2", "unused", "BAZ"]);
    assert_eq!(v["args"][1]["value"], "abcbox2");
    assert_eq!(v["secrets"][0]["name"], "unused");
    assert_eq!(
        v["secrets"][0]["location"]["ranges"][0]["start"]["line"],
        17
    );
    assert!(v.get("ssh").is_none(), "{v}");
}

#[test]
fn targets_lists_every_stage_with_its_description() {
    let env = Env::new();
    let df = "\n# build defines stage for compiling the binary\nFROM alpine AS build\nRUN true\n\nFROM busybox as second\nRUN false\n\nFROM alpine\nRUN false\n\n# binary returns the compiled binary\nFROM second AS binary\n";
    let run = in_dir(&env, &[("Dockerfile", df)], &["--call", "targets"]);
    run.assert_ok();
    assert_eq!(
        run.stdout,
        "TARGET           DESCRIPTION\n\
         build            defines stage for compiling the binary\n\
         second           \n\
         \x20                \n\
         binary (default) returns the compiled binary\n"
    );
    let run = in_dir(
        &env,
        &[("Dockerfile", df)],
        &["--call", "targets,format=json"],
    );
    run.assert_ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON");
    let t = &v["targets"];
    assert_eq!(t.as_array().expect("targets").len(), 4);
    assert_eq!(t[0]["name"], "build");
    assert_eq!(t[0]["base"], "alpine");
    assert_eq!(
        t[0]["description"],
        "defines stage for compiling the binary"
    );
    assert_eq!(t[0]["location"]["ranges"][0]["start"]["line"], 3);
    assert!(t[2].get("name").is_none());
    assert_eq!(t[3]["default"], true);
    assert!(t[0].get("default").is_none());
}

#[test]
fn a_bad_call_is_refused() {
    let env = Env::new();
    let run = in_dir(
        &env,
        &[("Dockerfile", "FROM scratch\n")],
        &["--call", "lintz"],
    );
    assert_ne!(run.code(), 0);
    assert!(
        run.stderr.contains("invalid --call `lintz`"),
        "{}",
        run.stderr
    );
}

#[test]
fn control_characters_of_the_dockerfile_never_reach_the_terminal() {
    let env = Env::new();
    let run = check(&env, "FROM busybox\nCMD echo \x1b[2J\tcleared\n");
    assert_eq!(run.code(), 1);
    assert!(!run.stdout.contains('\x1b'), "{:?}", run.stdout);
    assert!(
        run.stdout.contains(">>> CMD echo \\u{1b}[2J\tcleared\n"),
        "{:?}",
        run.stdout
    );
}
