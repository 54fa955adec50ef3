//! A hoist killed with SIGKILL mid-step leaves no process, mount or cgroup.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hoist_runner::{Rootfs, RunSpec, Runner, RunnerConfig};
use libtest_mimic::Failed;

use crate::util::Root;
use crate::{check, need_root};

const HELPER: &str = "__hoist-runner-test-leak-helper__";

/// In helper mode (argv[1] == HELPER rootfs marker): run a long step and say
/// "ready" on stdout when it started. Returns false when not in helper mode.
pub fn helper_if_requested() -> bool {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(HELPER) {
        return false;
    }
    let runner = Runner::new(RunnerConfig {
        init_program: std::env::current_exe().expect("current exe"),
        ..RunnerConfig::default()
    })
    .expect("runner");
    let mut spec = RunSpec::new(
        Rootfs::Dir(PathBuf::from(&args[2])),
        vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo started; while true; do sleep 1; done; : {}-step",
                args[3]
            ),
        ],
    );
    spec.limits.pids = Some(100);
    let _ = runner.run(&spec, &mut |_, _| {
        use std::io::Write;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "ready");
        let _ = out.flush();
    });
    true
}

pub(crate) fn processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(marker) {
            found.push(pid);
        }
    }
    found
}

pub(crate) fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(1)?.parse().ok()
}

pub fn sigkill_of_hoist_leaves_nothing() -> Result<(), Failed> {
    need_root!();
    let root = Root::new();
    let marker = format!("leak-marker-{}-{}", std::process::id(), rand_suffix());
    let mut helper = KillOnDrop(
        Command::new(std::env::current_exe()?)
            .args([HELPER, &root.path().display().to_string(), &marker])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let helper = &mut helper.0;
    let mut line = String::new();
    BufReader::new(helper.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    check!(line.trim() == "ready", "helper said {line:?}");
    let marker = format!("{marker}-step");
    let step = processes_with(&marker);
    // The shell (and maybe a child it just forked, with the same cmdline).
    check!(!step.is_empty(), "no step process before the kill");
    let init = step
        .iter()
        .filter_map(|p| parent_of(*p))
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(hoist_runner::INIT_MARKER))
        })
        .ok_or("no sandbox init above the step")?;
    let helper_pid = helper.id();
    let mounts_of_init = std::fs::read_to_string(format!("/proc/{init}/mountinfo"))?;
    check!(
        mounts_of_init.contains(&root.path().display().to_string()),
        "the init does not have the root mounted"
    );

    // The step's default network: one slirp4netns, which must end with it
    // (its --exit-fd pipe closes when hoist dies).
    let slirps = crate::network::slirps_for(init, helper_pid);
    check!(
        slirps.len() == 1,
        "slirp4netns processes for the step: {slirps:?}"
    );

    helper.kill()?;
    helper.wait()?;

    // The kernel tears the namespace down asynchronously after the parent
    // death signal: wait (bounded) for the processes to go.
    for _ in 0..500 {
        if processes_with(&marker).is_empty() && !Path::new(&format!("/proc/{init}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    check!(
        processes_with(&marker).is_empty(),
        "step process survived its hoist"
    );
    check!(
        !Path::new(&format!("/proc/{init}")).exists(),
        "the init survived its hoist"
    );
    for pid in slirps {
        let gone = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
            })
        };
        for _ in 0..500 {
            if gone() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        check!(gone(), "slirp4netns {pid} survived its hoist");
    }
    let root_str = root.path().display().to_string();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        if let Ok(info) = std::fs::read_to_string(entry.path().join("mountinfo")) {
            check!(
                !info.contains(&root_str),
                "a mount of the root is left in {}",
                entry.path().display()
            );
        }
    }

    // The cgroup of the dead hoist is removed by the next runner's start.
    let name = format!("hoist-{helper_pid}-0");
    let runner = Runner::new(RunnerConfig::default())?;
    for parent in runner.cgroup_parents() {
        check!(
            !parent.join(&name).exists(),
            "cgroup {} left after cleanup",
            parent.join(&name).display()
        );
    }
    let state = RunnerConfig::default().state_dir.join(&name);
    check!(
        !state.exists(),
        "run state {} left after cleanup",
        state.display()
    );
    Ok(())
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
