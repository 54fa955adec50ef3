//! `hoist build --load` and `hoist save | docker load`, checked by a real
//! Docker engine (Debian's docker.io) that the test starts on a private
//! socket, data root and exec root, and a clear message when no daemon runs.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{Env, Run, HOIST};

/// A dockerd of the test's own: nothing shared with a system daemon, no
/// bridge or iptables rules; stopped and cleaned up on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    _one: std::sync::MutexGuard<'static, ()>,
}

/// One engine at a time: two daemons of the same binary side by side are
/// not what this file tests, and each is heavy on a 2-core machine.
static ONE_ENGINE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Dockerd {
    fn start() -> Dockerd {
        // Short: the containerd socket under the exec root must fit in
        // sun_path (108 bytes).
        let one = ONE_ENGINE.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("hdk")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let log = fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .args([
                "--bridge=none",
                "--iptables=false",
                "--ip6tables=false",
                "--storage-driver=overlay2",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start dockerd");
        let daemon = Dockerd {
            dir,
            child,
            _one: one,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = daemon
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "dockerd did not answer within 60 s:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        daemon
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("sock").display())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", self.host()).args(args);
        c
    }

    /// Runs `docker ARGS`, asserting success; its stdout.
    fn run(&self, args: &[&str]) -> String {
        let mut out = self.docker(args).output().unwrap();
        // Twice in CI under load, a `docker run` of an image that had just
        // run a container (same image, same binaries) failed in runc with
        // `exec: "sh": executable file not found`, the next one working: a
        // race of the engine's, not a property of the image (a missing
        // binary fails every attempt). Tried again, loudly.
        for _ in 0..2 {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success()
                || args.first() != Some(&"run")
                || !stderr.contains("executable file not found")
            {
                break;
            }
            eprintln!("docker {args:?} failed, trying again: {stderr}");
            std::thread::sleep(Duration::from_secs(1));
            out = self.docker(args).output().unwrap();
        }
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\ndaemon log tail:\n{}",
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 20)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd stop its containerd and unmount its layers.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Whatever the daemon left mounted under its dirs (overlay layers,
        // the exec root's netns files) must go before the temp dir can.
        let prefix = self.dir.path().to_string_lossy().into_owned();
        let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = Command::new("umount").args(["-l", p]).status();
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// `hoist --root ROOT ARGS` with `DOCKER_HOST` set to `host`.
fn hoist_with_docker(root: &Path, host: &str, args: &[&str]) -> Run {
    let mut command = hoist_testutil::cli::Hoist::new(HOIST, root).command();
    command.args(args).env("DOCKER_HOST", host);
    hoist_testutil::cli::run(&mut command, None)
}

fn build_args<'a>(env: &'a Env, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["build", "--progress", "plain"];
    all.extend_from_slice(extra);
    all.push(env.context.path().to_str().unwrap());
    all
}

#[test]
fn load_puts_the_image_into_a_real_docker_engine() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("dockerd");
    hoist_testutil::require_program!("docker");
    let daemon = Dockerd::start();
    let env = Env::new();
    // Two layers over the base, the second deleting what the first made: the
    // engine must apply the whiteout.
    env.dockerfile(
        "FROM busybox\n\
         RUN mkdir -p /gone && echo x > /gone/file\n\
         RUN rm -r /gone && echo loaded > /loaded\n\
         ENV GREETING=hello\n\
         WORKDIR /srv\n\
         LABEL org.example.kind=test\n\
         CMD [\"cat\", \"/loaded\"]\n",
    );
    let iidfile = env.scratch.path().join("iid");
    let iid_arg = iidfile.to_str().unwrap().to_owned();
    let args = build_args(
        &env,
        &["-t", "hoist-load:v1", "--load", "--iidfile", &iid_arg],
    );
    let run = hoist_with_docker(env.root.path(), &daemon.host(), &args);
    run.assert_ok();
    assert!(
        run.stderr.contains("Loaded image: hoist-load:v1"),
        "docker load's answer is shown:\n{}",
        run.stderr
    );

    // The engine's image ID is the config digest hoist wrote.
    let iid = fs::read_to_string(&iidfile).unwrap();
    let id = daemon.run(&["image", "inspect", "--format", "{{.Id}}", "hoist-load:v1"]);
    assert_eq!(id.trim(), iid.trim());

    let config: serde_json::Value = serde_json::from_str(&daemon.run(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config}}",
        "hoist-load:v1",
    ]))
    .unwrap();
    assert_eq!(config["Cmd"], serde_json::json!(["cat", "/loaded"]));
    assert_eq!(config["WorkingDir"], "/srv");
    assert_eq!(config["Labels"]["org.example.kind"], "test");
    assert!(
        config["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == "GREETING=hello"),
        "{config}"
    );

    // Run by the engine itself: its CMD, the file, the whiteout, the env.
    let out = daemon.run(&["run", "--rm", "--network", "none", "hoist-load:v1"]);
    assert_eq!(out, "loaded\n");
    let out = daemon.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "hoist-load:v1",
        "sh",
        "-c",
        "test -e /gone && echo present || echo gone; echo $GREETING; pwd",
    ]);
    assert_eq!(out, "gone\nhello\n/srv\n");
}

#[test]
fn save_output_is_read_by_docker_load() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("dockerd");
    hoist_testutil::require_program!("docker");
    let daemon = Dockerd::start();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo saved > /saved\n");
    env.build(&["-t", "hoist-saved:v2"]).assert_ok();
    let archive: PathBuf = env.scratch.path().join("saved.tar");
    let save = hoist_with_docker(
        env.root.path(),
        &daemon.host(),
        &[
            "save",
            "-o",
            archive.to_str().unwrap(),
            "hoist-saved:v2",
            "busybox:latest",
        ],
    );
    save.assert_ok();
    let loaded = daemon.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: hoist-saved:v2"), "{loaded}");
    assert!(loaded.contains("Loaded image: busybox:latest"), "{loaded}");
    let out = daemon.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "hoist-saved:v2",
        "cat",
        "/saved",
    ]);
    assert_eq!(out, "saved\n");
    // Both names share the base layer in the engine as in hoist.
    let layers = |image: &str| -> Vec<String> {
        let json = daemon.run(&[
            "image",
            "inspect",
            "--format",
            "{{json .RootFS.Layers}}",
            image,
        ]);
        serde_json::from_str(&json).unwrap()
    };
    let base = layers("busybox:latest");
    let built = layers("hoist-saved:v2");
    assert_eq!(built.len(), base.len() + 1);
    assert_eq!(built[..base.len()], base[..]);
}

#[test]
fn load_without_a_daemon_says_why_and_builds_nothing() {
    hoist_testutil::require_root!();
    let env = Env::new();
    env.dockerfile("FROM busybox\nRUN echo loaded > /loaded\n");
    let nowhere = env.scratch.path().join("no-daemon.sock");
    let args = build_args(&env, &["-t", "hoist-load-test:none", "--load"]);
    let run = hoist_with_docker(
        env.root.path(),
        &format!("unix://{}", nowhere.display()),
        &args,
    );
    assert!(!run.status.success());
    assert!(
        run.stderr.contains("--load: no Docker daemon is reachable"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("hoist save"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("RUN echo loaded"),
        "refused before building:\n{}",
        run.stderr
    );
}
