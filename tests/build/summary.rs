//! The build summary at the end of plain and json progress.

use super::common::{hoist, Env};

/// The lines of plain output from `build summary (STATUS):` on.
fn summary_lines(stderr: &str) -> Vec<&str> {
    let lines: Vec<&str> = stderr.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.starts_with("build summary ("))
        .unwrap_or_else(|| panic!("no build summary in:\n{stderr}"));
    lines[start..].to_vec()
}

fn step_line<'a>(lines: &[&'a str], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(name))
        .unwrap_or_else(|| panic!("no summary line for {name} in:\n{}", lines.join("\n")))
}

const DOCKERFILE: &str = "FROM busybox\n\
    RUN head -c 300000 /dev/urandom > /random && echo made\n\
    COPY f.txt /f.txt\n";

#[test]
fn plain_progress_ends_with_a_summary_of_every_step() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("f.txt", "hello\n");
    env.dockerfile(DOCKERFILE);

    let first = env.build(&["-t", "sum:1"]);
    first.assert_ok();
    let lines = summary_lines(&first.stderr);
    assert_eq!(lines[0], "build summary (success):", "{}", first.stderr);
    let header = lines[1];
    for column in ["step", "result", "wall", "cpu", "memory", "layer"] {
        assert!(header.contains(column), "{header}");
    }
    // The RUN made ~300 kB of random data: its layer is about that size.
    let run = step_line(&lines, "1/2] RUN head");
    assert!(run.contains(" done "), "{run}");
    assert!(run.contains(" kB"), "layer size of {run}");
    let copy = step_line(&lines, "2/2] COPY f.txt /f.txt");
    assert!(copy.contains(" done "), "{copy}");
    let from = step_line(&lines, "FROM docker.io/library/busybox");
    assert!(
        from.contains(" done ") || from.contains(" cached"),
        "{from}"
    );
    let total = step_line(&lines, "total: ");
    assert!(total.contains(" 0 cached"), "{total}");
    assert!(step_line(&lines, "hoist itself: ").contains("peak RSS"));

    let again = env.build(&["-t", "sum:2"]);
    again.assert_ok();
    let lines = summary_lines(&again.stderr);
    // Step lines are those between the column header and the total.
    let steps = lines
        .iter()
        .position(|l| l.trim_start().starts_with("total: "))
        .unwrap()
        - 2;
    assert!(steps >= 4, "{}", again.stderr);
    let total = step_line(&lines, "total: ");
    assert!(
        total.contains(&format!("total: {steps} steps, {steps} cached, 0 run")),
        "{}",
        again.stderr
    );
    for name in ["1/2] RUN head", "2/2] COPY"] {
        assert!(step_line(&lines, name).contains(" cached"), "{name}");
    }
}

#[test]
fn json_progress_ends_with_a_summary_event() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("f.txt", "hello\n");
    env.dockerfile(DOCKERFILE);
    let run = hoist(
        env.root.path(),
        &[
            "build",
            "--progress",
            "json",
            "-t",
            "sum:json",
            env.context.path().to_str().unwrap(),
        ],
        None,
    );
    run.assert_ok();
    let events = run.json_events();
    let summary = events.last().expect("events");
    assert_eq!(summary["event"], "summary", "{}", run.stderr);
    assert_eq!(summary["status"], "success");
    let steps = summary["steps"].as_array().unwrap();
    let step = |prefix: &str| {
        steps
            .iter()
            .find(|s| s["name"].as_str().unwrap().contains(prefix))
            .unwrap_or_else(|| panic!("no step {prefix} in {summary:#}"))
    };
    let run_step = step("1/2] RUN");
    assert_eq!(run_step["cached"], false);
    assert_eq!(run_step["status"], "done");
    assert!(run_step["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(run_step["cpu_seconds"].as_f64().is_some(), "{run_step}");
    let layer = run_step["layer_size_bytes"].as_u64().unwrap();
    assert!((290_000..400_000).contains(&layer), "{run_step}");
    assert!(step("2/2] COPY")["layer_size_bytes"].as_u64().unwrap() > 0);

    let total = &summary["total"];
    assert_eq!(total["steps"].as_u64().unwrap() as usize, steps.len());
    assert_eq!(total["cached"], 0);
    assert!(total["layer_size_bytes"].as_u64().unwrap() >= layer);
    assert!(total["duration_seconds"].as_f64().unwrap() > 0.0);
    assert!(total["hoist_peak_rss_bytes"].as_u64().unwrap() > 1 << 20);
    // Every started step also had its own finished event before the summary.
    let finished = events.iter().filter(|e| e["event"] == "finished").count();
    assert_eq!(finished, total["executed"].as_u64().unwrap() as usize);
}

#[test]
fn a_failed_build_still_ends_with_a_summary() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo ok > /ok\nRUN echo bad; exit 3\n");
    let run = env.build(&[]);
    assert!(!run.status.success());
    let lines = summary_lines(&run.stderr);
    assert_eq!(lines[0], "build summary (failed):", "{}", run.stderr);
    assert!(step_line(&lines, "1/2] RUN echo ok").contains(" done "));
    assert!(step_line(&lines, "2/2] RUN echo bad").contains(" error"));
    // The error itself still comes last.
    let last = run.stderr.trim_end().lines().last().unwrap();
    assert!(last.contains("exit code: 3"), "{}", run.stderr);

    // In JSON, the failed step's source event names the file and line as
    // fields of their own.
    let run = hoist(
        env.root.path(),
        &[
            "build",
            "--progress",
            "json",
            env.context.path().to_str().unwrap(),
        ],
        None,
    );
    assert!(!run.status.success());
    let events = run.json_events();
    let source = events
        .iter()
        .find(|e| e["event"] == "source")
        .unwrap_or_else(|| panic!("no source event: {}", run.stderr));
    assert_eq!(source["file"], "Dockerfile", "{source}");
    assert_eq!(source["line"], 3, "{source}");
    assert_eq!(source["description"], "Dockerfile:3: RUN echo bad; exit 3");
}

/// Every stderr line of a `--progress rawjson` build, each a BuildKit
/// `SolveStatus` object.
fn raw_statuses(env: &Env, tag: &str) -> (hoist_testutil::cli::Run, Vec<serde_json::Value>) {
    let run = hoist(
        env.root.path(),
        &[
            "build",
            "--progress",
            "rawjson",
            "-t",
            tag,
            env.context.path().to_str().unwrap(),
        ],
        None,
    );
    let statuses = run
        .stderr
        .lines()
        // A failed build's error follows the stream as text.
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}\n{}", run.stderr))
        })
        .collect();
    (run, statuses)
}

fn decode(data: &serde_json::Value) -> String {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(data.as_str().unwrap())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

#[test]
fn rawjson_progress_is_buildkits_solve_status_stream() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.write("f.txt", "hello\n");
    env.dockerfile(DOCKERFILE);
    let (run, statuses) = raw_statuses(&env, "raw:1");
    run.assert_ok();
    let vertexes: Vec<&serde_json::Value> = statuses
        .iter()
        .filter_map(|s| s["vertexes"].as_array())
        .flatten()
        .collect();
    let named = |prefix: &str| -> Vec<&serde_json::Value> {
        vertexes
            .iter()
            .copied()
            .filter(|v| v["name"].as_str().unwrap_or("").contains(prefix))
            .collect()
    };
    // The RUN step: one digest, sent when it started and when it completed.
    let run_step = named("1/2] RUN head");
    assert_eq!(run_step.len(), 2, "{}", run.stderr);
    let digest = run_step[0]["digest"].as_str().unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    assert_eq!(run_step[1]["digest"], digest);
    assert!(run_step[0].get("completed").is_none());
    let (started, completed) = (
        run_step[1]["started"].as_str().unwrap(),
        run_step[1]["completed"].as_str().unwrap(),
    );
    assert!(
        started.ends_with('Z') && started <= completed,
        "{started} {completed}"
    );
    assert!(run_step[1].get("cached").is_none());
    // Its output is a base64 log on stdout (stream 1) of that vertex.
    let logs: String = statuses
        .iter()
        .filter_map(|s| s["logs"].as_array())
        .flatten()
        .filter(|l| l["vertex"] == digest && l["stream"] == 1)
        .map(|l| decode(&l["data"]))
        .collect();
    assert_eq!(logs, "made\n", "{}", run.stderr);
    // No summary table or text line: only the stream.
    assert!(
        run.stderr.lines().all(|l| l.starts_with('{')),
        "{}",
        run.stderr
    );

    // Again: every step is a vertex completed from the cache.
    let (again, statuses) = raw_statuses(&env, "raw:2");
    again.assert_ok();
    let cached: Vec<&serde_json::Value> = statuses
        .iter()
        .filter_map(|s| s["vertexes"].as_array())
        .flatten()
        .filter(|v| v["name"].as_str().unwrap_or("").contains("] RUN head"))
        .collect();
    assert_eq!(cached.len(), 1, "{}", again.stderr);
    assert_eq!(cached[0]["cached"], true);
    assert!(cached[0]["completed"].is_string());

    // A failing step's vertex carries the error.
    env.dockerfile("FROM busybox\nRUN echo bad; exit 3\n");
    let (failed, statuses) = raw_statuses(&env, "raw:3");
    assert!(!failed.status.success());
    let errors: Vec<&str> = statuses
        .iter()
        .filter_map(|s| s["vertexes"].as_array())
        .flatten()
        .filter_map(|v| v["error"].as_str())
        .collect();
    assert!(
        errors.iter().any(|e| e.contains("exit code: 3")),
        "{}",
        failed.stderr
    );
}
