//! Docker's default seccomp profile as a table: the groups of moby's
//! `profiles/seccomp/default.json` (Apache-2.0, commit
//! 00f3d189e420d485e42d15fe494f96d272284e0e), with their argument filters
//! and their architecture, capability and kernel conditions. A test compares
//! this table with a snapshot of that file (`runner/tests/testdata/`).

/// What a matching rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Let the call through.
    Allow,
    /// Fail the call with this errno.
    Errno(u32),
}

/// How an argument is compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    /// `arg == value`.
    Eq,
    /// `arg != value`.
    Ne,
    /// `arg & value == value_two` (libseccomp's SCMP_CMP_MASKED_EQ).
    MaskedEq,
}

/// One argument condition; all of a group's conditions must hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Arg {
    pub index: u8,
    pub value: u64,
    pub value_two: u64,
    pub op: Op,
}

/// moby's `includes`/`excludes`: architectures (Go's GOARCH names of the
/// host), capabilities (all must be in the bounding set for `includes`, any
/// for `excludes`) and a minimum kernel.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Filter {
    pub arches: &'static [&'static str],
    pub caps: &'static [&'static str],
    pub min_kernel: Option<(u32, u32)>,
}

/// One entry of the profile's `syscalls` list.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Group {
    pub names: &'static [&'static str],
    pub action: Action,
    pub args: &'static [Arg],
    pub includes: Filter,
    pub excludes: Filter,
}

/// Calls not listed fail with EPERM (`defaultErrnoRet: 1`).
pub(crate) const DEFAULT_ERRNO: u32 = libc::EPERM as u32;

const NONE: Filter = Filter {
    arches: &[],
    caps: &[],
    min_kernel: None,
};

const fn allow(names: &'static [&'static str]) -> Group {
    Group {
        names,
        action: Action::Allow,
        args: &[],
        includes: NONE,
        excludes: NONE,
    }
}

const fn with_cap(names: &'static [&'static str], caps: &'static [&'static str]) -> Group {
    Group {
        includes: Filter { caps, ..NONE },
        ..allow(names)
    }
}

const fn on_arches(names: &'static [&'static str], arches: &'static [&'static str]) -> Group {
    Group {
        includes: Filter { arches, ..NONE },
        ..allow(names)
    }
}

const fn eq0(value: u64) -> Arg {
    Arg {
        index: 0,
        value,
        value_two: 0,
        op: Op::Eq,
    }
}

const fn personality(args: &'static [Arg]) -> Group {
    Group {
        args,
        ..allow(&["personality"])
    }
}

const PER_LINUX: &[Arg] = &[eq0(0)];
const PER_LINUX32: &[Arg] = &[eq0(8)];
const UNAME26: &[Arg] = &[eq0(0x20000)];
const UNAME26_LINUX32: &[Arg] = &[eq0(0x20008)];
const QUERY: &[Arg] = &[eq0(0xffff_ffff)];

/// CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET.
pub(crate) const CLONE_NAMESPACE_FLAGS: u64 = 0x7E02_0000;

/// The profile, in moby's order.
pub(crate) const GROUPS: &[Group] = &[
    allow(&[
        "accept",
        "accept4",
        "access",
        "adjtimex",
        "alarm",
        "bind",
        "brk",
        "capget",
        "capset",
        "chdir",
        "chmod",
        "chown",
        "chown32",
        "clock_adjtime",
        "clock_adjtime64",
        "clock_getres",
        "clock_getres_time64",
        "clock_gettime",
        "clock_gettime64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "close",
        "close_range",
        "connect",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "epoll_wait_old",
        "eventfd",
        "eventfd2",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fadvise64_64",
        "fallocate",
        "fanotify_mark",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchown",
        "fchown32",
        "fchownat",
        "fcntl",
        "fcntl64",
        "fdatasync",
        "fgetxattr",
        "flistxattr",
        "flock",
        "fork",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstat64",
        "fstatat64",
        "fstatfs",
        "fstatfs64",
        "fsync",
        "ftruncate",
        "ftruncate64",
        "futex",
        "futex_time64",
        "futex_waitv",
        "futimesat",
        "getcpu",
        "getcwd",
        "getdents",
        "getdents64",
        "getegid",
        "getegid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getgroups",
        "getgroups32",
        "getitimer",
        "getpeername",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrandom",
        "getresgid",
        "getresgid32",
        "getresuid",
        "getresuid32",
        "getrlimit",
        "get_robust_list",
        "getrusage",
        "getsid",
        "getsockname",
        "getsockopt",
        "get_thread_area",
        "gettid",
        "gettimeofday",
        "getuid",
        "getuid32",
        "getxattr",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "io_cancel",
        "ioctl",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "ioprio_get",
        "ioprio_set",
        "io_setup",
        "io_submit",
        "io_uring_enter",
        "io_uring_register",
        "io_uring_setup",
        "ipc",
        "kill",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "lchown",
        "lchown32",
        "lgetxattr",
        "link",
        "linkat",
        "listen",
        "listxattr",
        "llistxattr",
        "_llseek",
        "lremovexattr",
        "lseek",
        "lsetxattr",
        "lstat",
        "lstat64",
        "madvise",
        "membarrier",
        "memfd_create",
        "memfd_secret",
        "mincore",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mmap2",
        "mprotect",
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_unlink",
        "mremap",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "name_to_handle_at",
        "nanosleep",
        "newfstatat",
        "_newselect",
        "open",
        "openat",
        "openat2",
        "pause",
        "pidfd_open",
        "pidfd_send_signal",
        "pipe",
        "pipe2",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "poll",
        "ppoll",
        "ppoll_time64",
        "prctl",
        "pread64",
        "preadv",
        "preadv2",
        "prlimit64",
        "process_mrelease",
        "pselect6",
        "pselect6_time64",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmmsg_time64",
        "recvmsg",
        "remap_file_pages",
        "removexattr",
        "rename",
        "renameat",
        "renameat2",
        "restart_syscall",
        "rmdir",
        "rseq",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "seccomp",
        "select",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "send",
        "sendfile",
        "sendfile64",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setfsgid",
        "setfsgid32",
        "setfsuid",
        "setfsuid32",
        "setgid",
        "setgid32",
        "setgroups",
        "setgroups32",
        "setitimer",
        "setpgid",
        "setpriority",
        "setregid",
        "setregid32",
        "setresgid",
        "setresgid32",
        "setresuid",
        "setresuid32",
        "setreuid",
        "setreuid32",
        "setrlimit",
        "set_robust_list",
        "setsid",
        "setsockopt",
        "set_thread_area",
        "set_tid_address",
        "setuid",
        "setuid32",
        "setxattr",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        "shutdown",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigprocmask",
        "sigreturn",
        "socketcall",
        "socketpair",
        "splice",
        "stat",
        "stat64",
        "statfs",
        "statfs64",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "sysinfo",
        "tee",
        "tgkill",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        "times",
        "tkill",
        "truncate",
        "truncate64",
        "ugetrlimit",
        "umask",
        "uname",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimensat_time64",
        "utimes",
        "vfork",
        "vmsplice",
        "wait4",
        "waitid",
        "waitpid",
        "write",
        "writev",
    ]),
    // Before 4.8 ptrace could bypass seccomp.
    Group {
        includes: Filter {
            min_kernel: Some((4, 8)),
            ..NONE
        },
        ..allow(&["process_vm_readv", "process_vm_writev", "ptrace"])
    },
    // AF_VSOCK reaches the hypervisor's host.
    Group {
        args: &[Arg {
            index: 0,
            value: libc::AF_VSOCK as u64,
            value_two: 0,
            op: Op::Ne,
        }],
        ..allow(&["socket"])
    },
    // PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query.
    personality(PER_LINUX),
    personality(PER_LINUX32),
    personality(UNAME26),
    personality(UNAME26_LINUX32),
    personality(QUERY),
    on_arches(&["sync_file_range2", "swapcontext"], &["ppc64le"]),
    on_arches(
        &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        &["arm", "arm64"],
    ),
    on_arches(&["arch_prctl"], &["amd64", "x32"]),
    on_arches(&["modify_ldt"], &["amd64", "x32", "x86"]),
    on_arches(
        &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        &["s390", "s390x"],
    ),
    on_arches(&["riscv_flush_icache"], &["riscv64"]),
    with_cap(&["open_by_handle_at"], &["CAP_DAC_READ_SEARCH"]),
    with_cap(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        &["CAP_SYS_ADMIN"],
    ),
    // Without CAP_SYS_ADMIN, clone(2) may not make namespaces.
    Group {
        args: &[Arg {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            value_two: 0,
            op: Op::MaskedEq,
        }],
        excludes: Filter {
            caps: &["CAP_SYS_ADMIN"],
            arches: &["s390", "s390x"],
            min_kernel: None,
        },
        ..allow(&["clone"])
    },
    // s390 passes clone's flags second.
    Group {
        args: &[Arg {
            index: 1,
            value: CLONE_NAMESPACE_FLAGS,
            value_two: 0,
            op: Op::MaskedEq,
        }],
        includes: Filter {
            arches: &["s390", "s390x"],
            ..NONE
        },
        excludes: Filter {
            caps: &["CAP_SYS_ADMIN"],
            ..NONE
        },
        ..allow(&["clone"])
    },
    // clone3 keeps its flags in memory seccomp cannot read: ENOSYS makes
    // libc fall back to clone(2), which the rule above checks.
    Group {
        action: Action::Errno(libc::ENOSYS as u32),
        excludes: Filter {
            caps: &["CAP_SYS_ADMIN"],
            ..NONE
        },
        ..allow(&["clone3"])
    },
    with_cap(&["reboot"], &["CAP_SYS_BOOT"]),
    with_cap(&["chroot"], &["CAP_SYS_CHROOT"]),
    with_cap(
        &["delete_module", "init_module", "finit_module"],
        &["CAP_SYS_MODULE"],
    ),
    with_cap(&["acct"], &["CAP_SYS_PACCT"]),
    with_cap(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &["CAP_SYS_PTRACE"],
    ),
    with_cap(&["iopl", "ioperm"], &["CAP_SYS_RAWIO"]),
    with_cap(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &["CAP_SYS_TIME"],
    ),
    with_cap(&["vhangup"], &["CAP_SYS_TTY_CONFIG"]),
    with_cap(
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
        &["CAP_SYS_NICE"],
    ),
    with_cap(&["syslog"], &["CAP_SYSLOG"]),
    with_cap(&["bpf"], &["CAP_BPF"]),
    with_cap(&["perf_event_open"], &["CAP_PERFMON"]),
];
