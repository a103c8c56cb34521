//! The few system calls that std does not offer, each `unsafe` block with the reason
//! it is sound. Most of BootAgent's `unsafe` lives here; the rest is beside the one
//! thing it serves: the notify socket's messages in `notify/sock.rs`, and the log
//! thread's `poll`, `splice`, `pipe2` and `fcntl` in `childlog/mod.rs`.

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

/// One `write(2)` of `buf` to `fd`: the count written, or the error (`EINTR`
/// included, for the caller to retry). Async-signal-safe: it allocates nothing.
pub fn write_fd(fd: std::os::fd::RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the call, and write(2)
    // only reads it. A bad fd only makes it fail with EBADF.
    let written = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    usize::try_from(written).map_err(|_| io::Error::last_os_error())
}

/// `statvfs(2)`: the bytes an unprivileged process may still write on the file
/// system holding `path`.
pub fn free_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` writable for the call's duration.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types are narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    Ok(free)
}

/// `sysconf(3)`; `None` when the value is unknown.
pub fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system value; no memory effects.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

/// The asynchronous signals whose default action would end BootAgent but that mean
/// nothing to it (a `kill -USR1` meant for log reopening, a stray `SIGPIPE`): ignored.
/// Faults (`SEGV`, `BUS`, …) keep their default.
pub const IGNORED_SIGNALS: [libc::c_int; 10] = [
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGPIPE,
    libc::SIGWINCH,
    libc::SIGURG,
];

/// Signal numbers are below this on Linux (`_NSIG`).
const SIGNAL_NUMBER_END: libc::c_int = 65;

/// Sets the disposition of each signal of `signals` to "ignore".
pub fn ignore_signals(signals: &[libc::c_int]) -> io::Result<()> {
    for &signal in signals {
        // SAFETY: SIG_IGN installs no handler code; signal(2) has no memory effects.
        if unsafe { libc::signal(signal, libc::SIG_IGN) } == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Size of the kernel's signal set, the last argument of `rt_sigaction(2)`.
#[cfg(any(target_arch = "mips", target_arch = "mips64"))]
const KERNEL_SIGSET_BYTES: usize = 16;
#[cfg(not(any(target_arch = "mips", target_arch = "mips64")))]
const KERNEL_SIGSET_BYTES: usize = 8;

/// Between fork and exec: every signal back to its default disposition (an ignored
/// one would survive exec) and an empty signal mask. Async-signal-safe: raw
/// `rt_sigaction` (the C library refuses the numbers it reserves for itself, 32 and
/// 33, which an ignored disposition may hold as well) and `sigprocmask`, on values
/// on the stack.
///
/// # Safety
/// Call only in a forked child before exec (it changes the whole process's signal
/// handling).
unsafe fn reset_signals_for_exec() -> io::Result<()> {
    // The kernel's `struct sigaction`, all zeros: handler SIG_DFL, no flags, no
    // restorer, an empty mask. Larger than any architecture's, so never read past.
    let default = [0u64; 8];
    for signal in 1..SIGNAL_NUMBER_END {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: `default` is a readable, zeroed kernel sigaction for the call; no old
        // action is asked for. A number the kernel refuses only fails with EINVAL.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                KERNEL_SIGSET_BYTES,
            )
        };
    }
    // SAFETY: sigset_t is plain old data, initialised by sigemptyset before use.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `empty` is a valid sigset_t for both calls; the old mask is not asked for.
    if unsafe { libc::sigemptyset(&mut empty) } != 0
        || unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What `spawn_child` starts.
pub struct SpawnSpec<'a> {
    pub program: &'a std::path::Path,
    pub cwd: &'a std::path::Path,
    /// The whole environment; nothing is inherited.
    pub env: &'a [(String, String)],
    /// Where stdout and stderr go (stdin is /dev/null).
    pub output: std::os::fd::OwnedFd,
    /// `cgroup.procs` files the child writes "0" into before exec.
    pub cgroup_procs: Vec<std::os::fd::RawFd>,
    /// Adds `WATCHDOG_PID=<the child's own pid>` to its environment (replacing any
    /// given): libsystemd heeds `WATCHDOG_USEC` only in the process it names. The pid
    /// is known only after fork, so the environment is prepared whole before it, with a
    /// slot the child fills in and then hands to its own `execve`.
    pub watchdog_pid: bool,
}

/// The variable [`SpawnSpec::watchdog_pid`] sets.
const WATCHDOG_PID_PREFIX: &[u8] = b"WATCHDOG_PID=";
/// Digits of the largest pid (`i32::MAX`).
const PID_DIGITS_MAX: usize = 10;

/// A program and its whole environment, ready for `execve` in a forked child that
/// writes its own pid into the `WATCHDOG_PID=` slot first: nothing is allocated after
/// fork.
struct PidExec {
    program: std::ffi::CString,
    _env: Vec<std::ffi::CString>,
    /// `WATCHDOG_PID=`, room for the digits, and their NUL.
    slot: Box<[u8; WATCHDOG_PID_PREFIX.len() + PID_DIGITS_MAX + 1]>,
    /// Program, then null.
    argv: [*const libc::c_char; 2],
    /// The variables of `_env`, the slot, then null.
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the raw pointers point into the heap buffers of the CStrings and the slot the
// value owns, which are never freed, moved or resized while it lives; it is used only in
// the forked child (one thread), before exec.
unsafe impl Send for PidExec {}
// SAFETY: as for Send; nothing is shared with a live thread.
unsafe impl Sync for PidExec {}

impl PidExec {
    fn new(program: &std::path::Path, env: &[(String, String)]) -> io::Result<PidExec> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "nul byte in program or env");
        let program = CString::new(program.as_os_str().as_bytes()).map_err(nul)?;
        let env = (env.iter())
            .filter(|(name, _)| {
                name.as_bytes() != &WATCHDOG_PID_PREFIX[..WATCHDOG_PID_PREFIX.len() - 1]
            })
            .map(|(name, value)| CString::new(format!("{name}={value}")).map_err(nul))
            .collect::<io::Result<Vec<CString>>>()?;
        let mut slot = Box::new([0u8; WATCHDOG_PID_PREFIX.len() + PID_DIGITS_MAX + 1]);
        slot[..WATCHDOG_PID_PREFIX.len()].copy_from_slice(WATCHDOG_PID_PREFIX);
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|v| v.as_ptr()).collect();
        envp.push(slot.as_ptr().cast());
        envp.push(std::ptr::null());
        Ok(PidExec {
            argv: [program.as_ptr(), std::ptr::null()],
            program,
            _env: env,
            slot,
            envp,
        })
    }

    /// In the forked child: writes `getpid()` into the slot and `execve`s. Returns
    /// only on failure. Async-signal-safe: getpid, stores into memory owned by `self`,
    /// execve; nothing allocated.
    fn exec_with_own_pid(&mut self) -> io::Error {
        // SAFETY: getpid has no preconditions.
        let pid = unsafe { libc::getpid() };
        let mut digits = [0u8; PID_DIGITS_MAX];
        let mut start = PID_DIGITS_MAX;
        let mut rest = pid.unsigned_abs();
        while start > 0 {
            start -= 1;
            digits[start] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        let value = &digits[start..];
        let at = WATCHDOG_PID_PREFIX.len();
        self.slot[at..at + value.len()].copy_from_slice(value);
        self.slot[at + value.len()] = 0;
        // The slot was just written through `&mut`: take its pointer afresh.
        let last = self.envp.len() - 2; // the slot's entry: the vector ends with it and null
        self.envp[last] = self.slot.as_ptr().cast();
        // SAFETY: `program`, every entry of `argv` and `envp` point into NUL-terminated
        // buffers owned by `self`, and both arrays end with a null pointer.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        io::Error::last_os_error()
    }
}

/// Starts a child in its own session and process group, with `PR_SET_PDEATHSIG`
/// so that it dies with the calling thread, every signal at its default disposition
/// and an empty signal mask. Call it only from the long-lived loop
/// thread: the death signal fires when the *spawning thread* exits.
pub fn spawn_child(spec: SpawnSpec<'_>) -> io::Result<i32> {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};

    let parent = std::process::id() as libc::pid_t;
    let output = File::from(spec.output);
    let cgroup_procs = spec.cgroup_procs;
    let mut pid_exec = match spec.watchdog_pid {
        true => Some(PidExec::new(spec.program, spec.env)?),
        false => None,
    };
    let mut command = Command::new(spec.program);
    command
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(output.try_clone()?))
        .stderr(Stdio::from(output));
    // SAFETY: the closure runs between fork and exec in the child and makes only
    // async-signal-safe calls (setsid, prctl, getppid, write, rt_sigaction,
    // sigemptyset, sigprocmask, getpid, execve); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            reset_signals_for_exec()?;
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) < 0 {
                return Err(io::Error::last_os_error());
            }
            // BootAgent died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            for &fd in &cgroup_procs {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            // Standard streams and the directory are in place (std sets them up before
            // this closure): exec here, with the environment holding this pid.
            if let Some(exec) = pid_exec.as_mut() {
                return Err(exec.exec_with_own_pid());
            }
            Ok(())
        });
    }
    let child = command.spawn()?;
    // Reaped by pid with `reap`; dropping the handle neither waits nor kills.
    Ok(child.id() as i32)
}

/// Sends `signal` to the process group `pgid`; a group that is gone is not an error.
pub fn signal_group(pgid: i32, signal: i32) -> io::Result<()> {
    if pgid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL)); // never every process
    }
    // SAFETY: kill(2) with a negative pid signals one process group; no memory effects.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(()),
        _ => Err(err),
    }
}

/// Sends `signal` to one process.
pub fn signal_process(pid: i32, signal: i32) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: kill(2) on one pid; no memory effects.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getpgid(2)`: the process group of `pid`; `None` if it is gone.
pub fn process_group(pid: i32) -> Option<i32> {
    // SAFETY: getpgid reads a kernel value; no memory effects.
    let pgid = unsafe { libc::getpgid(pid) };
    (pgid >= 0).then_some(pgid)
}

/// How a reaped child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reaped {
    Code(i32),
    Signal(i32),
}

/// `waitpid(pid, WNOHANG)`: the exit of this one child, if it has exited.
/// Never `waitpid(-1)`, which would steal the statuses of other children.
pub fn reap(pid: i32) -> Option<Reaped> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out-pointer for the duration of the call.
    let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
    if rc != pid {
        return None;
    }
    if libc::WIFEXITED(status) {
        Some(Reaped::Code(libc::WEXITSTATUS(status)))
    } else if libc::WIFSIGNALED(status) {
        Some(Reaped::Signal(libc::WTERMSIG(status)))
    } else {
        None // stopped or continued: not an exit
    }
}

/// `PR_SET_CHILD_SUBREAPER`: orphans of this process's descendants (a daemon that
/// left its parent) are reparented to it rather than to init, so that it can find them.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with an integer option; no memory effects.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pid of a child of this process that has exited, without reaping it
/// (`waitid(P_ALL, WEXITED | WNOHANG | WNOWAIT)`): the caller decides whose it is and
/// reaps it by pid, so that no child's status is ever taken from its owner.
pub fn peek_exited_child() -> Option<i32> {
    // SAFETY: siginfo_t is plain old data; all-zero bytes are a valid value.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer for the duration of the call.
    let rc = unsafe {
        libc::waitid(
            libc::P_ALL,
            0,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None; // ECHILD: no child at all
    }
    // SAFETY: waitid filled `info` for a child event (si_pid is 0 when none is waiting).
    let pid = unsafe { info.si_pid() };
    (pid > 0).then_some(pid)
}

/// The pids of the processes whose parent is `parent`, from `/proc/PID/stat`.
pub fn children_of(parent: u32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold anything, so read after its last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// The processes (other than this one) whose environment holds a variable starting
/// with each of `markers` (`NAME=value` prefixes, all of them required).
pub fn marked_processes(markers: &[&[u8]]) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue; // gone, or not ours to read
        };
        let marked = markers.iter().all(|marker| {
            environ
                .split(|&b| b == 0)
                .any(|var| var.starts_with(marker))
        });
        if marked {
            found.extend(i32::try_from(pid).ok());
        }
    }
    found
}

/// Kills every process whose environment holds `marker` (an exact `NAME=value`
/// prefix): children of a BootAgent that was killed with `kill -9`, and their
/// own children, found by the environment they inherited. Returns how many.
pub fn kill_marked_processes(marker: &[u8]) -> usize {
    marked_processes(&[marker])
        .into_iter()
        .filter(|&pid| signal_process(pid, libc::SIGKILL).is_ok())
        .count()
}

/// The user id of the process at the other end of a connected Unix socket
/// (`SO_PEERCRED`), as the kernel recorded it at `connect(2)`.
pub fn peer_uid(socket: &impl AsRawFd) -> io::Result<u32> {
    // SAFETY: ucred is plain old data; all-zero bytes are a valid value.
    let mut cred: libc::ucred = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable ucred and `len` says its size; the kernel
    // writes at most `len` bytes. A bad descriptor only makes the call fail.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// `geteuid(2)`: the user this process acts as.
pub fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and has no memory effects.
    unsafe { libc::geteuid() }
}

/// `CLOCK_MONOTONIC` in milliseconds: the one clock an exec does not reset.
pub fn monotonic_ms() -> u64 {
    // SAFETY: timespec is plain old data; all-zero bytes are a valid value.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

/// Sets or clears `FD_CLOEXEC` on `fd`: a descriptor handed over to the next image
/// must survive `execve`; every other one stays close-on-exec.
pub fn set_cloexec(fd: std::os::fd::RawFd, on: bool) -> io::Result<()> {
    // SAFETY: F_GETFD only reads the descriptor flags; a bad fd fails with EBADF.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::FD_CLOEXEC
    } else {
        flags & !libc::FD_CLOEXEC
    };
    // SAFETY: as above; F_SETFD only changes the descriptor flags.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// True when `fd` is open and a pipe (a child's log pipe handed over by exec).
pub fn is_pipe(fd: std::os::fd::RawFd) -> bool {
    // SAFETY: stat is plain old data; all-zero bytes are a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat for the call; a bad fd fails with EBADF.
    let rc = unsafe { libc::fstat(fd, &mut st) };
    rc == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
}

/// `alarm(2)`: `SIGALRM` in `secs` seconds (0 cancels). The timer survives `execve`,
/// which is why the exec hand-over arms it: it catches a new image that hangs.
pub fn alarm(secs: u32) {
    // SAFETY: alarm(2) has no memory effects.
    unsafe { libc::alarm(secs) };
}

/// Gives `SIGALRM` its default action (end the process) and unblocks it, so that the
/// alarm armed before an exec ends a new image that never takes it over.
pub fn default_sigalrm() {
    // SAFETY: SIG_DFL is a valid disposition; sigset_t is initialised by sigemptyset
    // before use; no memory is shared with a handler.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// A program, its arguments, environment and the descriptors to keep, ready for
/// `execve` from a signal handler (nothing left to allocate).
pub struct ExecImage {
    program: std::ffi::CString,
    _argv: Vec<std::ffi::CString>,
    _envp: Vec<std::ffi::CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp_ptrs: Vec<*const libc::c_char>,
    keep_fds: Vec<std::os::fd::RawFd>,
}

impl ExecImage {
    /// `None` when a part holds a NUL byte.
    pub fn new(
        program: &std::path::Path,
        argv: &[std::ffi::OsString],
        envp: &[std::ffi::OsString],
        keep_fds: Vec<std::os::fd::RawFd>,
    ) -> Option<ExecImage> {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |s: &std::ffi::OsStr| CString::new(s.as_bytes()).ok();
        let program = c(program.as_os_str())?;
        let argv: Vec<CString> = argv.iter().map(|a| c(a)).collect::<Option<_>>()?;
        let envp: Vec<CString> = envp.iter().map(|e| c(e)).collect::<Option<_>>()?;
        let ptrs = |v: &[CString]| {
            let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
            p.push(std::ptr::null());
            p
        };
        Some(ExecImage {
            argv_ptrs: ptrs(&argv),
            envp_ptrs: ptrs(&envp),
            program,
            _argv: argv,
            _envp: envp,
            keep_fds,
        })
    }

    /// Clears close-on-exec on the descriptors to keep, then `execve`. Returns only
    /// on failure. Async-signal-safe: fcntl and execve, nothing allocated.
    pub fn exec(&self) -> io::Error {
        for &fd in &self.keep_fds {
            // SAFETY: fcntl on a descriptor number; a closed one fails with EBADF.
            unsafe {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags >= 0 {
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
                }
            }
        }
        // SAFETY: every pointer points into CStrings owned by `self`, and both arrays
        // end with a null pointer, as execve requires.
        unsafe {
            libc::execve(
                self.program.as_ptr(),
                self.argv_ptrs.as_ptr(),
                self.envp_ptrs.as_ptr(),
            )
        };
        io::Error::last_os_error()
    }
}

/// The image the `SIGALRM` handler execs (leaked: one per process image).
static ROLLBACK_IMAGE: std::sync::atomic::AtomicPtr<ExecImage> =
    std::sync::atomic::AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_sigalrm(_: libc::c_int) {
    // SAFETY: getpid and gettid have no preconditions.
    let (pid, tid) = unsafe {
        (
            libc::getpid(),
            libc::syscall(libc::SYS_gettid) as libc::pid_t,
        )
    };
    if pid != tid {
        // Only the main thread may exec: it spawned the children, and their death
        // signal fires when the thread that spawned them ends. Send it there.
        // SAFETY: tgkill to our own main thread; no memory effects.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGALRM) };
        return;
    }
    let image = ROLLBACK_IMAGE.load(std::sync::atomic::Ordering::SeqCst);
    if !image.is_null() {
        // SAFETY: the pointer comes from Box::into_raw and is never freed.
        let _ = unsafe { &*image }.exec();
    }
    // No image, or the exec failed: end as the default action would, and let init
    // start the installed binary, which finds the upgrade unconfirmed.
    // SAFETY: resetting to SIG_DFL and raising are async-signal-safe.
    unsafe {
        libc::signal(libc::SIGALRM, libc::SIG_DFL);
        libc::raise(libc::SIGALRM);
    }
}

/// On `SIGALRM` (the alarm armed before the exec that started this image), the main
/// thread execs `image`: the previous version takes over a hung new one.
pub fn exec_on_sigalrm(image: ExecImage) -> io::Result<()> {
    let old = ROLLBACK_IMAGE.swap(
        Box::into_raw(Box::new(image)),
        std::sync::atomic::Ordering::SeqCst,
    );
    if !old.is_null() {
        // SAFETY: `old` came from Box::into_raw above and the handler is not using it:
        // this is called once per image, before any alarm can fire into a swap.
        drop(unsafe { Box::from_raw(old) });
    }
    // SAFETY: sigaction is plain old data; the handler is an extern "C" fn that makes
    // only async-signal-safe calls.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigalrm as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESTART;
        if libc::sigaction(libc::SIGALRM, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
    Ok(())
}

/// The parent pid of `pid`, from `/proc/PID/stat`.
pub fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Takes ownership of a descriptor inherited over an exec hand-over (a child's log
/// pipe listed in `handover.json`), and makes it close-on-exec again.
pub fn adopt_fd(fd: std::os::fd::RawFd) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if !is_pipe(fd) {
        return None;
    }
    set_cloexec(fd, true).ok()?;
    // SAFETY: the descriptor was inherited over execve, is open (fstat succeeded) and
    // nothing else in this image owns it: the hand-over lists each one once.
    Some(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// `listen(2)` again on a listening socket: sets the length of its queue of connections
/// not yet accepted (std asks for the system's maximum).
pub fn set_backlog(socket: &impl AsRawFd, backlog: u32) -> io::Result<()> {
    let backlog = libc::c_int::try_from(backlog).unwrap_or(libc::c_int::MAX);
    // SAFETY: listen(2) takes a descriptor and a number; no memory effects.
    let rc = unsafe { libc::listen(socket.as_raw_fd(), backlog) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
#[path = "sys_tests.rs"]
mod tests;
