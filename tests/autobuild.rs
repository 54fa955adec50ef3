//! `hoist autobuild` through the real binary: `serve` builds with RUN steps
//! (the binary is the sandbox init), `install-hook` + `git push` queues,
//! `list`, `logs`, `retry`, and SIGKILL of the server with builds queued and
//! one running. Images are checked in the real registry with skopeo.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed setup should panic with its message"
)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hoist_testutil::{git, ok, require_program, require_root, GitRepo, Registry};
use serde_json::Value;

const SECRET: &str = "hook-s3cret";

fn hoist(root: &Path) -> Command {
    let mut c = hoist_testutil::cli::Hoist::new(env!("CARGO_BIN_EXE_hoist"), root).command();
    // Credentials and registry config of this test only.
    c.env("REGISTRY_AUTH_FILE", root.with_extension("auth.json"))
        .env("XDG_CONFIG_HOME", root.with_extension("config"))
        .env_remove("DOCKER_CONFIG");
    c
}

/// Busybox imported into a scratch store and pushed as `REG/base:latest`
/// with `hoist import` and `hoist push`.
fn push_base(tmp: &Path, registry: &str) -> String {
    let store = tmp.join("base-store");
    let tar = tmp.join("busybox.tar");
    hoist_testutil::busybox_rootfs_tar(&tar);
    let base = format!("{registry}/base:latest");
    ok(
        hoist(&store)
            .args(["import", tar.to_str().unwrap(), &base])
            .args(["--change", r#"CMD ["sh"]"#])
            .output()
            .unwrap(),
        "hoist import",
    );
    ok(
        hoist(&store).args(["push", &base]).output().unwrap(),
        "hoist push",
    );
    base
}

struct Setup {
    tmp: tempfile::TempDir,
    registry: Registry,
    bare: PathBuf,
    work: PathBuf,
    store: PathBuf,
    config: PathBuf,
    port: u16,
}

impl Setup {
    /// A registry with a base image, a bare repository with a work clone
    /// (nothing pushed yet), a store and a config for repo `demo`.
    fn new(dockerfile_tail: &str) -> Setup {
        Setup::with(&format!("ARG VERSION\n{dockerfile_tail}"), |_| {
            String::new()
        })
    }

    /// [`Setup::new`] with the Dockerfile `FROM base` + `tail` and more keys
    /// for the repository (given the registry's address).
    fn with(tail: &str, repo_keys: impl Fn(&str) -> String) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let registry = Registry::start();
        let base = push_base(tmp.path(), &registry.addr);
        let GitRepo { bare, work } = GitRepo::init(tmp.path(), "demo.git");
        std::fs::write(work.join("Dockerfile"), format!("FROM {base}\n{tail}")).unwrap();
        let port = hoist_testutil::free_port();
        let config = tmp.path().join("autobuild.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\nconcurrency = 1\n[[repo]]\nname = \"demo\"\n\
                 url = {:?}\nsecret = \"{SECRET}\"\n\
                 build_args = {{ VERSION = \"{{sourceref}}-{{short_sha}}\" }}\n{}\n\
                 [[repo.rule]]\nsource = \"branch\"\nmatch = \".*\"\n\
                 tag = \"{}/demo:{{sourceref}}\"\npush = true\n",
                bare.to_str().unwrap(),
                repo_keys(&registry.addr),
                registry.addr
            ),
        )
        .unwrap();
        let store = tmp.path().join("store");
        Setup {
            tmp,
            registry,
            bare,
            work,
            store,
            config,
            port,
        }
    }

    fn server_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn serve(&self) -> Server {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join("serve.log"))
            .unwrap();
        let child = hoist(&self.store)
            .args(["autobuild", "serve", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let server = Server(child);
        wait_until("the server to listen", || {
            TcpStream::connect(("127.0.0.1", self.port)).ok()
        });
        server
    }

    fn serve_log(&self) -> String {
        std::fs::read_to_string(self.tmp.path().join("serve.log")).unwrap_or_default()
    }

    fn commit(&self, file: &str, content: &str, message: &str) -> String {
        std::fs::write(self.work.join(file), content).unwrap();
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-q", "-m", message]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn list(&self) -> Vec<Value> {
        let out = hoist(&self.store)
            .args(["autobuild", "list", "--format", "json"])
            .output()
            .unwrap();
        serde_json::from_str(&ok(out, "hoist autobuild list")).unwrap()
    }

    fn wait_final(&self, id: i64) -> Value {
        wait_until(&format!("build #{id} to finish"), || {
            self.list().into_iter().find(|b| {
                b["id"] == id && !matches!(b["state"].as_str(), Some("queued" | "running"))
            })
        })
    }

    fn inspect(&self, tag: &str) -> Option<Value> {
        let out = Command::new("skopeo")
            .args(["inspect", "--tls-verify=false"])
            .arg(format!("docker://{}/demo:{tag}", self.registry.addr))
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).unwrap())
    }

    /// The files of the image's layers, later layers winning.
    fn image_files(&self, tag: &str) -> std::collections::BTreeMap<String, String> {
        let dir = self.tmp.path().join(format!("copy-{tag}"));
        let out = Command::new("skopeo")
            .args(["copy", "-q", "--src-tls-verify=false"])
            .arg(format!("docker://{}/demo:{tag}", self.registry.addr))
            .arg(format!("dir:{}", dir.display()))
            .output()
            .unwrap();
        ok(out, "skopeo copy");
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        let rootfs = dir.join("rootfs");
        std::fs::create_dir_all(&rootfs).unwrap();
        for layer in manifest["layers"].as_array().unwrap() {
            let digest = layer["digest"].as_str().unwrap();
            let out = Command::new("tar")
                .arg("-xf")
                .arg(dir.join(digest.trim_start_matches("sha256:")))
                .arg("-C")
                .arg(&rootfs)
                .output()
                .unwrap();
            ok(out, "tar -x of a layer");
        }
        let mut files = std::collections::BTreeMap::new();
        for name in ["version", "hello"] {
            if let Ok(text) = std::fs::read_to_string(rootfs.join(name)) {
                files.insert(name.to_string(), text);
            }
        }
        files
    }
}

/// The server process, killed on drop.
struct Server(Child);

impl Server {
    fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM: the server stops accepting, waits for running builds and
    /// exits 0.
    fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "serve exited with {status} on SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    hoist_testutil::wait_until(
        what,
        Duration::from_secs(180),
        Duration::from_millis(100),
        f,
    )
}

#[test]
fn serve_builds_with_run_on_git_push_through_the_installed_hook() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    let s = Setup::new("RUN echo \"$VERSION\" > /version\n");
    let mut server = s.serve();

    let out = hoist(&s.store)
        .args(["autobuild", "install-hook"])
        .arg(&s.bare)
        .args([
            "--server",
            &s.server_url(),
            "--repo",
            "demo",
            "--secret",
            SECRET,
        ])
        .output()
        .unwrap();
    let printed = ok(out, "install-hook");
    assert_eq!(
        printed.trim(),
        s.bare.join("hooks/post-receive").to_str().unwrap()
    );
    let hook = std::fs::read_to_string(s.bare.join("hooks/post-receive")).unwrap();
    assert!(
        hook.contains(&format!("'{}' autobuild hook", env!("CARGO_BIN_EXE_hoist"))),
        "{hook}"
    );

    let sha = s.commit("hello", "hi\n", "first");
    let push = Command::new("git")
        .arg("-C")
        .arg(&s.work)
        .args(["push", "origin", "main"])
        .output()
        .unwrap();
    assert!(push.status.success());
    // The hook's answer reaches the pusher as `remote:` lines.
    let pushed = String::from_utf8_lossy(&push.stderr);
    assert!(
        pushed.contains("remote: autobuild: refs/heads/main") && pushed.contains("build queued"),
        "{pushed}"
    );
    let builds = s.list();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let id = builds[0]["id"].as_i64().unwrap();
    let b = s.wait_final(id);
    assert_eq!(b["state"], "succeeded", "{b}\n{}", s.serve_log());
    assert_eq!(b["trigger"], "hook");
    assert_eq!(b["sha"], sha.as_str());
    let seen = s.inspect("main").expect("demo:main was pushed");
    assert_eq!(seen["Digest"], b["digest"]);
    // The RUN step ran with the substituted build arg.
    assert_eq!(
        s.image_files("main").get("version").map(String::as_str),
        Some(format!("main-{}\n", &sha[..7]).as_str())
    );

    // logs: the build's steps, the RUN, the push.
    let log = ok(
        hoist(&s.store)
            .args(["autobuild", "logs", &id.to_string()])
            .output()
            .unwrap(),
        "logs",
    );
    assert!(
        log.contains(&format!("checking out refs/heads/main {sha}")),
        "{log}"
    );
    assert!(log.contains("RUN echo \"$VERSION\" > /version"), "{log}");
    assert!(
        log.contains(&format!("pushing {}/demo:main", s.registry.addr)),
        "{log}"
    );
    assert!(
        log.contains(&format!("built {}", b["digest"].as_str().unwrap())),
        "{log}"
    );

    // list as a table.
    let table = ok(
        hoist(&s.store)
            .args(["autobuild", "list"])
            .output()
            .unwrap(),
        "list",
    );
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{table}");
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..6],
        [
            &id.to_string(),
            "demo",
            "main",
            &sha[..7],
            "succeeded",
            "hook"
        ],
        "{table}"
    );

    // retry: a copy is queued, the server builds it, logs --follow waits.
    let out = ok(
        hoist(&s.store)
            .args(["autobuild", "retry", &id.to_string()])
            .output()
            .unwrap(),
        "retry",
    );
    let copy: i64 = out
        .trim()
        .strip_prefix("queued build #")
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    let followed = ok(
        hoist(&s.store)
            .args(["autobuild", "logs", "--follow", &copy.to_string()])
            .output()
            .unwrap(),
        "logs --follow",
    );
    assert!(followed.contains("pushing"), "{followed}");
    let r = s.wait_final(copy);
    assert_eq!(
        (
            r["state"].as_str(),
            r["trigger"].as_str(),
            r["retry_of"].as_i64()
        ),
        (Some("succeeded"), Some("retry"), Some(id))
    );
    // An unknown build is a clear error.
    let out = hoist(&s.store)
        .args(["autobuild", "logs", "999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no build #999"));
    server.stop();
}

#[test]
fn sigkill_of_serve_with_builds_queued_and_running_loses_none() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    // Long enough a build that the kill lands while it runs.
    let s = Setup::new("RUN sleep 2 && echo \"$VERSION\" > /version\n");
    let mut server = s.serve();
    let mut shas = Vec::new();
    for branch in ["a", "b", "c"] {
        git(&s.work, &["checkout", "-q", "-B", branch]);
        shas.push((branch, s.commit(branch, branch, branch)));
    }
    git(&s.work, &["push", "-q", "origin", "a", "b", "c"]);
    // Queue the three refs through the hook command, as post-receive would.
    let mut hook = hoist(&s.store)
        .args([
            "autobuild",
            "hook",
            "--server",
            &s.server_url(),
            "--repo",
            "demo",
        ])
        .args(["--secret", SECRET])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let zero = "0".repeat(40);
    let input: String = shas
        .iter()
        .map(|(b, sha)| format!("{zero} {sha} refs/heads/{b}\n"))
        .collect();
    hook.stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    ok(hook.wait_with_output().unwrap(), "hook");
    assert_eq!(s.list().len(), 3);

    // Kill -9 while the first build runs and two are queued.
    let running = wait_until("a build to run", || {
        s.list().into_iter().find(|b| b["state"] == "running")
    });
    server.kill9();
    let states: Vec<String> = s
        .list()
        .iter()
        .map(|b| b["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "queued").count(),
        2,
        "{states:?}"
    );

    let mut server = s.serve();
    let all = wait_until("every build to finish", || {
        let list = s.list();
        list.iter()
            .all(|b| !matches!(b["state"].as_str(), Some("queued" | "running")))
            .then_some(list)
    });
    server.stop();
    let interrupted = all.iter().find(|b| b["id"] == running["id"]).unwrap();
    assert_eq!(interrupted["state"], "interrupted", "{all:?}");
    let requeued: Vec<&Value> = all
        .iter()
        .filter(|b| b["retry_of"] == running["id"])
        .collect();
    assert_eq!(requeued.len(), 1, "{all:?}");
    assert_eq!(requeued[0]["attempt"], 2);
    assert_eq!(requeued[0]["trigger"], "requeue");
    // Every ref built exactly once successfully, pushed with its commit.
    for (branch, sha) in &shas {
        let done: Vec<&Value> = all
            .iter()
            .filter(|b| b["git_ref"] == format!("refs/heads/{branch}") && b["state"] == "succeeded")
            .collect();
        assert_eq!(done.len(), 1, "{branch}: {all:?}");
        assert_eq!(done[0]["sha"], sha.as_str());
        let seen = s.inspect(branch).expect("pushed");
        assert_eq!(seen["Digest"], done[0]["digest"], "{branch}");
    }
    assert_eq!(all.len(), 4, "3 builds + 1 requeue: {all:?}");
    // None ran twice at once: with concurrency 1 the run intervals of all
    // builds are disjoint.
    let mut spans: Vec<(i64, i64)> = all
        .iter()
        .filter(|b| b["state"] == "succeeded")
        .map(|b| {
            (
                b["started_at"].as_i64().unwrap(),
                b["finished_at"].as_i64().unwrap(),
            )
        })
        .collect();
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping builds: {spans:?}");
    }
    // The killed build's checkout was removed at restart, the others after
    // their builds.
    let work: Vec<_> = std::fs::read_dir(s.store.join("autobuild/work"))
        .unwrap()
        .collect();
    assert!(work.is_empty(), "{work:?}");
    let log = s.serve_log();
    assert!(
        log.contains(&format!(
            "build #{} was interrupted; queued again as #{}",
            running["id"], requeued[0]["id"]
        )),
        "{log}"
    );
}

#[test]
fn autobuild_never_grants_the_hosts_network() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    // autobuild's config has no entitlement key: its builds get none.
    let s = Setup::new("RUN --network=host true\n");
    let _server = s.serve();
    let sha = s.commit("hello", "hi\n", "first");
    git(&s.work, &["push", "-q", "origin", "main"]);
    let mut hook = hoist(&s.store)
        .args(["autobuild", "hook", "--server", &s.server_url()])
        .args(["--repo", "demo", "--secret", SECRET])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let zero = "0".repeat(40);
    hook.stdin
        .take()
        .unwrap()
        .write_all(format!("{zero} {sha} refs/heads/main\n").as_bytes())
        .unwrap();
    ok(hook.wait_with_output().unwrap(), "hook");
    let builds = s.list();
    assert_eq!(builds.len(), 1, "{builds:?}");
    let id = builds[0]["id"].as_i64().unwrap();
    let b = s.wait_final(id);
    assert_eq!(b["state"], "failed", "{b}\n{}", s.serve_log());
    let log = ok(
        hoist(&s.store)
            .args(["autobuild", "logs", &id.to_string()])
            .output()
            .unwrap(),
        "logs",
    );
    assert!(
        log.contains("Dockerfile:3: RUN --network=host")
            && log.contains("needs the network.host entitlement"),
        "{log}"
    );
    assert!(
        s.inspect("main").is_none(),
        "a refused build pushed an image"
    );
}

/// `hoist autobuild list --format json` of a PostgreSQL queue.
fn list_pg(store: &Path, url: &str) -> Vec<Value> {
    let out = hoist(store)
        .args(["autobuild", "list", "--format", "json"])
        .env("HOIST_AUTOBUILD_QUEUE", url)
        .output()
        .unwrap();
    serde_json::from_str(&ok(out, "hoist autobuild list")).unwrap()
}

fn worker(s: &Setup, name: &str) -> Server {
    let log = std::fs::File::create(s.tmp.path().join(format!("{name}.log"))).unwrap();
    let child = hoist(&s.tmp.path().join(format!("store-{name}")))
        .args(["autobuild", "worker", "--name", name, "--config"])
        .arg(&s.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Server(child)
}

#[test]
fn workers_of_a_postgres_queue_build_with_run_and_a_sigkilled_ones_build_moves_on() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    let Some(pg) = hoist_testutil::postgres::Postgres::start() else {
        return;
    };
    let url = pg.fresh_database("autobuild");
    let s = Setup::new("RUN sleep 3 && echo \"$VERSION\" > /version\n");
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str(&format!(
        "[queue]\nurl = {url:?}\nlease = \"3s\"\n[cache]\nshared = true\n"
    ));
    std::fs::write(&s.config, config).unwrap();
    let mut receiver = s.serve();
    assert!(
        s.serve_log().contains("this server receives"),
        "{}",
        s.serve_log()
    );
    let mut w1 = worker(&s, "w1");
    let sha = s.commit("hello", "one", "one");
    git(&s.work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    run_hook(&s, &sha);

    // SIGKILL of the worker while its RUN step sleeps.
    let running = wait_until("w1 to run the build", || {
        list_pg(&s.store, &url)
            .into_iter()
            .find(|b| b["state"] == "running" && b["worker"] == "w1")
    });
    w1.kill9();
    let mut w2 = worker(&s, "w2");
    let all = wait_until("the build to complete on w2", || {
        let list = list_pg(&s.store, &url);
        list.iter()
            .any(|b| b["state"] == "succeeded")
            .then_some(list)
    });
    assert_eq!(all.len(), 2, "one interruption, one copy: {all:?}");
    let first = all.iter().find(|b| b["id"] == running["id"]).unwrap();
    assert_eq!(
        (&first["state"], &first["worker"]),
        (&Value::from("interrupted"), &Value::from("w1")),
        "{all:?}"
    );
    let copy = all.iter().find(|b| b["retry_of"] == running["id"]).unwrap();
    assert_eq!(copy["worker"], "w2");
    assert_eq!(copy["sha"], sha.as_str());
    let pushed = s.inspect("main").expect("pushed");
    assert_eq!(pushed["Digest"], copy["digest"]);
    assert_eq!(
        s.image_files("main").get("version").map(String::as_str),
        Some(format!("main-{}\n", &sha[..7]).as_str())
    );
    // The log the worker streamed, through `logs` on another machine's view.
    let out = hoist(&s.store)
        .args(["autobuild", "logs"])
        .arg(copy["id"].to_string())
        .env("HOIST_AUTOBUILD_QUEUE", &url)
        .output()
        .unwrap();
    let log = ok(out, "hoist autobuild logs");
    assert!(log.contains("worker w2"), "{log}");
    assert!(log.contains("pushed "), "{log}");
    // `[cache] shared`: w2 exported the steps to REPO:buildcache.
    let cache_ref = format!("{}/demo:buildcache", s.registry.addr);
    assert!(
        log.contains(&format!("exporting cache to {cache_ref}")),
        "{log}"
    );
    w2.stop();

    // The same commit again on a third worker, with an empty store of its
    // own: every step comes from the registry cache, no RUN runs.
    let mut w3 = worker(&s, "w3");
    let out = hoist(&s.store)
        .args(["autobuild", "retry", "--config"])
        .arg(&s.config)
        .arg(copy["id"].to_string())
        .output()
        .unwrap();
    ok(out, "hoist autobuild retry --config");
    let again = wait_until("the retry to complete", || {
        list_pg(&s.store, &url)
            .into_iter()
            .find(|b| b["trigger"] == "retry" && b["state"] == "succeeded")
    });
    assert_eq!(again["worker"], "w3");
    let out = hoist(&s.store)
        .args(["autobuild", "list", "--config"])
        .arg(&s.config)
        .output()
        .unwrap();
    let table = ok(out, "hoist autobuild list --config");
    let header = table.lines().next().unwrap();
    assert!(header.ends_with("WORKER"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with(&format!("{} ", again["id"])))
        .unwrap();
    assert!(row.ends_with("w3"), "{table}");
    let out = hoist(&s.store)
        .args(["autobuild", "logs", "--follow", "--config"])
        .arg(&s.config)
        .arg(again["id"].to_string())
        .output()
        .unwrap();
    let log = ok(out, "hoist autobuild logs --config");
    assert!(
        log.contains(&format!("importing cache from {cache_ref}: ")),
        "{log}"
    );
    assert!(log.contains("CACHED"), "{log}");
    // `#N DONE` is the line of a step that ran.
    assert!(
        !log.lines()
            .any(|l| l.starts_with('#') && l.contains(" DONE ")),
        "a step ran although the shared cache had it:\n{log}"
    );
    w3.stop();
    receiver.stop();
}

impl Setup {
    fn install_hook(&self) {
        ok(
            hoist(&self.store)
                .args(["autobuild", "install-hook"])
                .arg(&self.bare)
                .args(["--server", &self.server_url(), "--repo", "demo"])
                .args(["--secret", SECRET])
                .output()
                .unwrap(),
            "install-hook",
        );
    }

    /// Commits `file`, pushes main through the hook and waits for the build
    /// it queued; the build's record and its log.
    fn push_and_build(&self, file: &str, content: &str) -> (Value, String) {
        let before = self.list().len();
        self.commit(file, content, file);
        let push = Command::new("git")
            .arg("-C")
            .arg(&self.work)
            .args(["push", "-q", "origin", "main"])
            .output()
            .unwrap();
        assert!(push.status.success(), "{push:?}");
        let builds = self.list();
        assert_eq!(builds.len(), before + 1, "{builds:?}");
        let id = builds
            .iter()
            .filter_map(|b| b["id"].as_i64())
            .max()
            .unwrap();
        let record = self.wait_final(id);
        let log = ok(
            hoist(&self.store)
                .args(["autobuild", "logs", &id.to_string()])
                .output()
                .unwrap(),
            "logs",
        );
        assert_eq!(record["state"], "succeeded", "{record}\n{log}");
        (record, log)
    }
}

#[test]
fn autobuild_builds_keep_the_store_under_gc_max_storage() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    // Each commit's RUN makes 4 MB that do not compress; the cap holds the
    // base and two such images, not three.
    let s = Setup::with(
        "COPY hello /hello\nRUN head -c 4000000 /dev/urandom > /blob\n",
        |_| String::new(),
    );
    const CAP: u64 = 20_000_000;
    std::fs::create_dir_all(&s.store).unwrap();
    std::fs::write(
        s.store.join("config.toml"),
        "[gc]\nmax-storage = \"20MB\"\n",
    )
    .unwrap();
    let mut server = s.serve();
    s.install_hook();
    let mut collected = 0;
    for round in 0..4 {
        let (record, log) = s.push_and_build("hello", &format!("round {round}\n"));
        if log.contains("store over gc.max-storage: reclaimed") {
            collected += 1;
        }
        let du: Value = serde_json::from_str(&ok(
            hoist(&s.store)
                .args(["du", "--format", "json"])
                .output()
                .unwrap(),
            "du",
        ))
        .unwrap();
        assert_eq!(du["MaxStorage"], CAP, "{du}");
        let on_disk = du["OnDisk"].as_u64().unwrap();
        assert!(
            on_disk <= CAP,
            "after build {round} the store holds {on_disk} bytes, over the cap {CAP}:\n{du}\n{log}"
        );
        // The image the build named is whole after the collection.
        let seen = s.inspect("main").expect("demo:main was pushed");
        assert_eq!(seen["Digest"], record["digest"]);
    }
    assert!(
        collected >= 1,
        "four builds of 4 MB each never went over the 20 MB cap:\n{}",
        s.serve_log()
    );
    server.stop();
}

#[test]
fn autobuild_with_cache_from_a_registry_cache_runs_no_step() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    // Nothing of the commit reaches the steps' keys but `hello`, which the
    // cache was made from: every step can come from the registry cache.
    let s = Setup::with(
        "COPY hello /hello\nRUN cat /proc/sys/kernel/random/uuid > /version\n",
        |registry| {
            format!(
                "cache_from = [\"type=registry,ref={registry}/cache:demo\"]\n\
                 cache_to = \"type=registry,ref={registry}/cache:demo,mode=max\""
            )
        },
    );
    // A CI job primed the cache: `hoist build --cache-to` of the same tree
    // in another store.
    std::fs::write(s.work.join("hello"), "cached\n").unwrap();
    let cache_ref = format!("{}/cache:demo", s.registry.addr);
    let primer = s.tmp.path().join("primer-store");
    let iid = s.tmp.path().join("primer.iid");
    ok(
        hoist(&primer)
            .args(["build", "--progress", "plain", "-t", "primed:1"])
            .arg("--cache-to")
            .arg(format!("type=registry,ref={cache_ref},mode=max"))
            .arg("--iidfile")
            .arg(&iid)
            .arg(&s.work)
            .output()
            .unwrap(),
        "hoist build --cache-to",
    );
    assert!(std::fs::read_to_string(&iid)
        .unwrap()
        .starts_with("sha256:"));

    let _server = s.serve();
    s.install_hook();
    let (record, log) = s.push_and_build("hello", "cached\n");
    assert!(
        log.contains(&format!("importing cache from {cache_ref}: ")),
        "{log}"
    );
    assert!(log.contains("CACHED"), "{log}");
    // `#N DONE` is the line of a step that ran.
    assert!(
        !log.lines()
            .any(|l| l.starts_with('#') && l.contains(" DONE ")),
        "a step ran although the registry cache had it:\n{log}"
    );
    assert!(
        log.contains(&format!("exporting cache to {cache_ref}")),
        "{log}"
    );
    // The RUN's output is the primer's, byte for byte: it came from the
    // cache, not from a second run.
    let primer_version = {
        let out = hoist(&primer)
            .args(["build", "--progress", "plain", "-o"])
            .arg(format!(
                "type=local,dest={}",
                s.tmp.path().join("primer-fs").display()
            ))
            .arg(&s.work)
            .output()
            .unwrap();
        ok(out, "hoist build -o type=local");
        std::fs::read_to_string(s.tmp.path().join("primer-fs/version")).unwrap()
    };
    assert_eq!(
        s.image_files("main").get("version"),
        Some(&primer_version),
        "{record}"
    );
}

#[test]
fn thirty_pushes_over_ten_refs_build_once_each_on_three_workers_and_push() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    let Some(pg) = hoist_testutil::postgres::Postgres::start() else {
        return;
    };
    let url = pg.fresh_database("autobuild");
    let s = Setup::new("COPY hello /hello\n");
    let mut config = std::fs::read_to_string(&s.config).unwrap();
    config.push_str(&format!("[queue]\nurl = {url:?}\n"));
    std::fs::write(&s.config, config).unwrap();
    let mut receiver = s.serve();
    let mut workers: Vec<Server> = ["w1", "w2", "w3"].iter().map(|n| worker(&s, n)).collect();
    // Ten branches, three commits each: thirty pushed refs, in order.
    let zero = "0".repeat(40);
    let mut lines = String::new();
    let mut newest = std::collections::BTreeMap::new();
    for i in 0..10 {
        let branch = format!("b{i}");
        git(&s.work, &["checkout", "-q", "-B", &branch]);
        for n in 0..3 {
            let sha = s.commit("hello", &format!("{branch} {n}\n"), &branch);
            lines.push_str(&format!("{zero} {sha} refs/heads/{branch}\n"));
            newest.insert(branch.clone(), sha);
        }
        git(&s.work, &["push", "-q", "origin", &branch]);
    }
    let mut hook = hoist(&s.store)
        .args(["autobuild", "hook", "--server", &s.server_url()])
        .args(["--repo", "demo", "--secret", SECRET])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    hook.stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    ok(hook.wait_with_output().unwrap(), "hook");
    let all = wait_until("every build to end", || {
        let list = list_pg(&s.store, &url);
        (list.len() == 30
            && list
                .iter()
                .all(|b| !matches!(b["state"].as_str(), Some("queued" | "running"))))
        .then_some(list)
    });
    let mut used = std::collections::BTreeSet::new();
    for b in &all {
        match b["state"].as_str().unwrap() {
            "succeeded" => {
                used.insert(b["worker"].as_str().unwrap().to_string());
            }
            "superseded" => assert!(b["worker"].is_null(), "{b}"),
            other => panic!("build {} is {other}: {b}", b["id"]),
        }
    }
    assert!(used.len() >= 2, "the builds ran on {used:?} only");
    // Each ref's newest commit built once and its image pushed.
    for (branch, sha) in &newest {
        let done: Vec<&Value> = all
            .iter()
            .filter(|b| b["git_ref"] == format!("refs/heads/{branch}") && b["state"] == "succeeded")
            .collect();
        let last = done.iter().find(|b| b["sha"] == sha.as_str());
        let last = last.unwrap_or_else(|| panic!("{branch} {sha} not built: {all:?}"));
        assert_eq!(
            done.iter().filter(|b| b["sha"] == sha.as_str()).count(),
            1,
            "{branch}"
        );
        // The registry has the newest build's image (builds of a ref run
        // one at a time, oldest first).
        let newest_done = done
            .iter()
            .max_by_key(|b| b["id"].as_i64().unwrap())
            .unwrap();
        assert_eq!(newest_done["id"], last["id"], "{branch}");
        let seen = s.inspect(branch).expect("pushed");
        assert_eq!(seen["Digest"], last["digest"], "{branch}");
    }
    for w in &mut workers {
        w.stop();
    }
    receiver.stop();
}

#[test]
fn a_worker_build_pushing_to_a_registry_that_is_down_fails_and_a_retry_builds() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    let Some(pg) = hoist_testutil::postgres::Postgres::start() else {
        return;
    };
    let url = pg.fresh_database("autobuild");
    let s = Setup::new("COPY hello /hello\n");
    let good = std::fs::read_to_string(&s.config).unwrap();
    // The rule pushes to a registry nobody listens on.
    let down = format!("127.0.0.1:{}", hoist_testutil::free_port());
    let bad = good.replace(
        &format!("tag = \"{}/demo:", s.registry.addr),
        &format!("tag = \"{down}/demo:"),
    );
    assert_ne!(bad, good);
    std::fs::write(&s.config, format!("{bad}[queue]\nurl = {url:?}\n")).unwrap();
    let mut receiver = s.serve();
    let mut w1 = worker(&s, "w1");
    let sha = s.commit("hello", "one\n", "one");
    git(&s.work, &["push", "-q", "origin", "HEAD:refs/heads/main"]);
    run_hook(&s, &sha);
    let failed = wait_until("the build to fail", || {
        list_pg(&s.store, &url)
            .into_iter()
            .find(|b| b["state"] == "failed")
    });
    assert_eq!(failed["worker"], "w1");
    assert!(
        failed["error"].as_str().unwrap().contains(&down),
        "the error names the registry: {failed}"
    );
    assert_eq!(
        list_pg(&s.store, &url).len(),
        1,
        "a failure is not requeued"
    );
    w1.stop();

    // The registry is back (here: the rule points at one that answers).
    std::fs::write(&s.config, format!("{good}[queue]\nurl = {url:?}\n")).unwrap();
    let mut w2 = worker(&s, "w2");
    let out = hoist(&s.store)
        .args(["autobuild", "retry", "--config"])
        .arg(&s.config)
        .arg(failed["id"].to_string())
        .output()
        .unwrap();
    ok(out, "hoist autobuild retry");
    let done = wait_until("the retry to succeed", || {
        list_pg(&s.store, &url)
            .into_iter()
            .find(|b| b["state"] == "succeeded")
    });
    assert_eq!(done["worker"], "w2");
    assert_eq!(done["retry_of"], failed["id"]);
    let seen = s.inspect("main").expect("pushed");
    assert_eq!(seen["Digest"], done["digest"]);
    w2.stop();
    receiver.stop();
}

#[test]
fn a_moved_base_rebases_the_image_without_running_its_run_steps() {
    require_root!();
    require_program!("skopeo");
    require_program!("docker-registry");
    let s = Setup::with(
        "COPY hello /hello\nRUN cat /proc/sys/kernel/random/uuid > /version\n",
        |_| "watch_base = true\npoll_interval = \"1s\"\non_base_change = \"rebase\"".into(),
    );
    let mut server = s.serve();
    s.install_hook();
    let (first, _) = s.push_and_build("hello", "hi\n");
    let version = s.image_files("main")["version"].clone();

    // The same base files under another config: a new base digest.
    let base = format!("{}/base:latest", s.registry.addr);
    let store = s.tmp.path().join("base-store");
    ok(
        hoist(&store)
            .args([
                "import",
                s.tmp.path().join("busybox.tar").to_str().unwrap(),
                &base,
            ])
            .args(["--change", "LABEL base.version=2"])
            .output()
            .unwrap(),
        "hoist import",
    );
    ok(
        hoist(&store).args(["push", &base]).output().unwrap(),
        "hoist push",
    );
    let rebased = wait_until("a rebase queued by the moved base", || {
        s.list().into_iter().find(|b| {
            b["trigger"]
                .as_str()
                .is_some_and(|t| t.starts_with("rebase:"))
                && !matches!(b["state"].as_str(), Some("queued" | "running"))
        })
    });
    assert_eq!(
        rebased["state"],
        "succeeded",
        "{rebased}\n{}",
        s.serve_log()
    );
    assert_ne!(rebased["digest"], first["digest"]);
    let seen = s.inspect("main").expect("demo:main was pushed");
    assert_eq!(seen["Digest"], rebased["digest"]);
    assert_eq!(seen["Labels"]["base.version"], "2", "{seen}");
    // The RUN's output is the first build's: it was not run again.
    assert_eq!(s.image_files("main")["version"], version);
    let log = ok(
        hoist(&s.store)
            .args(["autobuild", "logs", &rebased["id"].to_string()])
            .output()
            .unwrap(),
        "logs",
    );
    assert!(log.contains("layer(s) of the image kept"), "{log}");
    assert!(
        !log.lines().any(|l| l.starts_with('#')),
        "a rebase runs no step:\n{log}"
    );
    server.stop();
}

/// `hoist autobuild hook` as git's post-receive runs it, for a push of
/// `sha` to main.
fn run_hook(s: &Setup, sha: &str) {
    let mut hook = hoist(&s.store)
        .args(["autobuild", "hook", "--server", &s.server_url()])
        .args(["--repo", "demo", "--secret", SECRET])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    hook.stdin
        .take()
        .unwrap()
        .write_all(format!("{} {sha} refs/heads/main\n", "0".repeat(40)).as_bytes())
        .unwrap();
    ok(hook.wait_with_output().unwrap(), "hook");
}
