//! Child logs: each child's stdout and stderr, through one pipe, appended to
//! `logs/NAME.log` and rotated by size into `NAME.log.1` … (docs/protocol.md sections 6
//! and 8). Bounded on disk, and never a reason for a child or BootAgent to wait.
//!
//! ```text
//!   child A ══ pipe ══╗
//!   child B ══ pipe ══╬══► log thread ──► logs/A.log ──rotate──► logs/A.log.1
//!   attach ── queue ──╢    poll(wake, pipes…)
//!   wake-ups ─────────╨─ wake-up pipe: attach, shutdown, hand_over
//! ```
//!
//! One thread serves every child. It sleeps in `poll(2)`, without a timeout, on the
//! read ends of the children's pipes and on a wake-up pipe; `attach` queues a pipe on a
//! bounded channel and writes one byte to the wake-up pipe, `shutdown` sets a flag and
//! does the same. An idle agent has an idle log thread: there is no tick.
//!
//! Cost: relaying a child's output costs BootAgent less CPU than the child spends
//! writing it (tests/bench_relay.sh prints both):
//! - output goes from the pipe into the file with `splice(2)`, without a copy through
//!   BootAgent, except for the chunk that crosses the file's limit or the allowance
//!   below, which is read, to cut it at a line end;
//! - each pipe gets a larger buffer (`pipe_bytes`, 1 MiB), and after a round that found
//!   output the thread pauses (at most `BATCH_PAUSE_MS_MAX`, 5 ms) for about the time the
//!   fastest writer takes to fill half its pipe, so that a child writing a line per
//!   `write(2)` is read in large pieces, not a wake-up per line; never while a pipe may
//!   hold more than the round took, so a writer does not wait on a full pipe for it;
//! - past `bytes_per_s_max` (1 MiB/s) per file, output is dropped, spliced into
//!   `/dev/null` without a copy: a log that keeps `files_max × file_bytes_max` gains
//!   nothing from more. The file holds whole lines (the line in progress when the
//!   allowance runs out is finished; after a drop, output resumes at the next line
//!   start), and at the start of the next second that has output, a line
//!   `[bootagent: N bytes of output dropped, over R bytes/s]` says how much went.
//!
//! Bounds:
//! - Each round reads at most `read_chunk_bytes` from each ready pipe (read ends are
//!   non-blocking), or splices at most what keeps that chunk's room before the limit,
//!   so a chatty child cannot starve the others, and the thread holds one chunk of
//!   memory.
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
//! The caller, for each start: `let (read, write) = std::io::pipe()?`, then
//! `attach(path, read)` (on error, the child gets `/dev/null`), then the child gets
//! `write` as stdout and stderr. The parent's copies of the write end must be closed
//! once the child runs, or the pipe never reaches end of file.
//!
//! An exec hand-over (a self-upgrade) stops the thread with `hand_over` instead of
//! `shutdown`: the read ends still open are returned, not closed, and cross the exec;
//! the next image attaches them again, and what the children wrote meanwhile waited in
//! the pipes.

mod config;
mod rotate;
mod shared;

pub use config::LogConfig;
use log::warn;
use rotate::{splice_into, LogFile};
pub use shared::ATTACHED_MAX;
use shared::{Shared, ATTACH_QUEUE_MAX};
use std::collections::HashMap;
use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest pause between two rounds that found output (see `Worker::batch_pause`): the
/// most a line waits before it reaches its file, when its child writes little.
const BATCH_PAUSE_MS_MAX: u64 = 5;
/// The kernel's default pipe buffer (16 pages).
const PIPE_BYTES_DEFAULT: u64 = 64 * 1024;
/// Longest `shutdown` spends reading what the children wrote before it.
const SHUTDOWN_DRAIN_MS: u64 = 100;
/// Pause after a failed `poll(2)`, so that a lasting failure cannot spin the thread.
const POLL_ERROR_PAUSE_MS: u64 = 100;
/// Bytes taken from the wake-up pipe per round; more wake the next round.
const WAKE_READ_BYTES: usize = 64;

/// Handle to the log thread; cheap to clone. The thread ends at `shutdown`, or when
/// the last handle is dropped.
#[derive(Clone)]
pub struct ChildLogs {
    inner: Arc<Inner>,
}

struct Inner {
    attachments: SyncSender<Attachment>,
    /// `LogConfig::pipe_bytes`.
    pipe_bytes: usize,
    /// Write end of the wake-up pipe. Its closing (the last handle dropped) ends the thread.
    wake: File,
    shared: Arc<Shared>,
    thread: Mutex<Option<thread::JoinHandle<HandedOver>>>,
}

/// The pipes still open when the thread stops for a hand-over, with their log files.
type HandedOver = Vec<(PathBuf, File)>;

/// A pipe on its way to the log thread.
struct Attachment {
    path: PathBuf,
    read_end: File,
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
            null: std::fs::OpenOptions::new()
                .write(true)
                .open("/dev/null")
                .ok(),
        };
        let thread = thread::Builder::new()
            .name("childlog".to_string())
            .spawn(move || worker.run())?;
        Ok(ChildLogs {
            inner: Arc::new(Inner {
                attachments: sender,
                pipe_bytes: config.pipe_bytes,
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
        set_pipe_size(&read_end, self.inner.pipe_bytes);
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
        drop(self.stop_thread());
    }

    /// Stops the thread without closing the pipes, for an exec hand-over: returns
    /// the read ends still open with their log files. What the children write
    /// meanwhile waits in the pipes for the next image.
    pub fn hand_over(&self) -> Vec<(PathBuf, OwnedFd)> {
        self.inner.shared.handing_over.store(true, Ordering::SeqCst);
        self.stop_thread()
            .into_iter()
            .map(|(path, file)| (path, OwnedFd::from(file)))
            .collect()
    }

    fn stop_thread(&self) -> Vec<(PathBuf, File)> {
        // Held until the thread has ended, so that a concurrent call also returns after.
        let mut thread = self.inner.thread.lock().unwrap_or_else(|e| e.into_inner());
        let Some(handle) = thread.take() else {
            return Vec::new();
        };
        self.inner.shared.stopping.store(true, Ordering::SeqCst);
        self.inner.wake();
        match handle.join() {
            Ok(pipes) => pipes,
            Err(_) => {
                log::error!("the child log thread panicked");
                Vec::new()
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
    /// The pipe's buffer (`F_GETPIPE_SZ`).
    capacity_bytes: u64,
    /// Bytes taken from it in the last round.
    moved_bytes: u64,
    /// The last round took all it asked for: the pipe may hold more.
    more: bool,
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
    /// `/dev/null`, where output over `bytes_per_s_max` is spliced; `None` if it
    /// cannot be opened (then it is read and dropped).
    null: Option<File>,
}

impl Worker {
    /// The thread: a round per wake-up, until `shutdown` (or the last handle's drop)
    /// and a drain of at most `SHUTDOWN_DRAIN_MS`.
    fn run(mut self) -> Vec<(PathBuf, File)> {
        // SAFETY: gettid has no preconditions and touches no memory.
        #[cfg(test)]
        self.shared
            .tid
            .store(unsafe { libc::gettid() }, Ordering::SeqCst);
        let mut drain_until: Option<Instant> = None;
        let mut poll_failing = false;
        let mut last_round = Instant::now();
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
            let round_start = Instant::now();
            let readable = self.read_round();
            if self.shared.stopping.load(Ordering::SeqCst)
                && self.shared.handing_over.load(Ordering::SeqCst)
            {
                break; // what is left in the pipes is the next image's to read
            }
            if drain_until.is_none() {
                let pause = self.batch_pause(round_start.duration_since(last_round));
                if !pause.is_zero() {
                    thread::sleep(pause);
                }
            }
            last_round = round_start;
            match drain_until {
                None if self.shared.stopping.load(Ordering::SeqCst) => {
                    drain_until = Some(Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS));
                }
                Some(deadline) if !readable || Instant::now() >= deadline => break,
                _ => {}
            }
        }
        self.shared.attached.store(0, Ordering::SeqCst);
        if !self.shared.handing_over.load(Ordering::SeqCst) {
            return Vec::new();
        }
        self.take_attachments();
        self.pipes
            .drain(..)
            .filter(|pipe| pipe.open)
            .map(|pipe| (pipe.path, pipe.read_end))
            .collect()
    }

    /// How long to let the pipes fill before the next round, so that a chatty child's
    /// output is taken in large pieces, not a line per wake-up: long enough for the
    /// fastest writer of the last round (`moved_bytes` over `cycle`, the time since the
    /// round before) to fill half its pipe, at most `BATCH_PAUSE_MS_MAX`. Zero when no
    /// pipe had data, or one may hold more than the round took.
    fn batch_pause(&self, cycle: Duration) -> Duration {
        if self.pipes.iter().any(|pipe| pipe.more) {
            return Duration::ZERO; // a pipe was not emptied: go on at once
        }
        let cycle_ns = cycle.as_nanos().max(1);
        (self.pipes.iter())
            .filter(|pipe| pipe.moved_bytes > 0)
            .map(|pipe| {
                let half_ns =
                    u128::from(pipe.capacity_bytes / 2) * cycle_ns / u128::from(pipe.moved_bytes);
                Duration::from_nanos(u64::try_from(half_ns).unwrap_or(u64::MAX))
            })
            .min()
            .map_or(Duration::ZERO, |pause| {
                pause.min(Duration::from_millis(BATCH_PAUSE_MS_MAX))
            })
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
            let capacity_bytes = pipe_size(&read_end);
            self.pipes.push(Pipe {
                read_end,
                path,
                open: true,
                capacity_bytes,
                moved_bytes: 0,
                more: false,
            });
        }
    }

    /// Reads one chunk from each ready pipe into its file, then forgets the pipes at
    /// end of file. True when some pipe was ready.
    fn read_round(&mut self) -> bool {
        let mut readable = false;
        let now = Instant::now();
        // `fds[1..]` follows `pipes`; pipes attached after the poll are not in it yet.
        for (pipe, fd) in self.pipes.iter_mut().zip(self.fds.iter().skip(1)) {
            pipe.moved_bytes = 0;
            pipe.more = false;
            if fd.revents == 0 {
                continue;
            }
            readable = true;
            let Some(file) = self.files.get_mut(&pipe.path) else {
                pipe.open = false; // not expected: every attached pipe has its file
                continue;
            };
            let shared = &self.shared;
            let allowed = file.allowance(now, &self.config, shared);
            if allowed == 0 && !file.finishing_line() {
                match discard(&pipe.read_end, self.null.as_ref(), &mut self.buf) {
                    Ok(0) => pipe.open = false,
                    Ok(shed) => {
                        file.shed(shed as u64, shared);
                        pipe.moved_bytes = shed as u64;
                        pipe.more = shed >= self.buf.len().min(rotate::SPLICE_BYTES_MAX);
                    }
                    Err(err) if is_transient(&err) => {}
                    Err(err) => {
                        warn!("child log {}: closing its pipe: {err}", pipe.path.display());
                        pipe.open = false;
                    }
                }
                continue;
            }
            match file.splice_from(&pipe.read_end, &self.config, allowed) {
                Some(Ok((0, _))) => {
                    pipe.open = false;
                    continue;
                }
                Some(Ok((moved, full))) => {
                    pipe.more = full;
                    file.spend(moved as u64);
                    pipe.moved_bytes = moved as u64;
                    shared.read_bytes.fetch_add(moved as u64, Ordering::Relaxed);
                    continue;
                }
                Some(Err(_)) => continue, // empty for now
                None => {}
            }
            match (&pipe.read_end).read(&mut self.buf) {
                Ok(0) => pipe.open = false,
                Ok(n) => {
                    pipe.moved_bytes = n as u64;
                    pipe.more = n == self.buf.len();
                    if let Some(data) = self.buf.get(..n) {
                        let written = file.take(data, allowed, &self.config, shared);
                        shared.read_bytes.fetch_add(written, Ordering::Relaxed);
                    }
                }
                Err(err) if is_transient(&err) => {}
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

/// Would-block or interrupted: nothing now, try at the next round.
fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Drops what `pipe` holds: spliced into `/dev/null` (no copy), else read into `buf`.
fn discard(pipe: &File, null: Option<&File>, buf: &mut [u8]) -> io::Result<usize> {
    if let Some(null) = null {
        match splice_into(pipe, null, None, rotate::SPLICE_BYTES_MAX) {
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {}
            other => return other,
        }
    }
    (&*pipe).read(buf)
}

/// The buffer of the pipe `fd` (`F_GETPIPE_SZ`); the kernel's default if unknown.
fn pipe_size(fd: &File) -> u64 {
    // SAFETY: `fd` is open while borrowed; F_GETPIPE_SZ only reads the pipe's size.
    let bytes = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    u64::try_from(bytes)
        .ok()
        .filter(|&b| b > 0)
        .unwrap_or(PIPE_BYTES_DEFAULT)
}

/// Asks for a pipe of `bytes` (`F_SETPIPE_SZ`), so that a chatty child fills it in
/// fewer rounds of the log thread. Best effort: the kernel may refuse or round it.
fn set_pipe_size(fd: &OwnedFd, bytes: usize) {
    let Ok(bytes) = c_int::try_from(bytes) else {
        return;
    };
    // SAFETY: `fd` is open while borrowed; F_SETPIPE_SZ only resizes the pipe's buffer.
    let _ = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, bytes) };
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
mod tests;
