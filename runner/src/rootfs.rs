//! Building the step's view of the filesystem inside its mount namespace:
//! the root, `/proc`, `/sys`, `/dev`, the per-run `/etc` files, the extra
//! mounts, then pivot_root(2).
//!
//! Every namespace and mount change goes through the [`Syscalls`] seam so
//! that unit tests can check which calls would be made, in which order,
//! without root (youki's syscall trait).

use std::io;
use std::path::{Path, PathBuf};

use hoist_untrusted::Root;

use crate::spec::{Mount, MountData};

const MS_NONE: libc::c_ulong = 0;

/// The namespace, mount and filesystem calls made while preparing a root.
pub(crate) trait Syscalls {
    /// mount(2).
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()>;
    /// chdir into `new_root`, pivot_root(".", "."), detach the old root, chdir "/".
    fn pivot_root(&self, new_root: &Path) -> io::Result<()>;
    /// sethostname(2).
    fn sethostname(&self, name: &str) -> io::Result<()>;
    /// Bring `lo` up.
    fn loopback_up(&self) -> io::Result<()>;
    /// mkdir -p.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Create an empty file if missing (a bind-mount target on a tmpfs we own).
    fn create_file(&self, path: &Path) -> io::Result<()>;
    /// symlink(2).
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()>;
    /// Write a file with owner and mode (secrets on their tmpfs).
    fn write_file(&self, path: &Path, data: &[u8], mode: u32, uid: u32, gid: u32)
        -> io::Result<()>;
    /// Read a host file (a secret's source).
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The lock-relevant mount flags of the filesystem at `path`.
    fn mount_flags_of(&self, path: &Path) -> io::Result<libc::c_ulong>;
    /// Whether `path` exists, and is a directory (without following a final symlink).
    fn kind_of(&self, path: &Path) -> Option<FileKind>;
    /// The host path of `path` (absolute, inside the step) under `root`,
    /// symlinks followed as the step would see them: never outside `root`.
    fn resolve(&self, root: &Path, path: &str) -> io::Result<PathBuf>;
    /// Create the missing mount target `path` inside `root` (a file or a
    /// directory, with missing parents), never outside it.
    fn create_target(&self, root: &Path, path: &str, is_file: bool) -> io::Result<()>;
}

/// What a path is, for the checks made while preparing a root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else.
    Other,
}

/// The real kernel.
pub(crate) struct LinuxSyscalls;

impl Syscalls for LinuxSyscalls {
    fn mount(
        &self,
        source: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> io::Result<()> {
        tracing::debug!(?source, ?target, ?fstype, flags, ?data, "mount");
        crate::sys::mount(source, target, fstype, flags, data)
    }
    fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
        std::env::set_current_dir(new_root)?;
        crate::sys::pivot_root(Path::new("."), Path::new("."))?;
        // The old root now sits on top of the new one at "/"; make it a slave
        // so the detach below does not propagate to the host, then drop it.
        crate::sys::mount(
            None,
            Path::new("."),
            None,
            libc::MS_SLAVE | libc::MS_REC,
            None,
        )?;
        crate::sys::umount2(Path::new("."), libc::MNT_DETACH)?;
        std::env::set_current_dir("/")
    }
    fn sethostname(&self, name: &str) -> io::Result<()> {
        crate::sys::sethostname(name)
    }
    fn loopback_up(&self) -> io::Result<()> {
        crate::sys::loopback_up()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn create_file(&self, path: &Path) -> io::Result<()> {
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .open(path)
            .map(drop)
    }
    fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, link)
    }
    fn write_file(
        &self,
        path: &Path,
        data: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, data)?;
        std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
    }
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn mount_flags_of(&self, path: &Path) -> io::Result<libc::c_ulong> {
        crate::sys::mount_flags_of(path)
    }
    fn kind_of(&self, path: &Path) -> Option<FileKind> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        Some(if meta.is_dir() {
            FileKind::Dir
        } else if meta.file_type().is_symlink() {
            FileKind::Symlink
        } else {
            FileKind::Other
        })
    }
    fn resolve(&self, root: &Path, path: &str) -> io::Result<PathBuf> {
        Root::new(root)
            .and_then(|r| r.resolve_or_missing(path, true))
            .map_err(untrusted_io)
    }
    fn create_target(&self, root: &Path, path: &str, is_file: bool) -> io::Result<()> {
        let root = Root::new(root).map_err(untrusted_io)?;
        let made = if is_file {
            root.create_file(path, 0o644).map(|_| ())
        } else {
            root.mkdir_all(path, 0o755).map(|_| ())
        };
        match made {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            other => other.map_err(untrusted_io),
        }
    }
}

fn untrusted_io(e: hoist_untrusted::Error) -> io::Error {
    io::Error::new(e.kind(), e.to_string())
}

/// Errors while preparing the root of a step.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// A mount failed.
    #[error("failed to mount {what} at {target}")]
    Mount {
        /// What was mounted.
        what: String,
        /// Where.
        target: PathBuf,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be prepared.
    #[error("failed to {action} {path}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A path inside the step could not be resolved inside its root (too
    /// many symlinks, a file where a directory must be).
    #[error("cannot resolve {} inside the root", hoist_untrusted::escape(path))]
    Resolve {
        /// The path inside the step.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
}

type Result<T> = std::result::Result<T, RootfsError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RootfsError + 'a {
    move |source| RootfsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// What the init needs to prepare a root.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct RootPlan {
    /// Where the root is (or gets) mounted, on the host's paths.
    pub root: PathBuf,
    /// For `Rootfs::Dir`: bind `root` onto itself. Otherwise these mounts.
    pub root_mounts: Option<Vec<MountData>>,
    /// Hostname of the step.
    pub hostname: String,
    /// A new network namespace was made: bring `lo` up.
    pub new_net: bool,
    /// Per-run files bound over paths of the root: (path in the step, host file).
    pub etc_files: Vec<(String, PathBuf)>,
    /// Extra mounts.
    pub mounts: Vec<Mount>,
    /// A host directory (in the run's state dir) where the secrets' tmpfs goes.
    pub secrets_dir: PathBuf,
    /// `RUN --security=insecure`, as BuildKit runs it: sysfs writable, no
    /// masked or read-only paths, and these host devices (from
    /// [`host_devices`]) in the step's `/dev`.
    #[serde(default)]
    pub privileged: bool,
    /// Host device nodes bound into a privileged step's `/dev`.
    #[serde(default)]
    pub host_devices: Vec<PathBuf>,
    /// Size of `/dev/shm` in bytes (`--shm-size`; default 64 MiB).
    #[serde(default)]
    pub shm_size: Option<u64>,
}

/// Docker's default `/dev/shm` size, 64 MiB.
pub(crate) const DEFAULT_SHM_SIZE: u64 = 64 << 20;

impl RootPlan {
    /// The tmpfs option giving `/dev/shm` its size, in KiB as Docker writes it.
    pub(crate) fn shm_size_option(&self) -> String {
        let bytes = self.shm_size.unwrap_or(DEFAULT_SHM_SIZE);
        format!("size={}k", bytes.div_ceil(1024))
    }
}

/// The host's device nodes under `/dev` that a privileged step gets, as
/// containerd's `HostDevices` picks them: character and block devices,
/// recursively, leaving out the per-container trees (pts, shm, mqueue, fd),
/// the console and the nodes every step already has.
pub(crate) fn host_devices(dev: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    const SKIP_DIRS: &[&str] = &["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];
    let mut out = Vec::new();
    let mut pending = vec![dev.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir() {
                if !SKIP_DIRS.contains(&name.as_ref()) {
                    pending.push(path);
                }
            } else if (kind.is_char_device() || kind.is_block_device())
                && !(dir == dev
                    && (name == "console"
                        || name == "ptmx"
                        || STEP_DEVICES.contains(&name.as_ref())))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The device nodes every step's `/dev` holds.
const STEP_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Resolve `path` (absolute, inside the step) to a host path under `root`,
/// following symlinks as the step would see them: never outside `root`.
pub(crate) fn resolve_in_root(sys: &dyn Syscalls, root: &Path, path: &str) -> Result<PathBuf> {
    sys.resolve(root, path)
        .map_err(|source| RootfsError::Resolve {
            path: path.to_string(),
            source,
        })
}

/// Translate `mount(8)` options into flags and the data string.
pub(crate) fn parse_options(options: &[String]) -> (libc::c_ulong, Option<String>) {
    let mut flags = MS_NONE;
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            "sync" => flags |= libc::MS_SYNCHRONOUS,
            "noatime" => flags |= libc::MS_NOATIME,
            "relatime" => flags |= libc::MS_RELATIME,
            "strictatime" => flags |= libc::MS_STRICTATIME,
            "bind" => flags |= libc::MS_BIND,
            "rbind" => flags |= libc::MS_BIND | libc::MS_REC,
            other => data.push(other.to_string()),
        }
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    (flags, data)
}

fn mount_at(
    sys: &dyn Syscalls,
    what: &str,
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<()> {
    sys.mount(source, target, fstype, flags, data)
        .map_err(|source| RootfsError::Mount {
            what: what.to_string(),
            target: target.to_path_buf(),
            source,
        })
}

/// Bind `source` at `target`, read-only if asked (a second, remounting call:
/// the kernel ignores MS_RDONLY on the first bind).
fn bind(sys: &dyn Syscalls, source: &Path, target: &Path, readonly: bool) -> Result<()> {
    let extra = if readonly { libc::MS_RDONLY } else { MS_NONE };
    bind_flags(sys, source, target, extra)
}

/// Bind `source` at `target`, then remount it with `extra` (MS_RDONLY,
/// MS_NODEV) when given: the kernel ignores those on the first bind.
fn bind_flags(
    sys: &dyn Syscalls,
    source: &Path,
    target: &Path,
    extra: libc::c_ulong,
) -> Result<()> {
    let what = source.display().to_string();
    mount_at(
        sys,
        &what,
        Some(source),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?;
    if extra != MS_NONE {
        let locked = sys.mount_flags_of(target).unwrap_or(MS_NONE);
        let how = if extra & libc::MS_RDONLY != 0 {
            "read-only"
        } else {
            "nodev"
        };
        mount_at(
            sys,
            &format!("{what} ({how})"),
            None,
            target,
            None,
            libc::MS_BIND | libc::MS_REMOUNT | extra | locked,
            None,
        )?;
    }
    Ok(())
}

/// MS_NODEV for mounts a step can make device nodes in, unless privileged:
/// a node made with mknod (or shipped in an image) cannot be opened there.
fn nodev(plan: &RootPlan) -> libc::c_ulong {
    if plan.privileged {
        MS_NONE
    } else {
        libc::MS_NODEV
    }
}

/// Make mounts private and mount the root (shared by the embedded init and
/// the external-runtime path).
pub(crate) fn mount_root(sys: &dyn Syscalls, plan: &RootPlan) -> Result<()> {
    // Nothing we mount may propagate back to the host.
    mount_at(
        sys,
        "/ (private)",
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?;
    let root = plan.root.as_path();
    match &plan.root_mounts {
        None => bind_flags(sys, root, root, nodev(plan)),
        Some(mounts) => {
            for m in mounts {
                let target = if m.target.trim_matches('/').is_empty() {
                    root.to_path_buf()
                } else {
                    resolve_in_root(sys, root, &m.target)?
                };
                let (mut flags, data) = parse_options(&m.options);
                flags |= nodev(plan);
                let fstype = (m.kind != "bind").then_some(m.kind.as_str());
                if m.kind == "bind" {
                    flags |= libc::MS_BIND;
                }
                // The kernel ignores MS_RDONLY and MS_NODEV on a new bind:
                // remount after.
                let remounted = flags & (libc::MS_RDONLY | libc::MS_NODEV);
                let readonly = remounted != MS_NONE && flags & libc::MS_BIND != 0;
                mount_at(
                    sys,
                    &format!("{} {}", m.kind, m.source),
                    Some(Path::new(&m.source)),
                    &target,
                    fstype,
                    if readonly { flags & !remounted } else { flags },
                    data.as_deref(),
                )?;
                if readonly {
                    let locked = sys.mount_flags_of(&target).unwrap_or(MS_NONE);
                    mount_at(
                        sys,
                        &format!("{} (read-only)", m.source),
                        None,
                        &target,
                        None,
                        libc::MS_BIND | libc::MS_REMOUNT | remounted | locked,
                        None,
                    )?;
                }
            }
            Ok(())
        }
    }
}

/// Put every secret on a private tmpfs at `plan.secrets_dir/<mount index>`.
/// The tmpfs lives only in this mount namespace, so only RAM ever holds it.
pub(crate) fn prepare_secrets(sys: &dyn Syscalls, plan: &RootPlan) -> Result<()> {
    let mut mounted = false;
    for (index, m) in plan.mounts.iter().enumerate() {
        let Mount::Secret {
            source,
            mode,
            uid,
            gid,
            ..
        } = m
        else {
            continue;
        };
        if !mounted {
            sys.create_dir_all(&plan.secrets_dir)
                .map_err(io_err("create", &plan.secrets_dir))?;
            mount_at(
                sys,
                "tmpfs (secrets)",
                Some(Path::new("tmpfs")),
                &plan.secrets_dir,
                Some("tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                Some("mode=0755,size=16m"),
            )?;
            mounted = true;
        }
        let data = sys
            .read_file(source)
            .map_err(io_err("read secret", source))?;
        let file = plan.secrets_dir.join(index.to_string());
        sys.write_file(&file, &data, *mode, *uid, *gid)
            .map_err(io_err("write secret", &file))?;
    }
    Ok(())
}

/// Prepare the root described by `plan` and pivot into it. Called by the
/// sandbox init, in its own mount namespace.
pub(crate) fn prepare_root(sys: &dyn Syscalls, plan: &RootPlan) -> Result<()> {
    mount_root(sys, plan)?;
    let root = plan.root.as_path();
    sys.sethostname(&plan.hostname)
        .map_err(io_err("set hostname for", root))?;
    if plan.new_net {
        sys.loopback_up()
            .map_err(io_err("bring up the loopback interface of", root))?;
    }

    let proc_dir = root.join("proc");
    mount_at(
        sys,
        "proc",
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?;
    let sys_dir = root.join("sys");
    let mut sys_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    if !plan.privileged {
        sys_flags |= libc::MS_RDONLY;
    }
    if let Err(e) = sys.mount(
        Some(Path::new("sysfs")),
        &sys_dir,
        Some("sysfs"),
        sys_flags,
        None,
    ) {
        // A fresh sysfs needs a network namespace owned by our user namespace;
        // with the host's network in rootless mode, bind the host's instead.
        tracing::debug!(error = %e, "sysfs mount refused, binding /sys");
        bind(sys, Path::new("/sys"), &sys_dir, !plan.privileged)?;
    }
    prepare_dev(sys, &root.join("dev"), plan, nodev(plan))?;

    for (path, host) in &plan.etc_files {
        let target = resolve_in_root(sys, root, path)?;
        if sys.kind_of(&target).is_none() {
            // A dangling symlink in the image (e.g. resolv.conf into /run):
            // leave the step without this file rather than create one.
            tracing::debug!(path, "no file to bind over");
            continue;
        }
        bind(sys, host, &target, false)?;
    }

    prepare_secrets(sys, plan)?;
    for (index, m) in plan.mounts.iter().enumerate() {
        let target = resolve_in_root(sys, root, m.target())?;
        if sys.kind_of(&target).is_none() {
            sys.create_target(root, m.target(), m.target_is_file())
                .map_err(io_err("create", &target))?;
        }
        match m {
            Mount::Bind {
                source, readonly, ..
            } => {
                let ro = if *readonly { libc::MS_RDONLY } else { MS_NONE };
                bind_flags(sys, source, &target, ro | nodev(plan))?
            }
            Mount::Tmpfs { size, mode, .. } => {
                let mut data = format!("mode={:o}", mode.unwrap_or(0o1777));
                if let Some(size) = size {
                    data.push_str(&format!(",size={size}"));
                }
                mount_at(
                    sys,
                    "tmpfs",
                    Some(Path::new("tmpfs")),
                    &target,
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(&data),
                )?;
            }
            Mount::Secret { .. } => bind(
                sys,
                &plan.secrets_dir.join(index.to_string()),
                &target,
                true,
            )?,
            Mount::SshAgent { socket, .. } => bind(sys, socket, &target, false)?,
        }
    }

    sys.pivot_root(root)
        .map_err(io_err("pivot_root into", root))?;
    if !plan.privileged {
        mask_paths(sys)?;
    }
    Ok(())
}

/// A minimal `/dev` on a tmpfs: device nodes bound from the host (works in a
/// user namespace too, where mknod is refused), a private devpts, shm, mqueue.
/// With `nodev` the tmpfs itself opens no device: the bound nodes are mounts
/// of their own, with the host `/dev`'s flags, and keep working.
fn prepare_dev(
    sys: &dyn Syscalls,
    dev: &Path,
    plan: &RootPlan,
    nodev: libc::c_ulong,
) -> Result<()> {
    let host_devices = &plan.host_devices;
    mount_at(
        sys,
        "tmpfs (/dev)",
        Some(Path::new("tmpfs")),
        dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_STRICTATIME | nodev,
        Some("mode=755,size=65536k"),
    )?;
    for name in STEP_DEVICES {
        let target = dev.join(name);
        sys.create_file(&target)
            .map_err(io_err("create", &target))?;
        bind(sys, &Path::new("/dev").join(name), &target, false)?;
    }
    for host in host_devices {
        let Ok(relative) = host.strip_prefix("/dev") else {
            continue;
        };
        let target = dev.join(relative);
        if let Some(parent) = target.parent() {
            sys.create_dir_all(parent)
                .map_err(io_err("create", parent))?;
        }
        sys.create_file(&target)
            .map_err(io_err("create", &target))?;
        bind(sys, host, &target, false)?;
    }
    let pts = dev.join("pts");
    sys.create_dir_all(&pts).map_err(io_err("create", &pts))?;
    let pts_flags = libc::MS_NOSUID | libc::MS_NOEXEC;
    if sys
        .mount(
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        )
        .is_err()
    {
        // gid 5 (tty) is not mapped in a user namespace without subordinate ids.
        mount_at(
            sys,
            "devpts",
            Some(Path::new("devpts")),
            &pts,
            Some("devpts"),
            pts_flags,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )?;
    }
    let link = |target: &str, name: &str| {
        let path = dev.join(name);
        sys.symlink(Path::new(target), &path)
            .map_err(io_err("create symbolic link", &path))
    };
    link("pts/ptmx", "ptmx")?;
    link("/proc/self/fd", "fd")?;
    link("/proc/self/fd/0", "stdin")?;
    link("/proc/self/fd/1", "stdout")?;
    link("/proc/self/fd/2", "stderr")?;
    let shm = dev.join("shm");
    sys.create_dir_all(&shm).map_err(io_err("create", &shm))?;
    mount_at(
        sys,
        "tmpfs (/dev/shm)",
        Some(Path::new("shm")),
        &shm,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        Some(&format!("mode=1777,{}", plan.shm_size_option())),
    )?;
    let mqueue = dev.join("mqueue");
    sys.create_dir_all(&mqueue)
        .map_err(io_err("create", &mqueue))?;
    mount_at(
        sys,
        "mqueue",
        Some(Path::new("mqueue")),
        &mqueue,
        Some("mqueue"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
}

/// Docker's masked and read-only paths, applied after pivot_root.
pub(crate) const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
pub(crate) const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn mask_paths(sys: &dyn Syscalls) -> Result<()> {
    for p in MASKED_PATHS {
        let path = Path::new(p);
        match sys.kind_of(path) {
            None => {}
            Some(FileKind::Dir) => mount_at(
                sys,
                "tmpfs (mask)",
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                libc::MS_RDONLY,
                None,
            )?,
            Some(_) => bind(sys, Path::new("/dev/null"), path, false)?,
        }
    }
    for p in READONLY_PATHS {
        let path = Path::new(p);
        if sys.kind_of(path).is_some() {
            bind(sys, path, path, true)?;
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording fake of [`Syscalls`] for unit tests.
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeSet;
    use std::rc::Rc;

    /// Records every call as a line of text into shared state.
    #[derive(Default, Clone)]
    pub(crate) struct RecordingSyscalls {
        pub calls: Rc<RefCell<Vec<String>>>,
        pub existing: Rc<RefCell<BTreeSet<PathBuf>>>,
        pub refuse_sysfs: bool,
        /// Also name MS_NODEV in the recorded flags.
        pub show_nodev: bool,
    }

    impl RecordingSyscalls {
        fn record(&self, line: String) {
            self.calls.borrow_mut().push(line);
        }
    }

    impl Syscalls for RecordingSyscalls {
        fn mount(
            &self,
            source: Option<&Path>,
            target: &Path,
            fstype: Option<&str>,
            flags: libc::c_ulong,
            data: Option<&str>,
        ) -> io::Result<()> {
            if self.refuse_sysfs && fstype == Some("sysfs") {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            let mut f = Vec::new();
            for (bit, name) in [
                (libc::MS_BIND, "bind"),
                (libc::MS_REC, "rec"),
                (libc::MS_RDONLY, "ro"),
                (libc::MS_REMOUNT, "remount"),
                (libc::MS_PRIVATE, "private"),
                (libc::MS_NODEV, "nodev"),
            ] {
                if flags & bit != 0 && (bit != libc::MS_NODEV || self.show_nodev) {
                    f.push(name);
                }
            }
            self.record(format!(
                "mount {} {} {} [{}] {}",
                source.map_or("-".into(), |s| s.display().to_string()),
                target.display(),
                fstype.unwrap_or("-"),
                f.join(","),
                data.unwrap_or("-")
            ));
            Ok(())
        }
        fn pivot_root(&self, new_root: &Path) -> io::Result<()> {
            self.record(format!("pivot_root {}", new_root.display()));
            Ok(())
        }
        fn sethostname(&self, name: &str) -> io::Result<()> {
            self.record(format!("sethostname {name}"));
            Ok(())
        }
        fn loopback_up(&self) -> io::Result<()> {
            self.record("loopback_up".into());
            Ok(())
        }
        fn create_dir_all(&self, path: &Path) -> io::Result<()> {
            self.existing.borrow_mut().insert(path.to_path_buf());
            Ok(())
        }
        fn create_file(&self, path: &Path) -> io::Result<()> {
            self.existing.borrow_mut().insert(path.to_path_buf());
            Ok(())
        }
        fn symlink(&self, target: &Path, link: &Path) -> io::Result<()> {
            self.record(format!("symlink {} {}", target.display(), link.display()));
            Ok(())
        }
        fn write_file(
            &self,
            path: &Path,
            data: &[u8],
            mode: u32,
            uid: u32,
            gid: u32,
        ) -> io::Result<()> {
            self.record(format!(
                "write {} {} bytes mode {mode:o} owner {uid}:{gid}",
                path.display(),
                data.len()
            ));
            Ok(())
        }
        fn read_file(&self, _path: &Path) -> io::Result<Vec<u8>> {
            Ok(b"s3cret".to_vec())
        }
        fn mount_flags_of(&self, _path: &Path) -> io::Result<libc::c_ulong> {
            Ok(0)
        }
        fn kind_of(&self, path: &Path) -> Option<FileKind> {
            if self.existing.borrow().contains(path) {
                Some(FileKind::Other)
            } else {
                None
            }
        }
        /// Paths are taken as they are: the resolution itself is tested on
        /// a real tree against [`LinuxSyscalls`].
        fn resolve(&self, root: &Path, path: &str) -> io::Result<PathBuf> {
            Ok(root.join(path.trim_start_matches('/')))
        }
        fn create_target(&self, root: &Path, path: &str, _is_file: bool) -> io::Result<()> {
            let target = root.join(path.trim_start_matches('/'));
            self.record(format!("create {}", target.display()));
            self.existing.borrow_mut().insert(target);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::RecordingSyscalls;
    use super::*;

    fn plan() -> RootPlan {
        RootPlan {
            root: PathBuf::from("/r"),
            root_mounts: None,
            hostname: "box".into(),
            new_net: true,
            etc_files: vec![("/etc/hosts".into(), PathBuf::from("/run/x/hosts"))],
            mounts: vec![Mount::Secret {
                source: PathBuf::from("/host/secret"),
                target: "/run/secrets/a".into(),
                mode: 0o400,
                uid: 0,
                gid: 0,
            }],
            secrets_dir: PathBuf::from("/run/x/secrets"),
            privileged: false,
            host_devices: Vec::new(),
            shm_size: None,
        }
    }

    fn position(calls: &[String], needle: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(needle))
            .unwrap_or_else(|| panic!("no call starting with {needle:?} in {calls:#?}"))
    }

    #[test]
    fn mounts_happen_before_pivot_root_and_nothing_propagates() {
        let fake = RecordingSyscalls::default();
        fake.existing
            .borrow_mut()
            .insert(PathBuf::from("/r/etc/hosts"));
        prepare_root(&fake, &plan()).unwrap();
        let calls = fake.calls.borrow();
        assert_eq!(calls[0], "mount - / - [rec,private] -");
        assert_eq!(calls[1], "mount /r /r - [bind,rec] -");
        let pivot = position(&calls, "pivot_root /r");
        for needle in [
            "mount proc /r/proc proc",
            "mount sysfs /r/sys sysfs [ro]",
            "mount tmpfs /r/dev tmpfs",
            "mount /dev/null /r/dev/null - [bind,rec]",
            "mount devpts /r/dev/pts devpts",
            "mount /run/x/hosts /r/etc/hosts - [bind,rec]",
            "mount tmpfs /run/x/secrets tmpfs",
            "write /run/x/secrets/0 6 bytes mode 400 owner 0:0",
            "mount /run/x/secrets/0 /r/run/secrets/a - [bind,rec]",
            "mount - /r/run/secrets/a - [bind,ro,remount]",
            "sethostname box",
            "loopback_up",
        ] {
            assert!(
                position(&calls, needle) < pivot,
                "{needle} after pivot_root"
            );
        }
    }

    #[test]
    fn sysfs_falls_back_to_a_read_only_bind() {
        let fake = RecordingSyscalls {
            refuse_sysfs: true,
            ..Default::default()
        };
        prepare_root(&fake, &plan()).unwrap();
        let calls = fake.calls.borrow();
        position(&calls, "mount /sys /r/sys - [bind,rec]");
        position(&calls, "mount - /r/sys - [bind,ro,remount]");
    }

    #[test]
    fn privileged_steps_get_writable_sysfs_host_devices_and_no_masks() {
        let masked = |privileged: bool| {
            let fake = RecordingSyscalls::default();
            fake.existing
                .borrow_mut()
                .insert(PathBuf::from("/proc/kcore"));
            let mut plan = plan();
            plan.privileged = privileged;
            if privileged {
                plan.host_devices = vec!["/dev/kvm".into(), "/dev/net/tun".into()];
            }
            prepare_root(&fake, &plan).unwrap();
            let calls = fake.calls.borrow().clone();
            calls
        };
        let confined = masked(false);
        position(&confined, "mount sysfs /r/sys sysfs [ro]");
        position(&confined, "mount /dev/null /proc/kcore");

        let calls = masked(true);
        let pivot = position(&calls, "pivot_root /r");
        assert!(position(&calls, "mount sysfs /r/sys sysfs") < pivot);
        assert!(
            !calls
                .iter()
                .any(|c| c.starts_with("mount sysfs /r/sys sysfs [ro]")),
            "{calls:#?}"
        );
        assert!(
            !calls.iter().any(|c| c.contains("/proc/kcore")),
            "{calls:#?}"
        );
        assert!(position(&calls, "mount /dev/kvm /r/dev/kvm - [bind,rec]") < pivot);
        position(&calls, "mount /dev/net/tun /r/dev/net/tun - [bind,rec]");
    }

    #[test]
    fn writable_mounts_are_nodev_unless_privileged() {
        let calls = |privileged: bool| {
            let fake = RecordingSyscalls {
                show_nodev: true,
                ..Default::default()
            };
            let mut plan = plan();
            plan.privileged = privileged;
            plan.mounts.push(Mount::Bind {
                source: "/cache".into(),
                target: "/cache".into(),
                readonly: false,
            });
            prepare_root(&fake, &plan).unwrap();
            let calls = fake.calls.borrow().clone();
            calls
        };
        let confined = calls(false);
        for needle in [
            "mount - /r - [bind,remount,nodev]",
            "mount tmpfs /r/dev tmpfs [nodev]",
            "mount /dev/null /r/dev/null - [bind,rec] -",
            "mount /cache /r/cache - [bind,rec] -",
            "mount - /r/cache - [bind,remount,nodev]",
            "mount shm /r/dev/shm tmpfs [nodev]",
        ] {
            position(&confined, needle);
        }
        // The bound device nodes are not remounted: they keep the host's flags.
        assert!(!confined
            .iter()
            .any(|c| c.starts_with("mount - /r/dev/null")));
        let privileged = calls(true);
        position(&privileged, "mount tmpfs /r/dev tmpfs []");
        assert!(
            !privileged
                .iter()
                .any(|c| c.starts_with("mount - /r - ") || c.starts_with("mount - /r/cache")),
            "{privileged:#?}"
        );

        // An overlay root gets nodev at mount time.
        let fake = RecordingSyscalls {
            show_nodev: true,
            ..Default::default()
        };
        let mut p = plan();
        p.root_mounts = Some(vec![MountData {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: "/".into(),
            options: vec!["lowerdir=/l".into()],
        }]);
        prepare_root(&fake, &p).unwrap();
        position(
            &fake.calls.borrow(),
            "mount overlay /r overlay [nodev] lowerdir=/l",
        );
    }

    #[test]
    fn host_devices_are_device_nodes_outside_the_per_step_trees() {
        let devices = host_devices(Path::new("/dev"));
        assert!(devices.iter().all(|d| {
            use std::os::unix::fs::FileTypeExt;
            let t = std::fs::symlink_metadata(d).unwrap().file_type();
            t.is_char_device() || t.is_block_device()
        }));
        for skipped in ["/dev/null", "/dev/console", "/dev/ptmx", "/dev/tty"] {
            assert!(!devices.contains(&PathBuf::from(skipped)), "{skipped}");
        }
        assert!(!devices.iter().any(|d| d.starts_with("/dev/pts")));
        if Path::new("/dev/loop-control").exists() {
            assert!(devices.contains(&PathBuf::from("/dev/loop-control")));
        }
    }

    #[test]
    fn targets_resolve_and_are_created_inside_the_root() {
        use std::os::unix::fs::{symlink, PermissionsExt};
        let dir = tempfile::tempdir().unwrap();
        let (root, host) = (dir.path().join("root"), dir.path().join("host"));
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("victim"), "host file").unwrap();
        symlink(&host, root.join("etc/out")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let sys = LinuxSyscalls;
        let p = resolve_in_root(&sys, &root, "/../../etc/out/victim").unwrap();
        assert!(p.starts_with(&root), "{}", p.display());
        let escaped = format!("/../../../../../../..{}/victim", host.display());
        sys.create_target(&root, &escaped, true).unwrap();
        sys.create_target(&root, "/etc/out/newdir", false).unwrap();
        assert_eq!(
            std::fs::read_to_string(host.join("victim")).unwrap(),
            "host file"
        );
        assert!(!host.join("newdir").exists());
        let inside = root.join(host.strip_prefix("/").unwrap());
        assert!(inside.join("victim").is_file());
        assert!(inside.join("newdir").is_dir());
        assert_eq!(
            std::fs::metadata(&host).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        assert!(matches!(
            resolve_in_root(&sys, &root, "/loop/x"),
            Err(RootfsError::Resolve { .. })
        ));
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let (flags, data) = parse_options(&[
            "ro".into(),
            "nosuid".into(),
            "lowerdir=/a:/b".into(),
            "upperdir=/u".into(),
        ]);
        assert_eq!(flags, libc::MS_RDONLY | libc::MS_NOSUID);
        assert_eq!(data.as_deref(), Some("lowerdir=/a:/b,upperdir=/u"));
    }
}
