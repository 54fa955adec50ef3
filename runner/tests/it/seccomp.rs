//! Docker's seccomp profile on the real kernel: a probe compiled with gcc
//! makes raw syscalls inside a step and prints what the kernel answered;
//! Debian's i386 busybox runs as a 32-bit program.

use std::path::{Path, PathBuf};
use std::process::Command;

use libtest_mimic::Failed;

use crate::util::{stdout_of, Env, Root};
use crate::{check, check_eq, need_root};

/// Raw syscalls, each printed as `name=0` or `name=ERRNO` (errno's number).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static void report(const char *name, long rc) {
    if (rc < 0) printf("%s=%d\n", name, errno); else printf("%s=0\n", name);
}

int main(void) {
    report("mount", syscall(SYS_mount, "none", "/tmp", "tmpfs", 0, 0));
    report("unshare", syscall(SYS_unshare, CLONE_NEWUTS));
    report("keyctl", syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3, 0));
    report("add_key", syscall(SYS_add_key, "user", "hoist", "x", 1, -3));
    report("personality_query", syscall(SYS_personality, 0xffffffffUL));
    report("personality_linux32", syscall(SYS_personality, 8UL));
    report("personality_linux", syscall(SYS_personality, 0UL));
    report("personality_no_randomize", syscall(SYS_personality, 0x0040000UL));
    report("socket_vsock", syscall(SYS_socket, 40 /* AF_VSOCK */, SOCK_STREAM_PROBE, 0));
    report("socket_unix", syscall(SYS_socket, 1 /* AF_UNIX */, SOCK_STREAM_PROBE, 0));
    report("clone3", syscall(SYS_clone3, 0, 0));
    /* Flushes of a descriptor that is not open: EBADF when they run. */
    report("fsync_badfd", syscall(SYS_fsync, 999));
    report("fdatasync_badfd", syscall(SYS_fdatasync, 999));
    report("syncfs_badfd", syscall(SYS_syncfs, 999));
    report("sync_file_range_badfd", syscall(SYS_sync_file_range, 999, 0, 0, 2));
    /* x32 getpid (the x32 bit on x86_64's own number), in a child: a
       filter may kill instead of failing the call (reported as 1000+signal). */
    long x = fork();
    if (x == 0) _exit(syscall(0x40000000 | 39) < 0 ? errno : 0);
    int xs = 0;
    waitpid(x, &xs, 0);
    printf("x32_getpid=%d\n", WIFSIGNALED(xs) ? 1000 + WTERMSIG(xs) : WEXITSTATUS(xs));
    /* fchmodat2 (452) is newer than every syscall the profile names. */
    report("newer_than_profile", syscall(452, -100, "/tmp", 01777, 0));
    long pid = syscall(SYS_clone, SIGCHLD | CLONE_NEWUSER, 0, 0, 0, 0);
    if (pid == 0) _exit(0);
    if (pid > 0) waitpid(pid, 0, 0);
    report("clone_newuser", pid);
    pid = fork();
    if (pid == 0) _exit(syscall(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0) == 0 ? 0 : errno);
    int status = 0;
    waitpid(pid, &status, 0);
    printf("ptrace_traceme=%d\n", WEXITSTATUS(status));
    fflush(stdout);
    return 0;
}
"#;

/// Compile the probe statically (the busybox root has no libc).
fn probe(dir: &Path) -> Result<Option<PathBuf>, Failed> {
    if hoist_testutil::which("gcc").is_none() {
        crate::util::cannot_run("gcc is needed to build the seccomp probe")?;
        return Ok(None);
    }
    let src = dir.join("probe.c");
    let bin = dir.join("probe");
    std::fs::write(&src, PROBE_C.replace("SOCK_STREAM_PROBE", "1"))?;
    let out = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()?;
    check!(
        out.status.success(),
        "gcc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(bin))
}

fn results(out: &str) -> std::collections::BTreeMap<String, i32> {
    out.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn probe_in(root: &Root, probe: &Path) -> Result<(), Failed> {
    std::fs::copy(probe, root.path().join("probe"))?;
    Ok(())
}

/// The probe's flush calls (`RunSpec::discard_syncs`).
const FLUSHES: [&str; 4] = [
    "fsync_badfd",
    "fdatasync_badfd",
    "syncfs_badfd",
    "sync_file_range_badfd",
];

pub fn allowlist_on_the_kernel(env: &Env) -> Result<(), Failed> {
    need_root!();
    let work = tempfile::tempdir()?;
    let Some(probe) = probe(work.path())? else {
        return Ok(());
    };
    let root = Root::new();
    probe_in(&root, &probe)?;
    let got = results(&stdout_of(env, &root.spec("/probe"))?);
    let (eperm, enosys) = (libc::EPERM, libc::ENOSYS);
    let want = |k: &str| -> i32 {
        match k {
            "mount"
            | "unshare"
            | "keyctl"
            | "add_key"
            | "personality_no_randomize"
            | "socket_vsock"
            | "clone_newuser" => eperm,
            "clone3" | "newer_than_profile" => enosys,
            k if k.ends_with("_badfd") => libc::EBADF,
            _ => 0,
        }
    };
    for key in [
        "mount",
        "unshare",
        "keyctl",
        "add_key",
        "personality_query",
        "personality_linux32",
        "personality_linux",
        "personality_no_randomize",
        "socket_vsock",
        "socket_unix",
        "clone3",
        "newer_than_profile",
        "clone_newuser",
        "ptrace_traceme",
    ] {
        check_eq!((key, got.get(key).copied()), (key, Some(want(key))));
    }
    for key in FLUSHES {
        check_eq!((key, got.get(key).copied()), (key, Some(want(key))));
    }
    // x32 calls are refused by the filter (EPERM). Through runc,
    // libseccomp kills them (bad architecture: the profile lists no x32);
    // either way they never run.
    let x32 = got.get("x32_getpid").copied();
    check!(
        std::env::consts::ARCH != "x86_64"
            || x32 == Some(eperm)
            || (!env.embedded() && x32 == Some(1000 + libc::SIGSYS)),
        "x32 getpid answered {x32:?}"
    );

    // The same probe without the filter: the kernel's own answers differ,
    // so the checks above are the filter's doing.
    let mut spec = root.spec("/probe");
    spec.seccomp = false;
    let open = results(&stdout_of(env, &spec)?);
    check!(
        open.get("keyctl") != Some(&eperm)
            && open.get("x32_getpid") != Some(&eperm)
            && open.get("clone3") != Some(&enosys),
        "without seccomp: {open:?}"
    );

    // A build step's spec: the flushes return 0 without running (the bad
    // descriptor is never looked at); everything else answers as above.
    let mut spec = root.spec("/probe");
    spec.discard_syncs = true;
    let discarding = results(&stdout_of(env, &spec)?);
    for key in FLUSHES {
        check_eq!((key, discarding.get(key).copied()), (key, Some(0)));
    }
    for key in ["mount", "keyctl", "clone3", "socket_unix"] {
        check_eq!(
            (key, discarding.get(key).copied()),
            (key, got.get(key).copied())
        );
    }

    // Privileged (all capabilities) with the filter on: moby's capability
    // groups open up (mount, namespaces), the rest stays closed.
    let mut spec = root.spec("/probe");
    spec.all_capabilities = true;
    let privileged = results(&stdout_of(env, &spec)?);
    check_eq!(privileged.get("mount").copied(), Some(0));
    check_eq!(privileged.get("unshare").copied(), Some(0));
    check_eq!(privileged.get("clone_newuser").copied(), Some(0));
    check_eq!(privileged.get("keyctl").copied(), Some(eperm));
    check_eq!(
        privileged.get("personality_no_randomize").copied(),
        Some(eperm)
    );
    Ok(())
}

/// Where scripts/test.sh caches `apt-get download busybox-static:i386`.
const DEB_CACHE: &str = "/var/cache/hoist-test";

fn i386_busybox(dir: &Path) -> Result<Option<PathBuf>, Failed> {
    let deb = std::fs::read_dir(DEB_CACHE).ok().and_then(|d| {
        d.flatten().map(|e| e.path()).find(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("busybox-static_") && name.ends_with("_i386.deb")
        })
    });
    let Some(deb) = deb else {
        crate::util::cannot_run(format!(
            "this test needs busybox-static:i386 in {DEB_CACHE} (scripts/test.sh downloads it)"
        ))?;
        return Ok(None);
    };
    let out = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(dir)
        .output()?;
    check!(
        out.status.success(),
        "dpkg-deb -x {}: {}",
        deb.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(Some(dir.join("bin/busybox")))
}

/// Whether this kernel runs 32-bit x86 programs (CONFIG_IA32_EMULATION,
/// not turned off with `ia32_emulation=false`).
fn ia32_emulation() -> Option<bool> {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    if cmdline.contains("ia32_emulation=0") || cmdline.contains("ia32_emulation=false") {
        return Some(false);
    }
    let out = Command::new("zcat").arg("/proc/config.gz").output().ok()?;
    let config = String::from_utf8_lossy(&out.stdout);
    if config.is_empty() {
        return None;
    }
    Some(config.lines().any(|l| l == "CONFIG_IA32_EMULATION=y"))
}

pub fn i386_program_runs(env: &Env) -> Result<(), Failed> {
    need_root!();
    if std::env::consts::ARCH != "x86_64" {
        return crate::util::host_limit("i386 programs are an x86_64 host's matter");
    }
    if ia32_emulation() == Some(false) {
        // The kernel, not hoist, refuses 32-bit programs.
        return crate::util::host_limit(
            "this kernel has no IA32 emulation; i386 steps cannot run here",
        );
    }
    let work = tempfile::tempdir()?;
    let Some(busybox32) = i386_busybox(work.path())? else {
        return Ok(());
    };
    let root = Root::new();
    std::fs::copy(&busybox32, root.path().join("busybox32"))?;
    // Without the filter, unshare -U works for root (user namespaces need
    // no capability): refused, it shows the i386 section at work.
    let script = "/busybox32 sh -c 'echo ok; ls / | grep -c .; \
                  /busybox32 mount -t tmpfs none /tmp 2>/dev/null || echo mount-refused; \
                  /busybox32 unshare -U true 2>/dev/null || echo unshare-refused; echo done'";
    let out = stdout_of(env, &root.spec(script))?;
    let mut lines = out.lines();
    check_eq!(lines.next(), Some("ok"));
    check!(
        lines
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
            > 5,
        "ls / listed too little:\n{out}"
    );
    // The i386 section of the filter refuses them too (with i386 numbers).
    check_eq!(
        lines.collect::<Vec<_>>(),
        vec!["mount-refused", "unshare-refused", "done"]
    );
    let mut spec = root.spec("/busybox32 unshare -U /busybox32 echo unconfined");
    spec.seccomp = false;
    check_eq!(stdout_of(env, &spec)?, "unconfined\n".to_string());
    Ok(())
}
