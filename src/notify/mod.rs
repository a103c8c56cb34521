//! sd_notify: each child with `notify` health gets its own `NOTIFY_SOCKET`, and the
//! datagrams its processes send there (`READY=1`, `STATUS=…`, `WATCHDOG=1`, …) reach
//! the loop as [`Message`]s (docs/protocol.md section 6, "Health"). Daemons built
//! against libsystemd's `sd_notify(3)`, and `systemd-notify`, work unchanged.
//!
//! ```text
//!   child A ── datagram ──► @bootagent/TAG/A ─┐
//!   child B ── datagram ──► @bootagent/TAG/B ─┼─► notify thread ── deliver(Message) ──► loop
//!   open, close ── commands + eventfd ────────┘    poll(wake, sockets…)   (backlog, retry)
//! ```
//!
//! One thread serves every child. It sleeps in `poll(2)` on an eventfd and on the
//! sockets; it wakes only when a datagram arrives, `open`/`close` is called, a paused
//! socket's second is over or a message the loop refused is due again. An idle notifier
//! has an idle thread.
//!
//! The sockets are `SOCK_DGRAM` Unix sockets in the abstract namespace (the
//! `NOTIFY_SOCKET` value starts with `@`), close-on-exec, with `SO_PASSCRED`: every
//! datagram carries its sender's pid and uid as the kernel attests them. A datagram
//! without them is ignored. Any process may send to an abstract socket, so the sender is
//! the protection: the thread reads [`ProcessFacts`] of the sender from `/proc` at
//! receipt, and the loop decides whether the process is one of the child's (see
//! [`ProcessFacts::of_session`] and [`ProcessFacts::in_cgroup_of`]). The thread itself
//! decides nothing about membership.
//!
//! Membership, the loop's rule (a child is spawned with `setsid`, so its pid is its
//! session id; with a cgroup of its own when one can be made):
//! - a message is the child's when `sender.of_session(child_pid)` (its process, one of
//!   its session, or one below it), or `sender.in_cgroup_of(child_cgroup, own_cgroup)`
//!   (a daemon that forked twice and made a session of its own is found only this way,
//!   so only with a cgroup); `child_cgroup` is `ProcessFacts::read(child_pid,
//!   None).cgroup` taken right after the spawn, `own_cgroup` BootAgent's own;
//! - `MAINPID=`: only when `main_pid` passes the same test;
//! - `systemd-notify` (systemd 252) run as root sends its assignments with its parent's
//!   pid (`CAP_SYS_ADMIN` lets it name another process; the parent is the script that
//!   ran it) and its `BARRIER=1` with its own; run as another user, both with its own.
//!   Either is a process of the child's session.
//!
//! Descriptors sent along (`SCM_RIGHTS`; `systemd-notify` sends one with `BARRIER=1`
//! and waits until it is closed) are closed after the datagram is read and its sender's
//! facts taken; at most [`FDS_PER_DATAGRAM_MAX`] are taken from one datagram, the
//! kernel closes the rest.
//!
//! Bounds (each where it is declared): [`DATAGRAM_BYTES_MAX`] (a longer datagram is
//! ignored, as systemd does), [`STATUS_BYTES_MAX`], [`ASSIGNMENTS_MAX`],
//! [`SOCKETS_MAX`] (`limits::CHILDREN_MAX`, the ceiling of `children_max`), [`DATAGRAMS_PER_S_MAX`] per
//! child (past it the socket is not polled until the second is over: a flooding child
//! costs BootAgent little and delays no other child), [`DATAGRAMS_PER_S_TOTAL_MAX`] for
//! all of them (many flooding children at once), [`PENDING_PER_CHILD_MAX`]
//! messages kept per child while the loop's channel is full (coalesced per sender:
//! the latest `READY`, `STATUS`, `WATCHDOG`, `STOPPING`, `MAINPID` …), offered again
//! every [`RETRY_MS`].
//!
//! Use, from the loop:
//! - `Notifier::start(&tag_for(data_dir), deliver)` once; `deliver` is
//!   `events.try_send(Event::Notify(msg))`: true when sent, or when the loop is gone
//!   (the message is dropped); false when the channel is full (kept and retried).
//! - Before each spawn of a child with `notify`: `open(name)` gives the value of its
//!   `NOTIFY_SOCKET` (the same socket on every call, so a restarted child keeps its
//!   address; the name depends only on the tag and the child's name, so it holds
//!   across restarts of BootAgent too).
//! - On uninstall: `close(name)`; the address then refuses datagrams (`ECONNREFUSED`).
//! - Exec hand-over: `handover()` gives a descriptor of each socket to keep across the
//!   exec (as the log pipes are kept; its own, so it outlives this notifier), and the next image takes each over with
//!   `inherit(name, fd)` (falling back to `open(name)`), so nothing a child sends
//!   meanwhile is lost or refused.

mod facts;
mod message;
mod parse;
mod queue;
mod sock;
mod worker;

pub use facts::{ProcessFacts, ANCESTORS_MAX, CGROUP_BYTES_MAX};
pub use message::{Deliver, Message, RETRY_MS};
pub use parse::{parse, Notice, ASSIGNMENTS_MAX, DATAGRAM_BYTES_MAX, STATUS_BYTES_MAX};
pub use queue::{DATAGRAMS_PER_S_MAX, DATAGRAMS_PER_S_TOTAL_MAX, PENDING_PER_CHILD_MAX};
pub use sock::FDS_PER_DATAGRAM_MAX;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most sockets open at once: one per child.
pub const SOCKETS_MAX: usize = crate::limits::CHILDREN_MAX;
/// Longest `tag`, in bytes: `bootagent/` + tag + `/` + a 64-byte child name fits the
/// 107 bytes of an abstract socket name.
pub const TAG_BYTES_MAX: usize = 32;
/// Longest child name, in bytes (docs/protocol.md section 7).
const CHILD_NAME_BYTES_MAX: usize = 64;
/// Longest `close` waits for the thread to let go of the socket.
const CLOSE_WAIT_MS: u64 = 1000;
/// Prefix of every socket name.
const NAME_PREFIX: &str = "bootagent";

/// The notify sockets of every child and the thread that reads them. Dropping it stops
/// the thread and closes every socket.
pub struct Notifier {
    tag: String,
    /// Every open socket, by child name.
    open: Mutex<HashMap<String, Entry>>,
    commands: Sender<worker::Command>,
    wake: File,
    thread: Option<JoinHandle<()>>,
    #[cfg(test)]
    rounds: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// One open socket.
struct Entry {
    address: String,
    /// Shared with the thread; closed once both let go.
    socket: Arc<OwnedFd>,
}

/// A tag for [`Notifier::start`] unique to a data directory (its path's SHA256, 16 hex
/// digits): two BootAgents on one host never share a socket name, and the same data
/// directory gives the same names after a restart or an exec hand-over.
pub fn tag_for(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    use std::os::unix::ffi::OsStrExt;
    let digest = Sha256::digest(data_dir.as_os_str().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl Notifier {
    /// Starts the thread. `tag` makes socket names unique per data directory (see
    /// [`tag_for`]): 1 to [`TAG_BYTES_MAX`] bytes of `A–Z a–z 0–9 . _ -`. `deliver`
    /// hands a message to the loop; false means the loop's channel is full: the message
    /// is kept (coalesced per child, bounded) and offered again later.
    pub fn start(tag: &str, deliver: Deliver) -> io::Result<Notifier> {
        if !safe_name(tag, TAG_BYTES_MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("notify: bad socket tag {tag:?}"),
            ));
        }
        let wake = File::from(sock::eventfd()?);
        let (commands, receiver) = mpsc::channel();
        let worker = worker::Worker::new(wake.try_clone()?, receiver, deliver);
        #[cfg(test)]
        let rounds = worker.rounds.clone();
        let thread = std::thread::Builder::new()
            .name("notify".into())
            .spawn(move || worker.run())?;
        Ok(Notifier {
            tag: tag.to_string(),
            open: Mutex::new(HashMap::new()),
            commands,
            wake,
            thread: Some(thread),
            #[cfg(test)]
            rounds,
        })
    }

    /// The socket of `child` (created on the first call, the same one afterwards): the
    /// value for its `NOTIFY_SOCKET`, `@bootagent/TAG/CHILD`. Fails on a bad name, past
    /// [`SOCKETS_MAX`], or when the name is taken (`AddrInUse`: another process bound
    /// it first).
    pub fn open(&self, child: &str) -> io::Result<String> {
        self.add(child, |name| {
            sock::bind_abstract(name.as_bytes())
                .map_err(|e| io::Error::new(e.kind(), format!("notify socket @{name}: {e}")))
        })
    }

    /// For an exec hand-over: a new descriptor of `child`'s socket (`None` when it
    /// has none). The caller owns it, so the socket outlives this notifier; it is
    /// close-on-exec, and the exec clears that on the ones it keeps. A datagram that
    /// waits in the socket at the exec is read by the next image.
    pub fn handover(&self, child: &str) -> Option<io::Result<OwnedFd>> {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.get(child).map(|entry| entry.socket.try_clone())
    }

    /// In the next image of an exec hand-over: takes the socket of `child` over from the
    /// inherited descriptor `fd` (close-on-exec again), if it is this notifier's socket
    /// of that child (a datagram socket bound to its name); then as [`Notifier::open`].
    /// A descriptor that is not is left alone: call `open`.
    pub fn inherit(&self, child: &str, fd: RawFd) -> io::Result<String> {
        self.add(child, |name| {
            sock::adopt_bound(fd, name.as_bytes()).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("notify socket @{name} (descriptor {fd}): {e}"),
                )
            })
        })
    }

    /// Registers the socket `make` gives for `child`'s name, unless one is open.
    fn add(
        &self,
        child: &str,
        make: impl FnOnce(&str) -> io::Result<OwnedFd>,
    ) -> io::Result<String> {
        if !safe_name(child, CHILD_NAME_BYTES_MAX) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("notify: bad child name {child:?}"),
            ));
        }
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = open.get(child) {
            return Ok(entry.address.clone());
        }
        if open.len() >= SOCKETS_MAX {
            return Err(io::Error::other(format!(
                "notify: {SOCKETS_MAX} sockets are open, the most there may be"
            )));
        }
        let name = format!("{NAME_PREFIX}/{}/{child}", self.tag);
        let socket = Arc::new(make(&name)?);
        self.commands
            .send(worker::Command::Add(child.to_string(), socket.clone()))
            .map_err(|_| io::Error::other("notify: the thread is gone"))?;
        self.wake();
        let address = format!("@{name}");
        let entry = Entry {
            address: address.clone(),
            socket,
        };
        open.insert(child.to_string(), entry);
        Ok(address)
    }

    /// Closes `child`'s socket (uninstall) and drops its messages not yet delivered.
    /// Returns once the thread has let go of it (at most `CLOSE_WAIT_MS`): from then on
    /// a datagram sent to the address is refused.
    pub fn close(&self, child: &str) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.remove(child).is_none() {
            return;
        }
        let (done, closed) = mpsc::sync_channel(1);
        if self
            .commands
            .send(worker::Command::Close(child.to_string(), done))
            .is_ok()
        {
            self.wake();
            let _ = closed.recv_timeout(Duration::from_millis(CLOSE_WAIT_MS));
        }
    }

    fn wake(&self) {
        // Cannot fail but by overflowing the counter, which a pending wake-up makes moot.
        let _ = (&self.wake).write(&1u64.to_ne_bytes());
    }

    /// Rounds of the thread (wake-ups from `poll`), for tests.
    #[cfg(test)]
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Drop for Notifier {
    fn drop(&mut self) {
        let _ = self.commands.send(worker::Command::Stop);
        self.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// 1 to `max` bytes of `A–Z a–z 0–9 . _ -`, not starting with `.`.
fn safe_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod process_tests;
#[cfg(test)]
mod tests;
