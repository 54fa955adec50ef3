//! `hoist run`'s filesystem, streams, terminal and signals: volumes (ro
//! enforced), the discarded container filesystem, `--read-only`, `-i`,
//! `-t` through a real pty (`script`), signals forwarded.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

use super::common::{Env, Run};

fn run(env: &Env, args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    env.hoist().run_with_input(&all, stdin)
}

#[test]
fn volumes_read_write_and_read_only() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let host = env.scratch.path().join("vol");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("in.txt"), "from the host\n").unwrap();
    let rw = format!("{}:/data", host.display());
    let out = run(
        &env,
        &[
            "-v",
            &rw,
            "busybox",
            "sh",
            "-c",
            "cat /data/in.txt; echo written > /data/out.txt",
        ],
        None,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "from the host\n");
    assert_eq!(
        std::fs::read_to_string(host.join("out.txt")).unwrap(),
        "written\n"
    );

    let ro = format!("{}:/data:ro", host.display());
    let refused = run(
        &env,
        &[
            "-v",
            &ro,
            "busybox",
            "sh",
            "-c",
            "cat /data/in.txt; echo x > /data/in.txt",
        ],
        None,
    );
    assert_eq!(refused.stdout, "from the host\n");
    assert_ne!(refused.code(), 0);
    assert!(
        refused.stderr.contains("Read-only file system"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        std::fs::read_to_string(host.join("in.txt")).unwrap(),
        "from the host\n"
    );

    // --mount, read-only, and a tmpfs.
    let spec = format!("type=bind,source={},target=/m,readonly", host.display());
    let mounted = run(
        &env,
        &[
            "--mount",
            &spec,
            "--mount",
            "type=tmpfs,target=/scratch",
            "busybox",
            "sh",
            "-c",
            "cat /m/out.txt; touch /m/x || echo refused; echo t > /scratch/t && cat /scratch/t",
        ],
        None,
    );
    mounted.assert_ok();
    assert_eq!(mounted.stdout, "written\nrefused\nt\n");
    assert!(!host.join("x").exists());
}

/// The names of the store's snapshots (`<root>/snapshots/snapshots/*`).
fn snapshots(env: &Env) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(env.root.path().join("snapshots/snapshots"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn the_container_filesystem_is_discarded_at_exit() {
    hoist_testutil::require_root!();
    let env = Env::new();
    // The first run makes the image's own snapshot, which stays (a cache).
    run(&env, &["--rm", "busybox", "true"], None).assert_ok();
    let before = snapshots(&env);
    assert!(!before.is_empty(), "the image's snapshot is missing");
    let wrote = run(
        &env,
        &[
            "--rm",
            "busybox",
            "sh",
            "-c",
            "echo x > /marker && cat /marker",
        ],
        None,
    );
    wrote.assert_ok();
    assert_eq!(wrote.stdout, "x\n");
    assert_eq!(snapshots(&env), before, "a run left a snapshot behind");
    let next = run(
        &env,
        &[
            "busybox",
            "sh",
            "-c",
            "test -e /marker && echo kept || echo gone",
        ],
        None,
    );
    assert_eq!(next.stdout, "gone\n");
    // Also when the command fails.
    assert_eq!(
        run(&env, &["busybox", "sh", "-c", "touch /y; exit 3"], None).code(),
        3
    );
    assert_eq!(snapshots(&env), before);
}

#[test]
fn read_only_root_and_no_network() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let out = run(
        &env,
        &[
            "--read-only",
            "--network",
            "none",
            "--name",
            "checker",
            "busybox",
            "sh",
            "-c",
            "touch /x 2>&1 || echo refused; hostname; ls /sys/class/net",
        ],
        None,
    );
    out.assert_ok();
    assert!(
        out.stdout.contains("Read-only file system"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("refused\nchecker\nlo\n"),
        "{}",
        out.stdout
    );
}

#[test]
fn stdin_reaches_the_command_only_with_i() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let with = run(
        &env,
        &["-i", "busybox", "sh", "-c", "cat; echo end"],
        Some(b"hello\nworld\n"),
    );
    with.assert_ok();
    assert_eq!(with.stdout, "hello\nworld\nend\n");
    let without = run(
        &env,
        &["busybox", "sh", "-c", "cat; echo end"],
        Some(b"hello\n"),
    );
    without.assert_ok();
    assert_eq!(without.stdout, "end\n");
}

/// `hoist run ARGS` on a pseudo-terminal of `script`: its output (CRs removed).
fn on_a_tty(env: &Env, args: &str, input: &[u8]) -> (std::process::ExitStatus, String) {
    let command = format!(
        "{} --root {} run {args}",
        env!("CARGO_BIN_EXE_hoist"),
        env.root.path().display(),
    );
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status,
        String::from_utf8_lossy(&output.stdout).replace('\r', ""),
    )
}

#[test]
fn tty_gives_a_terminal_as_controlling_terminal() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("script");
    let env = Env::new();
    let (status, out) = on_a_tty(
        &env,
        "-t busybox sh -c 'test -t 0 && test -t 1 && echo is-a-tty; stty size; echo $TERM; exit 4'",
        b"",
    );
    assert_eq!(status.code(), Some(4), "{out}");
    assert!(out.contains("is-a-tty\n"), "{out}");
    // A size, and Docker's TERM.
    assert!(
        out.lines().any(|l| l.split(' ').count() == 2
            && l.split(' ').all(|n| n.parse::<u16>().is_ok_and(|n| n > 0))),
        "{out}"
    );
    assert!(out.contains("xterm\n"), "{out}");
    // Without -t, no terminal.
    let plain = run(
        &env,
        &["busybox", "sh", "-c", "test -t 1 || echo no-tty"],
        None,
    );
    assert_eq!(plain.stdout, "no-tty\n");
}

#[test]
fn ctrl_c_on_it_reaches_the_process() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("script");
    let env = Env::new();
    let command = format!(
        "{} --root {} run -it busybox sh -c 'trap \"echo got-sigint; exit 9\" INT; echo ready; while :; do sleep 1; done'",
        env!("CARGO_BIN_EXE_hoist"),
        env.root.path().display(),
    );
    let mut child = Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    // Wait until the trap is set: the keystroke must find it.
    while !seen.contains("ready") {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "ended early: {seen}"
        );
        seen.push_str(&line);
    }
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\x03").unwrap();
    stdin.flush().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    assert!(rest.contains("got-sigint"), "{seen}{rest}");
    assert_eq!(status.code(), Some(9), "{seen}{rest}");
}

#[test]
fn signals_to_hoist_are_forwarded() {
    hoist_testutil::require_root!();
    let env = Env::new();
    let mut child = env
        .hoist()
        .command()
        .args([
            "run",
            "busybox",
            "sh",
            "-c",
            "trap 'echo got-sigterm; exit 6' TERM; echo ready; while :; do sleep 1; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-sigterm\n");
    assert_eq!(status.code(), Some(6));
}

#[test]
fn the_default_network_is_the_build_steps_slirp4netns_network() {
    hoist_testutil::require_root!();
    hoist_testutil::require_program!("slirp4netns");
    let env = Env::new();
    let out = run(
        &env,
        &[
            "busybox",
            "sh",
            "-c",
            "ls /sys/class/net; grep nameserver /etc/resolv.conf",
        ],
        None,
    );
    out.assert_ok();
    assert_eq!(out.stdout, "lo\ntap0\nnameserver 10.0.2.3\n");
    // --network host: the host's interfaces.
    let host = run(
        &env,
        &["--network", "host", "busybox", "ls", "/sys/class/net"],
        None,
    );
    host.assert_ok();
    let mut want: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    want.sort();
    let mut got: Vec<String> = host.stdout.lines().map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, want);
}
