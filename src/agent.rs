//! The agent's core: registration, status reports, server choice, backoff and the
//! `config` job (PROTOCOL.md sections 2–5 and 7). Pure: it never reads a clock,
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

use crate::addr::ServerAddr;
use crate::jobs::{self, ErrCode, Job};
use crate::limits::Limits;
use crate::meta::Meta;
use crate::meta::{JobState, StoredEvent};
use crate::rng::Rng;
use crate::servers::Servers;
use crate::wheel::{Millis, TimerId, Wheel};
use crate::wire::{self, AgentStatus, HostInfo, JobResult, RegisterRequest, StatusRequest};
use log::{debug, info, warn};
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

/// How an exchange is judged, once its answer is read.
enum Verdict {
    Done,
    Reregister,
    RetryAfter(u64),
    Failed(String),
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

/// One line about a job for the log (never its secrets: URLs are shown without user info).
fn describe(job: &Job) -> String {
    match job {
        Job::Config { .. } => "config".to_string(),
        Job::Install(install) => format!(
            "install {} from {}",
            install.name,
            jobs::masked_url(&install.url)
        ),
        Job::Uninstall { name } => format!("uninstall {name}"),
        Job::Restart { name, .. } => format!("restart {name}"),
        Job::Stop { name } => format!("stop {name}"),
        Job::Start { name } => format!("start {name}"),
    }
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

    /// The children to describe in the next reports.
    pub fn set_agents(&mut self, agents: Vec<AgentStatus>) {
        self.agents = agents;
    }

    /// Queues a child event for delivery (kept until acknowledged, persisted) and
    /// asks for a prompt report. Bounded at `pending_events_max`: past that, newer
    /// events are counted in one trailing `dropped` event.
    pub fn push_event(&mut self, now: Millis, event: serde_json::Value, effects: &mut Vec<Effect>) {
        let max = self.limits.pending_events_max.max(2);
        // A marker already on its way to the server must not change under it.
        let in_flight_seq = self.in_flight.as_ref().map_or(0, |f| f.carried_events_seq);
        let events = &mut self.meta.events;
        if events.len() + 1 >= max {
            let dropped = match events.last_mut() {
                Some(last)
                    if last.seq > in_flight_seq
                        && last.event.get("event").and_then(|e| e.as_str()) == Some("dropped") =>
                {
                    last
                }
                _ => {
                    self.meta.event_seq += 1;
                    events.push(StoredEvent {
                        seq: self.meta.event_seq,
                        event: serde_json::json!({"time": event.get("time"), "name": "", "event": "dropped", "count": 0}),
                    });
                    match events.last_mut() {
                        Some(last) => last,
                        None => return, // just pushed
                    }
                }
            };
            let count = dropped
                .event
                .get("count")
                .and_then(|c| c.as_u64())
                .unwrap_or(0)
                + 1;
            dropped.event["count"] = count.into();
            dropped.event["message"] =
                format!("{count} event(s) dropped: the queue holds {max}").into();
        } else {
            self.meta.event_seq += 1;
            events.push(StoredEvent {
                seq: self.meta.event_seq,
                event,
            });
        }
        effects.push(Effect::SaveMeta);
        self.request_report(now);
    }

    fn start_exchange(&mut self, now: Millis, wall_s: i64, effects: &mut Vec<Effect>) {
        if self.in_flight.is_some() {
            return;
        }
        if self.not_before.is_some_and(|at| now < at) {
            return; // a timer at `not_before` is pending
        }
        self.not_before = None;
        let Some(server) = self.servers.current().cloned() else {
            return; // refused at start; a config job cannot empty every list
        };
        let (path, body, carried_jobs, carried_events_seq) = match self.phase {
            Phase::Register => (REGISTER_PATH, self.register_body(), Vec::new(), 0),
            Phase::Report => {
                let (body, carried) = self.status_body(now, wall_s);
                self.last_report_sent_at = Some(now);
                let events_seq = self.meta.events.last().map_or(0, |e| e.seq);
                (STATUS_PATH, body, carried, events_seq)
            }
        };
        self.report_wanted = false;
        self.in_flight = Some(InFlight {
            phase: self.phase,
            server: server.clone(),
            carried_jobs,
            carried_events_seq,
        });
        let headers = match (&self.meta.key, &self.meta.secret) {
            (Some(key), Some(secret)) => crate::sign::headers(key, secret, wall_s, path, &body),
            _ => Vec::new(),
        };
        effects.push(Effect::Send {
            server,
            path,
            body,
            headers,
        });
    }

    fn register_body(&self) -> Vec<u8> {
        let request = RegisterRequest {
            hostname: &self.facts.hostname,
            agentsn: &self.meta.agentsn,
            version: &self.facts.version,
            host: &self.facts.host,
        };
        serde_json::to_vec(&request).unwrap_or_default()
    }

    fn status_body(&self, now: Millis, wall_s: i64) -> (Vec<u8>, Vec<String>) {
        let pending: Vec<JobResult<'_>> = self
            .meta
            .jobs
            .iter()
            .filter(|record| !record.delivered && record.state == JobState::Finished)
            .map(|record| JobResult {
                id: &record.id,
                errcode: record.errcode,
                message: &record.message,
            })
            .collect();
        let carried = pending.iter().map(|r| r.id.to_string()).collect();
        let request = StatusRequest {
            hostname: &self.facts.hostname,
            agentsn: &self.meta.agentsn,
            version: &self.facts.version,
            uptime: now.saturating_sub(self.started_at) / 1000,
            timestamp: wall_s,
            step: self.meta.step_s,
            agents: self.agents.clone(),
            jobs: pending,
            events: self.meta.events.iter().map(|e| &e.event).collect(),
        };
        // Serialising plain strings and integers cannot fail.
        (serde_json::to_vec(&request).unwrap_or_default(), carried)
    }

    /// Takes the outcome of the exchange in flight.
    pub fn on_outcome(&mut self, now: Millis, outcome: Outcome, effects: &mut Vec<Effect>) {
        let Some(flight) = self.in_flight.take() else {
            warn!("an exchange outcome arrived with no exchange in flight; ignored");
            return;
        };
        let verdict = match (flight.phase, outcome) {
            (_, Outcome::Failed(err)) => Verdict::Failed(err),
            (
                _,
                Outcome::Answer {
                    status: 401 | 403 | 404 | 410,
                    ..
                },
            ) if flight.phase == Phase::Report => Verdict::Reregister,
            (
                _,
                Outcome::Answer {
                    status: status @ (429 | 503),
                    retry_after_s: Some(secs),
                    ..
                },
            ) => {
                debug!(
                    "{} asks to retry after {secs} s (HTTP {status})",
                    flight.server
                );
                Verdict::RetryAfter(secs)
            }
            (_, Outcome::Answer { status, .. }) if status != 200 => {
                Verdict::Failed(format!("HTTP {status}"))
            }
            (Phase::Register, Outcome::Answer { body, .. }) => self.on_registered(&body, effects),
            (Phase::Report, Outcome::Answer { body, .. }) => {
                self.on_reported(&body, &flight, effects)
            }
        };
        match verdict {
            Verdict::Done => {
                self.recovered(&flight.server);
                self.servers.succeeded();
                let next = match flight.phase {
                    Phase::Register => now, // the first report follows at once
                    Phase::Report if self.report_wanted => {
                        now.saturating_add(self.limits.report_gap_min_ms)
                    }
                    Phase::Report => now.saturating_add(self.step_delay_ms()),
                };
                self.schedule_exchange(next);
            }
            Verdict::Reregister => {
                self.phase = Phase::Register;
                self.reregistrations += 1;
                info!(
                    "{} does not accept agent {} any more: registering again",
                    flight.server, self.meta.agentsn
                );
                // A server that accepts the registration but keeps rejecting the
                // reports must not spin us: after the first, back off.
                let delay = if self.reregistrations > 1 {
                    self.backoff_delay_ms(self.reregistrations - 1)
                } else {
                    0
                };
                self.schedule_exchange(now.saturating_add(delay));
            }
            Verdict::RetryAfter(secs) => {
                let wait_ms = secs.min(self.meta.step_s).saturating_mul(1000);
                let at = now.saturating_add(wait_ms);
                self.not_before = Some(at);
                self.schedule_exchange(at);
            }
            Verdict::Failed(err) => self.failed(now, &flight, err),
        }
    }

    fn on_registered(&mut self, body: &[u8], effects: &mut Vec<Effect>) -> Verdict {
        let answer = match wire::parse_register_answer(body) {
            Ok(answer) => answer,
            Err(err) => return Verdict::Failed(err.to_string()),
        };
        for field in &answer.ignored {
            warn!("register answer: ignored {field}");
        }
        if answer.status != 0 {
            return Verdict::Failed(format!(
                "registration rejected with status {}",
                answer.status
            ));
        }
        if let Some(sn) = answer.agentsn.filter(|sn| *sn != self.meta.agentsn) {
            info!(
                "server resolved an SN conflict: agent {} is now {sn}",
                self.meta.agentsn
            );
            self.meta.agentsn = sn;
            self.meta.registered = false;
        }
        if let Some(tags) = answer.tags {
            self.meta.tags = tags;
        }
        if let Some((key, secret)) = answer.credentials {
            self.meta.key = Some(key);
            self.meta.secret = Some(secret);
        }
        if let Some(step) = answer.step_s {
            self.meta.step_s = step.clamp(self.limits.step_min_s, self.limits.step_max_s);
        }
        info!(
            "registered as {} (step {} s)",
            self.meta.agentsn, self.meta.step_s
        );
        self.phase = Phase::Report;
        effects.push(Effect::SaveMeta);
        Verdict::Done
    }

    fn on_reported(
        &mut self,
        body: &[u8],
        flight: &InFlight,
        effects: &mut Vec<Effect>,
    ) -> Verdict {
        let answer = match wire::parse_status_answer(body) {
            Ok(answer) => answer,
            Err(err) => return Verdict::Failed(err.to_string()),
        };
        self.reregistrations = 0;
        let mut changed = false;
        if !self.meta.registered {
            self.meta.registered = true;
            changed = true;
        }
        for record in self.meta.jobs.iter_mut() {
            if !record.delivered && flight.carried_jobs.contains(&record.id) {
                record.delivered = true;
                changed = true;
            }
        }
        let events_before = self.meta.events.len();
        self.meta
            .events
            .retain(|e| e.seq > flight.carried_events_seq);
        changed |= self.meta.events.len() != events_before;
        if !answer.jobs.is_empty() {
            self.run_jobs(answer.jobs);
            changed = true;
        }
        if changed {
            effects.push(Effect::SaveMeta);
        }
        Verdict::Done
    }

    /// Validates the jobs of one answer, in order of arrival: a `config` job runs
    /// at once; the others join the queue for the edge (`take_job`). A repeated id
    /// is not run again; its result, once there is one, is reported again.
    fn run_jobs(&mut self, jobs: Vec<serde_json::Value>) {
        let max = self.limits.jobs_per_answer_max;
        let mut refused = 0usize;
        for (index, value) in jobs.into_iter().enumerate() {
            // A repeated id first: it is never run twice, nor answered twice.
            let id = jobs::job_id(&value);
            if let Some(record) = id
                .as_deref()
                .and_then(|id| jobs::find_record(&mut self.meta, id))
            {
                debug!("job {} was already received: not run again", record.id);
                if record.state == JobState::Finished {
                    record.delivered = false;
                    self.report_wanted = true;
                }
                continue;
            }
            if index >= max {
                if let Some(id) = id {
                    refused += 1;
                    self.record_finished(id, ErrCode::Internal, "queue full".to_string());
                }
                continue;
            }
            match jobs::parse_job(&value, &self.limits, self.facts.host.cpus) {
                Ok((id, Job::Config { svrlist, step_s })) => {
                    let message = self.configure(svrlist, step_s);
                    self.record_finished(id, ErrCode::Success, message);
                    self.report_wanted = true;
                }
                Ok((id, job)) if self.queue.len() < self.limits.jobs_queue_max => {
                    info!("job {id} queued: {}", describe(&job));
                    self.record(
                        id.clone(),
                        JobState::Received,
                        ErrCode::Success,
                        String::new(),
                    );
                    self.queue.push_back((id, job));
                }
                Ok((id, _)) => {
                    refused += 1;
                    self.record_finished(id, ErrCode::Internal, "queue full".to_string());
                }
                Err(rejected) => match rejected.id {
                    Some(id) => {
                        warn!("job {id} rejected: {}", rejected.message);
                        self.record_finished(id, ErrCode::Invalid, rejected.message);
                        self.report_wanted = true;
                    }
                    None => warn!("job without a usable id ignored: {}", rejected.message),
                },
            }
        }
        if refused > 0 {
            // One line for the whole answer, not one per job.
            warn!(
                "{refused} job(s) refused with \"queue full\": {} wait, at most {} per answer",
                self.limits.jobs_queue_max, max
            );
            self.report_wanted = true;
        }
    }

    pub fn queued_jobs(&self) -> usize {
        self.queue.len()
    }

    /// The next queued job for the edge to carry out, marked running.
    pub fn take_job(&mut self, effects: &mut Vec<Effect>) -> Option<(String, Job)> {
        let (id, job) = self.queue.pop_front()?;
        if let Some(record) = jobs::find_record(&mut self.meta, &id) {
            record.state = JobState::Running;
        }
        effects.push(Effect::SaveMeta);
        Some((id, job))
    }

    /// The edge finished a job: its result is journaled and reported soon.
    pub fn job_done(
        &mut self,
        now: Millis,
        id: &str,
        code: ErrCode,
        message: String,
        effects: &mut Vec<Effect>,
    ) {
        info!("job {id}: errcode {}: {message}", code as u32);
        jobs::finish(&mut self.meta, id, code as u32, message);
        effects.push(Effect::SaveMeta);
        self.request_report(now);
    }

    /// Desired states of the children, kept in the metafile.
    pub fn set_stopped(&mut self, name: &str, stopped: bool, effects: &mut Vec<Effect>) {
        let changed = if stopped {
            self.meta.stopped.insert(name.to_string())
        } else {
            self.meta.stopped.remove(name)
        };
        if changed {
            effects.push(Effect::SaveMeta);
        }
    }

    fn configure(&mut self, svrlist: Option<Vec<ServerAddr>>, step_s: Option<u64>) -> String {
        let mut said = Vec::new();
        if let Some(list) = svrlist {
            self.meta.servers_server = crate::addr::format_list(&list);
            said.push(format!("server list {:?}", self.meta.servers_server));
            self.servers.set_server_given(list);
        }
        if let Some(step) = step_s {
            self.meta.step_s = step;
            said.push(format!("step {step} s"));
        }
        info!("config job: {}", said.join(", "));
        "success".to_string()
    }

    fn record_finished(&mut self, id: String, code: ErrCode, message: String) {
        self.record(id, JobState::Finished, code, message);
    }

    fn record(&mut self, id: String, state: JobState, code: ErrCode, message: String) {
        let dropped = jobs::record(
            &mut self.meta,
            id,
            state,
            code as u32,
            message,
            self.limits.job_ids_remembered,
        );
        if dropped > 0 {
            self.results_dropped = self.results_dropped.saturating_add(dropped as u64);
            // Logged once per power of two, not once per job.
            if self.results_dropped.is_power_of_two() {
                warn!(
                    "job journal full: {} undelivered result(s) dropped so far",
                    self.results_dropped
                );
            }
        }
    }

    fn failed(&mut self, now: Millis, flight: &InFlight, err: String) {
        self.failed_attempts += 1;
        let what = match flight.phase {
            Phase::Register => "register",
            Phase::Report => "status",
        };
        debug!("{what} to {} failed: {err}", flight.server);
        self.last_error = format!("{}: {err}", flight.server);
        if !self.servers.failed() {
            self.schedule_exchange(now); // next server at once
            return;
        }
        self.failed_rounds = self.failed_rounds.saturating_add(1);
        let delay = self.backoff_delay_ms(self.failed_rounds);
        warn!(
            "{what}: every server failed ({} attempt(s) failed so far; last: {}); next round in {:.1} s",
            self.failed_attempts,
            self.last_error,
            delay as f64 / 1000.0
        );
        self.schedule_exchange(now.saturating_add(delay));
    }

    fn recovered(&mut self, server: &ServerAddr) {
        if self.failed_attempts > 0 {
            info!(
                "{server} answered again after {} failed attempt(s)",
                self.failed_attempts
            );
        }
        self.failed_rounds = 0;
        self.failed_attempts = 0;
    }

    /// Backoff after `round` failed rounds: 1 s doubling, ± 50 %, capped at
    /// min(step, 300 s) (section 4).
    fn backoff_delay_ms(&mut self, round: u32) -> Millis {
        let cap_ms = self
            .meta
            .step_s
            .min(self.limits.backoff_cap_s)
            .saturating_mul(1000);
        let doublings = round.saturating_sub(1).min(40);
        let base = self
            .limits
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(cap_ms);
        self.rng
            .jitter(base, self.limits.backoff_jitter_pct)
            .min(cap_ms)
    }

    fn step_delay_ms(&mut self) -> Millis {
        let step_ms = self.meta.step_s.saturating_mul(1000);
        self.rng.jitter(step_ms, self.limits.step_jitter_pct)
    }

    fn schedule_exchange(&mut self, at: Millis) {
        if let Some((id, _)) = self.exchange_timer.take() {
            self.wheel.cancel(id);
        }
        self.exchange_timer = Some((self.wheel.insert(at, Timer::Exchange), at));
    }

    fn schedule_exchange_no_later_than(&mut self, at: Millis) {
        match self.exchange_timer {
            Some((_, pending_at)) if pending_at <= at => {}
            _ => self.schedule_exchange(at),
        }
    }
}

#[cfg(test)]
#[path = "agent_tests.rs"]
mod tests;
