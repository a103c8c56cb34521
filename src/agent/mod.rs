//! The agent's core: registration, status reports, server choice, backoff and the
//! `config` job (docs/protocol.md sections 2–5 and 7). Pure: it never reads a clock,
//! opens a socket or touches a file. The event loop feeds it the time, timer
//! expiries and exchange outcomes, and carries out the `Effect`s it returns.
//!
//! ```text
//!            start (not registered)            start (registered)
//!                    │                                 │
//!                    ▼         status 0                ▼
//!              ┌──────────┐ ───────────────────► ┌──────────┐ ◄─┐ 200: next report
//!              │ Register │                      │  Report  │ ──┘ after step ± 10 %
//!              └──────────┘ ◄─────────────────── └──────────┘
//!                 │    ▲    401/403/404/410            │
//!   failure:      └────┘                               │ failure: next server;
//!   next server, backoff after a round                 ▼ backoff after a round
//! ```
//!
//! One exchange is in flight at most. Every wait is a timer in the wheel; there is
//! no polling tick, so an idle agent sleeps until its next report.
//!
//! # Files
//!
//! This file: the types the event loop sees (`Core`, `Effect`, `Outcome`, `Facts`,
//! `Timer`) and the core's life (start, timers, prompt reports). `exchange.rs` sends
//! registrations and reports and judges their answers; `schedule.rs` is when the next
//! exchange is due (failover, backoff, the jittered step); `job_queue.rs` holds the
//! jobs of the answers (the `config` job, the queue for the edge, the journal);
//! `children.rs` is what the core keeps of the children (their descriptions, their
//! events until acknowledged, their desired states).

mod children;
mod exchange;
mod job_queue;
mod schedule;

use crate::addr::ServerAddr;
use crate::jobs::Job;
use crate::limits::Limits;
use crate::meta::Meta;
use crate::rng::Rng;
use crate::servers::Servers;
use crate::wheel::{Millis, TimerId, Wheel};
use crate::wire::{AgentStatus, HostInfo};
use std::collections::VecDeque;

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

/// Timers the core sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Timer {
    /// Time for the next exchange (register or report).
    Exchange,
}

struct InFlight {
    phase: Phase,
    server: ServerAddr,
    /// Job ids whose results this report carries, acknowledged by a 200 answer.
    carried_jobs: Vec<String>,
    /// Events up to this sequence number are carried, acknowledged likewise.
    carried_events_seq: u64,
}

pub struct Core {
    limits: Limits,
    facts: Facts,
    meta: Meta,
    servers: Servers,
    rng: Rng,
    wheel: Wheel<Timer>,
    phase: Phase,
    started_at: Millis,
    in_flight: Option<InFlight>,
    /// The pending exchange timer and its deadline.
    exchange_timer: Option<(TimerId, Millis)>,
    /// A report was asked for while an exchange was in flight.
    report_wanted: bool,
    last_report_sent_at: Option<Millis>,
    /// Rounds in a row in which every server failed; 0 when healthy.
    failed_rounds: u32,
    /// Attempts that failed since the last success, for the log.
    failed_attempts: u64,
    last_error: String,
    /// Registrations in a row without an answered report in between.
    reregistrations: u32,
    /// A server's `Retry-After`: no exchange before this, prompt reports included.
    not_before: Option<Millis>,
    /// Undelivered results the bounded journal had to drop, for the log.
    results_dropped: u64,
    /// The children as the supervisor last described them.
    agents: Vec<AgentStatus>,
    /// Jobs waiting for the edge, in order of arrival (bounded by `jobs_queue_max`).
    queue: VecDeque<(String, Job)>,
}

impl Core {
    /// A core that starts with an exchange due at `now`: a registration when the
    /// metafile has no confirmed identity, else a status report.
    pub fn new(
        limits: Limits,
        facts: Facts,
        meta: Meta,
        servers: Servers,
        rng: Rng,
        now: Millis,
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
            wheel: Wheel::new(now),
            phase,
            started_at: now,
            in_flight: None,
            exchange_timer: None,
            report_wanted: false,
            last_report_sent_at: None,
            failed_rounds: 0,
            failed_attempts: 0,
            last_error: String::new(),
            reregistrations: 0,
            not_before: None,
            results_dropped: 0,
            agents: Vec::new(),
            queue: VecDeque::new(),
        };
        core.schedule_exchange(now);
        core
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn servers(&self) -> &Servers {
        &self.servers
    }

    /// When the event loop must call `on_time` next, if ever.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.wheel.next_deadline()
    }

    /// Fires every timer due at `now`. `wall_s` stamps the reports.
    pub fn on_time(&mut self, now: Millis, wall_s: i64, effects: &mut Vec<Effect>) {
        while let Some((id, timer)) = self.wheel.poll(now) {
            match timer {
                Timer::Exchange => {
                    if self
                        .exchange_timer
                        .is_some_and(|(pending, _)| pending == id)
                    {
                        self.exchange_timer = None;
                    }
                    self.start_exchange(now, wall_s, effects);
                }
            }
        }
    }

    /// Asks for a status report soon: within a second, never closer than
    /// `report_gap_min_ms` to the previous one (section 3).
    pub fn request_report(&mut self, now: Millis) {
        if self.phase != Phase::Report || self.failed_rounds > 0 {
            return; // registering or backing off: the report follows in due course
        }
        if self.in_flight.is_some() {
            self.report_wanted = true;
            return;
        }
        let earliest = self
            .last_report_sent_at
            .map_or(now, |at| at.saturating_add(self.limits.report_gap_min_ms))
            .max(now)
            .max(self.not_before.unwrap_or(0));
        self.schedule_exchange_no_later_than(earliest);
    }
}

#[cfg(test)]
mod tests;
