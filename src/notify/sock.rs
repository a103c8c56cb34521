//! The system calls of the notify sockets: an abstract datagram socket with
//! `SO_PASSCRED`, `recvmsg(2)` with its control messages, an `eventfd(2)` and `poll(2)`.
//! Every `unsafe` of `src/notify/` is here, each block with the reason it is sound.

use std::ffi::c_int;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Most descriptors taken from one datagram (`SCM_RIGHTS`). `systemd-notify` sends one
/// (`BARRIER=1`); the kernel closes the ones past this room (and says `MSG_CTRUNC`), so
/// a sender cannot make BootAgent hold many descriptors at once.
pub const FDS_PER_DATAGRAM_MAX: usize = 16;

/// The sender of a datagram, as the kernel recorded it (`SCM_CREDENTIALS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// One datagram taken from a socket.
#[derive(Debug)]
pub struct Received {
    /// The datagram's real length; more than the buffer when it was cut.
    pub len: usize,
    /// `None` when the datagram carried none (or they were cut off).
    pub credentials: Option<Credentials>,
    /// The descriptors that came with it, close-on-exec: the caller closes them (drops
    /// them) once it has read what it needs of the sender.
    pub fds: Vec<OwnedFd>,
    /// The control data was cut (`MSG_CTRUNC`): descriptors past the room were closed
    /// by the kernel.
    pub control_cut: bool,
}

/// Bytes of control room for `fds` descriptors plus the credentials, as `u64` words (the
/// alignment `cmsghdr` needs).
pub fn control_words(fds: usize) -> usize {
    let fd_bytes = u32::try_from(fds * std::mem::size_of::<c_int>()).unwrap_or(u32::MAX / 2);
    let cred_bytes = std::mem::size_of::<libc::ucred>() as u32;
    // SAFETY: CMSG_SPACE is arithmetic on its argument; no memory is touched.
    let bytes = unsafe { libc::CMSG_SPACE(cred_bytes) + libc::CMSG_SPACE(fd_bytes) };
    (bytes as usize).div_ceil(8)
}

/// A non-blocking, close-on-exec `SOCK_DGRAM` Unix socket bound to the abstract `name`
/// (without its leading NUL), with `SO_PASSCRED` on so that every datagram carries its
/// sender. `EADDRINUSE` when another socket holds the name.
pub fn bind_abstract(name: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: sockaddr_un is plain old data; all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if name.is_empty() || name.len() >= addr.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket name empty or too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (slot, &byte) in addr.sun_path.iter_mut().skip(1).zip(name) {
        *slot = byte as libc::c_char;
    }
    // The name is exactly the bytes given: no trailing NUL counted, as libsystemd does.
    let len = std::mem::size_of::<libc::sa_family_t>() + 1 + name.len();
    // SAFETY: socket(2) takes only integers.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socket succeeded: `fd` is open and owned by nothing else.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    pass_credentials(&socket)?;
    // SAFETY: `addr` is a valid sockaddr_un and `len` is within its size.
    let rc = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(socket)
}

/// Takes ownership of the inherited descriptor `fd` (an exec hand-over) if it is a
/// Unix datagram socket bound to the abstract `name`, close-on-exec again and with
/// `SO_PASSCRED` on. Anything else is left alone (not closed) and an error.
pub fn adopt_bound(fd: RawFd, name: &[u8]) -> io::Result<OwnedFd> {
    let mismatch = || io::Error::new(io::ErrorKind::InvalidInput, "not this child's socket");
    let mut kind: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as libc::socklen_t;
    // SAFETY: `kind` is a writable c_int and `len` its size; a descriptor that is not a
    // socket only makes the call fail (ENOTSOCK, EBADF).
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TYPE,
            (&mut kind as *mut c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if kind != libc::SOCK_DGRAM {
        return Err(mismatch());
    }
    // SAFETY: sockaddr_un is plain old data; all-zero bytes are a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    // SAFETY: `addr` is writable for `len` bytes; the kernel writes at most that.
    let rc =
        unsafe { libc::getsockname(fd, (&mut addr as *mut libc::sockaddr_un).cast(), &mut len) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let path_len = (len as usize).saturating_sub(std::mem::size_of::<libc::sa_family_t>());
    let bound = addr.sun_path.get(..path_len).unwrap_or_default();
    let matches = addr.sun_family == libc::AF_UNIX as libc::sa_family_t
        && bound.first() == Some(&0)
        && bound.len() == name.len() + 1
        && bound.iter().skip(1).zip(name).all(|(&a, &b)| a as u8 == b);
    if !matches {
        return Err(mismatch());
    }
    crate::sys::set_cloexec(fd, true)?;
    // SAFETY: `fd` is an open socket (getsockname succeeded) that the exec hand-over
    // gave to this image for this child alone: nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    pass_credentials(&socket)?;
    Ok(socket)
}

/// `SO_PASSCRED` on: each datagram comes with its sender's pid, uid and gid.
fn pass_credentials(socket: &OwnedFd) -> io::Result<()> {
    let on: c_int = 1;
    // SAFETY: `on` is a readable c_int for the call and its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PASSCRED,
            (&on as *const c_int).cast(),
            std::mem::size_of::<c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Takes one datagram from the non-blocking `socket` into `buf` (`recvmsg(2)` with
/// `MSG_TRUNC`, so a longer one is cut and its real length told, and
/// `MSG_CMSG_CLOEXEC`, so a descriptor received never leaks into a child spawned
/// meanwhile). `control` is the room for control data (see [`control_words`]).
/// `WouldBlock` when the socket is empty.
pub fn receive(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
    control: &mut [u64],
) -> io::Result<Received> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(control) as _;
    let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC | libc::MSG_CMSG_CLOEXEC;
    // SAFETY: `msg` points to `iov` (which describes `buf`) and to `control`, all valid
    // and writable for the call and not otherwise borrowed; the kernel writes within the
    // lengths given.
    let got = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, flags) };
    let len = usize::try_from(got).map_err(|_| io::Error::last_os_error())?;
    let mut received = Received {
        len,
        credentials: None,
        fds: Vec::new(),
        control_cut: msg.msg_flags & libc::MSG_CTRUNC != 0,
    };
    // SAFETY: `msg` was filled by recvmsg; CMSG_FIRSTHDR/NXTHDR stay within
    // `msg_controllen` bytes of `control` and return null past the end.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: `cmsg` is non-null and points to a header inside `control`.
        let header = unsafe { &*cmsg };
        // SAFETY: CMSG_LEN is arithmetic on its argument.
        let data_len =
            (header.cmsg_len as usize).saturating_sub(unsafe { libc::CMSG_LEN(0) } as usize);
        // SAFETY: the data of a header the kernel wrote follows it within `control`.
        let data = unsafe { libc::CMSG_DATA(cmsg) };
        match (header.cmsg_level, header.cmsg_type) {
            (libc::SOL_SOCKET, libc::SCM_RIGHTS) => {
                for i in 0..data_len / std::mem::size_of::<c_int>() {
                    // SAFETY: `i` indexes a whole c_int inside the header's data; the data
                    // may be unaligned, hence read_unaligned.
                    let fd: RawFd = unsafe { data.cast::<c_int>().add(i).read_unaligned() };
                    if fd >= 0 {
                        // SAFETY: the kernel just installed `fd` in this process for this
                        // message; nothing else owns it.
                        received.fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                }
            }
            (libc::SOL_SOCKET, libc::SCM_CREDENTIALS)
                if data_len >= std::mem::size_of::<libc::ucred>() =>
            {
                // SAFETY: the data holds a whole ucred (checked above); maybe unaligned.
                let cred: libc::ucred = unsafe { data.cast::<libc::ucred>().read_unaligned() };
                received.credentials = Some(Credentials {
                    pid: cred.pid,
                    uid: cred.uid,
                    gid: cred.gid,
                });
            }
            _ => {}
        }
        // SAFETY: as for CMSG_FIRSTHDR: bounded by `msg_controllen`, null at the end.
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    Ok(received)
}

/// A non-blocking, close-on-exec `eventfd(2)`: the thread's wake-up.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes only integers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: eventfd succeeded: `fd` is open and owned by nothing else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `poll(2)` on `fds` for at most `timeout_ms` (-1: without end).
pub fn poll(fds: &mut [libc::pollfd], timeout_ms: c_int) -> io::Result<()> {
    // SAFETY: `fds` holds `fds.len()` initialised pollfds, borrowed exclusively for the
    // call; a closed descriptor only gives POLLNVAL.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `data` with `fds` (`SCM_RIGHTS`) to the abstract socket `name`, as a
/// `systemd-notify` sending `BARRIER=1` does.
#[cfg(test)]
pub fn send_with_fds(name: &[u8], data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sender = UnixDatagram::unbound()?;
    let addr = SocketAddr::from_abstract_name(name)?;
    sender.connect_addr(&addr)?;
    let mut control = vec![0u64; control_words(fds.len())];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain old data; all-zero bytes are a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let fd_bytes = std::mem::size_of_val(fds) as u32;
    // SAFETY: arithmetic only.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(fd_bytes) } as _;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: the control room holds CMSG_SPACE(fd_bytes) bytes (control_words counts
    // more), so the first header and its data fit; the kernel only reads `data`.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes) as _;
        std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        if libc::sendmsg(sender.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
