//! The crate's only unsafe code: an advisory file lock.

use std::fs::File;
use std::os::unix::io::AsRawFd;

/// Take an exclusive `flock` on `file` without waiting; false when another
/// open file description holds it. The lock lives as long as the file is open
/// (the kernel drops it when the process dies, even by SIGKILL).
#[allow(unsafe_code)]
pub fn try_lock_exclusive(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock only reads the descriptor number, which `file` keeps open
    // for the duration of the call.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}
