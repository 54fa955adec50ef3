//! Failures name the Dockerfile line, the instruction, the exit status and
//! the output.

use super::common::Env;

#[test]
fn failing_run_reports_line_status_and_output() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(
        "FROM busybox\n\
         RUN echo fine\n\
         RUN echo about to fail && echo on-stderr >&2 && exit 3\n\
         RUN echo never\n",
    );
    let run = env.build(&["-t", "bad:1"]);
    assert!(!run.status.success());
    let err = &run.stderr;
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(err.contains("RUN echo about to fail"), "{err}");
    assert!(err.contains("exit code: 3"), "{err}");
    assert!(err.contains("on-stderr"), "{err}");
    assert!(
        !err.contains("#4 never") && !err.lines().any(|l| l.ends_with(" never")),
        "{err}"
    );
    let images = super::common::hoist(env.root.path(), &["images"], None);
    assert!(!images.stdout.contains("bad"), "no tag for a failed build");
}

#[test]
fn dockerfile_errors_name_the_line() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUNN echo\n");
    let run = env.build(&[]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
    env.dockerfile("FROM nosuchimage\n");
    let run = env.build(&[]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("Dockerfile:1"), "{}", run.stderr);
    assert!(run.stderr.contains("not in the store"), "{}", run.stderr);
    // The build tried its registry first and says why that failed.
    assert!(
        run.stderr
            .contains("warning: cannot pull the base image nosuchimage:latest"),
        "{}",
        run.stderr
    );
}

#[test]
fn missing_copy_source_is_reported() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nCOPY nothere.txt /\n");
    let run = env.build(&[]);
    assert!(!run.status.success());
    assert!(run.stderr.contains("Dockerfile:2"), "{}", run.stderr);
    assert!(run.stderr.contains("nothere.txt"), "{}", run.stderr);
}
