//! Capabilities (Docker's default set, with the `caps` crate) and the default
//! seccomp filter (compiled with `seccompiler`, the rust-vmm crate that
//! Firecracker uses).
//!
//! Docker's own seccomp profile is an allowlist of ~350 syscalls kept in step
//! with every kernel; hoist installs the *denylist* that matters for a build
//! step: the syscalls Docker refuses to a container without extra
//! capabilities (module loading, kexec, reboot, mount and namespace creation,
//! bpf, perf, ptrace, keyrings, clock changes, ...), answered with EPERM.

use std::collections::BTreeMap;

use caps::{CapSet, Capability, CapsHashSet};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Docker's default capabilities (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: &[Capability] = &[
    Capability::CAP_CHOWN,
    Capability::CAP_DAC_OVERRIDE,
    Capability::CAP_FSETID,
    Capability::CAP_FOWNER,
    Capability::CAP_MKNOD,
    Capability::CAP_NET_RAW,
    Capability::CAP_SETGID,
    Capability::CAP_SETUID,
    Capability::CAP_SETFCAP,
    Capability::CAP_SETPCAP,
    Capability::CAP_NET_BIND_SERVICE,
    Capability::CAP_SYS_CHROOT,
    Capability::CAP_KILL,
    Capability::CAP_AUDIT_WRITE,
];

/// Errors while dropping privileges.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A capability set could not be changed.
    #[error("failed to reduce the {set} capability set")]
    Caps {
        /// Which set.
        set: &'static str,
        /// The cause.
        #[source]
        source: caps::errors::CapsError,
    },
    /// The seccomp filter could not be compiled.
    #[error("failed to compile the default seccomp filter")]
    Seccomp(#[source] seccompiler::BackendError),
    /// This architecture has no seccomp support in seccompiler.
    #[error("no seccomp filter for architecture {0}")]
    Arch(&'static str),
}

fn default_set() -> CapsHashSet {
    DEFAULT_CAPABILITIES.iter().copied().collect()
}

/// Reduce the bounding set to Docker's default and clear the inheritable and
/// ambient sets. Must run while still privileged, before setuid.
///
/// After exec, root gets exactly the bounding set (the kernel treats root's
/// file capabilities as full); another user gets none, as with Docker.
pub(crate) fn drop_bounding_set() -> Result<(), SecurityError> {
    let keep = default_set();
    for cap in caps::all() {
        if !keep.contains(&cap) {
            // Capabilities this kernel does not know are absent already.
            if let Err(source) = caps::drop(None, CapSet::Bounding, cap) {
                if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
                    return Err(SecurityError::Caps {
                        set: "bounding",
                        source,
                    });
                }
            }
        }
    }
    caps::clear(None, CapSet::Ambient).map_err(|source| SecurityError::Caps {
        set: "ambient",
        source,
    })?;
    caps::clear(None, CapSet::Inheritable).map_err(|source| SecurityError::Caps {
        set: "inheritable",
        source,
    })
}

/// Reduce the effective and permitted sets to the default (root steps).
pub(crate) fn limit_root_capabilities() -> Result<(), SecurityError> {
    let keep = default_set();
    caps::set(None, CapSet::Effective, &keep).map_err(|source| SecurityError::Caps {
        set: "effective",
        source,
    })?;
    caps::set(None, CapSet::Permitted, &keep).map_err(|source| SecurityError::Caps {
        set: "permitted",
        source,
    })
}

/// Syscalls refused with EPERM (Docker refuses them unless the container has
/// extra capabilities, which a build step never has).
pub(crate) const DENIED: &[&str] = &[
    "acct",
    "add_key",
    "bpf",
    "clock_adjtime",
    "clock_settime",
    "create_module",
    "delete_module",
    "finit_module",
    "fsconfig",
    "fsmount",
    "fsopen",
    "fspick",
    "get_kernel_syms",
    "init_module",
    "ioperm",
    "iopl",
    "kcmp",
    "kexec_file_load",
    "kexec_load",
    "keyctl",
    "lookup_dcookie",
    "mount",
    "mount_setattr",
    "move_mount",
    "nfsservctl",
    "open_by_handle_at",
    "open_tree",
    "perf_event_open",
    "pivot_root",
    "process_vm_readv",
    "process_vm_writev",
    "ptrace",
    "query_module",
    "quotactl",
    "reboot",
    "request_key",
    "setns",
    "settimeofday",
    "swapoff",
    "swapon",
    "sysfs",
    "_sysctl",
    "umount2",
    "unshare",
    "uselib",
    "userfaultfd",
    "ustat",
    "vm86",
    "vm86old",
];

/// Namespace flags refused in clone(2), as Docker's profile does.
pub(crate) const NAMESPACE_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWCGROUP,
];

fn syscall_number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    let table: &[(&str, libc::c_long)] = &[
        ("acct", libc::SYS_acct),
        ("add_key", libc::SYS_add_key),
        ("bpf", libc::SYS_bpf),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("clock_settime", libc::SYS_clock_settime),
        ("delete_module", libc::SYS_delete_module),
        ("finit_module", libc::SYS_finit_module),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fsopen", libc::SYS_fsopen),
        ("fspick", libc::SYS_fspick),
        ("init_module", libc::SYS_init_module),
        ("ioperm", libc::SYS_ioperm),
        ("iopl", libc::SYS_iopl),
        ("kcmp", libc::SYS_kcmp),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("kexec_load", libc::SYS_kexec_load),
        ("keyctl", libc::SYS_keyctl),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        ("mount", libc::SYS_mount),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("move_mount", libc::SYS_move_mount),
        ("nfsservctl", libc::SYS_nfsservctl),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("open_tree", libc::SYS_open_tree),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("pivot_root", libc::SYS_pivot_root),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("ptrace", libc::SYS_ptrace),
        ("quotactl", libc::SYS_quotactl),
        ("reboot", libc::SYS_reboot),
        ("request_key", libc::SYS_request_key),
        ("setns", libc::SYS_setns),
        ("settimeofday", libc::SYS_settimeofday),
        ("swapoff", libc::SYS_swapoff),
        ("swapon", libc::SYS_swapon),
        ("sysfs", libc::SYS_sysfs),
        ("_sysctl", libc::SYS__sysctl),
        ("umount2", libc::SYS_umount2),
        ("unshare", libc::SYS_unshare),
        ("uselib", libc::SYS_uselib),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("ustat", libc::SYS_ustat),
    ];
    #[cfg(not(target_arch = "x86_64"))]
    let table: &[(&str, libc::c_long)] = &[];
    table.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// Compile the default filters for this machine's architecture, as BPF
/// programs in `libc` form, to be installed in order.
pub(crate) fn default_seccomp_filters() -> Result<Vec<Vec<libc::sock_filter>>, SecurityError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SecurityError::Arch(std::env::consts::ARCH))?;
    if syscall_number("mount").is_none() {
        return Err(SecurityError::Arch(std::env::consts::ARCH));
    }
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in DENIED {
        if let Some(nr) = syscall_number(name) {
            rules.insert(nr, Vec::new());
        }
    }
    let mut clone_rules = Vec::new();
    for flag in NAMESPACE_FLAGS {
        let flag = *flag as u64;
        let cond = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(flag),
            flag,
        )
        .map_err(SecurityError::Seccomp)?;
        clone_rules.push(SeccompRule::new(vec![cond]).map_err(SecurityError::Seccomp)?);
    }
    rules.insert(libc::SYS_clone, clone_rules);
    let deny = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(SecurityError::Seccomp)?;
    // clone3 passes its flags in memory that seccomp cannot inspect: answer
    // ENOSYS so that libc falls back to clone(2), as Docker's profile does.
    // The kernel applies the most restrictive verdict of all installed filters.
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(SecurityError::Seccomp)?;
    let mut programs = Vec::new();
    for filter in [deny, clone3] {
        let program: BpfProgram = filter.try_into().map_err(SecurityError::Seccomp)?;
        programs.push(
            program
                .into_iter()
                .map(|i| libc::sock_filter {
                    code: i.code,
                    jt: i.jt,
                    jf: i.jf,
                    k: i.k,
                })
                .collect(),
        );
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile_for_this_machine() {
        let programs = default_seccomp_filters().unwrap();
        assert_eq!(programs.len(), 2);
        assert!(programs.iter().all(|p| !p.is_empty() && p.len() < 4096));
    }

    #[test]
    fn default_set_is_dockers_fourteen() {
        assert_eq!(default_set().len(), 14);
        assert!(!default_set().contains(&Capability::CAP_SYS_ADMIN));
        assert!(!default_set().contains(&Capability::CAP_NET_ADMIN));
    }
}
