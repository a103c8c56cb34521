//! The server's state: the agents it knows and the jobs queued for them, with the
//! settings, faults and request log, behind one mutex; and what the handle, the
//! dispatcher and the handler threads share.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::faults::Fault;
use super::request_log::{Observer, Request};

/// What the server knows about one agent (keyed by the SN it was handed).
#[derive(Clone, Debug)]
pub struct AgentView {
    /// The agent's SN, as answered at registration.
    pub sn: String,
    /// Latest `hostname` received.
    pub hostname: String,
    /// Latest `version` received, if any.
    pub version: Option<String>,
    /// Latest `host` object received at registration, if any.
    pub host: Option<Value>,
    /// The SN the agent registered with, when the server handed it a different one.
    pub previous_sn: Option<String>,
    /// Successful registrations (answers with `status` 0).
    pub registrations: u64,
    /// Status reports accepted (answered 200).
    pub reports: u64,
    /// The last accepted status report, whole.
    pub last_report: Option<Value>,
    /// The children as the last report that listed them described them (a lazy
    /// report leaves `agents` out while nothing changed).
    pub agents: Option<Value>,
    /// Accepted reports that left `agents` out.
    pub lazy_reports: u64,
    /// When the agent was last heard from (registration or report).
    pub last_seen: Instant,
    /// Job results received, by job id (the latest result for each id).
    pub job_results: BTreeMap<String, Value>,
    /// Every event received in accepted reports, oldest first (bounded).
    pub events: Vec<Value>,
    /// Jobs queued for this SN and not handed out yet.
    pub queued_jobs: usize,
}

/// One agent's record (see [`AgentView`]).
#[derive(Clone, Debug)]
pub(super) struct Agent {
    pub(super) order: u64,
    pub(super) hostname: String,
    pub(super) version: Option<String>,
    pub(super) host: Option<Value>,
    pub(super) previous_sn: Option<String>,
    pub(super) registrations: u64,
    pub(super) reports: u64,
    pub(super) last_report: Option<Value>,
    pub(super) agents: Option<Value>,
    pub(super) lazy_reports: u64,
    pub(super) last_seen: Instant,
    pub(super) job_results: BTreeMap<String, Value>,
    pub(super) events: VecDeque<Value>,
}

/// Everything behind the state mutex.
pub(super) struct State {
    pub(super) step: Option<u64>,
    /// `report` in status answers (`"lazy"` or `"full"`), left out when `None`.
    pub(super) report: Option<String>,
    pub(super) files_dir: Option<PathBuf>,
    /// See `Options::adopt_unknown`.
    pub(super) adopt_unknown: bool,
    /// SN handed out by the next registration (an SN conflict), then cleared.
    pub(super) conflict_sn: Option<String>,
    /// Old SN → SN handed out for it after a conflict.
    pub(super) aliases: HashMap<String, String>,
    /// `key` and `secret` handed out at registration, if set.
    pub(super) credentials: Option<(String, String)>,
    /// Number of coming registrations to reject with `status` 1.
    pub(super) reject_registrations: usize,
    pub(super) agents: BTreeMap<String, Agent>,
    pub(super) next_agent_order: u64,
    /// Jobs waiting to be handed out, by SN.
    pub(super) queues: HashMap<String, VecDeque<Value>>,
    pub(super) faults: VecDeque<Fault>,
    pub(super) sticky: Option<Fault>,
    pub(super) log: VecDeque<Request>,
    pub(super) log_body_bytes: usize,
    pub(super) next_seq: u64,
}

/// State shared by the API handle, the dispatcher and the handler threads.
pub(super) struct Shared {
    pub(super) state: Mutex<State>,
    pub(super) observer: Mutex<Option<Observer>>,
    /// Set when the server is being dropped: stalls end, the dispatcher stops.
    pub(super) stop: AtomicBool,
    /// Number of running handler threads, with a condvar to wait for a free slot.
    pub(super) active: Mutex<usize>,
    pub(super) active_cv: Condvar,
    pub(super) started: Instant,
}

/// Locks a mutex, recovering the data if a thread panicked while holding it.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(super) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub(super) fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, waking early when the server stops.
    pub(super) fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while !self.stopping() {
            let now = Instant::now();
            if now >= end {
                return;
            }
            thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

pub(super) fn agent_view(st: &State, sn: &str, a: &Agent) -> AgentView {
    AgentView {
        sn: sn.to_string(),
        hostname: a.hostname.clone(),
        version: a.version.clone(),
        host: a.host.clone(),
        previous_sn: a.previous_sn.clone(),
        registrations: a.registrations,
        reports: a.reports,
        last_report: a.last_report.clone(),
        agents: a.agents.clone(),
        lazy_reports: a.lazy_reports,
        last_seen: a.last_seen,
        job_results: a.job_results.clone(),
        events: a.events.iter().cloned().collect(),
        queued_jobs: st.queues.get(sn).map_or(0, VecDeque::len),
    }
}
