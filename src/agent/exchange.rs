//! One exchange with a server: the register or status request, and how its answer
//! is judged and taken (identity, credentials, step, acknowledgements, new jobs).

use super::outage::Trouble;
use super::{pacing, Core, Effect, InFlight, Outcome, Phase, REGISTER_PATH, STATUS_PATH};
use crate::event_queue::Carried;
use crate::wheel::Millis;
use crate::wire::{self, AgentStatus, JobResult, RegisterRequest, StatusRequest};
use log::{debug, info, warn};

/// How an exchange is judged, once its answer is read.
enum Verdict {
    Done,
    Reregister,
    RetryAfter(u16, u64),
    Failed(String, Trouble),
}

impl Core {
    pub(super) fn start_exchange(&mut self, now: Millis, wall_ms: i64, effects: &mut Vec<Effect>) {
        if self.in_flight.is_some() {
            return;
        }
        match pacing::next_request_at(&self.asks(), self.limits.report_gap_min_ms) {
            Some(at) if at <= now => {}
            _ => return self.reschedule(), // not due (yet): the timer says when
        }
        let Some(server) = self.servers.current().cloned() else {
            return; // refused at start; a config job cannot empty every list
        };
        let wall_s = wall_ms.div_euclid(1000);
        let mut carried_agents = None;
        let (path, body, carried_jobs, carried_events) = match self.phase {
            Phase::Register => (
                REGISTER_PATH,
                self.register_body(),
                Vec::new(),
                Carried::default(),
            ),
            Phase::Report => {
                let agents = self.agents_to_send();
                carried_agents = agents.as_ref().map(|a| without_uptimes(a));
                let (body, carried) = self.status_body(now, wall_s, agents);
                (STATUS_PATH, body, carried, self.meta.events.carried())
            }
        };
        // Whatever asked is answered by this request (a scheduled slot still
        // ahead stays: a prompt report does not move the phase).
        self.schedule.sent(now);
        self.exchange_at = None;
        self.in_flight = Some(InFlight {
            phase: self.phase,
            server: server.clone(),
            carried_jobs,
            carried_events,
            sent_at: now,
            sent_wall_ms: wall_ms,
            carried_agents,
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

    /// The report, and the results it carries. A result goes out only once it is
    /// on disk (write-ahead); a refusal, which changed nothing, at once.
    /// The children for the next report: all of them, but nothing in lazy mode while
    /// they are as the last report answered 200 described them (uptimes aside).
    fn agents_to_send(&self) -> Option<Vec<AgentStatus>> {
        let unchanged = self.meta.report_lazy
            && self
                .agents_acked
                .as_ref()
                .is_some_and(|acked| *acked == without_uptimes(&self.agents));
        (!unchanged).then(|| self.agents.clone())
    }

    fn status_body(
        &self,
        now: Millis,
        wall_s: i64,
        agents: Option<Vec<AgentStatus>>,
    ) -> (Vec<u8>, Vec<(String, u32, String)>) {
        let pending: Vec<JobResult<'_>> = (self.meta.journal.to_deliver())
            .map(|record| JobResult {
                id: &record.id,
                errcode: record.errcode,
                message: &record.message,
            })
            .collect();
        let carried = pending
            .iter()
            .map(|r| (r.id.to_string(), r.errcode, r.message.to_string()))
            .collect();
        let request = StatusRequest {
            hostname: &self.facts.hostname,
            agentsn: &self.meta.agentsn,
            version: &self.facts.version,
            uptime: now.saturating_sub(self.started_at) / 1000,
            timestamp: wall_s,
            step: self.meta.step_s,
            agents,
            jobs: pending,
            events: self.report_events(),
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
        let answered = matches!(outcome, Outcome::Answer { .. });
        if answered && flight.phase == Phase::Report {
            self.schedule.last_answered_at = Some(flight.sent_at);
        }
        let step_before = self.meta.step_s;
        let verdict = match (flight.phase, outcome) {
            (_, Outcome::Failed(err)) => Verdict::Failed(err, Trouble::Failed),
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
                    retry_after_s,
                    ..
                },
            ) => match retry_after_s {
                Some(secs) => Verdict::RetryAfter(status, secs),
                None => Verdict::Failed(format!("HTTP {status}"), Trouble::Throttled),
            },
            (_, Outcome::Answer { status, .. }) if status != 200 => {
                Verdict::Failed(format!("HTTP {status}"), Trouble::Failed)
            }
            (Phase::Register, Outcome::Answer { body, .. }) => self.on_registered(&body, effects),
            (Phase::Report, Outcome::Answer { body, .. }) => {
                self.on_reported(&body, &flight, effects)
            }
        };
        match verdict {
            Verdict::Done => {
                // A registration in a storm of rejected reports is no recovery.
                if flight.phase == Phase::Report || self.reregistrations == 0 {
                    self.recovered(now, &flight.server);
                }
                self.servers.succeeded();
                self.schedule.retry_at = None;
                match flight.phase {
                    Phase::Register => {
                        // The first report follows at once, exempt from the gap.
                        self.schedule.scheduled_at = Some(now);
                        self.schedule.scheduled_is_slot = false;
                        self.schedule.exempt_next = true;
                    }
                    Phase::Report => {
                        // A prompt report leaves the next slot where it is.
                        let keep = self.meta.step_s == step_before
                            && self.schedule.scheduled_is_slot
                            && self.schedule.scheduled_at.is_some_and(|at| at > now);
                        if !keep {
                            self.schedule.scheduled_at = Some(self.next_phase_slot(now, &flight));
                            self.schedule.scheduled_is_slot = true;
                        }
                        if self.schedule.report_wanted {
                            self.schedule.prompt_at = Some(now);
                        }
                    }
                }
            }
            Verdict::Reregister => {
                self.phase = Phase::Register;
                self.reregistrations += 1;
                self.schedule.scheduled_at = None;
                let detail = format!(
                    "{} does not accept agent {}: registering again",
                    flight.server, self.meta.agentsn
                );
                // A server that accepts the registration but keeps rejecting the
                // reports must not spin us: after the first, back off, and tell
                // the storm as a failure that repeats.
                let delay = if self.reregistrations > 1 {
                    self.log_trouble(now, Trouble::Failed, &detail);
                    self.backoff_delay_ms(self.reregistrations - 1)
                } else {
                    info!("{detail}");
                    0
                };
                self.schedule.retry_at = Some(now.saturating_add(delay));
            }
            Verdict::RetryAfter(status, secs) => self.throttled(now, &flight, status, secs),
            Verdict::Failed(err, trouble) => self.failed(now, &flight, err, trouble),
        }
        // The next server after a connection failure is exempt from the gap.
        self.schedule.exempt_next |= !answered;
        self.reschedule();
    }

    fn on_registered(&mut self, body: &[u8], effects: &mut Vec<Effect>) -> Verdict {
        let answer = match wire::parse_register_answer(body) {
            Ok(answer) => answer,
            Err(err) => return Verdict::Failed(err.to_string(), Trouble::Failed),
        };
        for field in &answer.ignored {
            warn!("register answer: ignored {field}");
        }
        if answer.status != 0 {
            return Verdict::Failed(
                format!("registration rejected with status {}", answer.status),
                Trouble::Failed,
            );
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
        let line = format!(
            "registered as {} (step {} s)",
            self.meta.agentsn, self.meta.step_s
        );
        if self.reregistrations > 1 {
            debug!("{line}"); // a storm of rejected reports is told by the outage log
        } else {
            info!("{line}");
        }
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
            Err(err) => return Verdict::Failed(err.to_string(), Trouble::Failed),
        };
        self.reregistrations = 0;
        self.reports_answered = self.reports_answered.saturating_add(1);
        let mut changed = false;
        if !self.meta.registered {
            self.meta.registered = true;
            changed = true;
        }
        changed |=
            (self.meta.journal).acknowledge(&flight.carried_jobs, self.limits.job_ids_remembered);
        // Drops counted while the report was on its way stay, for the next one.
        changed |= self.meta.events.acknowledge(flight.carried_events);
        if let Some(agents) = &flight.carried_agents {
            self.agents_acked = Some(agents.clone());
        }
        if let Some(why) = &answer.ignored {
            warn!("status answer: {why}; the report mode stays as it is");
        }
        if let Some(lazy) = answer.lazy.filter(|&lazy| lazy != self.meta.report_lazy) {
            let mode = if lazy { "lazy" } else { "full" };
            info!("the server asks for {mode} reports");
            self.meta.report_lazy = lazy;
            changed = true;
        }
        if !answer.jobs.is_empty() {
            self.run_jobs(answer.jobs);
            changed = true;
        }
        if changed {
            effects.push(Effect::SaveMeta);
        }
        Verdict::Done
    }
}

/// The children as compared between reports: their uptimes left out.
fn without_uptimes(agents: &[AgentStatus]) -> Vec<AgentStatus> {
    agents
        .iter()
        .map(|agent| AgentStatus {
            uptime: 0,
            ..agent.clone()
        })
        .collect()
}
