//! The few system calls std does not wrap (on our MSRV): the effective uid
//! and `flock(2)`. All of the crate's `unsafe` lives here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// The effective user id of this process.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid(2) takes no arguments, touches no memory of ours and
    // cannot fail.
    unsafe { libc::geteuid() }
}

/// `flock(2)` with `operation` on `file`, again after EINTR.
fn flock(file: &File, operation: libc::c_int) -> io::Result<()> {
    loop {
        // SAFETY: the descriptor is valid for the lifetime of `file`, which
        // outlives this call; flock does not retain it.
        let rc = unsafe { libc::flock(file.as_raw_fd(), operation) };
        if rc == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.kind() != io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
}

/// Take an exclusive `flock(2)` on `file`, waiting as long as needed.
/// The lock is released when the file (its last descriptor) is closed.
pub(crate) fn lock_exclusive(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_EX)
}

/// Try to take an exclusive `flock(2)` on `file` without waiting: `false`
/// when another open file description holds a lock on it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    match flock(file, libc::LOCK_EX | libc::LOCK_NB) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Release a `flock(2)` taken on `file` now. Closing is not enough when
/// another thread forks (a `Command::spawn`): the child holds a copy of the
/// open file description, and with it the lock, until its exec closes it.
pub(crate) fn unlock(file: &File) -> io::Result<()> {
    flock(file, libc::LOCK_UN)
}

/// Asks the kernel to start writing `len` bytes of `file` from `offset` to
/// disk now, without waiting (`sync_file_range(2)` with
/// `SYNC_FILE_RANGE_WRITE`). A big blob written this way as it is produced
/// leaves little for the final `fsync` to wait for. Only a hint: errors
/// (a filesystem without support) are for the caller to ignore.
pub(crate) fn start_writeback(file: &File, offset: u64, len: u64) -> io::Result<()> {
    // SAFETY: the descriptor is valid for the lifetime of `file`, which
    // outlives this call; the call takes plain integers and retains nothing.
    let rc = unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            offset as libc::off64_t,
            len as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Free (for unprivileged users) and total bytes of the filesystem holding
/// `path` (`statvfs(2)`).
pub(crate) fn filesystem_space(path: &std::path::Path) -> io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string alive for the call and
    // `stat` a valid, writable statvfs; the call retains neither.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let unit = stat.f_frsize as u64;
    Ok((stat.f_bavail as u64 * unit, stat.f_blocks as u64 * unit))
}
