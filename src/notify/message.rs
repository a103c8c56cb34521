//! What the notify thread hands the loop (`Message`), how the loop takes it
//! (`Deliver`), and how soon a refused one is offered again: what `mod.rs` and the
//! thread's files (`worker.rs`, `queue.rs`) share.

use super::facts::ProcessFacts;
use super::parse::Notice;

/// How soon a message the loop refused (its channel full) is offered again.
pub const RETRY_MS: u64 = 50;

/// What the notifier hands the loop: the notices of one datagram (or of several from
/// the same sender, coalesced while the loop's channel was full), with who sent them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The child whose socket received it.
    pub child: String,
    /// The sending process: the loop takes the message only if it is the child's.
    pub sender: ProcessFacts,
    /// In the order sent; never empty, never only [`Notice::Barrier`].
    pub notices: Vec<Notice>,
    /// The facts of the process the last `MAINPID=` named (read at receipt), when one
    /// was named: accept it only if that process is the child's too.
    pub main_pid: Option<ProcessFacts>,
}

/// The loop's side of delivery: true when the message was taken (or the loop is gone),
/// false when it must be kept and offered again.
pub type Deliver = Box<dyn FnMut(Message) -> bool + Send>;
