//! Child logs: each child's stdout and stderr, through one pipe, appended to
//! `logs/NAME.log` and rotated by size into `NAME.log.1` … (PROTOCOL.md sections 6
//! and 8). Bounded on disk, and never a reason for a child or BootAgent to wait.
//!
//! ```text
//!   child A ══ pipe ══╗
//!   child B ══ pipe ══╬══► log thread ──► logs/A.log ──rotate──► logs/A.log.1
//!   attach ── queue ──╢    poll(wake, pipes…)
//!   attach, shutdown ─╨─ wake-up pipe
//! ```
//!
//! One thread serves every child. It sleeps in `poll(2)`, without a timeout, on the
//! read ends of the children's pipes and on a wake-up pipe; `attach` queues a pipe on a
//! bounded channel and writes one byte to the wake-up pipe, `shutdown` sets a flag and
//! does the same. An idle agent has an idle log thread: there is no tick.
//!
//! Bounds:
//! - Each round reads at most `read_chunk_bytes` from each ready pipe (read ends are
//!   non-blocking), so a chatty child cannot starve the others, and the thread holds
//!   one chunk of memory.
//! - A file is rotated when it reaches `file_bytes_max`: `NAME.log` → `NAME.log.1` → …
//!   → `NAME.log.(files_max-1)`, the oldest one replaced. The cut is at a line end when
//!   the chunk being written has one: the last one that fits, else the first one past
//!   the limit, and then the file exceeds the limit by less than one chunk; a chunk
//!   without a line end is cut at the limit. A child takes at most
//!   `files_max × (file_bytes_max + read_chunk_bytes)` on disk.
//! - At most `ATTACHED_MAX` pipes at once; past that `attach` fails and the caller
//!   sends the child's output to `/dev/null`.
//!
//! When a write fails (disk full, directory gone, permissions), the data is dropped and
//! counted: one warning per failure streak, one line when writing succeeds again. The
//! thread never stops reading, so a child never blocks because of BootAgent; the one wait
//! left is the disk itself (a write to a hung disk holds the thread, and a child then
//! blocks once its pipe buffer is full).
//!
//! There is no detach: a pipe is forgotten at end of file, once the child and every
//! process that inherited its write end have closed it. Two pipes may share a file (a
//! restarted child while a grandchild of the old one still writes): both append to it,
//! and it rotates once for both.
//!
//! The caller, for each start: `let (read, write) = output_pipe()?`, then
//! `attach(path, read)` (on error, the child gets `/dev/null`), then the child gets
//! `write` as stdout and a `try_clone` of it as stderr. The parent's copies of the write
//! end must be closed once the child runs (dropping the `Command` does it), or the pipe
//! never reaches end of file.

use log::{info, warn};
use std::collections::HashMap;
use std::ffi::c_int;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Pipes attached at once, across all children.
pub const ATTACHED_MAX: usize = 1024;
/// Capacity of the attach queue. A queued pipe holds one of the `ATTACHED_MAX` slots,
/// so the queue is never full when `attach` has found a free slot: `attach` never waits.
const ATTACH_QUEUE_MAX: usize = ATTACHED_MAX;
/// Smallest `file_bytes_max` taken: a smaller limit would make rotation all renames.
const FILE_BYTES_MAX_FLOOR: u64 = 1024;
/// Largest `files_max` taken: each rotation renames every file.
const FILES_MAX_CEILING: u32 = 100;
/// Bounds of `read_chunk_bytes`: a few lines at least, bounded memory at most.
const READ_CHUNK_BYTES_FLOOR: usize = 512;
const READ_CHUNK_BYTES_CEILING: usize = 1024 * 1024;
/// Longest `shutdown` spends reading what the children wrote before it.
const SHUTDOWN_DRAIN_MS: u64 = 100;
/// Pause after a failed `poll(2)`, so that a lasting failure cannot spin the thread.
const POLL_ERROR_PAUSE_MS: u64 = 100;
/// Bytes taken from the wake-up pipe per round; more wake the next round.
const WAKE_READ_BYTES: usize = 64;
/// Mode of a log file, and of the logs directory when it has to be created (section 8).
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

/// Bounds of the child logs. `LogConfig::default()` is PROTOCOL.md's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size at which a child's log file is rotated. A file exceeds it by less than
    /// `read_chunk_bytes`, to end on a line. At least `FILE_BYTES_MAX_FLOOR`.
    pub file_bytes_max: u64,
    /// Files per child: `NAME.log` plus `NAME.log.1` … `NAME.log.(files_max-1)`.
    /// 1 to `FILES_MAX_CEILING`.
    pub files_max: u32,
    /// Largest read from one pipe in one round; also the thread's buffer.
    pub read_chunk_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            file_bytes_max: 1024 * 1024,
            files_max: 2,
            read_chunk_bytes: 64 * 1024,
        }
    }
}

impl LogConfig {
    /// The same configuration, each bound brought within its floor and ceiling.
    fn sane(self) -> LogConfig {
        LogConfig {
            file_bytes_max: self.file_bytes_max.max(FILE_BYTES_MAX_FLOOR),
            files_max: self.files_max.clamp(1, FILES_MAX_CEILING),
            read_chunk_bytes: self
                .read_chunk_bytes
                .clamp(READ_CHUNK_BYTES_FLOOR, READ_CHUNK_BYTES_CEILING),
        }
    }
}

/// The pipe for one child's stdout and stderr, as `(read end, write end)`, both
/// close-on-exec: the read end goes to `attach`, the write end to the child. (std's
/// `io::pipe` does the same from Rust 1.87, above the crate's `rust-version`.)
pub fn output_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe(0)
}

/// Handle to the log thread; cheap to clone. The thread ends at `shutdown`, or when
/// the last handle is dropped.
#[derive(Clone)]
pub struct ChildLogs {
    inner: Arc<Inner>,
}

struct Inner {
    attachments: SyncSender<Attachment>,
    /// Write end of the wake-up pipe. Its closing (the last handle dropped) ends the thread.
    wake: File,
    shared: Arc<Shared>,
    thread: Mutex<Option<thread::JoinHandle<()>>>,
}

/// A pipe on its way to the log thread.
struct Attachment {
    path: PathBuf,
    read_end: File,
}

/// What the handles and the thread both see.
struct Shared {
    attached_max: usize,
    /// Pipes attached or queued.
    attached: AtomicUsize,
    stopping: AtomicBool,
    read_bytes: AtomicU64,
    dropped_bytes: AtomicU64,
    /// Write failure streaks, each warned about once.
    failure_streaks: AtomicU64,
    /// The log thread's kernel thread id and its rounds, for the idle test.
    #[cfg(test)]
    tid: std::sync::atomic::AtomicI32,
    #[cfg(test)]
    rounds: AtomicU64,
}

impl Shared {
    fn new(attached_max: usize) -> Shared {
        Shared {
            attached_max: attached_max.min(ATTACH_QUEUE_MAX),
            attached: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            read_bytes: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
            failure_streaks: AtomicU64::new(0),
            #[cfg(test)]
            tid: std::sync::atomic::AtomicI32::new(0),
            #[cfg(test)]
            rounds: AtomicU64::new(0),
        }
    }

    /// Gives back an attached slot.
    fn release(&self) {
        // Never an error: the closure always gives a value.
        let _ = self
            .attached
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

impl ChildLogs {
    /// Starts the log thread.
    pub fn start(config: LogConfig) -> io::Result<ChildLogs> {
        ChildLogs::start_bounded(config, ATTACHED_MAX)
    }

    fn start_bounded(config: LogConfig, attached_max: usize) -> io::Result<ChildLogs> {
        let config = config.sane();
        let (wake_read, wake_write) = pipe(libc::O_NONBLOCK)?;
        let (sender, receiver) = mpsc::sync_channel(ATTACH_QUEUE_MAX);
        let shared = Arc::new(Shared::new(attached_max));
        let worker = Worker {
            config,
            wake: File::from(wake_read),
            attachments: receiver,
            shared: Arc::clone(&shared),
            pipes: Vec::new(),
            files: HashMap::new(),
            fds: Vec::new(),
            buf: vec![0; config.read_chunk_bytes],
        };
        let thread = thread::Builder::new()
            .name("childlog".to_string())
            .spawn(move || worker.run())?;
        Ok(ChildLogs {
            inner: Arc::new(Inner {
                attachments: sender,
                wake: File::from(wake_write),
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Hands the read end of a child's output pipe to the log thread; output is
    /// appended to `path`. Never waits. Fails past `ATTACHED_MAX` pipes and after
    /// `shutdown`; the read end is then closed, and the caller gives the child
    /// `/dev/null` instead.
    pub fn attach(&self, path: PathBuf, read_end: OwnedFd) -> io::Result<()> {
        let shared = &self.inner.shared;
        let refuse = |why: &str| io::Error::other(format!("child log {}: {why}", path.display()));
        if shared.stopping.load(Ordering::SeqCst) {
            return Err(refuse("the log thread is shut down"));
        }
        let reserved = shared
            .attached
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < shared.attached_max).then_some(n + 1)
            });
        if reserved.is_err() {
            let why = format!("{} pipes are attached already", shared.attached_max);
            return Err(refuse(&why));
        }
        if let Err(err) = set_nonblocking(&read_end) {
            shared.release();
            return Err(refuse(&format!("cannot make the pipe non-blocking: {err}")));
        }
        let sent = self.inner.attachments.try_send(Attachment {
            path: path.clone(),
            read_end: File::from(read_end),
        });
        let why = match sent {
            Ok(()) => {
                self.inner.wake();
                return Ok(());
            }
            // Not expected: the queue holds as many as there are slots (ATTACH_QUEUE_MAX).
            Err(TrySendError::Full(_)) => "the attach queue is full",
            Err(TrySendError::Disconnected(_)) => "the log thread has ended",
        };
        shared.release();
        Err(refuse(why))
    }

    /// Number of pipes currently attached (for tests and status).
    pub fn attached(&self) -> usize {
        self.inner.shared.attached.load(Ordering::SeqCst)
    }

    /// Stops the thread after draining what is readable now, for at most
    /// `SHUTDOWN_DRAIN_MS`; used at shutdown, once the children are stopped. The pipes
    /// are closed: a child still writing gets `SIGPIPE` (or `EPIPE`). Later calls, from
    /// any clone, return at once.
    pub fn shutdown(&self) {
        // Held until the thread has ended, so that a concurrent call also returns after.
        let mut thread = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(handle) = thread.take() {
            self.inner.shared.stopping.store(true, Ordering::SeqCst);
            self.inner.wake();
            if handle.join().is_err() {
                log::error!("the child log thread panicked");
            }
        }
    }
}

impl Inner {
    /// Wakes the log thread from `poll(2)`.
    fn wake(&self) {
        // Non-blocking: a full wake-up pipe already holds a wake-up, so nothing is lost.
        let _ = (&self.wake).write(&[1]);
    }
}

/// A child's pipe, attached.
struct Pipe {
    read_end: File,
    /// The key of its file in `Worker::files`.
    path: PathBuf,
    /// False from end of file (or a read error) on; forgotten at the end of the round.
    open: bool,
}

/// The log thread's state. Only the thread touches it.
struct Worker {
    config: LogConfig,
    wake: File,
    attachments: Receiver<Attachment>,
    shared: Arc<Shared>,
    pipes: Vec<Pipe>,
    /// One entry per path, shared by the pipes that write to it.
    files: HashMap<PathBuf, LogFile>,
    /// `poll(2)`'s set: the wake-up pipe, then `pipes` in order.
    fds: Vec<libc::pollfd>,
    buf: Vec<u8>,
}

impl Worker {
    /// The thread: a round per wake-up, until `shutdown` (or the last handle's drop)
    /// and a drain of at most `SHUTDOWN_DRAIN_MS`.
    fn run(mut self) {
        // SAFETY: gettid has no preconditions and touches no memory.
        #[cfg(test)]
        self.shared
            .tid
            .store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let mut drain_until: Option<Instant> = None;
        let mut poll_failing = false;
        loop {
            let timeout_ms = if drain_until.is_some() { 0 } else { -1 };
            let polled = self.poll(timeout_ms);
            #[cfg(test)]
            self.shared.rounds.fetch_add(1, Ordering::SeqCst);
            match polled {
                Ok(()) => poll_failing = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    if !poll_failing {
                        warn!("child logs: poll failed: {err}; retrying");
                    }
                    poll_failing = true;
                    thread::sleep(Duration::from_millis(POLL_ERROR_PAUSE_MS));
                }
            }
            if self.fds.first().is_some_and(|fd| fd.revents != 0) && !self.take_wake() {
                // End of file: every handle is gone, nobody will call shutdown.
                self.shared.stopping.store(true, Ordering::SeqCst);
            }
            self.take_attachments();
            let readable = self.read_round();
            match drain_until {
                None if self.shared.stopping.load(Ordering::SeqCst) => {
                    drain_until = Some(Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS));
                }
                Some(deadline) if !readable || Instant::now() >= deadline => break,
                _ => {}
            }
        }
        self.shared.attached.store(0, Ordering::SeqCst);
    }

    /// Waits in `poll(2)` for the wake-up pipe or a child's pipe; -1 waits for ever.
    fn poll(&mut self, timeout_ms: c_int) -> io::Result<()> {
        let watch = |fd: &dyn AsRawFd| libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        self.fds.clear();
        self.fds.push(watch(&self.wake));
        self.fds
            .extend(self.pipes.iter().map(|p| watch(&p.read_end)));
        // No truncation: at most ATTACHED_MAX + 1 entries.
        let count = self.fds.len() as libc::nfds_t;
        // SAFETY: `fds` holds `count` initialised pollfds and is borrowed exclusively
        // for the call; the descriptors stay open while `self` owns them.
        let rc = unsafe { libc::poll(self.fds.as_mut_ptr(), count, timeout_ms) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Empties (some of) the wake-up pipe. False at end of file: every handle is gone.
    fn take_wake(&mut self) -> bool {
        let mut buf = [0; WAKE_READ_BYTES];
        // Would-block or interrupted: a later round sees the rest, if any.
        !matches!((&self.wake).read(&mut buf), Ok(0))
    }

    /// Takes the queued pipes in, each counted as a user of its path's file.
    fn take_attachments(&mut self) {
        while let Ok(Attachment { path, read_end }) = self.attachments.try_recv() {
            let file = self
                .files
                .entry(path.clone())
                .or_insert_with(|| LogFile::new(path.clone()));
            file.users += 1;
            self.pipes.push(Pipe {
                read_end,
                path,
                open: true,
            });
        }
    }

    /// Reads one chunk from each ready pipe into its file, then forgets the pipes at
    /// end of file. True when some pipe was ready.
    fn read_round(&mut self) -> bool {
        let mut readable = false;
        // `fds[1..]` follows `pipes`; pipes attached after the poll are not in it yet.
        for (pipe, fd) in self.pipes.iter_mut().zip(self.fds.iter().skip(1)) {
            if fd.revents == 0 {
                continue;
            }
            readable = true;
            match (&pipe.read_end).read(&mut self.buf) {
                Ok(0) => pipe.open = false,
                Ok(n) => {
                    self.shared
                        .read_bytes
                        .fetch_add(n as u64, Ordering::Relaxed);
                    if let (Some(file), Some(data)) =
                        (self.files.get_mut(&pipe.path), self.buf.get(..n))
                    {
                        file.append(data, &self.config, &self.shared);
                    }
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(err) => {
                    warn!("child log {}: closing its pipe: {err}", pipe.path.display());
                    pipe.open = false;
                }
            }
        }
        let (files, shared) = (&mut self.files, &self.shared);
        self.pipes.retain(|pipe| {
            if pipe.open {
                return true;
            }
            if let Some(file) = files.get_mut(&pipe.path) {
                file.users = file.users.saturating_sub(1);
                if file.users == 0 {
                    files.remove(&pipe.path);
                }
            }
            shared.release();
            false
        });
        readable
    }
}

/// One log file and its rotation, shared by every pipe attached to its path.
struct LogFile {
    path: PathBuf,
    /// Open from the first write on; closed after a failure, reopened at the next write.
    file: Option<File>,
    /// Size of the open file: its length at open plus what was written since.
    size_bytes: u64,
    /// False for a device or a FIFO (`/dev/null`, `/dev/full`): never rotated.
    rotates: bool,
    /// Pipes writing here; the entry goes with the last one.
    users: usize,
    /// Bytes dropped in the current failure streak; `None` while writes succeed.
    failing: Option<u64>,
}

impl LogFile {
    fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            file: None,
            size_bytes: 0,
            rotates: true,
            users: 0,
            failing: None,
        }
    }

    /// Appends `data`, rotating as needed. A failure drops what is left of it.
    fn append(&mut self, data: &[u8], config: &LogConfig, shared: &Shared) {
        let mut rest = data;
        match self.write_rotating(&mut rest, config) {
            Ok(()) => {
                if let Some(dropped) = self.failing.take() {
                    info!(
                        "child log {}: writing again, {dropped} bytes were dropped",
                        self.path.display()
                    );
                }
            }
            Err(err) => {
                // Counted whole: part of it may have reached the file.
                let dropped = rest.len() as u64;
                shared.dropped_bytes.fetch_add(dropped, Ordering::Relaxed);
                match &mut self.failing {
                    Some(streak) => *streak = streak.saturating_add(dropped),
                    None => {
                        warn!(
                            "child log {}: {err}; dropping the child's output until a write succeeds",
                            self.path.display()
                        );
                        shared.failure_streaks.fetch_add(1, Ordering::Relaxed);
                        self.failing = Some(dropped);
                    }
                }
            }
        }
    }

    /// Writes `rest` out, advancing it past what was written. On error the file is
    /// left closed, to be reopened (and its size read again) at the next write.
    fn write_rotating(&mut self, rest: &mut &[u8], config: &LogConfig) -> io::Result<()> {
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.open()?,
        };
        if self.rotates && self.size_bytes >= config.file_bytes_max {
            drop(file);
            file = self.rotate(config)?;
        }
        // Each turn writes at least one byte: after a rotation the room is not zero.
        loop {
            let room = if self.rotates {
                config.file_bytes_max.saturating_sub(self.size_bytes)
            } else {
                u64::MAX
            };
            if rest.len() as u64 <= room {
                (&file).write_all(rest)?;
                self.size_bytes = self.size_bytes.saturating_add(rest.len() as u64);
                *rest = &[];
                self.file = Some(file);
                return Ok(());
            }
            // `room` is less than `rest.len()`, a usize.
            let (now, later) = rest.split_at(cut_len(rest, room as usize));
            (&file).write_all(now)?;
            *rest = later;
            drop(file);
            file = self.rotate(config)?;
        }
    }

    /// Opens (creating) the file for appending, and reads its size and kind.
    fn open(&mut self) -> io::Result<File> {
        let open = || {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(FILE_MODE)
                .open(&self.path)
        };
        let file = match open() {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    match DirBuilder::new().mode(DIR_MODE).create(dir) {
                        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
                        _ => {}
                    }
                }
                open()?
            }
            opened => opened?,
        };
        let meta = file.metadata()?;
        self.rotates = meta.file_type().is_file();
        self.size_bytes = meta.len();
        Ok(file)
    }

    /// `NAME.log` → `NAME.log.1` → … → `NAME.log.(files_max-1)`, the last one
    /// replaced, then a new, empty `NAME.log`. With one file, that file starts over.
    fn rotate(&mut self, config: &LogConfig) -> io::Result<File> {
        let gone_is_fine = |result: io::Result<()>| match result {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        };
        if config.files_max <= 1 {
            gone_is_fine(fs::remove_file(&self.path))?;
        } else {
            for n in (1..config.files_max - 1).rev() {
                // An older file that cannot move is replaced instead: the bound holds.
                let _ = fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1));
            }
            gone_is_fine(fs::rename(&self.path, numbered(&self.path, 1)))?;
        }
        let file = self.open()?;
        if self.size_bytes >= config.file_bytes_max {
            return Err(io::Error::other("still full after rotation"));
        }
        Ok(file)
    }
}

/// How much of `chunk` goes into a file with `room` bytes left, before it rotates:
/// through the last line end that fits; else through the first line end past the room
/// (the file then exceeds its limit by less than one chunk); else exactly the room.
/// Always at least 1 (the room counts as 1 at least) and at most `chunk.len()`.
fn cut_len(chunk: &[u8], room: usize) -> usize {
    let (fits, past) = chunk.split_at(room.max(1).min(chunk.len()));
    if let Some(i) = fits.iter().rposition(|&b| b == b'\n') {
        return i + 1;
    }
    match past.iter().position(|&b| b == b'\n') {
        Some(i) => fits.len() + i + 1,
        None => fits.len(),
    }
}

/// `PATH.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A close-on-exec pipe with `flags` (`O_NONBLOCK`) added, as `(read end, write end)`.
fn pipe(flags: c_int) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [c_int; 2] = [-1, -1];
    // SAFETY: `fds` is a writable array of two c_int, as pipe2 requires.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded: both descriptors are open and owned by nothing else.
    let ends = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok(ends)
}

/// Sets `O_NONBLOCK` on `fd`'s open file description.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let fd = fd.as_raw_fd();
    // SAFETY: `fd` is open while borrowed; F_GETFL only reads the status flags.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above; F_SETFL only changes the status flags.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command, Stdio};
    use std::sync::{RwLock, RwLockReadGuard};

    /// Longest any condition of these tests is waited for.
    const DEADLINE_S: u64 = 30;
    /// Voluntary context switches an idle log thread may make in a second: the one
    /// that puts it back to sleep after the last line, and one more from the kernel.
    const IDLE_SWITCHES_MAX: u64 = 2;

    impl ChildLogs {
        fn thread_tid(&self) -> i32 {
            self.inner.shared.tid.load(Ordering::SeqCst)
        }
        fn rounds(&self) -> u64 {
            self.inner.shared.rounds.load(Ordering::SeqCst)
        }
        fn read_bytes(&self) -> u64 {
            self.inner.shared.read_bytes.load(Ordering::SeqCst)
        }
        fn dropped_bytes(&self) -> u64 {
            self.inner.shared.dropped_bytes.load(Ordering::SeqCst)
        }
        fn failure_streaks(&self) -> u64 {
            self.inner.shared.failure_streaks.load(Ordering::SeqCst)
        }
    }

    /// Held for reading by the tests that start processes, for writing by the one that
    /// counts the log thread's wake-ups: a fork anywhere in the process also wakes a
    /// thread asleep in `poll(2)` inside the kernel, without returning from it.
    static SPAWNS: RwLock<()> = RwLock::new(());

    fn spawning() -> RwLockReadGuard<'static, ()> {
        SPAWNS.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh directory, removed at the end of the test.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let dir = std::env::temp_dir().join(format!("childlog-{}-{test}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).expect("scratch dir");
            Scratch(dir)
        }
        fn path(&self, name: &str) -> PathBuf {
            self.0.join(name)
        }
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(&self.0)
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn spawn_with(logs: &ChildLogs, path: &Path, script: &str, stdin: Stdio) -> Child {
        let (read_end, write_end) = output_pipe().expect("pipe");
        logs.attach(path.to_path_buf(), read_end).expect("attach");
        let stderr = write_end.try_clone().expect("dup");
        // The Command, with the parent's copies of the write end, is dropped here.
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(stdin)
            .stdout(write_end)
            .stderr(stderr)
            .spawn()
            .expect("spawn")
    }

    fn spawn(logs: &ChildLogs, path: &Path, script: &str) -> Child {
        spawn_with(logs, path, script, Stdio::null())
    }

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(DEADLINE_S);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the children to exit and their pipes to reach end of file.
    fn finish(logs: &ChildLogs, children: Vec<Child>) {
        for mut child in children {
            wait_until("the child to exit", || {
                child.try_wait().expect("wait").is_some()
            });
        }
        wait_until("the pipes to close", || logs.attached() == 0);
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap_or_default()
    }

    fn bound(config: &LogConfig) -> u64 {
        config.file_bytes_max + config.read_chunk_bytes as u64
    }

    #[test]
    fn a_childs_stdout_and_stderr_land_in_its_file() {
        let _spawning = spawning();
        let dir = Scratch::new("output");
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        let path = dir.path("agent.log");
        let child = spawn(&logs, &path, "echo hello; echo err >&2");
        finish(&logs, vec![child]);
        assert_eq!(read(&path), "hello\nerr\n");
    }

    #[test]
    fn five_megabytes_leave_two_files_within_the_limit() {
        let _spawning = spawning();
        const LINE: &[u8] = b"0123456789abcdef\n";
        const TOTAL_BYTES: usize = 5_000_000;
        let dir = Scratch::new("rotation");
        let config = LogConfig::default();
        let logs = ChildLogs::start(config).expect("start");
        let path = dir.path("agent.log");
        let child = spawn(&logs, &path, "yes 0123456789abcdef | head -c 5000000");
        finish(&logs, vec![child]);

        assert_eq!(dir.names(), ["agent.log", "agent.log.1"]);
        let older = fs::read(dir.path("agent.log.1")).expect("read");
        let newer = fs::read(&path).expect("read");
        for file in [&older, &newer] {
            assert!(file.len() as u64 <= bound(&config), "{} bytes", file.len());
        }
        assert_eq!(older.len() % LINE.len(), 0, "rotated between lines");
        let stream = LINE.repeat(TOTAL_BYTES / LINE.len() + 1);
        let stream = &stream[..TOTAL_BYTES];
        assert!(
            stream.ends_with(&[older, newer].concat()),
            "the newest output, in order"
        );
    }

    #[test]
    fn a_child_writing_without_pause_is_never_blocked() {
        let _spawning = spawning();
        const TOTAL_BYTES: u64 = 50_000_000;
        let dir = Scratch::new("flood");
        let config = LogConfig::default();
        let logs = ChildLogs::start(config).expect("start");
        let path = dir.path("agent.log");
        let started = Instant::now();
        let child = spawn(&logs, &path, "yes | head -c 50000000; echo done");

        // Another thread of BootAgent's, meanwhile: how late do its 1 ms sleeps wake?
        let flooding = Arc::new(AtomicBool::new(true));
        let ticker = {
            let flooding = Arc::clone(&flooding);
            thread::spawn(move || {
                let mut late_max = Duration::ZERO;
                while flooding.load(Ordering::SeqCst) {
                    let slept = Instant::now();
                    thread::sleep(Duration::from_millis(1));
                    late_max =
                        late_max.max(slept.elapsed().saturating_sub(Duration::from_millis(1)));
                }
                late_max
            })
        };
        finish(&logs, vec![child]);
        flooding.store(false, Ordering::SeqCst);
        let late_max = ticker.join().expect("ticker");
        eprintln!(
            "50 MB through the log in {:?}; another thread's 1 ms sleep woke {late_max:?} late at most",
            started.elapsed()
        );

        assert_eq!(logs.read_bytes(), TOTAL_BYTES + b"done\n".len() as u64);
        assert!(read(&path).ends_with("\ndone\n"));
        assert_eq!(dir.names(), ["agent.log", "agent.log.1"]);
        for name in dir.names() {
            let len = fs::metadata(dir.path(&name)).expect("stat").len();
            assert!(len <= bound(&config), "{name} is {len} bytes");
        }
    }

    #[test]
    fn a_chatty_child_does_not_starve_a_quiet_one() {
        let _spawning = spawning();
        let dir = Scratch::new("fair");
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        let mut chatty = spawn(&logs, &dir.path("chatty.log"), "exec yes");
        let quiet_path = dir.path("quiet.log");
        let quiet = spawn(&logs, &quiet_path, "echo quiet");
        wait_until("the quiet child's line", || read(&quiet_path) == "quiet\n");
        assert!(chatty.try_wait().expect("wait").is_none(), "still writing");
        chatty.kill().expect("kill");
        finish(&logs, vec![chatty, quiet]);
    }

    #[test]
    fn an_idle_child_leaves_the_log_thread_asleep() {
        // Alone: forks elsewhere in the process wake threads sleeping in the kernel.
        let _alone = SPAWNS.write().unwrap_or_else(|e| e.into_inner());
        let dir = Scratch::new("idle");
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        let path = dir.path("agent.log");
        let mut child = spawn(&logs, &path, "echo ready; exec sleep 3");
        wait_until("the first line", || read(&path) == "ready\n");

        let switches = || {
            let status = format!("/proc/self/task/{}/status", logs.thread_tid());
            let status = fs::read_to_string(status).expect("thread status");
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .expect("voluntary_ctxt_switches");
            line.trim().parse::<u64>().expect("a count")
        };
        let (rounds, before) = (logs.rounds(), switches());
        thread::sleep(Duration::from_secs(1)); // the span measured, not a synchronisation
        let after = switches();
        assert_eq!(logs.rounds(), rounds, "poll returned");
        assert!(
            after - before <= IDLE_SWITCHES_MAX,
            "{} wake-ups in 1 s",
            after - before
        );

        child.kill().expect("kill");
        finish(&logs, vec![child]);
    }

    #[test]
    fn a_failing_disk_drops_output_with_one_warning() {
        let _spawning = spawning();
        const TOTAL_BYTES: u64 = 1_000_000;
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        // Every write to /dev/full fails with ENOSPC, like a full disk.
        let child = spawn(
            &logs,
            Path::new("/dev/full"),
            "yes | head -c 1000000; echo done",
        );
        finish(&logs, vec![child]);
        let total = TOTAL_BYTES + b"done\n".len() as u64;
        assert_eq!(logs.read_bytes(), total);
        assert_eq!(logs.dropped_bytes(), total);
        assert_eq!(logs.failure_streaks(), 1);
    }

    #[test]
    fn a_failure_streak_warns_once_and_ends_at_the_first_good_write() {
        let dir = Scratch::new("streak");
        let shared = Shared::new(ATTACHED_MAX);
        let config = LogConfig::default();
        // Two missing directories: only the last one of a path is created.
        let path = dir.path("gone/logs/agent.log");
        let mut log = LogFile::new(path.clone());
        for _ in 0..3 {
            log.append(b"lost\n", &config, &shared);
        }
        assert_eq!(shared.failure_streaks.load(Ordering::SeqCst), 1);
        assert_eq!(shared.dropped_bytes.load(Ordering::SeqCst), 15);
        fs::create_dir(dir.path("gone")).expect("mkdir");
        log.append(b"kept\n", &config, &shared);
        assert_eq!(read(&path), "kept\n");
        assert_eq!(log.failing, None);
    }

    #[test]
    fn fifty_children_at_once_each_get_their_lines() {
        let _spawning = spawning();
        const CHILDREN: usize = 50;
        let dir = Scratch::new("fifty");
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        let children = (0..CHILDREN)
            .map(|i| {
                let script = format!("for n in 1 2 3; do echo agent{i} line $n; done");
                spawn(&logs, &dir.path(&format!("agent{i}.log")), &script)
            })
            .collect();
        finish(&logs, children);
        for i in 0..CHILDREN {
            let expected: String = (1..=3).map(|n| format!("agent{i} line {n}\n")).collect();
            assert_eq!(read(&dir.path(&format!("agent{i}.log"))), expected);
        }
    }

    #[test]
    fn two_pipes_of_one_name_share_its_file() {
        let _spawning = spawning();
        let dir = Scratch::new("shared");
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        let path = dir.path("agent.log");
        // The first child waits on its stdin until the second one is done.
        let (gate_read, gate_write) = output_pipe().expect("pipe");
        let first = spawn_with(
            &logs,
            &path,
            "echo one; read x; echo three",
            gate_read.into(),
        );
        let mut second = spawn(&logs, &path, "echo two");
        wait_until("the second child to exit", || {
            second.try_wait().expect("wait").is_some()
        });
        wait_until("two lines", || read(&path).lines().count() == 2);
        // Not at once: a fork elsewhere in the test process may hold the write end a moment.
        wait_until("the second pipe to close", || logs.attached() == 1);
        drop(gate_write);
        finish(&logs, vec![first]);
        let text = read(&path);
        let mut lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.pop(), Some("three"));
        lines.sort_unstable();
        assert_eq!(lines, ["one", "two"]);
    }

    #[test]
    fn attach_is_bounded() {
        const ATTACHED: usize = 2;
        let dir = Scratch::new("bounded");
        let logs = ChildLogs::start_bounded(LogConfig::default(), ATTACHED).expect("start");
        let path = dir.path("agent.log");
        let mut writers = Vec::new();
        for _ in 0..ATTACHED {
            let (read_end, write_end) = output_pipe().expect("pipe");
            logs.attach(path.clone(), read_end).expect("attach");
            writers.push(write_end);
        }
        let (read_end, _write_end) = output_pipe().expect("pipe");
        assert!(logs.attach(path.clone(), read_end).is_err());
        assert_eq!(logs.attached(), ATTACHED);
        drop(writers);
        wait_until("the pipes to close", || logs.attached() == 0);
        let (read_end, _write_end) = output_pipe().expect("pipe");
        logs.attach(path, read_end).expect("a free slot again");
    }

    #[test]
    fn shutdown_drains_promptly_and_refuses_new_pipes() {
        let _spawning = spawning();
        let dir = Scratch::new("shutdown");
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        let path = dir.path("agent.log");
        let (read_end, write_end) = output_pipe().expect("pipe");
        logs.attach(path.clone(), read_end).expect("attach");
        let writer = File::from(write_end);
        (&writer).write_all(b"last words\n").expect("write");
        let mut chatty = spawn(&logs, &dir.path("chatty.log"), "exec yes");

        let started = Instant::now();
        logs.shutdown();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "took {:?}",
            started.elapsed()
        );
        assert_eq!(read(&path), "last words\n");
        assert_eq!(logs.attached(), 0);
        let (read_end, _write_end) = output_pipe().expect("pipe");
        assert!(logs.attach(path, read_end).is_err());
        logs.shutdown();

        // Its pipe closed, the chatty child dies of SIGPIPE.
        wait_until("the chatty child to exit", || {
            chatty.try_wait().expect("wait").is_some()
        });
    }

    #[test]
    fn dropping_the_last_handle_ends_the_thread() {
        let logs = ChildLogs::start(LogConfig::default()).expect("start");
        wait_until("the thread to start", || logs.thread_tid() != 0);
        let task = PathBuf::from(format!("/proc/self/task/{}", logs.thread_tid()));
        let other = logs.clone();
        drop(logs);
        assert!(task.exists(), "a clone still holds the thread");
        drop(other);
        wait_until("the thread to end", || !task.exists());
    }

    #[test]
    fn files_rotate_in_order_and_stay_bounded() {
        const LINES: usize = 100;
        const LINE_BYTES: usize = 100;
        for files_max in [1, 2, 3] {
            let dir = Scratch::new(&format!("order{files_max}"));
            let shared = Shared::new(ATTACHED_MAX);
            let config = LogConfig {
                file_bytes_max: 1024,
                files_max,
                read_chunk_bytes: 512,
            };
            let path = dir.path("agent.log");
            // A file over the limit from an earlier run is rotated before the first write.
            fs::write(&path, [b'x'; 2000]).expect("write");
            let mut log = LogFile::new(path.clone());
            let lines: Vec<String> = (0..LINES).map(|i| format!("{i:099}\n")).collect();
            for line in &lines {
                log.append(line.as_bytes(), &config, &shared);
            }

            let names: Vec<String> = std::iter::once("agent.log".to_string())
                .chain((1..files_max).map(|n| format!("agent.log.{n}")))
                .collect();
            let mut listed = dir.names();
            listed.sort_by_key(|name| name.len());
            assert_eq!(listed, names, "files_max {files_max}");
            let mut kept = Vec::new();
            for name in names.iter().rev() {
                let bytes = fs::read(dir.path(name)).expect("read");
                assert!(
                    bytes.len() as u64 <= bound(&config),
                    "{name}: {} bytes",
                    bytes.len()
                );
                assert_eq!(bytes.len() % LINE_BYTES, 0, "{name}: lines are never split");
                kept.extend(bytes);
            }
            assert!(
                lines.concat().as_bytes().ends_with(&kept),
                "files_max {files_max}: in order"
            );
        }
    }

    #[test]
    fn cut_len_prefers_line_ends() {
        fn check(chunk: &str, room: usize, expected: &str) {
            let len = cut_len(chunk.as_bytes(), room);
            assert_eq!(&chunk[..len], expected, "chunk {chunk:?}, room {room}");
        }
        check("ab\ncd\nef", 7, "ab\ncd\n"); // the last line end that fits
        check("ab\ncd\nef", 4, "ab\n");
        check("\nabcdef", 5, "\n");
        check("abcdef\ngh\n", 3, "abcdef\n"); // else the first one past the room
        check("abcdefgh", 3, "abc"); // else exactly the room
        check("abc", 0, "a"); // the room counts as one byte at least
        check("abc", 9, "abc");
    }
}
