//! The notify thread: one `poll(2)` over the eventfd and every child's socket, each
//! datagram read with its sender's facts, then delivered or kept in the backlog.

use log::{debug, warn};
use std::ffi::c_int;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::facts::ProcessFacts;
use super::message::{Deliver, Message, RETRY_MS};
use super::parse::{parse, Notice, DATAGRAM_BYTES_MAX};
use super::queue::{
    Allowance, Backlog, DATAGRAMS_PER_S_MAX, DATAGRAMS_PER_S_TOTAL_MAX, PENDING_PER_CHILD_MAX,
};
use super::sock::{self, FDS_PER_DATAGRAM_MAX};

/// Most datagrams read from one socket in one round, so that every ready socket gets
/// its turn before any gets more.
const DATAGRAMS_PER_ROUND_MAX: u32 = 16;
/// Pause after a failed `poll(2)`, so that a lasting failure cannot spin the thread.
const POLL_ERROR_PAUSE_MS: u64 = 100;

/// What `Notifier` asks of the thread.
pub enum Command {
    Add(String, Arc<OwnedFd>),
    /// Close the socket, then say so.
    Close(String, SyncSender<()>),
    Stop,
}

/// One child's socket.
struct Socket {
    child: String,
    /// Shared with the `Notifier` (for the exec hand-over); closed when both let go.
    fd: Arc<OwnedFd>,
    allowance: Allowance,
    /// An oversized datagram was said in the log (once per socket).
    warned_size: bool,
}

pub struct Worker {
    wake: File,
    commands: Receiver<Command>,
    deliver: Deliver,
    sockets: Vec<Socket>,
    /// What all sockets together may still read this second.
    total: Allowance,
    /// Where the next round begins in `polled`: the socket the total ran out on.
    turn: usize,
    backlog: Backlog,
    /// `poll(2)`'s set: the eventfd, then the sockets of `polled`.
    fds: Vec<libc::pollfd>,
    /// Index in `sockets` of each socket entry of `fds` (after the eventfd).
    polled: Vec<usize>,
    buf: Vec<u8>,
    control: Vec<u64>,
    #[cfg(test)]
    pub rounds: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Worker {
    pub fn new(wake: File, commands: Receiver<Command>, deliver: Deliver) -> Worker {
        Worker {
            wake,
            commands,
            deliver,
            sockets: Vec::new(),
            total: Allowance::new(Instant::now(), DATAGRAMS_PER_S_TOTAL_MAX),
            turn: 0,
            backlog: Backlog::default(),
            fds: Vec::new(),
            polled: Vec::new(),
            buf: vec![0; DATAGRAM_BYTES_MAX],
            control: vec![0; sock::control_words(FDS_PER_DATAGRAM_MAX)],
            #[cfg(test)]
            rounds: Default::default(),
        }
    }

    /// The thread: a round per wake-up until `Stop` (or the `Notifier` is gone).
    pub fn run(mut self) {
        let mut poll_failing = false;
        loop {
            let now = Instant::now();
            let timeout_ms = self.timeout_ms(now);
            self.fds.clear();
            self.polled.clear();
            self.fds.push(pollin(self.wake.as_raw_fd()));
            let all_paused = self.total.paused_until(now).is_some();
            for (index, socket) in self.sockets.iter().enumerate() {
                if !all_paused && socket.allowance.paused_until(now).is_none() {
                    self.fds.push(pollin(socket.fd.as_raw_fd()));
                    self.polled.push(index);
                }
            }
            match sock::poll(&mut self.fds, timeout_ms) {
                Ok(()) => poll_failing = false,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => {
                    if !poll_failing {
                        warn!("notify: poll failed: {err}; retrying");
                    }
                    poll_failing = true;
                    std::thread::sleep(Duration::from_millis(POLL_ERROR_PAUSE_MS));
                }
            }
            #[cfg(test)]
            self.rounds
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if self.fds.first().is_some_and(|fd| fd.revents != 0) {
                let mut counter = [0u8; 8];
                let _ = (&self.wake).read(&mut counter); // resets the eventfd
            }
            self.read_round();
            if !self.take_commands() {
                return;
            }
            self.backlog.flush(&mut self.deliver);
        }
    }

    /// How long `poll` may sleep: until a paused socket's second ends, or `RETRY_MS`
    /// while messages wait; -1 (no end) otherwise.
    fn timeout_ms(&self, now: Instant) -> c_int {
        let resume = self
            .sockets
            .iter()
            .map(|s| &s.allowance)
            .chain([&self.total])
            .filter_map(|allowance| allowance.paused_until(now))
            .min()
            .map(|at| at.saturating_duration_since(now));
        let retry = (!self.backlog.is_empty()).then_some(Duration::from_millis(RETRY_MS));
        match resume.into_iter().chain(retry).min() {
            // Rounded up, so that the round after finds the second over.
            Some(wait) => c_int::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(c_int::MAX),
            None => -1,
        }
    }

    /// Reads the sockets `poll` found ready, at most `DATAGRAMS_PER_ROUND_MAX` each,
    /// within each one's allowance and the total, beginning at `turn`.
    fn read_round(&mut self) {
        let count = self.polled.len();
        for step in 0..count {
            let slot = (self.turn + step) % count;
            let ready = self.fds.get(slot + 1).is_some_and(|fd| fd.revents != 0);
            let Some(&index) = self.polled.get(slot) else {
                continue;
            };
            if !ready {
                continue;
            }
            for _ in 0..DATAGRAMS_PER_ROUND_MAX {
                let now = Instant::now();
                if !self.total.take(now) {
                    self.turn = slot; // it begins the next round
                    return;
                }
                let Some(socket) = self.sockets.get_mut(index) else {
                    self.total.refund();
                    break;
                };
                if !socket.allowance.take(now) {
                    self.total.refund();
                    break;
                }
                let result = self.take_datagram(index);
                if result.is_err() {
                    self.total.refund(); // nothing was read
                    if let Some(socket) = self.sockets.get_mut(index) {
                        socket.allowance.refund();
                    }
                }
                match result {
                    Ok(()) => {}
                    Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                    Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        if let Some(socket) = self.sockets.get(index) {
                            warn!("notify: {}: reading its socket: {err}", socket.child);
                        }
                        break;
                    }
                }
            }
        }
        self.turn = 0;
    }

    /// Reads one datagram of socket `index`; delivers or keeps its message.
    fn take_datagram(&mut self, index: usize) -> io::Result<()> {
        let Some(socket) = self.sockets.get_mut(index) else {
            return Ok(());
        };
        let received = sock::receive(socket.fd.as_fd(), &mut self.buf, &mut self.control)?;
        // From here on, `received.fds` are closed when it goes out of scope: after the
        // sender's facts are read. With its control data cut, what arrived is closed as
        // well and the datagram still read (the kernel closed the rest).
        if received.control_cut {
            debug!(
                "notify: {}: descriptors past {FDS_PER_DATAGRAM_MAX} closed",
                socket.child
            );
        }
        if received.len > DATAGRAM_BYTES_MAX {
            if !socket.warned_size {
                warn!(
                    "notify: {}: ignoring a datagram of {} bytes (at most {DATAGRAM_BYTES_MAX})",
                    socket.child, received.len
                );
                socket.warned_size = true;
            }
            return Ok(());
        }
        let Some(credentials) = received.credentials.filter(|c| c.pid > 0) else {
            return Ok(()); // sender unknown: nothing to decide on
        };
        let notices = parse(self.buf.get(..received.len).unwrap_or_default());
        if notices.iter().all(|n| *n == Notice::Barrier) {
            return Ok(());
        }
        let sender = ProcessFacts::read(credentials.pid, Some(credentials.uid));
        let main_pid = notices
            .iter()
            .rev()
            .find_map(|n| match n {
                Notice::MainPid(pid) => Some(*pid),
                _ => None,
            })
            .map(|pid| ProcessFacts::read(pid, None));
        drop(received);
        let message = Message {
            child: socket.child.clone(),
            sender,
            notices,
            main_pid,
        };
        self.offer(message);
        Ok(())
    }

    /// Delivers `message`, or keeps it behind the child's waiting ones.
    fn offer(&mut self, message: Message) {
        if !self.backlog.holds(&message.child) && (self.deliver)(message.clone()) {
            return;
        }
        let child = message.child.clone();
        if self.backlog.push(message) && self.backlog.dropped() == 1 {
            warn!(
                "notify: {child}: the loop is busy; dropping older messages (at most {} kept per child)",
                PENDING_PER_CHILD_MAX
            );
        }
    }

    /// Carries out the commands; false on `Stop` or when the `Notifier` is gone.
    fn take_commands(&mut self) -> bool {
        loop {
            match self.commands.try_recv() {
                Ok(Command::Add(child, fd)) => {
                    self.sockets.retain(|s| s.child != child);
                    self.sockets.push(Socket {
                        child,
                        fd,
                        allowance: Allowance::new(Instant::now(), DATAGRAMS_PER_S_MAX),
                        warned_size: false,
                    });
                }
                Ok(Command::Close(child, done)) => {
                    self.sockets.retain(|s| s.child != child);
                    self.backlog.forget(&child);
                    let _ = done.try_send(());
                }
                Ok(Command::Stop) | Err(TryRecvError::Disconnected) => return false,
                Err(TryRecvError::Empty) => return true,
            }
        }
    }
}

fn pollin(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}
