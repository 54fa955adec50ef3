//! Crash consistency: every command that writes the store (`fsck --repair`
//! included) is killed with SIGKILL at a random moment, then `hoist fsck`
//! must find no damage and the next build must work. 20 kills in `cargo test`; `HOIST_CRASH_ITERATIONS`
//! sets more (500 for the long mode), `HOIST_CRASH_SEED` replays a run.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hoist_testutil::Registry;

use super::common::{hoist, Env};
use super::util::fsck_json;

/// The Dockerfile every build of the harness uses: a random layer of
/// 1.5 MB that differs per `N`, and a step on it.
const DOCKERFILE: &str =
    "FROM busybox\nARG N=0\nRUN head -c 1500000 /dev/urandom > /r-$N\nRUN ls / > /list\n";

/// splitmix64: small, seeded, good enough to pick moments.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One kind of command the harness kills.
#[derive(Clone, Copy, Debug)]
enum Op {
    Build,
    Pull,
    Push,
    Import,
    Load,
    Save,
    Prune,
    Enqueue,
    Repair,
}

const OPS: [Op; 9] = [
    Op::Build,
    Op::Pull,
    Op::Push,
    Op::Import,
    Op::Load,
    Op::Save,
    Op::Prune,
    Op::Enqueue,
    Op::Repair,
];

struct Harness {
    env: Env,
    registry: Registry,
    archive: std::path::PathBuf,
    rootfs_tar: std::path::PathBuf,
}

impl Harness {
    fn root(&self) -> &Path {
        self.env.root.path()
    }

    /// Steps not killed: what makes the next kill's command write.
    fn prepare(&self, op: Op, i: usize) {
        match op {
            Op::Pull => {
                // Make the pull download: drop the image and its blobs.
                let name = format!("{}/big:1", self.registry.addr);
                let _ = hoist(self.root(), &["rmi", "-f", &name], None);
            }
            Op::Load => {
                let _ = hoist(self.root(), &["rmi", "-f", "loaded:1"], None);
            }
            Op::Push => {
                let target = format!("{}/pushed:{i}", self.registry.addr);
                // The image of the last build that finished (at least the
                // one of the setup).
                hoist(self.root(), &["tag", "app", &target], None).assert_ok();
            }
            _ => {}
        }
    }

    /// The command for `op` in iteration `i`.
    fn command(&self, op: Op, i: usize) -> Command {
        let mut c = self.env.hoist().command();
        let n = format!("N={i}");
        match op {
            Op::Build => {
                c.args([
                    "build",
                    "--progress",
                    "plain",
                    "-t",
                    "app",
                    "--build-arg",
                    &n,
                ])
                .arg(self.env.context.path());
            }
            Op::Pull => {
                c.args(["pull", &format!("{}/big:1", self.registry.addr)]);
            }
            Op::Push => {
                c.args(["push", &format!("{}/pushed:{i}", self.registry.addr)]);
            }
            Op::Import => {
                c.arg("import")
                    .arg(&self.rootfs_tar)
                    .arg(format!("imported:{i}"));
            }
            Op::Load => {
                c.args(["load", "-i"]).arg(&self.archive);
            }
            Op::Save => {
                c.args(["save", "-o"])
                    .arg(self.env.scratch.path().join("saved.tar"))
                    .arg("app");
            }
            Op::Prune => {
                c.args(["prune", "-a", "-f"]);
            }
            Op::Enqueue => {
                c.args(["autobuild", "retry", "1"]);
            }
            Op::Repair => {
                c.args(["fsck", "--repair"]);
            }
        }
        c.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }
}

fn iterations() -> usize {
    std::env::var("HOIST_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn seed() -> u64 {
    std::env::var("HOIST_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

#[test]
fn sigkill_at_any_moment_leaves_a_sound_store() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("docker-registry");
    let env = Env::new();
    env.dockerfile(DOCKERFILE);
    let registry = Registry::start();
    let root = env.root.path().to_path_buf();
    let h = |args: &[&str]| {
        let run = hoist(&root, args, None);
        run.assert_ok();
        run
    };
    // Setup: an image with a big layer in the registry, an archive to
    // load, a root filesystem to import, a build to retry.
    env.build(&["-t", "app", "--build-arg", "N=setup"])
        .assert_ok();
    let big = format!("{}/big:1", registry.addr);
    h(&["tag", "app", &big]);
    h(&["push", &big]);
    let archive = env.scratch.path().join("load.tar");
    h(&["tag", "app", "loaded:1"]);
    h(&["save", "-o", archive.to_str().unwrap(), "loaded:1"]);
    let rootfs_tar = env.scratch.path().join("busybox.tar");
    assert!(rootfs_tar.exists(), "Env::new writes the busybox tar");
    let store = hoist_cache::Store::open(&root).unwrap();
    store
        .db()
        .write(|tx| {
            tx.execute(
                "INSERT INTO autobuild_builds (repo, git_ref, sha, trigger, state, queued_at)
                 VALUES ('demo', 'refs/heads/main', 'abc', 'hook', 'failed', 1000)",
                [],
            )
        })
        .unwrap();
    drop(store);
    let harness = Harness {
        env,
        registry,
        archive,
        rootfs_tar,
    };

    // How long each command takes here, now: kills land within that.
    let mut durations = Vec::new();
    for (k, op) in OPS.iter().enumerate() {
        harness.prepare(*op, 1000 + k);
        let started = Instant::now();
        let status = harness.command(*op, 1000 + k).status().unwrap();
        assert!(status.success(), "{op:?} failed unkilled");
        // (`fsck --repair` of a sound store exits 0 as well.)
        durations.push(started.elapsed());
    }

    let seed = seed();
    let iterations = iterations();
    // Past libtest's capture, so that the seed of a failing run is seen.
    let _ = writeln!(
        std::io::stderr(),
        "crash harness: {iterations} kills, seed {seed} (HOIST_CRASH_SEED={seed} replays it)"
    );
    let mut rng = Rng(seed);
    let mut killed = 0;
    for i in 0..iterations {
        let k = rng.below(OPS.len() as u64) as usize;
        let op = OPS[k];
        // Up to 1.2 times the command's own duration: some kills come after
        // it finished, which is fine (a clean exit must be sound too).
        let window = durations[k].as_micros() as u64 * 6 / 5;
        let delay = Duration::from_micros(rng.below(window));
        harness.prepare(op, i);
        let mut child = harness.command(op, i).spawn().unwrap();
        std::thread::sleep(delay);
        // SAFETY-free: `Child::kill` is SIGKILL.
        let already_done = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        child.wait().unwrap();
        if !already_done {
            killed += 1;
        }
        let context = format!(
            "iteration {i}: {op:?} killed after {delay:?} (seed {seed}, HOIST_CRASH_SEED={seed})"
        );
        let doc = fsck_json(&root, &[]);
        assert_eq!(
            doc["sound"], true,
            "{context}: fsck found damage:\n{:#}",
            doc["findings"]
        );
        // The next build works.
        let run = harness.env.build(&["-t", "next"]);
        assert!(
            run.status.success(),
            "{context}: the next build failed:\n{}",
            run.stderr
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "crash harness: {killed} of {iterations} commands killed before they ended, store sound after each"
    );
    // Leftovers of all those kills go with one prune, and the store is
    // then clean to the last finding.
    h(&["prune", "-f"]);
    let doc = fsck_json(&root, &[]);
    let findings = doc["findings"].as_array().unwrap();
    assert!(
        findings.iter().all(|f| f["damage"] == false),
        "seed {seed}: {doc:#}"
    );
}
