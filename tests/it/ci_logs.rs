//! Build logs in CI: `--progress plain` prints every byte of a step's
//! output; under GitHub Actions each step is a `::group::` and a failing
//! step an `::error` annotation on its Dockerfile line, with a job summary;
//! under GitLab CI each step is a collapsed section.

use std::collections::BTreeMap;

use crate::util::{Hoist, Run};

/// `hoist build --progress plain` of `dockerfile` with `vars` set and the CI
/// variables of the environment running the tests removed.
fn build(h: &Hoist, dockerfile: &str, vars: &[(&str, &str)]) -> Run {
    build_with(h, dockerfile, vars, &[])
}

/// [`build`] with `extra` arguments.
fn build_with(h: &Hoist, dockerfile: &str, vars: &[(&str, &str)], extra: &[&str]) -> Run {
    let context = h.path("context");
    std::fs::create_dir_all(&context).unwrap();
    std::fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    let mut command = h.command();
    for var in ["GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "GITLAB_CI"] {
        command.env_remove(var);
    }
    command
        .args(["build", "--no-cache", "--progress", "plain"])
        .args(extra)
        .arg(&context);
    for (k, v) in vars {
        command.env(k, v);
    }
    hoist_testutil::cli::run(&mut command, None)
}

/// A step's whole output: 20 000 numbered lines, one line of 200 000
/// bytes, and a last line without a newline.
const NOISY: &str = "FROM busybox\nRUN seq 1 20000 && head -c 200000 /dev/zero | tr '\\0' x && echo && printf tail-without-newline\n";

/// The text of an output line (`SECONDS TEXT`, after the `#N `).
fn timed(line: &str) -> Option<&str> {
    let (time, text) = line.split_once(' ')?;
    time.parse::<f64>().ok().map(|_| text)
}

fn assert_whole_output(stderr: &str) {
    let lines: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("#2 "))
        .filter_map(timed)
        .collect();
    let numbers: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    let expected: Vec<String> = (1..=20000).map(|i| i.to_string()).collect();
    assert_eq!(numbers, expected, "numbered lines lost or reordered");
    assert!(
        lines.contains(&"x".repeat(200_000).as_str()),
        "the long line was clipped"
    );
    assert_eq!(
        lines.last(),
        Some(&"tail-without-newline"),
        "the last partial line is missing"
    );
}

#[test]
fn plain_progress_never_clips_a_steps_output() {
    hoist_testutil::require_root!();
    let h = Hoist::new();
    h.import_busybox("busybox");
    let r = build(&h, NOISY, &[]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_whole_output(&r.stderr);
    assert!(!r.stderr.contains("::group::"), "no CI, no markers");
    // The same in GitHub Actions, inside the step's group.
    let r = build(&h, NOISY, &[("GITHUB_ACTIONS", "true")]);
    assert_eq!(r.code(), 0, "{}", r.stderr);
    assert_whole_output(&r.stderr);
}

/// Parses GitHub Actions output: group title → the lines inside it.
fn groups(stderr: &str) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in stderr.lines() {
        if let Some(title) = line.strip_prefix("::group::") {
            assert!(
                current.is_none(),
                "a group opened inside another:\n{stderr}"
            );
            current = Some((title.to_string(), Vec::new()));
        } else if line == "::endgroup::" {
            let (title, lines) = current.take().expect("::endgroup:: without a group");
            out.insert(title, lines);
        } else if let Some((_, lines)) = current.as_mut() {
            lines.push(line.to_string());
        }
    }
    assert!(current.is_none(), "a group left open:\n{stderr}");
    out
}

#[test]
fn github_actions_gets_a_group_per_step_an_error_annotation_and_a_summary() {
    hoist_testutil::require_root!();
    let h = Hoist::new();
    h.import_busybox("busybox");
    // Two stages run at once, their output interleaving in time; then the
    // failing step at line 8.
    let dockerfile = "FROM busybox AS a\n\
                      RUN for i in 1 2 3 4 5; do echo a$i; sleep 0.1; done\n\
                      FROM busybox AS b\n\
                      RUN for i in 1 2 3 4 5; do echo b$i; sleep 0.1; done\n\
                      FROM busybox\n\
                      COPY --from=a /bin/busybox /a\n\
                      COPY --from=b /bin/busybox /b\n\
                      RUN echo about to fail && exit 7\n";
    let summary = h.path("step-summary.md");
    std::fs::write(&summary, "earlier content\n").unwrap();
    let r = build(
        &h,
        dockerfile,
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
    );
    assert_eq!(r.code(), 1, "{}", r.stderr);
    let groups = groups(&r.stderr);
    // Every step that ran is one group holding only its own lines.
    let ran: Vec<&String> = groups.keys().collect();
    assert_eq!(groups.len(), 6, "{ran:?}\n{}", r.stderr);
    for (title, lines) in &groups {
        let n = title.split(' ').next().unwrap();
        assert!(
            lines
                .iter()
                .filter(|l| !l.is_empty())
                .all(|l| l.starts_with(&format!("{n} "))),
            "group {title:?} holds another step's lines: {lines:#?}"
        );
    }
    let lines_of = |needle: &str| -> Vec<String> {
        let (_, lines) = groups.iter().find(|(t, _)| t.contains(needle)).unwrap();
        lines
            .iter()
            .filter_map(|l| l.split_once(' ').map(|(_, r)| r.to_string()))
            .collect()
    };
    let a: Vec<String> = lines_of("echo a$i")
        .into_iter()
        .filter_map(|l| timed(&l).map(str::to_string))
        .collect();
    assert_eq!(a, ["a1", "a2", "a3", "a4", "a5"]);
    // The failing step: its group, then the annotation at Dockerfile:8.
    let error = r
        .stderr
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no ::error line:\n{}", r.stderr));
    assert_eq!(
        error,
        "::error file=Dockerfile,line=8,title=RUN echo about to fail && exit 7::process \"/bin/sh -c echo about to fail && exit 7\" did not complete successfully: exit code: 7"
    );
    assert!(lines_of("exit 7")
        .iter()
        .any(|l| l.ends_with("about to fail")));

    // The job summary is appended to, with a row per step.
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.starts_with("earlier content\n### hoist build\n"), "{md}");
    assert!(
        md.contains("| `[stage-2 3/3] RUN echo about to fail && exit 7` | **error** | - |"),
        "{md}"
    );
    assert!(md.contains("**failed**: 6 steps, 0 cached, 5 run"), "{md}");
    assert!(
        !md.contains("digest"),
        "a failed build made no image:\n{md}"
    );

    // A build that succeeds: its digest, ID and tags, as
    // docker/build-push-action shows them.
    let metadata = h.path("metadata.json");
    let r = build_with(
        &h,
        "FROM busybox\nRUN echo ok\n",
        &[
            ("GITHUB_ACTIONS", "true"),
            ("GITHUB_STEP_SUMMARY", summary.to_str().unwrap()),
        ],
        &[
            "-t",
            "ci/one:1",
            "-t",
            "ci/two:2",
            "--metadata-file",
            metadata.to_str().unwrap(),
        ],
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let metadata: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&metadata).unwrap()).unwrap();
    let digest = metadata["containerimage.digest"].as_str().unwrap();
    let id = metadata["containerimage.config.digest"].as_str().unwrap();
    let md = std::fs::read_to_string(&summary).unwrap();
    let (_, second) = md.rsplit_once("### hoist build\n").unwrap();
    assert!(second.contains("**success**: 2 steps"), "{md}");
    assert!(
        second.contains(&format!("\n- digest: `{digest}`\n")),
        "{md}"
    );
    assert!(second.contains(&format!("\n- image ID: `{id}`\n")), "{md}");
    assert!(
        second.contains("\n- tags: `docker.io/ci/one:1`, `docker.io/ci/two:2`\n"),
        "{md}"
    );
}

#[test]
fn gitlab_ci_gets_a_collapsed_section_per_step() {
    hoist_testutil::require_root!();
    let h = Hoist::new();
    h.import_busybox("busybox");
    let r = build(
        &h,
        "FROM busybox\nRUN echo in-section\n",
        &[("GITLAB_CI", "true")],
    );
    assert_eq!(r.code(), 0, "{}", r.stderr);
    let start = r.stderr.find("section_start:").unwrap();
    let rest = &r.stderr[start..];
    let (marker, _) = rest.split_once('\r').unwrap();
    let name = marker.split(':').nth(2).unwrap();
    assert!(
        name.starts_with("hoist_step_") && name.ends_with("[collapsed=true]"),
        "{marker}"
    );
    // Sections open and close in pairs, the RUN's output inside its own.
    let run = r
        .stderr
        .find("#2 [stage-0 1/1] RUN echo in-section")
        .unwrap();
    let output = r.stderr[run..].find("in-section\n").unwrap() + run;
    let close = r.stderr[run..].find("section_end:").unwrap() + run;
    assert!(output < close, "{}", r.stderr);
    assert_eq!(
        r.stderr.matches("section_start:").count(),
        r.stderr.matches("section_end:").count()
    );
    assert!(!r.stderr.contains("::group::"));
}
