//! The jobs of the server's answers: validation, the `config` job run at once, the
//! queue of the others for the edge, and their results in the bounded journal.

use super::{Core, Effect};
use crate::addr::ServerAddr;
use crate::jobs::{self, ErrCode, Job};
use crate::meta::JobState;
use crate::wheel::Millis;
use log::{debug, info, warn};

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
    /// Validates the jobs of one answer, in order of arrival: a `config` job runs
    /// at once; the others join the queue for the edge (`take_job`). A repeated id
    /// is not run again; its result, once there is one, is reported again.
    pub(super) fn run_jobs(&mut self, jobs: Vec<serde_json::Value>) {
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
}
