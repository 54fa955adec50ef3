//! Resource limits and accounting through cgroups: v2 when a usable unified
//! hierarchy with the memory, cpu and pids controllers exists, else v1
//! (hybrid hosts, such as these machines, keep the controllers on v1).
//!
//! Layout: `<hoist's own cgroup>/hoist/hoist-<pid>-<n>` in each hierarchy,
//! so that limits placed on hoist itself still apply to its steps. A step's
//! cgroup whose owning pid is dead is removed when the next [`Cgroups`] is
//! made (a hoist killed mid-step leaves at most empty cgroups until then).

mod devices;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::spec::Limits;

/// Errors of cgroup handling.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file could not be read or written.
    #[error("failed to {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The cgroup file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Limits were asked for but no cgroup hierarchy can enforce them.
    #[error("resource limits need a writable cgroup hierarchy with the memory, cpu and pids controllers, and none was found")]
    Unavailable,
}

type Result<T> = std::result::Result<T, CgroupError>;

fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok()
}

/// The device nodes a step may use, as Docker's default (runc's
/// `AllowedDevices`): mknod of any node, then read/write/mknod of these
/// only. runc 1.2 dropped the old `c 10:200 rwm` (/dev/net/tun) entry; so
/// do we. Each is (type, major, minor, access) with `None` for `*`.
pub(crate) const ALLOWED_DEVICES: &[(char, Option<u32>, Option<u32>, &str)] = &[
    ('c', None, None, "m"),
    ('b', None, None, "m"),
    ('c', Some(1), Some(3), "rwm"), // null
    ('c', Some(1), Some(5), "rwm"), // zero
    ('c', Some(1), Some(7), "rwm"), // full
    ('c', Some(1), Some(8), "rwm"), // random
    ('c', Some(1), Some(9), "rwm"), // urandom
    ('c', Some(5), Some(0), "rwm"), // tty
    ('c', Some(5), Some(1), "rwm"), // console
    ('c', Some(5), Some(2), "rwm"), // ptmx
    ('c', Some(136), None, "rwm"),  // pts/*
];

/// One rule in the v1 `devices.allow` syntax (`c 1:3 rwm`).
pub(crate) fn device_rule(rule: &(char, Option<u32>, Option<u32>, &str)) -> String {
    let n = |v: Option<u32>| v.map_or("*".to_string(), |v| v.to_string());
    format!("{} {}:{} {}", rule.0, n(rule.1), n(rule.2), rule.3)
}

/// Which hierarchy is in use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupVersion {
    /// Unified hierarchy.
    V2,
    /// Legacy per-controller hierarchies.
    V1,
}

/// Where steps' cgroups are made.
#[derive(Clone, Debug)]
pub(crate) struct Cgroups {
    version: CgroupVersion,
    /// v2: one `hoist` dir. v1: one per controller (memory, cpu, cpuacct,
    /// pids). Either way, last, the v1 `devices` hierarchy's when it is
    /// mounted (hybrid hosts) and writable.
    parents: Vec<(&'static str, PathBuf)>,
}

/// One step's cgroup.
#[derive(Debug)]
pub(crate) struct Cgroup {
    version: CgroupVersion,
    dirs: Vec<(&'static str, PathBuf)>,
}

/// What a finished step's cgroup reports.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct CgroupStats {
    pub cpu: Option<Duration>,
    pub peak_memory: Option<u64>,
    pub oom_killed: bool,
    /// The memory limit was hit at least once (v1 `memory.failcnt`).
    pub memory_limit_hit: bool,
}

use hoist_untrusted::mountinfo::Mount as MountInfo;

fn mountinfo() -> Vec<MountInfo> {
    hoist_untrusted::mountinfo::read().unwrap_or_default()
}

/// `/proc/self/cgroup`: (controllers, path) per line.
fn own_cgroups() -> Vec<(String, String)> {
    read(Path::new("/proc/self/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            it.next()?;
            Some((it.next()?.to_string(), it.next()?.to_string()))
        })
        .collect()
}

fn join_cgroup(mount: &MountInfo, own_path: &str) -> PathBuf {
    let own = Path::new(own_path);
    let rel = own.strip_prefix(&mount.root).unwrap_or(own);
    mount.mount_point.join(rel.strip_prefix("/").unwrap_or(rel))
}

impl Cgroups {
    /// Find a usable hierarchy and create the `hoist` parents. `None` when
    /// there is none we can write to.
    pub(crate) fn detect() -> Option<Cgroups> {
        let mounts = mountinfo();
        let own = own_cgroups();
        let mut found =
            Self::detect_v2(&mounts, &own).or_else(|| Self::detect_v1(&mounts, &own))?;
        if let Some(devices) = v1_parent(&mounts, &own, "devices") {
            found.parents.push(("devices", devices));
        }
        Some(found)
    }

    fn detect_v2(mounts: &[MountInfo], own: &[(String, String)]) -> Option<Cgroups> {
        let mount = mounts.iter().find(|m| m.fs_type == "cgroup2")?;
        let own_path = own.iter().find(|(c, _)| c.is_empty())?.1.as_str();
        // hoist's own cgroup first (its limits then bind the steps); the
        // hierarchy's root when that cgroup holds processes and so cannot
        // enable controllers for children ("no internal processes" rule,
        // e.g. hoist started from a systemd service as root).
        let candidates = [join_cgroup(mount, own_path), mount.mount_point.clone()];
        candidates.iter().find_map(|base| Self::v2_parent_in(base))
    }

    fn v2_parent_in(base: &Path) -> Option<Cgroups> {
        let wanted = ["memory", "cpu", "pids"];
        let has_all = |p: &Path| {
            read(&p.join("cgroup.controllers")).is_some_and(|c| {
                let c: Vec<&str> = c.split_whitespace().collect();
                wanted.iter().all(|w| c.contains(w))
            })
        };
        if !has_all(base) {
            return None;
        }
        let subtree = base.join("cgroup.subtree_control");
        let enabled = read(&subtree).unwrap_or_default();
        if !wanted
            .iter()
            .all(|w| enabled.split_whitespace().any(|e| e == *w))
            && write(&subtree, "+memory +cpu +pids").is_err()
        {
            return None;
        }
        let parent = base.join("hoist");
        fs::create_dir_all(&parent).ok()?;
        if !has_all(&parent) || !can_create_in(&parent) {
            return None;
        }
        write(&parent.join("cgroup.subtree_control"), "+memory +cpu +pids").ok()?;
        Some(Cgroups {
            version: CgroupVersion::V2,
            parents: vec![("unified", parent)],
        })
    }

    fn detect_v1(mounts: &[MountInfo], own: &[(String, String)]) -> Option<Cgroups> {
        let mut parents = Vec::new();
        for controller in ["memory", "cpu", "cpuacct", "pids"] {
            let Some(parent) = v1_parent(mounts, own, controller) else {
                continue;
            };
            // cpu and cpuacct may be co-mounted: then one directory serves
            // both, and `create`/`attach` visit it once.
            parents.push((controller, parent));
        }
        parents
            .iter()
            .any(|(c, _)| *c == "memory")
            .then_some(Cgroups {
                version: CgroupVersion::V1,
                parents,
            })
    }

    /// Which hierarchy is used.
    pub(crate) fn version(&self) -> &CgroupVersion {
        &self.version
    }

    /// The `hoist` parent directories.
    pub(crate) fn parents(&self) -> impl Iterator<Item = &Path> {
        self.parents.iter().map(|(_, p)| p.as_path())
    }

    /// Create the cgroup `name` with `limits`; with `confine_devices`, the
    /// step may open only Docker's default device nodes (v1 `devices`
    /// controller; where there is none, `nodev` mounts do that work).
    pub(crate) fn create(
        &self,
        name: &str,
        limits: &Limits,
        confine_devices: bool,
    ) -> Result<Cgroup> {
        let mut dirs: Vec<(&'static str, PathBuf)> = Vec::new();
        for (controller, parent) in &self.parents {
            let dir = parent.join(name);
            if !dirs.iter().any(|(_, d)| *d == dir) {
                fs::create_dir_all(&dir).map_err(|source| CgroupError::Io {
                    action: "create cgroup",
                    path: dir.clone(),
                    source,
                })?;
            }
            dirs.push((controller, dir));
        }
        let cgroup = Cgroup {
            version: self.version.clone(),
            dirs,
        };
        let applied = cgroup.apply(limits).and_then(|()| {
            if confine_devices {
                cgroup.confine_devices()
            } else {
                Ok(())
            }
        });
        if let Err(e) = applied {
            cgroup.destroy();
            return Err(e);
        }
        Ok(cgroup)
    }

    /// Remove step cgroups whose owning hoist process is gone.
    pub(crate) fn clean_stale(&self) {
        let me = std::process::id();
        for (_, parent) in &self.parents {
            let Ok(entries) = fs::read_dir(parent) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(pid) = owner_pid(&name) else {
                    continue;
                };
                if pid == me || Path::new("/proc").join(pid.to_string()).exists() {
                    continue;
                }
                tracing::info!(cgroup = %entry.path().display(), "removing stale step cgroup");
                let stale = Cgroup {
                    version: self.version.clone(),
                    dirs: vec![("", entry.path())],
                };
                stale.destroy();
            }
        }
    }
}

/// Attach Docker's device rules as a BPF program to the v2 cgroup `dir`.
fn attach_device_program(dir: &Path) -> Result<()> {
    let err = |source| CgroupError::Io {
        action: "attach the device program to",
        path: dir.to_path_buf(),
        source,
    };
    let program = crate::sys::bpf_load_device_program(&devices::program()).map_err(err)?;
    crate::sys::bpf_attach_device_program(dir, &program).map_err(err)
}

/// `<own cgroup>/hoist` in the v1 hierarchy of `controller`, made and
/// writable, or `None`.
fn v1_parent(mounts: &[MountInfo], own: &[(String, String)], controller: &str) -> Option<PathBuf> {
    let mount = mounts
        .iter()
        .find(|m| m.fs_type == "cgroup" && m.super_options.split(',').any(|o| o == controller))?;
    let own_path = own
        .iter()
        .find(|(c, _)| c.split(',').any(|c| c == controller))
        .map_or("/", |(_, p)| p.as_str());
    let parent = join_cgroup(mount, own_path).join("hoist");
    (fs::create_dir_all(&parent).is_ok() && can_create_in(&parent)).then_some(parent)
}

/// Whether this process may make cgroups in `parent` (it may exist already,
/// made by root, while we run unprivileged).
fn can_create_in(parent: &Path) -> bool {
    let probe = parent.join(format!("probe-{}", std::process::id()));
    let ok = fs::create_dir(&probe).is_ok();
    let _ = fs::remove_dir(&probe);
    ok
}

/// The pid in a `hoist-<pid>-<n>` name.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("hoist-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

impl Cgroup {
    fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| *c == controller || self.version == CgroupVersion::V2)
            .map(|(_, d)| d.as_path())
    }

    /// Deny every device, then allow Docker's list (v1 rules only narrow
    /// what the parent allows, so order matters: deny all first). Without a
    /// v1 `devices` hierarchy, on cgroup v2, a BPF device program does it.
    fn confine_devices(&self) -> Result<()> {
        let Some((_, dir)) = self.dirs.iter().find(|(c, _)| *c == "devices") else {
            if self.version == CgroupVersion::V2 {
                if let Some((_, dir)) = self.dirs.first() {
                    match attach_device_program(dir) {
                        Ok(()) => {}
                        // Loading BPF needs privilege. Rootless steps run in
                        // a user namespace, where mknod is refused anyway.
                        Err(e) if crate::sys::geteuid() != 0 => {
                            tracing::debug!(error = %e, "no device program (rootless)");
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
            return Ok(());
        };
        write(&dir.join("devices.deny"), "a")?;
        for rule in ALLOWED_DEVICES {
            write(&dir.join("devices.allow"), &device_rule(rule))?;
        }
        Ok(())
    }

    fn apply(&self, limits: &Limits) -> Result<()> {
        match self.version {
            CgroupVersion::V2 => {
                let Some(dir) = self.dir("unified") else {
                    return Ok(());
                };
                if let Some(memory) = limits.memory {
                    write(&dir.join("memory.max"), &memory.to_string())?;
                    // Docker's default: swap may add as much again.
                    let swap = dir.join("memory.swap.max");
                    if swap.exists() {
                        write(&swap, &memory.to_string())?;
                    }
                }
                if let Some(cpus) = limits.cpus {
                    let quota = (cpus * 100_000.0).round().max(1000.0) as u64;
                    write(&dir.join("cpu.max"), &format!("{quota} 100000"))?;
                }
                if let Some(pids) = limits.pids {
                    write(&dir.join("pids.max"), &pids.to_string())?;
                }
            }
            CgroupVersion::V1 => {
                if let Some(memory) = limits.memory {
                    let dir = self.dir("memory").ok_or(CgroupError::Unavailable)?;
                    write(&dir.join("memory.limit_in_bytes"), &memory.to_string())?;
                    let memsw = dir.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &memory.saturating_mul(2).to_string())?;
                    }
                }
                if let Some(cpus) = limits.cpus {
                    let dir = self.dir("cpu").ok_or(CgroupError::Unavailable)?;
                    let quota = (cpus * 100_000.0).round().max(1000.0) as u64;
                    write(&dir.join("cpu.cfs_period_us"), "100000")?;
                    write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
                if let Some(pids) = limits.pids {
                    let dir = self.dir("pids").ok_or(CgroupError::Unavailable)?;
                    write(&dir.join("pids.max"), &pids.to_string())?;
                }
            }
        }
        Ok(())
    }

    /// Move `pid` into the cgroup (in every hierarchy).
    pub(crate) fn attach(&self, pid: libc::pid_t) -> Result<()> {
        let mut done: Vec<&Path> = Vec::new();
        for (_, dir) in &self.dirs {
            if done.contains(&dir.as_path()) {
                continue;
            }
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
            done.push(dir);
        }
        Ok(())
    }

    /// Read accounting after the step ended.
    pub(crate) fn stats(&self) -> CgroupStats {
        let mut stats = CgroupStats::default();
        let number = |path: PathBuf| read(&path).and_then(|s| s.trim().parse::<u64>().ok());
        let field = |path: PathBuf, key: &str| {
            read(&path).and_then(|s| {
                s.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == key).then(|| v.trim().parse::<u64>().ok()).flatten()
                })
            })
        };
        match self.version {
            CgroupVersion::V2 => {
                if let Some(dir) = self.dir("unified") {
                    stats.cpu =
                        field(dir.join("cpu.stat"), "usage_usec").map(Duration::from_micros);
                    stats.peak_memory = number(dir.join("memory.peak"));
                    stats.oom_killed =
                        field(dir.join("memory.events"), "oom_kill").unwrap_or(0) > 0;
                }
            }
            CgroupVersion::V1 => {
                if let Some(dir) = self.dir("cpuacct") {
                    stats.cpu = number(dir.join("cpuacct.usage")).map(Duration::from_nanos);
                }
                if let Some(dir) = self.dir("memory") {
                    stats.peak_memory = number(dir.join("memory.max_usage_in_bytes"));
                    stats.oom_killed =
                        field(dir.join("memory.oom_control"), "oom_kill").unwrap_or(0) > 0;
                    stats.memory_limit_hit = number(dir.join("memory.failcnt")).unwrap_or(0) > 0;
                }
            }
        }
        stats
    }

    /// Kill what is left in the cgroup and remove it (best effort: a
    /// leftover is removed by the next start's stale cleanup).
    pub(crate) fn destroy(&self) {
        let mut done: Vec<&Path> = Vec::new();
        for (_, dir) in &self.dirs {
            if done.contains(&dir.as_path()) {
                continue;
            }
            done.push(dir);
            remove_cgroup_dir(dir);
        }
    }
}

fn remove_cgroup_dir(dir: &Path) {
    // Children first (a step might have made sub-cgroups with cgroupns).
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    let kill = dir.join("cgroup.kill");
    // Dying processes leave the cgroup shortly after SIGKILL; rmdir says
    // EBUSY until then. Retry for up to ~2 s.
    for _ in 0..200 {
        if kill.exists() {
            let _ = fs::write(&kill, "1");
        } else if let Some(procs) = read(&dir.join("cgroup.procs")) {
            for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                let _ = crate::sys::kill(pid, libc::SIGKILL);
            }
        }
        match fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    tracing::warn!(cgroup = %dir.display(), "could not remove cgroup");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On the real kernel: a process in a v2 cgroup with the program may
    /// mknod but opens only the allowed nodes. Uses whatever cgroup2 mount
    /// the host has (the `unified` one of a hybrid host too).
    #[test]
    fn device_program_confines_a_v2_cgroup() {
        if !hoist_testutil::is_root() {
            assert!(!hoist_testutil::strict(), "needs root");
            eprintln!("skipped: needs root");
            return;
        }
        let Some(mount) = mountinfo().into_iter().find(|m| m.fs_type == "cgroup2") else {
            assert!(!hoist_testutil::strict(), "no cgroup2 mount");
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let dir = mount
            .mount_point
            .join(format!("hoist-devtest-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        attach_device_program(&dir).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let script = format!(
            "echo $$ > {procs} || exit 9; cd {scratch} || exit 8; \
             mknod kmsg c 1 11 && echo mknod-ok; \
             (exec 3< kmsg) 2>/dev/null && echo kmsg-opened || echo kmsg-refused; \
             (exec 3< /dev/kmsg) 2>/dev/null && echo host-kmsg-opened || echo host-kmsg-refused; \
             echo x > /dev/null && echo null-ok; head -c 4 /dev/zero | wc -c",
            procs = dir.join("cgroup.procs").display(),
            scratch = scratch.path().display(),
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let _ = fs::remove_dir(&dir);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "mknod-ok\nkmsg-refused\nhost-kmsg-refused\nnull-ok\n4\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn owner_pid_parses_step_names_only() {
        assert_eq!(owner_pid("hoist-1234-7"), Some(1234));
        assert_eq!(owner_pid("hoist-1234"), None);
        assert_eq!(owner_pid("other-1-2"), None);
    }

    #[test]
    fn cgroup_paths_are_relative_to_the_mount_root() {
        let m = MountInfo {
            root: "/".into(),
            mount_point: "/sys/fs/cgroup/memory".into(),
            fs_type: "cgroup".into(),
            source: "cgroup".into(),
            super_options: "rw,memory".into(),
        };
        assert_eq!(
            join_cgroup(&m, "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/a/b")
        );
        let m = MountInfo {
            root: "/a".into(),
            ..m
        };
        assert_eq!(
            join_cgroup(&m, "/a/b"),
            PathBuf::from("/sys/fs/cgroup/memory/b")
        );
    }
}
