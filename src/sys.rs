//! The few system calls that std does not offer. All `unsafe` of BootAgent lives
//! here, each block with the reason it is sound.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// `uname(2)`.
pub fn uname() -> Option<libc::utsname> {
    // SAFETY: utsname is plain old data; all-zero bytes are a valid value.
    let mut buf: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `buf` is a valid, writable utsname for the duration of the call.
    let rc = unsafe { libc::uname(&mut buf) };
    (rc == 0).then_some(buf)
}

/// Takes an exclusive, non-blocking `flock(2)` on `file`; false when another
/// process holds it. The lock lives as long as the file stays open.
pub fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    // SAFETY: the descriptor is valid while `file` is borrowed; flock has no
    // memory effects.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(err)
    }
}

/// `access(2)` with `W_OK`: whether this process may write into `path`.
pub fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}
