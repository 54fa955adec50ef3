//! Test helpers: real git repositories, an in-process server with a real
//! checkout executor, polling the JSON API.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use hoist_autobuild::{
    BuildFailure, BuildJob, BuildOutcome, BuildRecord, Config, GitCheckoutExecutor, LogSink,
    Service,
};
use hoist_testutil::GitRepo;

pub const SECRET: &str = "s3cret";

pub use hoist_testutil::git;

/// A bare repository and a work clone with one commit on `main`
/// (`bare`, `work` and `push` are [`GitRepo`]'s).
pub struct Repo {
    _tmp: tempfile::TempDir,
    git: GitRepo,
}

impl std::ops::Deref for Repo {
    type Target = GitRepo;

    fn deref(&self) -> &GitRepo {
        &self.git
    }
}

impl Repo {
    pub fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let git = GitRepo::init(tmp.path(), "origin.git");
        let repo = Repo { _tmp: tmp, git };
        repo.commit("hello", "v0", "initial");
        repo.push("main");
        repo
    }

    /// Write `file` and the Dockerfile, commit with `message`; the new sha.
    pub fn commit(&self, file: &str, content: &str, message: &str) -> String {
        std::fs::write(
            self.work.join("Dockerfile"),
            format!("FROM scratch\nCOPY {file} /{file}\n"),
        )
        .unwrap();
        std::fs::write(self.work.join(file), content).unwrap();
        self.git.commit_all(message)
    }

    pub fn url(&self) -> &str {
        self.bare.to_str().unwrap()
    }
}

/// What the build function saw.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub id: i64,
    pub sha: String,
    pub git_ref: String,
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    /// Every regular file of the checkout (without .git), path → content.
    pub tree: BTreeMap<String, String>,
    pub dockerfile: Vec<u8>,
}

pub use hoist_testutil::sha256_digest as digest_of;

pub fn read_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_name() == ".git" {
                continue;
            }
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().to_string();
                out.insert(rel, std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    out
}

/// A gate builds wait at while it is closed.
#[derive(Default)]
pub struct Gate {
    closed: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    pub fn close(&self) {
        *self.closed.lock().unwrap() = true;
    }
    pub fn open(&self) {
        *self.closed.lock().unwrap() = false;
        self.cv.notify_all();
    }
    fn wait(&self) {
        let mut closed = self.closed.lock().unwrap();
        while *closed {
            closed = self.cv.wait(closed).unwrap();
        }
    }
}

/// Shared state of the test build function.
#[derive(Default)]
pub struct Recorder {
    pub builds: Mutex<Vec<Recorded>>,
    /// Builds running now, per ref; the build function fails the test's
    /// invariant (recorded in `overlaps`) when a ref builds twice at once.
    pub active: Mutex<BTreeMap<String, usize>>,
    pub overlaps: Mutex<usize>,
    pub started: Mutex<Vec<i64>>,
    pub gate: Gate,
}

/// The real checkout executor with a build function recording the tree.
pub fn recording_executor(rec: Arc<Recorder>) -> GitCheckoutExecutor {
    GitCheckoutExecutor::new(Arc::new(
        move |job: &BuildJob, tree: &Path, dockerfile: &[u8], log: &LogSink| {
            rec.started.lock().unwrap().push(job.id);
            {
                let mut active = rec.active.lock().unwrap();
                let n = active.entry(job.git_ref.clone()).or_default();
                *n += 1;
                if *n > 1 {
                    *rec.overlaps.lock().unwrap() += 1;
                }
            }
            rec.gate.wait();
            log.line("test build function ran");
            let tree = read_tree(tree);
            *rec.active.lock().unwrap().get_mut(&job.git_ref).unwrap() -= 1;
            if tree.contains_key("FAIL") {
                return Err(BuildFailure::new("FAIL file present"));
            }
            rec.builds.lock().unwrap().push(Recorded {
                id: job.id,
                sha: job.sha.clone(),
                git_ref: job.git_ref.clone(),
                tags: job.tags.clone(),
                build_args: job.build_args.clone(),
                tree,
                dockerfile: dockerfile.to_vec(),
            });
            Ok(BuildOutcome {
                digest: digest_of(dockerfile),
                pushed_tags: job.push_tags.clone(),
                ..Default::default()
            })
        },
    ))
}

/// A config with one repository `demo` at `url` plus `rules` (TOML text).
pub fn config_text(url: &str, concurrency: usize, rules: &str) -> String {
    format!(
        "listen = \"127.0.0.1:0\"\nconcurrency = {concurrency}\n[[repo]]\nname = \"demo\"\n\
         url = {url:?}\nsecret = \"{SECRET}\"\nbuild_args = {{ VERSION = \"{{sourceref}}-{{short_sha}}\" }}\n{rules}"
    )
}

pub const MAIN_RULE: &str = "[[repo.rule]]\nsource = \"branch\"\nmatch = \".*\"\n\
    tag = \"127.0.0.1:5000/demo:{sourceref}\"\npush = true\n";

/// The server running in a thread of its own.
pub struct TestServer {
    pub addr: SocketAddr,
    pub store: tempfile::TempDir,
    pub rec: Arc<Recorder>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    client: reqwest::blocking::Client,
}

impl TestServer {
    pub fn start(config: &str) -> TestServer {
        let rec = Arc::new(Recorder::default());
        let executor = Arc::new(recording_executor(Arc::clone(&rec)));
        Self::start_with(config, tempfile::tempdir().unwrap(), rec, executor, None)
    }

    /// A server over `store` building with `executor`, watching base images
    /// with `registry` when given.
    pub fn start_with(
        config: &str,
        store: tempfile::TempDir,
        rec: Arc<Recorder>,
        executor: Arc<dyn hoist_autobuild::BuildExecutor>,
        registry: Option<hoist_registry::Client>,
    ) -> TestServer {
        let config = Config::parse(config, Path::new("test.toml")).unwrap();
        let (service, _) = Service::open(config, store.path(), executor).unwrap();
        if let Some(client) = registry {
            service.watch_bases_with(client);
        }
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                hoist_autobuild::serve(service, listener, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
            });
        });
        TestServer {
            addr,
            store,
            rec,
            stop: Some(tx),
            thread: Some(thread),
            client: reqwest::blocking::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn client(&self) -> &reqwest::blocking::Client {
        &self.client
    }

    pub fn builds(&self) -> Vec<BuildRecord> {
        api_builds(&self.client, &self.url(""))
    }

    pub fn wait_final(&self, id: i64) -> BuildRecord {
        wait_final(&self.client, &self.url(""), id)
    }

    pub fn page(&self, path: &str) -> String {
        self.client
            .get(self.url(path))
            .send()
            .unwrap()
            .text()
            .unwrap()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.rec.gate.open();
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn api_builds(client: &reqwest::blocking::Client, base: &str) -> Vec<BuildRecord> {
    client
        .get(format!("{base}/api/builds"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// Poll until `f` returns Some; a generous bound only so a bug fails instead of hanging.
pub fn wait_until<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    hoist_testutil::wait_until(what, Duration::from_secs(120), Duration::from_millis(50), f)
}

pub fn wait_final(client: &reqwest::blocking::Client, base: &str, id: i64) -> BuildRecord {
    wait_until(&format!("build #{id} to finish"), || {
        let r = client.get(format!("{base}/api/builds/{id}")).send().ok()?;
        let b: BuildRecord = r.json().ok()?;
        b.state.is_final().then_some(b)
    })
}

/// The queued build ids of a 202 answer.
pub fn queued_ids(body: &serde_json::Value) -> Vec<i64> {
    body["queued"]
        .as_array()
        .map(|a| a.iter().map(|e| e["id"].as_i64().unwrap()).collect())
        .unwrap_or_default()
}
