//! `hoist build --dry-run` needs neither network nor base images: what the
//! store lacks is planned as unresolved, with a warning, exit 0.

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::common::Env;

/// A loopback listener that counts connections and drops them at once: the
/// "registry" and proxy every network attempt of hoist would reach.
fn trap() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    let port = listener.local_addr().expect("its address").port();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, hits)
}

/// A multi-stage Dockerfile on images the store does not hold: docker.io's
/// golang, an image on the trap, and busybox (held) in a stage the target
/// does not need.
fn dockerfile(port: u16) -> String {
    format!(
        "FROM golang:1.22 AS build\n\
         WORKDIR /src\n\
         COPY main.go .\n\
         RUN go build -o /app main.go\n\
         \n\
         FROM busybox AS tools\n\
         RUN echo unused\n\
         \n\
         FROM 127.0.0.1:{port}/absent/image:tag\n\
         COPY --from=build /app /app\n\
         ENTRYPOINT [\"/app\"]\n"
    )
}

/// `hoist build --dry-run ARGS` with docker.io mirrored to the trap and every
/// proxy variable pointing at it: a network attempt is counted, not hung on.
fn dry_run(env: &Env, port: u16, args: &[&str]) -> (hoist_testutil::cli::Run, Duration) {
    let config = env.scratch.path().join("config");
    std::fs::create_dir_all(config.join("hoist")).expect("mkdir config");
    std::fs::write(
        config.join("hoist/config.toml"),
        format!("[registry]\nregistry-mirrors = [\"http://127.0.0.1:{port}\"]\ninsecure-registries = [\"127.0.0.1\"]\n"),
    )
    .expect("write the registry config");
    let mut command = env.hoist().command();
    command
        .arg("build")
        .arg("--dry-run")
        .args(args)
        .arg(env.context.path())
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
    ] {
        command.env(var, format!("http://127.0.0.1:{port}"));
    }
    let started = Instant::now();
    let run = hoist_testutil::cli::run(&mut command, None);
    (run, started.elapsed())
}

fn assert_offline(run: &hoist_testutil::cli::Run, took: Duration, hits: &AtomicUsize) {
    assert_eq!(
        run.code(),
        0,
        "stdout: {}\nstderr: {}",
        run.stdout,
        run.stderr
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "a dry run must not reach for a registry: {}",
        run.stderr
    );
    // Generous: the point is that nothing waits on a network timeout.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert!(!run.stderr.contains("Pulling"), "{}", run.stderr);
}

fn warnings(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.starts_with("warning:"))
        .collect()
}

#[test]
fn unresolved_bases_are_planned_and_warned_about() {
    let env = Env::new();
    let (port, hits) = trap();
    env.dockerfile(&dockerfile(port));
    env.write("main.go", "package main\nfunc main() {}\n");
    let (run, took) = dry_run(&env, port, &[]);
    assert_offline(&run, took, &hits);

    assert_eq!(
        warnings(&run.stderr),
        vec![
            "warning: FROM golang:1.22 (Dockerfile:1): not in the store (a dry run does not pull; \
             `hoist pull` it for a complete plan); its config and ONBUILD triggers are unknown"
                .to_owned(),
            format!(
                "warning: FROM 127.0.0.1:{port}/absent/image:tag (Dockerfile:9): not in the store \
                 (a dry run does not pull; `hoist pull` it for a complete plan); its config and \
                 ONBUILD triggers are unknown"
            ),
        ],
        "{}",
        run.stderr
    );
    let plan = &run.stdout;
    assert!(
        plan.starts_with("target: stage 2 (unnamed), platform "),
        "{plan}"
    );
    assert!(plan.contains("\npruned stages: 1 (tools)\n"), "{plan}");
    assert!(
        plan.contains("image docker.io/library/golang:1.22 ("),
        "{plan}"
    );
    assert!(
        plan.contains(&format!("image 127.0.0.1:{port}/absent/image:tag (")),
        "{plan}"
    );
    assert_eq!(
        plan.matches(") unresolved: config and ONBUILD unknown\n")
            .count(),
        2,
        "{plan}"
    );
    // The steps on the unresolved bases are in the plan: they will run.
    for step in [
        "[build 1/3] WORKDIR /src",
        "[build 2/3] COPY main.go .",
        "[build 3/3] RUN go build -o /app main.go",
        "COPY --from=build /app /app",
    ] {
        assert!(plan.contains(step), "{step} in {plan}");
    }
    assert!(
        plan.contains("stage 0 (build) from golang:1.22 (unresolved) -> #"),
        "{plan}"
    );
    assert!(
        plan.contains(&format!(
            "stage 2 (unnamed) from 127.0.0.1:{port}/absent/image:tag (unresolved) -> #"
        )),
        "{plan}"
    );
    // The pruned stage's busybox is neither planned nor warned about.
    assert!(!plan.contains("busybox"), "{plan}");
}

#[test]
fn the_json_plan_lists_the_unresolved_images() {
    let env = Env::new();
    let (port, hits) = trap();
    env.dockerfile(&dockerfile(port));
    env.write("main.go", "package main\nfunc main() {}\n");
    let (run, took) = dry_run(&env, port, &["--format", "json"]);
    assert_offline(&run, took, &hits);
    assert_eq!(warnings(&run.stderr).len(), 2, "{}", run.stderr);

    let plan: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON plan");
    let unresolved = plan["unresolved"].as_array().expect("an unresolved list");
    let refs: Vec<(&str, u64, &str)> = unresolved
        .iter()
        .map(|u| {
            (
                u["reference"].as_str().unwrap(),
                u["line"].as_u64().unwrap(),
                u["source"].as_str().unwrap(),
            )
        })
        .collect();
    let absent = format!("127.0.0.1:{port}/absent/image:tag");
    let from_absent = format!("FROM {absent}");
    assert_eq!(
        refs,
        vec![
            ("docker.io/library/golang:1.22", 1, "FROM golang:1.22"),
            (absent.as_str(), 9, from_absent.as_str()),
        ]
    );
    let vertices = plan["vertices"].as_array().expect("vertices");
    for u in unresolved {
        let v = &vertices[u["vertex"].as_u64().unwrap() as usize];
        assert_eq!(v["op"]["op"], "image", "{v}");
        assert_eq!(v["op"]["reference"], u["reference"], "{v}");
        assert_eq!(v["unresolved"], true, "{v}");
    }
    let marked = vertices.iter().filter(|v| v["unresolved"] == true).count();
    assert_eq!(marked, 2, "only the unresolved images are marked");
    let names: Vec<&str> = vertices.iter().filter_map(|v| v["name"].as_str()).collect();
    assert!(
        names.contains(&"[build 3/3] RUN go build -o /app main.go"),
        "{names:?}"
    );
    assert_eq!(plan["pruned"][0]["name"], "tools", "{}", plan["pruned"]);
    assert_eq!(
        plan["stages"][plan["target"].as_u64().unwrap() as usize]["index"],
        2
    );
}

#[test]
fn explain_says_steps_on_an_unresolved_base_will_run() {
    let env = Env::new();
    let (port, hits) = trap();
    // busybox is in the store: its steps are predicted as usual.
    env.dockerfile(&format!(
        "FROM busybox AS held\nRUN echo held\n\nFROM 127.0.0.1:{port}/absent/image:tag\n\
         COPY --from=held /etc/hostname /h\nRUN echo on-absent\n"
    ));
    let (run, took) = dry_run(&env, port, &["--explain"]);
    assert_offline(&run, took, &hits);
    assert_eq!(warnings(&run.stderr).len(), 1, "{}", run.stderr);
    let lines: Vec<&str> = run.stdout.lines().collect();
    let line = |needle: &str| {
        lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("{needle} in {}", run.stdout))
            .to_string()
    };
    assert!(
        line("RUN echo on-absent").ends_with(": will run: base image unresolved"),
        "{}",
        run.stdout
    );
    assert!(
        line("COPY --from=held").ends_with(": will run: base image unresolved"),
        "{}",
        run.stdout
    );
    // A step on the held image is not blamed on the absent one.
    let held = line("RUN echo held");
    assert!(
        held.contains(": will run: ") && !held.contains("unresolved"),
        "{held}"
    );
}

#[test]
fn an_image_held_for_another_platform_is_unresolved_with_the_platforms_held() {
    let env = Env::new();
    let (port, hits) = trap();
    let host = env.hoist().inspect("busybox:latest");
    let held = format!(
        "{}/{}",
        host["Os"].as_str().unwrap_or("linux"),
        host["Architecture"].as_str().unwrap_or("amd64")
    );
    let other = if held == "linux/arm64" {
        "linux/amd64"
    } else {
        "linux/arm64"
    };
    env.dockerfile("FROM busybox\nRUN echo hi\n");
    let (run, took) = dry_run(&env, port, &["--platform", other]);
    assert_offline(&run, took, &hits);
    assert_eq!(
        warnings(&run.stderr),
        vec![format!(
            "warning: FROM busybox (Dockerfile:1): the store has no {other} image of \
             docker.io/library/busybox:latest (it holds {held}): `hoist pull --platform {other} \
             docker.io/library/busybox:latest`; its config and ONBUILD triggers are unknown"
        )],
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains(&format!(
            "image docker.io/library/busybox:latest ({other}) unresolved"
        )),
        "{}",
        run.stdout
    );
    // On the host's platform it is resolved: pinned by digest, no warning.
    let (run, took) = dry_run(&env, port, &[]);
    assert_offline(&run, took, &hits);
    assert_eq!(warnings(&run.stderr), Vec::<&str>::new(), "{}", run.stderr);
    assert!(
        run.stdout
            .contains("image docker.io/library/busybox:latest@sha256:"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("unresolved"), "{}", run.stdout);
}
