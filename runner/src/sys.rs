//! Every raw system call of the runner, each behind a small safe function.
//!
//! Nothing outside this module uses `unsafe`. Functions return
//! `std::io::Error` read from `errno` right after the call; callers add the
//! action and path to the error.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn cstr_opt(s: Option<&str>) -> io::Result<Option<CString>> {
    s.map(|s| {
        CString::new(s)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
    })
    .transpose()
}

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// mount(2). `source` and `fstype` may be absent (bind, remount, propagation).
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let source = source.map(cstring).transpose()?;
    let target = cstring(target)?;
    let fstype = cstr_opt(fstype)?;
    let data = cstr_opt(data)?;
    // SAFETY: every pointer is either null or a valid NUL-terminated string
    // that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast::<libc::c_void>()),
        )
    };
    check(rc).map(drop)
}

/// umount2(2).
pub(crate) fn umount2(target: &Path, flags: libc::c_int) -> io::Result<()> {
    let target = cstring(target)?;
    // SAFETY: valid NUL-terminated path.
    check(unsafe { libc::umount2(target.as_ptr(), flags) }).map(drop)
}

/// pivot_root(2), see <https://man7.org/linux/man-pages/man2/pivot_root.2.html>.
/// Called as `pivot_root(".", ".")` (the trick runc uses) so that no
/// directory for the old root is needed inside the new one.
pub(crate) fn pivot_root(new_root: &Path, put_old: &Path) -> io::Result<()> {
    let new_root = cstring(new_root)?;
    let put_old = cstring(put_old)?;
    // SAFETY: valid NUL-terminated paths; glibc has no wrapper.
    let rc = unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) };
    check(rc as libc::c_int).map(drop)
}

/// unshare(2).
pub(crate) fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall with an integer argument.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// sethostname(2).
pub(crate) fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

/// setgroups(2).
pub(crate) fn setgroups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: pointer and length describe `groups`; gid_t is u32 on Linux.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }).map(drop)
}

/// setresgid(2) with all three ids equal.
pub(crate) fn setresgid(gid: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map(drop)
}

/// setresuid(2) with all three ids equal.
pub(crate) fn setresuid(uid: u32) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map(drop)
}

/// setsid(2).
pub(crate) fn setsid() -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::setsid() }).map(drop)
}

/// setrlimit(2); a negative limit is `RLIM_INFINITY`.
pub(crate) fn setrlimit(
    resource: libc::__rlimit_resource_t,
    soft: i64,
    hard: i64,
) -> io::Result<()> {
    let value = |n: i64| u64::try_from(n).unwrap_or(libc::RLIM_INFINITY);
    let limit = libc::rlimit {
        rlim_cur: value(soft),
        rlim_max: value(hard),
    };
    // SAFETY: `limit` is a valid rlimit for the duration of the call.
    check(unsafe { libc::setrlimit(resource, &limit) }).map(drop)
}

/// prctl(PR_SET_NO_NEW_PRIVS).
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: plain prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// seccomp(SECCOMP_SET_MODE_FILTER) without touching `no_new_privs` (the
/// caller must hold CAP_SYS_ADMIN or have set it).
pub(crate) fn install_seccomp(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "seccomp filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, which outlives the call; the kernel
    // copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &prog as *const libc::sock_fprog,
        )
    };
    check(rc as libc::c_int).map(drop)
}

/// pipe2(2) with O_CLOEXEC: (read end, write end).
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` has room for the two descriptors.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors we own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Have the program `command` starts inherit `fds` (at the same numbers):
/// their close-on-exec flag is cleared in the child only, so that no other
/// process this one starts meanwhile inherits them.
pub(crate) fn keep_fds_on_exec(command: &mut std::process::Command, fds: &[RawFd]) {
    use std::os::unix::process::CommandExt;
    let fds = fds.to_vec();
    // SAFETY: the closure runs between fork and exec and only calls fcntl(2),
    // which is async-signal-safe, on integers captured before the fork.
    unsafe {
        command.pre_exec(move || {
            for fd in &fds {
                check(libc::fcntl(*fd, libc::F_SETFD, 0))?;
            }
            Ok(())
        });
    }
}

/// Descriptors the sandbox init finds at fixed numbers.
pub(crate) struct InitFds<'a> {
    /// Becomes fd 0.
    pub stdin: &'a OwnedFd,
    /// Becomes fd 1.
    pub stdout: &'a OwnedFd,
    /// Becomes fd 2.
    pub stderr: &'a OwnedFd,
    /// Becomes fd 3: the spec, read to EOF.
    pub control: &'a OwnedFd,
    /// Becomes fd 4: status messages back to the runner.
    pub status: &'a OwnedFd,
    /// Kept (close-on-exec): the child writes errno here if exec fails.
    pub exec_error: &'a OwnedFd,
    /// The child waits for one byte (or EOF) here before exec: in a new user
    /// namespace, exec must come after the id maps are written, or the init
    /// starts without capabilities.
    pub go: &'a OwnedFd,
}

/// Start `program` with `args` in new namespaces (`clone_flags`) with the
/// given descriptors at 0..=4, a parent-death signal of SIGKILL and every
/// other descriptor closed. Returns the child's pid.
///
/// A raw clone(2) is used instead of `std::process::Command` because a new
/// PID namespace only applies to *children* of the caller of unshare(2): with
/// clone the exec'd init is PID 1 itself and no intermediate process is needed.
pub(crate) fn spawn_init(
    program: &Path,
    args: &[&str],
    clone_flags: libc::c_int,
    fds: InitFds<'_>,
) -> io::Result<libc::pid_t> {
    // Everything the child needs is prepared before clone: between clone and
    // exec the child may only make async-signal-safe calls (the parent can be
    // multi-threaded, so malloc locks may be held by other threads).
    let program_c = cstring(program)?;
    let mut arg_c = vec![program_c.clone()];
    for a in args {
        arg_c.push(cstr_opt(Some(a))?.unwrap_or_default());
    }
    let mut argv: Vec<*const libc::c_char> = arg_c.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // Only PATH (an external runtime may need it): hoist's environment can
    // hold credentials that have no business next to a build step.
    let env_c: Vec<CString> = std::env::vars_os()
        .filter(|(k, _)| k == "PATH")
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect();
    let mut envp: Vec<*const libc::c_char> = env_c.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let sources = [
        fds.stdin.as_raw_fd(),
        fds.stdout.as_raw_fd(),
        fds.stderr.as_raw_fd(),
        fds.control.as_raw_fd(),
        fds.status.as_raw_fd(),
    ];
    let err_fd = fds.exec_error.as_raw_fd();
    let go_fd = fds.go.as_raw_fd();

    // SAFETY: clone without CLONE_VM and with a null stack behaves like
    // fork(2): the child gets a copy of the address space. The child only runs
    // `child_after_clone`, which uses async-signal-safe syscalls and the
    // pre-built buffers above, and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (clone_flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; this function never returns.
        unsafe { child_after_clone(&program_c, &argv, &envp, &sources, err_fd, go_fd) }
    }
    Ok(pid as libc::pid_t)
}

/// The child side of [`spawn_init`].
///
/// # Safety
/// Must only be called in a freshly cloned child; it execs or exits.
unsafe fn child_after_clone(
    program: &CStr,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    sources: &[RawFd; 5],
    err_fd: RawFd,
    go_fd: RawFd,
) -> ! {
    // SAFETY (whole body): only async-signal-safe syscalls on integers and
    // pointers prepared by the parent.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        let mut byte = 0u8;
        while libc::read(go_fd, (&mut byte as *mut u8).cast(), 1) < 0
            && *libc::__errno_location() == libc::EINTR
        {}
        // Move the sources out of the way of 0..=4 first, so that a source
        // that already sits at a low number is not clobbered by dup2.
        let mut high = [0 as RawFd; 5];
        for (i, fd) in sources.iter().enumerate() {
            high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
            if high[i] < 0 {
                fail(err_fd);
            }
        }
        let err_high = libc::fcntl(err_fd, libc::F_DUPFD_CLOEXEC, 100);
        if err_high < 0 {
            fail(err_fd);
        }
        for (i, fd) in high.iter().enumerate() {
            // dup2 clears O_CLOEXEC on the new descriptor.
            if libc::dup2(*fd, i as RawFd) < 0 {
                fail(err_high);
            }
        }
        // Everything from 5 up is closed on exec; the error pipe among them.
        libc::syscall(
            libc::SYS_close_range,
            5 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
        // Signals blocked by the runner's thread stay blocked across exec.
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::execve(program.as_ptr(), argv.as_ptr(), envp.as_ptr());
        fail(err_high)
    }
}

/// Write errno to `fd` and exit 127 (child side, async-signal-safe).
unsafe fn fail(fd: RawFd) -> ! {
    // SAFETY: errno location is thread-local and valid; write/_exit are
    // async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// fork(2). Only used by the sandbox init, which is single-threaded.
pub(crate) enum Fork {
    /// In the parent, with the child's pid.
    Parent(libc::pid_t),
    /// In the child.
    Child,
}

/// fork(2); the caller must be single-threaded (the sandbox init is).
pub(crate) fn fork() -> io::Result<Fork> {
    // SAFETY: the init process is single-threaded (it runs before any thread
    // is started by the hosting binary), so the child may allocate freely.
    let pid = unsafe { libc::fork() };
    match pid {
        p if p < 0 => Err(io::Error::last_os_error()),
        0 => Ok(Fork::Child),
        p => Ok(Fork::Parent(p)),
    }
}

/// How a waited-for process ended, with its resource usage.
pub(crate) struct Waited {
    /// Raw wait status.
    pub status: libc::c_int,
    /// User plus system CPU time of the process and its waited-for children, in microseconds.
    pub cpu_micros: u64,
    /// Largest resident set size seen, in bytes.
    pub max_rss: u64,
}

/// wait4(2) for one pid, blocking, retrying on EINTR.
pub(crate) fn wait4(pid: libc::pid_t) -> io::Result<Waited> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain old data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: pointers to local variables that outlive the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        let micros = |tv: libc::timeval| tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64;
        return Ok(Waited {
            status,
            cpu_micros: micros(usage.ru_utime) + micros(usage.ru_stime),
            max_rss: usage.ru_maxrss as u64 * 1024,
        });
    }
}

/// waitpid(-1, WNOHANG): `Some((pid, status))` for one reaped child.
pub(crate) fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: pointer to a local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Decode a wait status: `Ok(code)` for an exit, `Err(signal)` for a signal.
pub(crate) fn decode_status(status: libc::c_int) -> Result<i32, i32> {
    if libc::WIFSIGNALED(status) {
        Err(libc::WTERMSIG(status))
    } else {
        Ok(libc::WEXITSTATUS(status))
    }
}

/// kill(2).
pub(crate) fn kill(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// Block every signal in the calling thread; returns the previous mask.
pub(crate) fn block_all_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; the calls only write into locals.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    }
}

/// Unblock every signal and reset every disposition to the default (the
/// Rust runtime ignores SIGPIPE, and ignored signals survive exec).
pub(crate) fn reset_signals() {
    // SAFETY: signal(2) with SIG_DFL on every catchable signal; sigprocmask
    // with a local empty set.
    unsafe {
        for sig in 1..libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::signal(sig, libc::SIG_DFL);
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// sigwaitinfo(2) for any signal (all must be blocked): the signal number.
pub(crate) fn wait_signal() -> io::Result<libc::c_int> {
    // SAFETY: locals only.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        let mut info: libc::siginfo_t = std::mem::zeroed();
        let sig = libc::sigwaitinfo(&all, &mut info);
        check(sig)
    }
}

/// execve(2) of `program` with `argv` and `envp`; only returns on failure.
pub(crate) fn execve(program: &Path, argv: &[String], envp: &[String]) -> io::Error {
    let to_c = |v: &[String]| -> io::Result<Vec<CString>> {
        v.iter()
            .map(|s| cstr_opt(Some(s)).map(Option::unwrap_or_default))
            .collect()
    };
    let (program, argv, envp) = match (cstring(program), to_c(argv), to_c(envp)) {
        (Ok(p), Ok(a), Ok(e)) => (p, a, e),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return e,
    };
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: null-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(program.as_ptr(), argv_p.as_ptr(), envp_p.as_ptr()) };
    io::Error::last_os_error()
}

/// poll(2) on `fds` (events POLLIN), retrying on EINTR; returns revents per fd.
///
/// `timeout_ms` < 0 waits forever; on timeout every revents is 0.
pub(crate) fn poll_in(fds: &[RawFd], timeout_ms: libc::c_int) -> io::Result<Vec<libc::c_short>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    loop {
        // SAFETY: pointer and length describe `pfds`.
        let rc = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, timeout_ms) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        return Ok(pfds.iter().map(|p| p.revents).collect());
    }
}

/// Bring the loopback interface up (SIOCSIFFLAGS) in the current network namespace.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) returns a fresh descriptor we own.
    let sock =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `sock` was just created and is owned here.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `req`, which is valid.
    unsafe {
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req))?;
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        check(libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req))?;
    }
    Ok(())
}

/// Moves the calling thread (only it) into the network namespace `ns`.
pub(crate) fn setns_net(ns: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: setns(2) on a descriptor we hold; it changes only this thread.
    check(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) }).map(drop)
}

/// Makes the tap device `name` (no packet information) in the current
/// network namespace through `tun`, an open `/dev/net/tun`, and keeps it
/// after `tun` closes (`TUNSETPERSIST`).
pub(crate) fn persistent_tap(tun: &impl AsRawFd, name: &str) -> io::Result<()> {
    if name.len() >= libc::IFNAMSIZ {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads and writes `req`, which is valid; TUNSETPERSIST
    // takes an integer argument.
    unsafe {
        check(libc::ioctl(tun.as_raw_fd(), libc::TUNSETIFF, &mut req))?;
        check(libc::ioctl(
            tun.as_raw_fd(),
            libc::TUNSETPERSIST,
            1 as libc::c_ulong,
        ))?;
    }
    Ok(())
}

/// The mount flags (`ST_*` translated to `MS_*`) of the filesystem at `path`:
/// a read-only remount of a bind must keep nosuid/nodev/noexec, which the
/// kernel locks in user namespaces.
pub(crate) fn mount_flags_of(path: &Path) -> io::Result<libc::c_ulong> {
    let c = cstring(path)?;
    // SAFETY: statvfs is plain data; the call writes into it.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and pointer.
    check(unsafe { libc::statvfs(c.as_ptr(), &mut st) })?;
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    Ok(flags)
}

/// geteuid(2).
pub(crate) fn geteuid() -> u32 {
    // SAFETY: plain syscall, cannot fail.
    unsafe { libc::geteuid() }
}

/// getegid(2).
pub(crate) fn getegid() -> u32 {
    // SAFETY: plain syscall, cannot fail.
    unsafe { libc::getegid() }
}

/// Raw `_exit(2)` for forked children, skipping atexit handlers and buffered I/O.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns.
    unsafe { libc::_exit(code) }
}

/// utimensat(2) without following a final symlink: restore a directory's
/// access and modification times.
pub(crate) fn set_times(
    path: &Path,
    atime: libc::timespec,
    mtime: libc::timespec,
) -> io::Result<()> {
    let c = cstring(path)?;
    let times = [atime, mtime];
    // SAFETY: valid path and a two-element array as the call expects.
    check(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .map(drop)
}

/// Take ownership of an inherited descriptor by number (the init's fds 3 and 4).
pub(crate) fn inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) only checks that the descriptor is open.
    check(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: the runner passed this descriptor to us at exec and nothing
    // else in this process owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bpf(BPF_PROG_LOAD) of a BPF_PROG_TYPE_CGROUP_DEVICE program (`insns` in
/// the kernel's 8-byte `struct bpf_insn` encoding). The verifier's log is
/// not asked for: the program is generated and fixed.
pub(crate) fn bpf_load_device_program(insns: &[u64]) -> io::Result<OwnedFd> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    let license = b"Apache-2.0\0";
    let count = u32::try_from(insns.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "BPF program too long"))?;
    // union bpf_attr, BPF_PROG_LOAD part: prog_type, insn_cnt, insns,
    // license, then zeros (no log, no flags).
    let mut attr = [0u8; 72];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&count.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: `attr` describes `insns` and `license`, both alive for the
    // call; the kernel copies what it needs.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    let fd = check(fd as libc::c_int)?;
    // SAFETY: a fresh descriptor the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// bpf(BPF_PROG_ATTACH) of a device program to the cgroup v2 directory
/// `cgroup`, with BPF_F_ALLOW_MULTI (as runc: programs of parent cgroups
/// keep applying too).
pub(crate) fn bpf_attach_device_program(cgroup: &Path, program: &OwnedFd) -> io::Result<()> {
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let dir = std::fs::File::open(cgroup)?;
    let mut attr = [0u8; 20];
    attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(program.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    // SAFETY: `attr` holds two descriptors we own, alive for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            attr.as_ptr(),
            attr.len() as libc::c_uint,
        )
    };
    check(rc as libc::c_int).map(drop)
}

/// A new pseudo-terminal of the host's devpts sized `rows`×`cols`:
/// (master, slave), both close-on-exec, the slave opened without becoming
/// anyone's controlling terminal.
pub(crate) fn openpty(rows: u16, cols: u16) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt returns a fresh descriptor we own or -1.
    let master =
        check(unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) })?;
    // SAFETY: fresh descriptor from posix_openpt.
    let master = unsafe { OwnedFd::from_raw_fd(master) };
    // SAFETY: plain calls on our descriptor.
    check(unsafe { libc::grantpt(master.as_raw_fd()) })?;
    // SAFETY: as above.
    check(unsafe { libc::unlockpt(master.as_raw_fd()) })?;
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: `name` has the room the call is told of.
    let rc = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    // SAFETY: ptsname_r wrote a NUL-terminated path.
    let slave = check(unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: fresh descriptor from open.
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    set_window_size(master.as_raw_fd(), rows, cols)?;
    Ok((master, slave))
}

/// TIOCSWINSZ: the terminal's size (its foreground process group gets SIGWINCH).
pub(crate) fn set_window_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: `size` is a valid winsize that outlives the call.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size as *const libc::winsize) }).map(drop)
}

/// TIOCSCTTY: make the terminal on `fd` the controlling terminal of this
/// process's session (the caller is a session leader).
pub(crate) fn set_controlling_terminal(fd: RawFd) -> io::Result<()> {
    // SAFETY: plain ioctl with an integer argument.
    check(unsafe { libc::ioctl(fd, libc::TIOCSCTTY, 0) }).map(drop)
}

/// read(2) into `buf`, retrying on EINTR.
pub(crate) fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: pointer and length describe `buf`.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}
