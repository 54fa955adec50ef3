//! The only module with `unsafe` code: mount(2) and a forked helper that
//! mounts from inside a chosen working directory.
#![expect(unsafe_code, reason = "mount(2), umount2(2), fork(2) and waitpid(2) through libc")]

use std::ffi::CStr;
use std::io;

/// Flags this crate passes to mount(2).
pub(crate) use libc::{MS_BIND, MS_RDONLY, MS_REC, MS_REMOUNT};

/// Plain mount(2). See <https://man7.org/linux/man-pages/man2/mount.2.html>.
pub(crate) fn mount(
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    let data_ptr = data.map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer comes from a live CStr (or is null for `data`,
    // which mount(2) accepts) and outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data_ptr,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// umount2(2) without flags.
pub(crate) fn unmount(target: &CStr) -> io::Result<()> {
    // SAFETY: `target` is a valid NUL-terminated string for the whole call.
    let rc = unsafe { libc::umount2(target.as_ptr(), 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// mount(2) run by a forked child whose working directory is `dir`, so that
/// relative paths in `data` (overlay's lowerdir/upperdir/workdir) are resolved
/// against `dir`. The mount namespace is shared, so the parent sees the mount.
///
/// This is how deep overlay chains fit the kernel's limit of one page for the
/// option string without changing the calling process's working directory
/// (which would race with other threads).
pub(crate) fn mount_in_dir(
    dir: &CStr,
    source: &CStr,
    target: &CStr,
    fstype: &CStr,
    flags: libc::c_ulong,
    data: &CStr,
) -> io::Result<()> {
    // SAFETY: fork(2) in a possibly multi-threaded process is sound as long as
    // the child only calls async-signal-safe functions; it calls chdir, mount
    // and _exit on memory prepared before the fork, nothing else (no
    // allocation, no locks).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: see above; errno is read right after each failed call and
        // handed to the parent as the exit status (errno values fit a byte).
        unsafe {
            if libc::chdir(dir.as_ptr()) != 0 {
                libc::_exit(*libc::__errno_location());
            }
            if libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                flags,
                data.as_ptr().cast::<libc::c_void>(),
            ) != 0
            {
                libc::_exit(*libc::__errno_location());
            }
            libc::_exit(0);
        }
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: `status` is a valid out-pointer; `pid` is our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
    if libc::WIFEXITED(status) {
        match libc::WEXITSTATUS(status) {
            0 => Ok(()),
            code => Err(io::Error::from_raw_os_error(code)),
        }
    } else {
        Err(io::Error::other("mount helper process was killed"))
    }
}
