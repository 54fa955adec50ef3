//! cgroup limits, OOM reporting and accounting.

use std::path::PathBuf;

use hoist_runner::{ExitStatus, Limits};
use libtest_mimic::Failed;

use crate::util::{run, run_with, Env, Root};
use crate::{check, check_eq, need_root};

fn need_cgroups(env: &Env) -> Result<bool, Failed> {
    if env.runner().cgroup_version().is_none() {
        crate::util::cannot_run("no usable cgroup hierarchy")?;
        return Ok(false);
    }
    Ok(true)
}

pub fn memory_limit_oom_reported(env: &Env) -> Result<(), Failed> {
    need_root!();
    if !need_cgroups(env)? {
        return Ok(());
    }
    let root = Root::new();
    let mut spec = root.spec("x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo survived");
    spec.limits = Limits {
        memory: Some(32 * 1024 * 1024),
        ..Limits::default()
    };
    let out = run(env, &spec)?;
    check!(
        !out.stdout.contains("survived"),
        "the step survived its memory limit"
    );
    check!(
        out.result.oom_killed,
        "OOM kill not reported: {:?}",
        out.result
    );
    let message = out.result.failure_message(&spec.limits).unwrap_or_default();
    check!(
        message.contains("ran out of memory") && message.contains("32 MiB"),
        "message: {message}"
    );
    // A step within its limit is not reported as OOM.
    let ok = run(env, &root.spec("head -c 1000000 /dev/zero | wc -c"))?;
    check!(!ok.result.oom_killed, "false OOM report");
    Ok(())
}

fn find_cgroup_file(env: &Env, file: &str, value: &str) -> Option<PathBuf> {
    for parent in env.runner().cgroup_parents() {
        for entry in std::fs::read_dir(&parent).ok()?.flatten() {
            let candidates = [
                entry.path().join(file),
                entry.path().join(entry.file_name()).join(file),
            ];
            for c in candidates {
                if std::fs::read_to_string(&c).is_ok_and(|v| v.trim() == value) {
                    return Some(entry.path());
                }
            }
        }
    }
    None
}

pub fn limits_written_and_usage_reported(env: &Env) -> Result<(), Failed> {
    need_root!();
    if !need_cgroups(env)? {
        return Ok(());
    }
    let root = Root::new();
    // A memory limit no other test uses identifies this step's cgroup.
    let memory = 200 * 1024 * 1024 + 4096 * u64::from(std::process::id() % 1000 + 7);
    let mut spec = root.spec(
        "echo go; i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done; x=$(head -c 20000000 /dev/zero | tr '\\0' a); echo done",
    );
    spec.limits = Limits {
        memory: Some(memory),
        cpus: Some(1.5),
        pids: Some(77),
    };
    let runner = env.runner();
    let version = runner.cgroup_version();
    let mut seen = None;
    let out = run_with(&runner, &spec, &mut |_, bytes| {
        if bytes.starts_with(b"go") {
            let file = match version {
                Some(hoist_runner::CgroupVersion::V1) => "memory.limit_in_bytes",
                _ => "memory.max",
            };
            seen = find_cgroup_file(env, file, &memory.to_string());
            if let Some(dir) = &seen {
                let name = dir.file_name().unwrap().to_owned();
                // An external runtime's container cgroup is below the step's, same name.
                let read = |f: &str| {
                    runner
                        .cgroup_parents()
                        .iter()
                        .find_map(|p| {
                            std::fs::read_to_string(p.join(&name).join(&name).join(f))
                                .or_else(|_| std::fs::read_to_string(p.join(&name).join(f)))
                                .ok()
                        })
                        .unwrap_or_default()
                };
                let cpu = match version {
                    Some(hoist_runner::CgroupVersion::V1) => read("cpu.cfs_quota_us"),
                    _ => read("cpu.max"),
                };
                seen = Some(PathBuf::from(format!(
                    "{}|{}",
                    cpu.trim(),
                    read("pids.max").trim()
                )));
            }
        }
    })?;
    check_eq!(out.result.status, ExitStatus::Exited(0));
    let seen = seen.ok_or("the step's cgroup with its memory limit was not found")?;
    let seen = seen.display().to_string();
    let want_cpu = match version {
        Some(hoist_runner::CgroupVersion::V1) => "150000|77",
        _ => "150000 100000|77",
    };
    check_eq!(seen.as_str(), want_cpu);
    let usage = out.result.usage;
    check!(usage.cpu.as_micros() > 0, "no CPU time: {usage:?}");
    check!(
        usage.wall >= usage.cpu / 2,
        "wall below cpu/2 on 2 cores: {usage:?}"
    );
    check!(
        usage.peak_memory.unwrap_or(0) > 20_000_000,
        "peak memory below the 20 MB the step held: {usage:?}"
    );
    Ok(())
}

pub fn pids_limit_enforced(env: &Env) -> Result<(), Failed> {
    need_root!();
    if !need_cgroups(env)? {
        return Ok(());
    }
    let root = Root::new();
    let mut spec =
        root.spec("i=0; while [ $i -lt 30 ]; do sleep 60 & i=$((i+1)); done; echo spawned-all");
    spec.limits = Limits {
        pids: Some(10),
        ..Limits::default()
    };
    let out = run(env, &spec)?;
    let all = format!("{}{}", out.stdout, out.stderr);
    check!(
        all.contains("fork"),
        "no fork failure under pids.max=10: {all}"
    );
    Ok(())
}
