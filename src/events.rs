//! What wakes the event loop, and what the job worker sends back. The threads
//! that send events (signals, the HTTP exchange, the job worker, the console,
//! the notify socket) import this module, never the loop itself, so the loop
//! can import them without a circle.

use crate::agent::Outcome;
use crate::jobs::ErrCode;

/// What wakes the loop.
#[derive(Debug)]
pub enum Event {
    /// A signal, from the signal thread.
    Signal(i32),
    /// The outcome of the exchange in flight, from the HTTP thread.
    Exchanged(Outcome),
    /// A package downloaded, verified and unpacked (or not), from the job worker.
    JobPrepared(Prepared),
    /// A command from the console (`bootagent restart|stop|start NAME`), from the
    /// control socket's thread; answered on its own channel.
    Control(crate::console::Request),
    /// An sd_notify message from a child's socket, from the notify thread.
    Notify(crate::notify::Message),
}

/// A result of a job: its errcode and one line.
pub type JobResult = (ErrCode, String);

/// What the worker thread did: the package is in `agents/NAME/VERSION` (or the
/// binary in `bin/VERSION/bootagent`); `Ok` holds the version.
#[derive(Debug)]
pub struct Prepared {
    pub id: String,
    pub result: Result<String, JobResult>,
    /// Said at the end of the job's message when it succeeds (maintainer scripts
    /// of an rpm or a deb that were not run).
    pub note: Option<String>,
}
