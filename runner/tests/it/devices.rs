//! Device nodes: a step may mknod (CAP_MKNOD is in Docker's set) but may not
//! open what it made (device cgroup as Docker's, nodev mounts), while the
//! nodes of its `/dev` work; a privileged step may.

use std::path::PathBuf;
use std::time::Duration;

use libtest_mimic::Failed;

use crate::util::{run_with, stdout_of, Env, Root};
use crate::{check, check_eq, need_root};

/// A block device the host can open: loop0 when the loop driver is there
/// (a VM may refuse even root the open of its disk), else the root disk.
fn host_block_device() -> Option<String> {
    if std::path::Path::new("/sys/dev/block/7:0").exists() {
        return Some("7 0".into());
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.get(4) == Some(&"/") && std::path::Path::new("/sys/dev/block").join(f[2]).exists())
            .then(|| f[2].replace(':', " "))
    })
}

/// For each node (a host block device, /dev/kmsg's c 1:11, /dev/mem's
/// c 1:1) made in each `dirs`: whether it opens.
fn script(block: &str, dirs: &[&str]) -> String {
    format!(
        "for d in {}; do for n in 'b {block}' 'c 1 11' 'c 1 1'; do \
           mknod $d/node $n || echo mknod-failed; \
           (exec 3< $d/node) 2>/dev/null && echo \"$d $n opened\" || echo \"$d $n refused\"; \
           rm -f $d/node; \
         done; done",
        dirs.join(" ")
    )
}

fn expected(block: &str, dirs: &[&str], confined: bool) -> String {
    let mut want = String::new();
    for d in dirs {
        for n in [format!("b {block}"), "c 1 11".into(), "c 1 1".into()] {
            // /dev/mem (c 1:1) opens nowhere on some hosts: not asserted open.
            let what = if confined || n == "c 1 1" {
                "refused"
            } else {
                "opened"
            };
            want.push_str(&format!("{d} {n} {what}\n"));
        }
    }
    want
}

/// The nodes of the step's `/dev` work.
const DEV_WORKS: &str = "echo x > /dev/null && echo null-ok; \
     head -c 3 /dev/zero | wc -c; head -c 5 /dev/urandom | wc -c; head -c 2 /dev/random | wc -c; \
     head -c 2 /dev/full | wc -c; exec 3<>/dev/ptmx && echo ptmx-ok";

pub fn mknod_nodes_cannot_be_opened(env: &Env) -> Result<(), Failed> {
    need_root!();
    let Some(block) = host_block_device() else {
        return crate::util::cannot_run("no block device on this host to test with");
    };
    let root = Root::new();
    let cache = tempfile::tempdir()?;
    let dirs = ["/tmp", "/dev", "/dev/shm", "/scratch", "/cache"];
    let mut spec = root.spec(&format!("{}; {DEV_WORKS}", script(&block, &dirs)));
    spec.mounts.push(hoist_runner::Mount::Tmpfs {
        target: "/scratch".into(),
        size: None,
        mode: None,
    });
    // A read-write bind, as a cache mount is.
    spec.mounts.push(hoist_runner::Mount::Bind {
        source: cache.path().to_path_buf(),
        target: "/cache".into(),
        readonly: false,
    });
    let out = stdout_of(env, &spec)?;
    let want = expected(&block, &dirs, true) + "null-ok\n3\n5\n2\n2\nptmx-ok\n";
    check_eq!(out, want);

    // `--security=insecure`: the restriction does not apply (in the
    // rootfs; tmpfs mounts stay nodev as before).
    let mut spec = root.spec(&script(&block, &["/tmp"]));
    spec.all_capabilities = true;
    spec.seccomp = false;
    check_eq!(stdout_of(env, &spec)?, expected(&block, &["/tmp"], false));
    Ok(())
}

/// The step's cgroup in the v1 `devices` hierarchy holds Docker's rules
/// (seen from the host while the step runs), and not for a privileged step.
pub fn device_cgroup_rules(env: &Env) -> Result<(), Failed> {
    need_root!();
    let runner = env.runner();
    let Some(devices) = runner
        .cgroup_parents()
        .into_iter()
        .find(|p| p.join("devices.list").exists())
    else {
        return crate::util::host_limit(
            "no v1 devices cgroup hierarchy on this host (nodev mounts do the work)",
        );
    };
    let root = Root::new();
    let marker = format!("hoist-devices-marker-{}", std::process::id());
    let rules = |privileged: bool| -> Result<Option<String>, Failed> {
        let mut spec = root.spec(&format!("echo go; sleep 1; : {marker}"));
        spec.all_capabilities = privileged;
        spec.seccomp = !privileged;
        let mut seen = None;
        run_with(&runner, &spec, &mut |_, bytes| {
            if bytes.starts_with(b"go") {
                seen = find_step_cgroup(&devices, &marker)
                    .and_then(|d| std::fs::read_to_string(d.join("devices.list")).ok());
            }
        })?;
        Ok(seen)
    };
    let confined = rules(false)?;
    let privileged = rules(true)?;
    if !env.embedded() {
        // runc confines devices in its container cgroup below ours.
        check!(
            confined
                .as_deref()
                .is_some_and(|c| !c.contains("a *:* rwm")),
            "runc's container cgroup allows every device: {confined:?}"
        );
        return Ok(());
    }
    let want = "c *:* m\nb *:* m\nc 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\n\
                c 5:0 rwm\nc 5:1 rwm\nc 5:2 rwm\nc 136:* rwm\n";
    check_eq!(confined.as_deref(), Some(want));
    check_eq!(privileged.as_deref(), Some("a *:* rwm\n"));
    Ok(())
}

/// The deepest cgroup below `parent` holding a process whose command line
/// has `marker`.
fn find_step_cgroup(parent: &std::path::Path, marker: &str) -> Option<PathBuf> {
    hoist_testutil::wait_until(
        "the step's cgroup",
        Duration::from_secs(5),
        Duration::from_millis(20),
        || {
            let mut pending = vec![parent.to_path_buf()];
            let mut found = None;
            while let Some(dir) = pending.pop() {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                if procs.lines().any(|pid| {
                    std::fs::read(format!("/proc/{}/cmdline", pid.trim()))
                        .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
                }) {
                    found = Some(dir.clone());
                }
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    pending.extend(
                        entries
                            .flatten()
                            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                            .map(|e| e.path()),
                    );
                }
            }
            found.map(Some)
        },
    )
}
