//! Helper modes of the test binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use hoist_autobuild::{BuildJob, BuildOutcome, Config, GitCheckoutExecutor, LogSink, Service};

use crate::common::digest_of;

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// `hoist autobuild hook --server URL --repo NAME [--secret S]`, with the
/// arguments in HOIST_HELPER_ARGS (the wrapper script passes "$*").
pub fn hook() {
    let args: Vec<String> = env("HOIST_HELPER_ARGS")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let flag = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    assert_eq!(&args[..2], ["autobuild", "hook"], "{args:?}");
    let server = flag("--server").expect("--server");
    let repo = flag("--repo").expect("--repo");
    let secret = flag("--secret");
    let results =
        hoist_autobuild::run_hook(std::io::stdin().lock(), &server, &repo, secret.as_deref());
    let code = match results {
        Ok(results) => {
            for r in &results {
                eprintln!(
                    "autobuild: {} {} -> {} {}",
                    r.git_ref, r.sha, r.status, r.body
                );
            }
            i32::from(results.iter().any(|r| r.status >= 400))
        }
        Err(e) => {
            eprintln!("autobuild: {e}");
            1
        }
    };
    std::process::exit(code);
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(line.as_bytes()).unwrap();
    f.sync_all().unwrap();
}

/// A server over HOIST_HELPER_CONFIG and HOIST_HELPER_ROOT whose builds
/// append `start ID SHA` / `done ID SHA` to `$HOIST_HELPER_DIR/events` and
/// wait while `$HOIST_HELPER_DIR/block` exists.
pub fn serve() {
    let config = Config::load(Path::new(&env("HOIST_HELPER_CONFIG"))).unwrap();
    let root = PathBuf::from(env("HOIST_HELPER_ROOT"));
    let dir = PathBuf::from(env("HOIST_HELPER_DIR"));
    let events = dir.join("events");
    let block = dir.join("block");
    let executor = GitCheckoutExecutor::new(Arc::new(
        move |job: &BuildJob, tree: &Path, dockerfile: &[u8], log: &LogSink| {
            append(&events, &format!("start {} {}\n", job.id, job.sha));
            while block.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            log.line(&format!(
                "tree has {:?}",
                crate::common::read_tree(tree).keys()
            ));
            append(&events, &format!("done {} {}\n", job.id, job.sha));
            Ok(BuildOutcome {
                digest: digest_of(dockerfile),
                pushed_tags: job.push_tags.clone(),
                ..Default::default()
            })
        },
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let (service, recovery) = Service::open(config.clone(), &root, Arc::new(executor)).unwrap();
        eprintln!("recovered: {recovery:?}");
        let listener = tokio::net::TcpListener::bind(&config.listen).await.unwrap();
        hoist_autobuild::serve(
            service,
            listener,
            hoist_autobuild::server::shutdown_signal(),
        )
        .await
        .unwrap();
    });
    std::process::exit(0);
}

/// A worker of the PostgreSQL queue in HOIST_HELPER_CONFIG, named
/// HOIST_HELPER_NAME, over its own store HOIST_HELPER_ROOT; its builds append
/// `start ID SHA NAME` / `done ID SHA NAME` to `$HOIST_HELPER_DIR/events` and
/// wait while `$HOIST_HELPER_DIR/block` exists. Drains for
/// HOIST_HELPER_DRAIN_MS on SIGTERM and prints its report.
pub fn worker() {
    let config = Config::load(Path::new(&env("HOIST_HELPER_CONFIG"))).unwrap();
    let root = PathBuf::from(env("HOIST_HELPER_ROOT"));
    let dir = PathBuf::from(env("HOIST_HELPER_DIR"));
    let name = env("HOIST_HELPER_NAME");
    let drain: u64 = env("HOIST_HELPER_DRAIN_MS").parse().unwrap();
    let events = dir.join("events");
    let block = dir.join("block");
    let me = name.clone();
    let executor = GitCheckoutExecutor::new(Arc::new(
        move |job: &BuildJob, _tree: &Path, dockerfile: &[u8], log: &LogSink| {
            append(&events, &format!("start {} {} {me}\n", job.id, job.sha));
            log.line(&format!("worker {me} runs build {}", job.id));
            while block.exists() {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            append(&events, &format!("done {} {} {me}\n", job.id, job.sha));
            Ok(BuildOutcome {
                digest: digest_of(dockerfile),
                pushed_tags: job.push_tags.clone(),
                ..Default::default()
            })
        },
    ));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async move {
        let (service, _) = Service::open(config.clone(), &root, Arc::new(executor)).unwrap();
        eprintln!("worker {name} ready");
        hoist_autobuild::worker::work(
            service,
            hoist_autobuild::worker::WorkerOptions {
                name,
                concurrency: std::env::var("HOIST_HELPER_CONCURRENCY")
                    .map_or(1, |c| c.parse().unwrap()),
                drain_timeout: std::time::Duration::from_millis(drain),
            },
            hoist_autobuild::server::shutdown_signal(),
        )
        .await
        .unwrap()
    });
    eprintln!("report: {report:?}");
    rt.shutdown_timeout(std::time::Duration::from_millis(100));
    std::process::exit(0);
}

/// A command running this test binary in helper mode `mode`.
pub fn command(mode: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "helper_entry",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .env("HOIST_AUTOBUILD_TEST_HELPER", mode);
    c
}

/// A shell script that runs this test binary as `hoist` in hook mode.
pub fn hook_wrapper(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("fake-hoist");
    let exe = std::env::current_exe().unwrap();
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nHOIST_AUTOBUILD_TEST_HELPER=hook HOIST_HELPER_ARGS=\"$*\" exec {} \
             --exact helper_entry --nocapture --test-threads=1 -q\n",
            hoist_autobuild::hook::shell_quote(exe.to_str().unwrap())
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}
