//! Garbage collection: the cap holds, tagged images survive, leases protect
//! a running build, a killed prune leaves complete images.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use super::common::{hoist, Env};
use super::util::{assert_complete, du_bytes};

/// A Dockerfile whose second step makes a 300 kB layer of random bytes that
/// differs per `N`.
const RANDOM_LAYER: &str =
    "FROM busybox\nARG N=0\nRUN head -c 300000 /dev/urandom > /big-$N\nRUN echo $N > /n\n";

#[test]
fn automatic_collection_keeps_the_store_under_the_cap() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(RANDOM_LAYER);
    // Room for busybox, four tagged images, their snapshots and a little
    // cache, not for twelve builds.
    let cap: u64 = 5_000_000;
    std::fs::write(
        env.root.path().join("config.toml"),
        format!("[gc]\nmax-storage = {cap}\n"),
    )
    .unwrap();
    let du = hoist(env.root.path(), &["du"], None);
    du.assert_ok();
    assert!(
        du.stdout.contains("of gc.max-storage 5MB"),
        "du does not show the cap:\n{}",
        du.stdout
    );
    let mut collections = 0;
    let mut tagged = Vec::new();
    for n in 0..12 {
        let arg = format!("N={n}");
        let mut args = vec!["--build-arg", arg.as_str()];
        let tag = format!("app:{n}");
        if n % 3 == 0 {
            args.extend(["-t", tag.as_str()]);
        }
        let run = env.build(&args);
        run.assert_ok();
        if n % 3 == 0 {
            tagged.push(tag.clone());
        }
        if run.stderr.contains("store over gc.max-storage") {
            collections += 1;
            let size = du_bytes(env.root.path());
            assert!(
                size <= cap,
                "after the collection of build {n} the store is {size} bytes on disk, over the cap {cap}\n{}",
                run.stderr
            );
        }
    }
    assert!(
        collections >= 3,
        "only {collections} automatic collections ran"
    );
    for tag in &tagged {
        assert_complete(&env, tag);
    }
    assert_complete(&env, "busybox:latest");
    // The tagged images still build on: their cache may be gone, not their layers.
    let run = env.build(&["--build-arg", "N=0", "-t", "again:0"]);
    run.assert_ok();
    assert_eq!(
        env.inspect("again:0")["Layers"][1],
        env.inspect("app:0")["Layers"][1],
        "the rebuilt image does not start from the same base layers"
    );
}

#[test]
fn prune_all_while_a_build_runs_leaves_its_image_intact() {
    hoist_testutil::require_root!();
    let env = Env::new();
    // Cache for the first two steps, untagged: `prune --all` would remove
    // it, were the running build not holding it.
    env.dockerfile(RANDOM_LAYER);
    env.build(&["--build-arg", "N=7"]).assert_ok();
    // Made long ago, as far as file times go: only the lease can protect it.
    let blobs = env.root.path().join("content/blobs/sha256");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("touch -d '2 hours ago' {}/*", blobs.display()))
        .status()
        .unwrap();
    assert!(status.success());

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    env.dockerfile(&format!(
        "FROM busybox\nARG N=0\nRUN head -c 300000 /dev/urandom > /big-$N\n\
         RUN echo ready && until nc 127.0.0.1 {port} </dev/null 2>/dev/null | grep -q go; do sleep 0.1; done\n"
    ));
    let mut build = env
        .hoist()
        .command()
        .args(["build", "--progress", "plain", "--network", "host"])
        .args(["--allow", "network.host"])
        .args(["--build-arg", "N=7", "-t", "app:running"])
        .arg(env.context.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(build.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "the build ended before its waiting step:\n{seen}"
        );
        seen.push_str(&line);
        if line.trim_end().ends_with(" ready") {
            break;
        }
    }
    assert!(
        seen.contains("CACHED"),
        "the build did not reuse the earlier build's layer:\n{seen}"
    );

    let prune = hoist(env.root.path(), &["prune", "--all", "-f"], None);
    prune.assert_ok();
    assert!(
        prune.stdout.contains("Total reclaimed space:"),
        "{}",
        prune.stdout
    );

    // Let the step finish.
    let (mut connection, _) = listener.accept().unwrap();
    connection.write_all(b"go\n").unwrap();
    drop(connection);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = build.wait().unwrap();
    assert!(status.success(), "build failed:\n{seen}{rest}");
    assert_complete(&env, "app:running");
}

#[test]
fn killed_prune_leaves_every_image_complete() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(RANDOM_LAYER);
    for (round, delay_ms) in [0u64, 2, 5, 10, 20, 40, 80].into_iter().enumerate() {
        // Fresh garbage each round: untagged builds, one tagged.
        for n in 0..2 {
            let arg = format!("N={round}-{n}");
            env.build(&["--build-arg", &arg]).assert_ok();
        }
        let arg = format!("N={round}");
        let tag = format!("app:{round}");
        env.build(&["--build-arg", &arg, "-t", &tag]).assert_ok();
        let mut prune = env
            .hoist()
            .command()
            .args(["prune", "--all", "-f"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Not a timing assertion: the kill lands somewhere in the prune,
        // and wherever it lands the invariants below must hold.
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        prune.kill().unwrap();
        prune.wait().unwrap();
        for r in 0..=round {
            assert_complete(&env, &format!("app:{r}"));
        }
        assert_complete(&env, "busybox:latest");
    }
    // The store still works: a prune finishes and a cached rebuild works.
    hoist(env.root.path(), &["prune", "--all", "-f"], None).assert_ok();
    let run = env.build(&["--build-arg", "N=0", "-t", "after"]);
    run.assert_ok();
    assert_complete(&env, "after:latest");
}

#[test]
fn prune_reports_like_docker_and_respects_until() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile(RANDOM_LAYER);
    env.build(&["--build-arg", "N=1"]).assert_ok();
    // Nothing is older than an hour.
    let run = hoist(
        env.root.path(),
        &["prune", "--all", "-f", "--filter", "until=1h"],
        None,
    );
    run.assert_ok();
    let before = du_bytes(env.root.path());
    let verbose = hoist(env.root.path(), &["du", "--verbose"], None);
    verbose.assert_ok();
    for section in [
        "Images space usage:",
        "Build cache usage:",
        "Cache mounts:",
        "Snapshots:",
    ] {
        assert!(verbose.stdout.contains(section), "{}", verbose.stdout);
    }
    assert!(
        verbose
            .stdout
            .contains("Dockerfile:3: RUN head -c 300000 /dev/urandom > /big-$N"),
        "du --verbose does not name the step that made a record:\n{}",
        verbose.stdout
    );
    let run = hoist(env.root.path(), &["prune", "--all", "-f"], None);
    run.assert_ok();
    assert!(
        run.stdout.starts_with("Deleted build cache objects:\n"),
        "{}",
        run.stdout
    );
    let last = run.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("Total reclaimed space: "),
        "{}",
        run.stdout
    );
    assert_ne!(last, "Total reclaimed space: 0B");
    let after = du_bytes(env.root.path());
    assert!(
        after < before - 250_000,
        "prune freed too little: {before} -> {after}"
    );
    let du = hoist(env.root.path(), &["du", "--verbose"], None);
    assert!(!du.stdout.contains("RUN head"), "{}", du.stdout);
    assert_complete(&env, "busybox:latest");
}

/// The stages whose RUN steps a plain build started, in that order.
fn run_order(stderr: &str) -> Vec<&str> {
    let mut order = Vec::new();
    let stages = stderr
        .lines()
        .filter(|l| l.starts_with('#') && l.contains(" RUN "))
        .filter_map(|l| Some(l.split_once(" [")?.1.split_once(' ')?.0));
    for stage in stages {
        if !order.contains(&stage) {
            order.push(stage);
        }
    }
    order
}

#[test]
fn prune_keeps_step_durations_and_the_longest_known_step_starts_first() {
    hoist_testutil::require_root!();
    let env = Env::new();
    // With no durations known, one job takes the ready steps as they arrive,
    // in no fixed order: `long` starts first about one time in five. Each
    // short step takes some 150 ms of CPU: one that takes under 20 ms goes
    // when it is ready, as starting it first costs `long` nothing, and one
    // holds back for `long` no longer than it takes itself (at most 100 ms).
    let short = |name: &str| {
        format!("FROM busybox AS {name}\nRUN dd if=/dev/zero bs=1M count=40 2>/dev/null | sha256sum > /o && echo {name} >> /o\n")
    };
    env.dockerfile(&format!(
        "{}{}FROM busybox AS long\nRUN dd if=/dev/zero bs=1M count=150 2>/dev/null | sha256sum > /o\n{}{}\
         FROM busybox\nCOPY --from=a /o /a\nCOPY --from=b /o /b\nCOPY --from=long /o /long\n\
         COPY --from=c /o /c\nCOPY --from=d /o /d\n",
        short("a"),
        short("b"),
        short("c"),
        short("d")
    ));
    let first = env.build(&["--jobs", "1", "-t", "order:1"]);
    first.assert_ok();
    assert_eq!(run_order(&first.stderr).len(), 5, "{}", first.stderr);
    // Twice, so that arrival order alone passes one time in twenty-five.
    for _ in 0..2 {
        hoist(env.root.path(), &["rmi", "order:1"], None).assert_ok();
        hoist(env.root.path(), &["prune", "-a", "-f"], None).assert_ok();
        let again = env.build(&["--jobs", "1", "-t", "order:1"]);
        again.assert_ok();
        assert_eq!(
            super::common::done_steps(&again.stderr),
            super::common::done_steps(&first.stderr),
            "the pruned store ran every step again:\n{}",
            again.stderr
        );
        assert_eq!(run_order(&again.stderr)[0], "long", "{}", again.stderr);
    }
}
