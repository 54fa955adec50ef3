//! Namespaces, the root, exit statuses, output streaming, network modes.

use std::path::Path;

use hoist_runner::{ExitStatus, NetworkMode, Stream, INIT_MARKER};
use libtest_mimic::Failed;

use crate::util::{run, run_with, stdout_of, Env, Root};
use crate::{check, check_eq, need_root};

pub fn pid1_and_no_host_process(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let out = stdout_of(
        env,
        &root.spec("tr '\\0' ' ' < /proc/1/cmdline; echo; ls /proc | grep -E '^[0-9]+$' | sort -n | tr '\\n' ' '"),
    )?;
    let mut lines = out.lines();
    let pid1 = lines.next().unwrap_or_default();
    let pids: Vec<u32> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    if env.embedded() {
        check!(
            pid1.contains(INIT_MARKER),
            "PID 1 is {pid1:?}, not the init"
        );
    }
    // The shell, ls, grep, sort, tr and (embedded) the init: nothing else.
    check!(
        pids.contains(&1) && pids.len() <= 6 && pids.iter().all(|p| *p < 50),
        "processes visible in the step: {pids:?}"
    );
    check!(
        !pids.contains(&std::process::id()) || std::process::id() < 50,
        "the test process is visible"
    );
    Ok(())
}

pub fn hostname_and_etc_files(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let mut spec = root.spec("hostname; cat /etc/hostname; grep -c stepbox /etc/hosts; test -f /etc/resolv.conf && echo resolv");
    spec.hostname = "stepbox".into();
    let out = stdout_of(env, &spec)?;
    check_eq!(out, "stepbox\nstepbox\n1\nresolv\n".to_string());
    // The host's hostname is untouched.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    check!(host.trim() != "stepbox", "host hostname changed");
    Ok(())
}

pub fn host_marker_file_invisible(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let marker = tempfile::Builder::new()
        .prefix("hoist-marker-")
        .tempfile_in("/tmp")?;
    let name = marker.path().display().to_string();
    let out = stdout_of(
        env,
        &root.spec(&format!(
            "test -e {name} && echo visible || echo invisible; ls /tmp"
        )),
    )?;
    check_eq!(out, "invisible\n".to_string());
    Ok(())
}

pub fn proc_sys_dev(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let script = r#"
set -e
grep -E '^[^ ]+ /sys sysfs ro' /proc/mounts >/dev/null && echo sys-ro
touch /sys/x 2>/dev/null || echo sys-write-refused
grep -E '^proc /proc proc' /proc/mounts >/dev/null && echo proc
for d in null zero full random urandom tty; do test -c /dev/$d || echo "missing $d"; done
test -c /dev/pts/ptmx && test -e /dev/ptmx && echo ptmx
echo x > /dev/null && echo null-ok
head -c 16 /dev/urandom | wc -c
head -c 3 /dev/zero | od -An -tx1
touch /dev/shm/f && echo shm-ok
grep -E ' /dev/mqueue mqueue' /proc/mounts >/dev/null && echo mqueue
ls /dev | sort | tr '\n' ' '
"#;
    let out = stdout_of(env, &root.spec(script))?;
    for want in [
        "sys-ro\n",
        "sys-write-refused\n",
        "proc\n",
        "ptmx\n",
        "null-ok\n",
        "16\n",
        " 00 00 00\n",
        "shm-ok\n",
        "mqueue\n",
    ] {
        check!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    check!(!out.contains("missing"), "device missing:\n{out}");
    if env.embedded() {
        let ls = out.lines().last().unwrap_or_default();
        check_eq!(
            ls.trim(),
            "fd full mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero"
        );
    }
    Ok(())
}

pub fn exit_codes_and_signals(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    check_eq!(
        run(env, &root.spec("exit 7"))?.result.status,
        ExitStatus::Exited(7)
    );
    check_eq!(
        run(env, &root.spec("true"))?.result.status,
        ExitStatus::Exited(0)
    );
    if env.embedded() {
        check_eq!(
            run(env, &root.spec("kill -9 $$"))?.result.status,
            ExitStatus::Signaled(9)
        );
        check_eq!(
            run(env, &root.spec("kill -TERM $$"))?.result.status,
            ExitStatus::Signaled(15)
        );
    } else {
        // An external runtime has no init: the step is PID 1 and immune to
        // its own signals, and the runtime reports a death by signal n as
        // exit status 128+n. A killed child shows the mapping.
        check_eq!(
            run(env, &root.spec("sh -c 'kill -9 $$'; exit $?"))?
                .result
                .status,
            ExitStatus::Signaled(9)
        );
    }
    Ok(())
}

/// The step waits for the runner to acknowledge each chunk (through a file
/// in a bind-mounted dir) before writing the next: if output were buffered
/// until the step exits, the step would time out and say so.
pub fn output_is_streamed_in_order(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let sync = tempfile::tempdir()?;
    let mut spec = root.spec(
        r#"
wait_for() { i=0; while [ ! -e /sync/$1 ]; do i=$((i+1)); if [ $i -gt 600 ]; then echo "timeout $1"; exit 3; fi; sleep 0.05; done; }
echo out-1
wait_for 1
echo err-2 >&2
wait_for 2
echo out-3
wait_for 3
echo err-4 >&2
"#,
    );
    spec.mounts.push(hoist_runner::Mount::Bind {
        source: sync.path().to_path_buf(),
        target: "/sync".into(),
        readonly: true,
    });
    let mut count = 0;
    let dir = sync.path().to_path_buf();
    let out = run_with(&env.runner(), &spec, &mut |_, _| {
        count += 1;
        let _ = std::fs::write(dir.join(count.to_string()), "");
    })?;
    check_eq!(out.result.status, ExitStatus::Exited(0));
    let chunks: Vec<(Stream, String)> = out
        .chunks
        .iter()
        .map(|(s, b)| (*s, String::from_utf8_lossy(b).into_owned()))
        .collect();
    check_eq!(
        chunks,
        vec![
            (Stream::Stdout, "out-1\n".to_string()),
            (Stream::Stderr, "err-2\n".to_string()),
            (Stream::Stdout, "out-3\n".to_string()),
            (Stream::Stderr, "err-4\n".to_string()),
        ]
    );
    Ok(())
}

pub fn network_none_has_only_lo_up(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let mut spec = root.spec("ls /sys/class/net | tr '\\n' ' '; echo; cat /sys/class/net/lo/flags; ping -c1 -W1 127.0.0.1 >/dev/null && echo ping-ok");
    spec.network = NetworkMode::None;
    let out = stdout_of(env, &spec)?;
    let mut lines = out.lines();
    check_eq!(lines.next().unwrap_or_default().trim(), "lo");
    let flags = lines.next().unwrap_or_default();
    let flags = u32::from_str_radix(flags.trim_start_matches("0x"), 16)?;
    check!(flags & 1 == 1, "lo is not up: flags {flags:#x}");
    check_eq!(lines.next().unwrap_or_default(), "ping-ok");
    Ok(())
}

pub fn network_host_etc_files(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let mut host_ifaces: Vec<String> = std::fs::read_dir("/sys/class/net")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    host_ifaces.sort();
    let mut spec = root
        .spec("ls /sys/class/net | sort | tr '\\n' ' '; echo; hostname; grep -c netbox /etc/hosts");
    spec.network = NetworkMode::Host;
    spec.hostname = "netbox".into();
    let out = stdout_of(env, &spec)?;
    let mut lines = out.lines();
    check_eq!(
        lines.next().unwrap_or_default().trim(),
        host_ifaces.join(" ")
    );
    check_eq!(lines.next().unwrap_or_default(), "netbox");
    check_eq!(lines.next().unwrap_or_default(), "1");
    Ok(())
}

pub fn setup_errors_are_reported() -> Result<(), Failed> {
    need_root!();
    let env = Env {
        name: "embedded".into(),
        runtime: hoist_runner::Runtime::Embedded,
        unavailable: None,
    };
    let root = Root::new();
    let mut spec = root.spec("true");
    spec.argv = vec!["no-such-program".into()];
    let err = env.runner().run(&spec, &mut |_, _| {}).err();
    let text = err.map(|e| e.to_string()).unwrap_or_default();
    check!(
        text.contains("no-such-program") && text.contains("not found"),
        "unexpected error: {text:?}"
    );
    let mut spec = root.spec("true");
    spec.user = "ghost".into();
    let text = env
        .runner()
        .run(&spec, &mut |_, _| {})
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    check!(
        text.contains("unable to find user ghost"),
        "unexpected error: {text:?}"
    );
    check!(
        Path::new(&root.path().join("bin/sh")).exists(),
        "rootfs damaged"
    );
    Ok(())
}

/// A cancelled step gets SIGTERM through the init (which forwards signals)
/// and may clean up: its trap runs and its exit status comes back.
pub fn cancel_forwards_sigterm(env: &Env) -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let spec = root.spec(
        "trap 'echo got-term; exit 3' TERM; echo ready; i=0; while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; echo not-cancelled",
    );
    let cancel = hoist_runner::Cancel::new()?;
    let c = cancel.clone();
    let mut out = String::new();
    let result = env
        .runner()
        .run_with_cancel(
            &spec,
            &mut |_, b| {
                out.push_str(&String::from_utf8_lossy(b));
                if out.contains("ready") {
                    c.cancel();
                }
            },
            Some(&cancel),
        )
        .map_err(|e| e.to_string())?;
    check_eq!(out, "ready\ngot-term\n".to_string());
    check_eq!(result.status, ExitStatus::Exited(3));
    Ok(())
}
