//! What the health checks keep (see `health.rs`, which drives them): each child's
//! `HealthRun`, what the checks know of its current run, and the supervisor's
//! `LazyNotifier`, the sd_notify thread started when a child first needs a socket.

use crate::health::HeartbeatWatch;
use crate::notify::Notifier;
use log::warn;
use std::io;
use std::os::fd::{OwnedFd, RawFd};

/// What the health checks know of a child's current run.
#[derive(Debug, Default)]
pub(super) struct HealthRun {
    /// The process of the run the checks are about (`None` while the child does
    /// not run).
    pub(super) run_pid: Option<i32>,
    /// `READY=1` came (meaningful with `notify` only).
    pub(super) ready: bool,
    /// The last `STATUS=` text.
    pub(super) status_text: Option<String>,
    /// A check failed; stays until the next start.
    pub(super) unhealthy: bool,
    /// A `MAINPID=` that was accepted: a process of the child.
    pub(super) main_pid: Option<i32>,
    /// A message from a process not of the child was logged in this run.
    pub(super) foreign_logged: bool,
    pub(super) heartbeat: Option<HeartbeatWatch>,
}

/// Starts the sd_notify thread (`Notifier::start` with the loop's channel).
pub type NotifierFactory = Box<dyn Fn() -> io::Result<Notifier> + Send>;

/// The notifier, started when a child first needs a socket: an agent whose children
/// speak no sd_notify has no thread for it.
#[derive(Default)]
pub(super) struct LazyNotifier {
    pub(super) factory: Option<NotifierFactory>,
    notifier: Option<Notifier>,
    /// Why it could not start, logged once; children then run without a socket.
    failed: bool,
}

impl LazyNotifier {
    /// The `NOTIFY_SOCKET` of `name`, starting the thread if need be.
    pub(super) fn open(&mut self, name: &str) -> Option<String> {
        match self.started()?.open(name) {
            Ok(socket) => Some(socket),
            Err(err) => {
                warn!("{name}: no NOTIFY_SOCKET: {err}");
                None
            }
        }
    }

    /// After an exec hand-over: takes over `name`'s socket from the previous image
    /// (descriptor `fd`), so a datagram sent across the exec is read; a descriptor
    /// that is not that socket is left alone and a socket is opened as at a start.
    pub(super) fn inherit(&mut self, name: &str, fd: RawFd) -> Option<String> {
        match self.started()?.inherit(name, fd) {
            Ok(socket) => return Some(socket),
            Err(err) => warn!("{name}: the notify socket of the hand-over is not taken: {err}"),
        }
        self.open(name)
    }

    /// A new descriptor of `name`'s socket for an exec hand-over (owned by the
    /// caller: it outlives this notifier). `None` when it has none or it cannot be
    /// had: the next image then binds the name again.
    pub(super) fn handover(&self, name: &str) -> Option<OwnedFd> {
        match self.notifier.as_ref()?.handover(name)? {
            Ok(fd) => Some(fd),
            Err(err) => {
                warn!("{name}: the notify socket is not handed over: {err}");
                None
            }
        }
    }

    /// The notifier, started on the first call (`None` if it cannot start: logged once).
    fn started(&mut self) -> Option<&Notifier> {
        if self.notifier.is_none() && !self.failed {
            let started = match &self.factory {
                Some(factory) => factory(),
                None => Err(io::Error::other("no notifier in this process")),
            };
            match started {
                Ok(notifier) => self.notifier = Some(notifier),
                Err(err) => {
                    warn!("sd_notify unavailable ({err}): children with notify never become ready");
                    self.failed = true;
                }
            }
        }
        self.notifier.as_ref()
    }

    pub(super) fn close(&self, name: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.close(name);
        }
    }
}
