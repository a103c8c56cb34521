//! Local control (docs/protocol.md section 6): `bootagent restart|stop|start NAME` asks the
//! running agent, over the Unix socket `control.sock` in the data directory, to do
//! what the job of the same name does; `bootagent logs NAME` reads the child's log
//! files and needs no agent.
//!
//! ```text
//!  bootagent stop NAME ──connect──► control.sock ─► acceptor thread
//!                                                   │ rate, peer uid, clients bound
//!                                                   ▼
//!                                       client thread: one request line, deadline
//!                                                   │ Event::Control (try_send)
//!                                                   ▼
//!                           event loop: the `stop` job's code path, event `origin: local`
//!                                                   │ Reply (channel of 1, never waits)
//!  exit code, one line ◄────────────────────────────┘
//! ```
//!
//! The line protocol, one request and one answer per connection:
//! - request: `VERB NAME\n`, `VERB` one of `restart`, `stop`, `start`; at most
//!   `control_request_bytes_max` bytes.
//! - answer: `CODE TEXT\n`, `CODE` the command's exit code (0 done, 1 failed,
//!   2 bad request, 3 no such child), `TEXT` one line: on success, the child as `sv`
//!   shows it (`running: NAME: (pid 4242) 0s`).
//!
//! The line protocol itself, pure, is `console.rs` at the top of `src/` (the loop's
//! `Event` carries its `Request` without importing this folder). Files: `listener.rs`
//! (the agent's side: the socket, its threads and bounds), `local.rs` (the loop's side:
//! the commands as jobs, their answers and events), `client.rs` (the command),
//! `logs.rs` (`bootagent logs`).

pub mod client;
mod listener;
pub mod local;
pub mod logs;

pub use crate::console::{Reply, Verb, EXIT_FAILED, SOCKET_FILE};
pub use listener::{listen, ListenLimits};
