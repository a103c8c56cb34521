//! The agent's core: registration, status reports, server choice, backoff and the
//! `config` job (docs/protocol.md sections 2–5 and 7). Pure: it never reads a clock,
//! opens a socket or touches a file. The event loop feeds it the time, the firing
//! of its one timer and exchange outcomes, and carries out the `Effect`s it returns.
//!
//! ```text
//!            start (not registered)            start (registered)
//!                    │                                 │
//!                    ▼         status 0                ▼
//!              ┌──────────┐ ───────────────────► ┌──────────┐ ◄─┐ 200: next report at
//!              │ Register │                      │  Report  │ ──┘ the agent's phase
//!              └──────────┘ ◄─────────────────── └──────────┘
//!                 │    ▲    401/403/404/410            │
//!   failure:      └────┘                               │ failure: next server;
//!   next server, backoff after a round                 ▼ backoff after a round
//! ```
//!
//! One exchange is in flight at most. The core keeps when the next one is due as
//! data (`next_deadline`); the loop arms its wheel's `TimerKey::Exchange` there and
//! calls `on_time` when it fires. There is no polling tick, so an idle agent sleeps
//! until its next report. Whatever asks for
//! a request (the schedule, a prompt report, a retry, a `Retry-After`) is recorded,
//! and one pure rule (`pacing::next_request_at`) decides when it goes out.
//!
//! # Files
//!
//! This file: the types the event loop sees (`Core`, `Effect`, `Outcome`, `Facts`)
//! and the core's life (start, the exchange's deadline, prompt reports). `exchange.rs` sends
//! registrations and reports and judges their answers; `schedule.rs` records what
//! asks for the next exchange (failover, backoff, `Retry-After`, the phase), and
//! `timing.rs` moves it after each outcome and sets the exchange's deadline; `pacing.rs` is the rule and the waits, as pure functions; `outage.rs`
//! is the log of a failure that repeats; `job_queue.rs` takes the jobs of the
//! answers (the `config` job run at once, the others for the edge) into the
//! journal (`crate::journal`, in the metafile);
//! `children.rs` is what the core keeps of the children (their descriptions, their
//! events until acknowledged, their desired states).

mod children;
mod exchange;
mod job_queue;
mod outage;
pub mod pacing;
mod schedule;
mod timing;

use crate::addr::ServerAddr;
use crate::event_queue::Carried;
use crate::limits::Limits;
use crate::meta::Meta;
use crate::rng::Rng;
use crate::servers::Servers;
use crate::wheel::Millis;
use crate::wire::{AgentStatus, HostInfo};
use schedule::Schedule;

pub const REGISTER_PATH: &str = "/agent/register";
pub const STATUS_PATH: &str = "/agent/status";

/// Facts about this host and build that go into every request.
#[derive(Clone, Debug)]
pub struct Facts {
    pub hostname: String,
    pub version: String,
    pub host: HostInfo,
}

/// What the core asks the edge to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// POST `body` to `path` on `server` with `headers` (the signature, when the
    /// agent holds credentials); answer with `Core::on_outcome`.
    Send {
        server: ServerAddr,
        path: &'static str,
        body: Vec<u8>,
        headers: Vec<(&'static str, String)>,
    },
    /// Write `Core::meta()` to the metafile.
    SaveMeta,
}

/// How an exchange ended, as the HTTP thread saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An HTTP answer with its (bounded) body.
    Answer {
        status: u16,
        body: Vec<u8>,
        retry_after_s: Option<u64>,
    },
    /// No usable answer: connection refused, timeout, body too long, …
    Failed(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Register,
    Report,
}

struct InFlight {
    phase: Phase,
    server: ServerAddr,
    /// The results this report carries (id, errcode, message), acknowledged by a
    /// 200 answer.
    carried_jobs: Vec<(String, u32, String)>,
    /// The events carried (up to a sequence number, and the drops counted),
    /// acknowledged likewise.
    carried_events: Carried,
    /// When it was sent (monotonic), and what the wall clock read then.
    sent_at: Millis,
    sent_wall_ms: i64,
    /// The children described, uptimes left out (`None` when lazy mode left them out).
    carried_agents: Option<Vec<AgentStatus>>,
}

/// How this process came to run, for the first report (docs/protocol.md section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start {
    /// Started by init or by hand: an agent already registered sends its first
    /// report after a random delay of 0…min(step, `first_report_delay_max_ms`), so
    /// that a site that powers up at once does not report in the same millisecond.
    Boot,
    /// The new image right after a self-upgrade's exec: it reports at once.
    AfterExec,
}

pub struct Core {
    limits: Limits,
    facts: Facts,
    meta: Meta,
    servers: Servers,
    rng: Rng,
    phase: Phase,
    started_at: Millis,
    in_flight: Option<InFlight>,
    /// When the next exchange is due (`None` while one is in flight): the
    /// deadline of the loop's `TimerKey::Exchange`.
    exchange_at: Option<Millis>,
    /// What asks for the next request; the rule in `pacing` decides from these.
    schedule: Schedule,
    /// Rounds in a row in which every server failed; 0 when healthy.
    failed_rounds: u32,
    /// The log of a failure that repeats.
    outage: outage::OutageLog,
    /// Registrations in a row without an answered report in between.
    reregistrations: u32,
    /// The children as the supervisor last described them.
    agents: Vec<AgentStatus>,
    /// The children as the last report answered 200 described them, uptimes left
    /// out (`None` until one was): in lazy mode, `agents` is sent only when they differ.
    agents_acked: Option<Vec<AgentStatus>>,
    /// The wall clock of the loop's turn (`set_wall_clock`), for the time of a
    /// `dropped` event.
    wall_s: i64,
    /// Status reports answered 200 since this image started (a self-upgrade's
    /// probation waits for one).
    reports_answered: u64,
}

impl Core {
    /// A core that starts with an exchange due: a registration at `now` when the
    /// metafile has no confirmed identity, else a status report, after the
    /// first-report delay unless `start` is `Start::AfterExec`.
    pub fn new(
        limits: Limits,
        facts: Facts,
        meta: Meta,
        servers: Servers,
        rng: Rng,
        now: Millis,
        start: Start,
    ) -> Self {
        let phase = if meta.registered {
            Phase::Report
        } else {
            Phase::Register
        };
        let mut core = Core {
            limits,
            facts,
            meta,
            servers,
            rng,
            phase,
            started_at: now,
            in_flight: None,
            exchange_at: None,
            schedule: Schedule::default(),
            failed_rounds: 0,
            outage: outage::OutageLog::default(),
            reregistrations: 0,
            agents: Vec::new(),
            agents_acked: None,
            wall_s: 0,
            reports_answered: 0,
        };
        let delay = match (phase, start) {
            (Phase::Report, Start::Boot) => pacing::first_report_delay_ms(
                core.step_ms(),
                core.limits.first_report_delay_max_ms,
                &mut core.rng,
            ),
            _ => 0,
        };
        core.schedule.scheduled_at = Some(now.saturating_add(delay));
        core.reschedule();
        core
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// Status reports answered 200 since this image started.
    pub fn reports_answered(&self) -> u64 {
        self.reports_answered
    }

    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    /// When the next exchange is due: the event loop arms its `TimerKey::Exchange`
    /// there and calls `on_time` when it fires.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.exchange_at
    }

    /// The wall clock (Unix milliseconds), given on every turn of the loop: it
    /// stamps the `dropped` events.
    pub fn set_wall_clock(&mut self, wall_ms: i64) {
        self.wall_s = wall_ms.div_euclid(1000);
    }

    /// Starts the exchange if it is due at `now`. `wall_ms` (Unix milliseconds)
    /// stamps the reports and places the next one at the agent's phase.
    pub fn on_time(&mut self, now: Millis, wall_ms: i64, effects: &mut Vec<Effect>) {
        self.set_wall_clock(wall_ms);
        if self.exchange_at.is_some_and(|at| at <= now) {
            self.exchange_at = None;
            self.start_exchange(now, wall_ms, effects);
        }
    }

    /// Asks for a status report soon: within a second, never closer than
    /// `report_gap_min_ms` to the previous one answered (section 3). A failing or
    /// throttled agent sends it with its next retry.
    pub fn request_report(&mut self, now: Millis) {
        if self.phase != Phase::Report {
            return; // registering: the first report follows at once
        }
        self.schedule.prompt(now);
        self.reschedule();
    }
}

#[cfg(test)]
mod tests;
