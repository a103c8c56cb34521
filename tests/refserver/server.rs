//! Reference control server for BootAgent (see `docs/protocol.md`, sections 1–5 and 7).
//!
//! An independent speaker of the wire protocol, built only on `std`, `tiny_http`
//! and `serde_json`: it does not use the bootagent crate, so the end-to-end tests
//! check the agent against the contract rather than against itself.
//!
//! It serves three kinds of paths:
//!
//! * **Protocol**: `POST /agent/register` and `POST /agent/status`, answered as the
//!   contract says. A FIFO of injected [`Fault`]s (plus an optional "sticky" fault)
//!   can replace the answer of the next `/agent/*` requests, to test how the agent
//!   copes with a misbehaving server.
//! * **Admin**: `/admin/...` JSON endpoints for a person or a script (see
//!   [`RefServer`] for the list).
//! * **Files**: `GET /files/REL/PATH` serves packages from a directory.
//!
//! Every request is appended to a bounded request log ([`Request`]), which the tests
//! read through [`RefServer::requests`] and friends.
//!
//! Used in two ways:
//! * the tests include this file with `#[path = "refserver/server.rs"] mod server;` and
//!   drive a [`RefServer`] in-process;
//! * `tests/refserver/bin.rs` wraps it as the `refserver` example binary.
//!
//! A faulted request is logged but not processed: a report answered with an injected
//! 500 is not recorded, and jobs are not dequeued for it.

// This module is included by several test binaries, each of which uses only part of it.
#![allow(dead_code)]

mod admin;
mod dispatch;
mod faults;
mod files;
mod protocol;
mod reply;
mod request_log;
mod signature;
mod state;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;

pub use faults::Fault;
pub use request_log::{Kind, Request};
pub use state::AgentView;

#[allow(unused_imports)] // each binary that includes this module uses its own subset
pub use {
    admin::new_uuid,
    request_log::{clock, describe, Observer},
    signature::{sign, SIGNATURE_SKEW_S_MAX},
};

use dispatch::dispatch;
use state::{agent_view, lock, Agent, Shared, State};

/// Largest request body read (docs/protocol.md §1 uses the same cap for responses).
pub const MAX_BODY: usize = 1 << 20;
/// Bytes of each request body kept in the log (the parsed JSON is kept whole).
pub const LOG_BODY_CAP: usize = 64 << 10;
/// Most requests kept in the log; the oldest are dropped first.
pub const LOG_MAX_ENTRIES: usize = 100_000;
/// Most raw body bytes kept in the log altogether; the oldest entries are dropped first.
pub const LOG_MAX_BODY_BYTES: usize = 64 << 20;
/// Raw bodies larger than this are left out of `GET /admin/requests`.
pub const ADMIN_BODY_CAP: usize = 4 << 10;
/// Most requests handled at once (each on its own thread).
pub const MAX_HANDLERS: usize = 64;
/// Most events kept per agent.
pub const MAX_EVENTS_PER_AGENT: usize = 10_000;
/// `tags` handed out by every successful registration.
pub const TAGS: &str = "svc=demo,cmpt=ref";
/// Default report interval handed out at registration.
pub const DEFAULT_STEP: u64 = 600;
/// Size of the body sent by the admin `"huge"` fault when no size is given.
pub const DEFAULT_HUGE: usize = 2 << 20;

/// Settings for [`RefServer::start`].
#[derive(Clone, Debug)]
pub struct Options {
    /// `step` handed out at registration; `None` leaves the field out (it is an extension).
    pub step: Option<u64>,
    /// Directory served under `GET /files/`; `None` disables that path.
    pub files_dir: Option<PathBuf>,
    /// Address to listen on, e.g. `"127.0.0.1:8080"`; port 0 picks a free one.
    pub listen: String,
    /// Accept status reports from agents this server never registered, as one server of
    /// a cluster whose registry is shared (behind a load balancer) would.
    pub adopt_unknown: bool,
}

impl Default for Options {
    /// Step 600 s, no files, a free port on 127.0.0.1.
    fn default() -> Self {
        Options {
            step: Some(DEFAULT_STEP),
            files_dir: None,
            listen: "127.0.0.1:0".to_string(),
            adopt_unknown: false,
        }
    }
}

/// A running reference server. Dropping it stops it.
///
/// Thread-safe: every method takes `&self`, and the handle may be shared (e.g. in an
/// `Arc`) between threads.
///
/// HTTP admin endpoints (JSON in, JSON out):
/// * `GET /admin` — this list.
/// * `GET /admin/agents` — known agents, with last report, job results and events.
/// * `POST /admin/jobs` `{"sn": "...", "job": {...}}` — queue a job (an `id` is generated
///   when missing; `sn` may be left out when exactly one agent is known).
/// * `GET /admin/requests?path=/agent/status&since=SEQ&limit=N` — logged requests
///   (raw bodies over 4 KiB left out; default limit 1000, the latest).
/// * `GET /admin/fault`, `POST /admin/fault` `{"fault": "500"|"401"|"garbage"|"huge"|
///   "huge-chunked"|"stall"|"close"|"retry-after", "count": N, "seconds": S,
///   "status": CODE, "bytes": N, "sticky": BOOL}`; `{"fault": null}` clears every fault.
/// * `POST /admin/step` `{"step": N}` or `{"step": null}`.
/// * `POST /admin/report` `{"report": "lazy"|"full"|null}` — the report mode answered.
/// * `POST /admin/conflict` `{"sn": "..."}` — hand out this SN at the next registration.
pub struct RefServer {
    shared: Arc<Shared>,
    http: Option<Arc<tiny_http::Server>>,
    dispatcher: Option<JoinHandle<()>>,
    addr: SocketAddr,
}

impl RefServer {
    /// Binds `opts.listen` and starts serving in background threads.
    pub fn start(opts: Options) -> io::Result<RefServer> {
        let server = tiny_http::Server::http(opts.listen.as_str())
            .map_err(|e| io::Error::other(e.to_string()))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("listening address is not an IP address"))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                step: opts.step,
                report: None,
                files_dir: opts.files_dir,
                adopt_unknown: opts.adopt_unknown,
                conflict_sn: None,
                aliases: HashMap::new(),
                credentials: None,
                reject_registrations: 0,
                agents: BTreeMap::new(),
                next_agent_order: 0,
                queues: HashMap::new(),
                faults: VecDeque::new(),
                sticky: None,
                log: VecDeque::new(),
                log_body_bytes: 0,
                next_seq: 0,
            }),
            observer: Mutex::new(None),
            stop: AtomicBool::new(false),
            active: Mutex::new(0),
            active_cv: Condvar::new(),
            started: Instant::now(),
        });
        let http = Arc::new(server);
        let dispatcher = {
            let shared = Arc::clone(&shared);
            let http = Arc::clone(&http);
            thread::Builder::new()
                .name(format!("refserver-{}", addr.port()))
                .spawn(move || dispatch(&shared, &http))?
        };
        Ok(RefServer {
            shared,
            http: Some(http),
            dispatcher: Some(dispatcher),
            addr,
        })
    }

    /// `"127.0.0.1:PORT"`: the address to give an agent with `-S`.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// `"http://127.0.0.1:PORT"`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Makes each of the next `count` protocol requests fail with `fault` (after any
    /// faults already queued).
    pub fn push_faults(&self, fault: Fault, count: usize) {
        let mut st = self.shared.state();
        st.faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Applies `fault` to every protocol request (once the queued ones are used up),
    /// until called again with `None`.
    pub fn set_sticky_fault(&self, fault: Option<Fault>) {
        self.shared.state().sticky = fault;
    }

    /// Removes every queued fault and the sticky one.
    pub fn clear_faults(&self) {
        let mut st = self.shared.state();
        st.faults.clear();
        st.sticky = None;
    }

    /// Number of queued (non-sticky) faults not yet applied.
    pub fn pending_faults(&self) -> usize {
        self.shared.state().faults.len()
    }

    /// Answers status reports with `report` set to `mode` (`"lazy"` or `"full"`);
    /// `None` leaves the field out, as a server of the original API does.
    pub fn set_report(&self, mode: Option<&str>) {
        self.shared.state().report = mode.map(str::to_string);
    }

    /// Sets the `step` handed out at registration; `None` leaves the field out.
    pub fn set_step(&self, step: Option<u64>) {
        self.shared.state().step = step;
    }

    /// Makes the next registration (of any agent) hand out `sn` instead of the agent's
    /// own; the agent's old SN is then remembered to map to `sn`, so registering again
    /// with the old SN gets `sn` again. `None` cancels a pending conflict.
    pub fn set_conflict_sn(&self, sn: Option<String>) {
        self.shared.state().conflict_sn = sn;
    }

    /// Makes registrations hand out `key` and `secret` (docs/protocol.md §4); `None` stops that.
    /// From then on the server records the `X-Boot-*` headers and checks them
    /// (`signature.rs`): a report must be signed with the current key, at most
    /// `SIGNATURE_SKEW_S_MAX` seconds from the server's clock; a bad one gets 401.
    pub fn set_credentials(&self, credentials: Option<(String, String)>) {
        self.shared.state().credentials = credentials;
    }

    /// Makes the next `count` registrations answer HTTP 200 with `status` 1 (rejected).
    pub fn reject_registrations(&self, count: usize) {
        self.shared.state().reject_registrations = count;
    }

    /// Queues `job` for the agent with this SN, to be handed out once, in the next
    /// answered status report. The job is sent as given (no `id` is added), so tests
    /// can send invalid jobs too. The SN need not be known yet.
    pub fn queue_job(&self, sn: &str, job: Value) {
        self.shared
            .state()
            .queues
            .entry(sn.to_string())
            .or_default()
            .push_back(job);
    }

    /// Jobs queued for `sn` and not handed out yet.
    pub fn queued_jobs(&self, sn: &str) -> usize {
        self.shared.state().queues.get(sn).map_or(0, VecDeque::len)
    }

    /// A copy of the whole request log, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state().log.iter().cloned().collect()
    }

    /// The logged requests whose path (without query string) is `path`, oldest first.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// The logged protocol requests (`/agent/...`), oldest first.
    pub fn protocol_requests(&self) -> Vec<Request> {
        self.shared
            .state()
            .log
            .iter()
            .filter(|r| r.kind == Kind::Protocol)
            .cloned()
            .collect()
    }

    /// Every known agent, in order of first registration.
    pub fn agents(&self) -> Vec<AgentView> {
        let st = self.shared.state();
        let mut agents: Vec<(&String, &Agent)> = st.agents.iter().collect();
        agents.sort_by_key(|(_, a)| a.order);
        agents
            .into_iter()
            .map(|(sn, a)| agent_view(&st, sn, a))
            .collect()
    }

    /// The agent with this SN, if known.
    pub fn agent(&self, sn: &str) -> Option<AgentView> {
        let st = self.shared.state();
        st.agents.get(sn).map(|a| agent_view(&st, sn, a))
    }

    /// Runs `f` for every request once its answer is decided (before it is sent), or
    /// for `Stall`/`Close` faults when the request has been read. Replaces any earlier
    /// observer. `f` runs on the handler thread and must not block for long.
    pub fn on_request<F: Fn(&Request) + Send + Sync + 'static>(&self, f: F) {
        *lock(&self.shared.observer) = Some(Arc::new(f));
    }

    /// Polls `f` every ~10 ms until it returns true (then returns true) or `deadline`
    /// has passed (then returns false after one last try).
    pub fn wait_for<F: Fn(&RefServer) -> bool>(&self, deadline: Duration, f: F) -> bool {
        let end = Instant::now() + deadline;
        loop {
            if f(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// When the server was started (the origin of the `t` values in `/admin/requests`).
    pub fn started(&self) -> Instant {
        self.shared.started
    }
}

impl Drop for RefServer {
    /// Stops the dispatcher, ends stalls, waits briefly for running handlers, and
    /// closes the listening socket.
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(http) = &self.http {
            http.unblock();
        }
        if let Some(handle) = self.dispatcher.take() {
            let _ = handle.join();
        }
        self.shared.wait_idle(Duration::from_secs(2));
        // Dropping the last reference to the tiny_http server stops its accept thread,
        // which then closes the listening socket. Wait (briefly) until it has, so that
        // a test can start a new server on the same address at once.
        self.http.take();
        let deadline = Instant::now() + Duration::from_secs(1);
        while Instant::now() < deadline
            && std::net::TcpStream::connect_timeout(&self.addr, Duration::from_millis(100)).is_ok()
        {
            thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
