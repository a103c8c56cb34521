//! The jobs of the server's answers: validation, the `config` job run at once, the
//! queue of the others for the edge, and their results in the bounded journal.
//!
//! Write-ahead (docs/protocol.md section 7): a job is entered in the journal as
//! received, and runs only once that receipt is on disk: the edge tells the core
//! with `saved` after every successful write of the metafile, and with
//! `save_failed` after a failed one, which refuses (errcode 5, not remembered) every
//! job whose receipt is not on disk. A result is reported only once it is on disk,
//! so nothing a server was told is lost in a crash; refusals carry no state and are
//! reported at once. Refusals (a full queue too) are not remembered as executed:
//! sent again, the job runs, and its later result is the one that counts.

use super::{Core, Effect};
use crate::addr::ServerAddr;
use crate::jobs::{self, ErrCode, Job};
use crate::meta::{ChildUpgrade, JobState};
use crate::wheel::Millis;
use log::{debug, info, warn};

/// The result of a job refused for want of room in the queue (section 7).
const QUEUE_FULL: &str = "queue full";

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
        Job::SelfUpgrade(job) => format!("self_upgrade from {}", jobs::masked_url(&job.url)),
    }
}

impl Core {
    /// Validates the jobs of one answer, in order of arrival, and enters them in
    /// the journal as received: a `config` job runs once its receipt is on disk
    /// (`saved`); the others join the queue for the edge (`take_job`). A repeated
    /// id is not run again; its result, once there is one, is reported again.
    pub(super) fn run_jobs(&mut self, jobs: Vec<serde_json::Value>) {
        let max = self.limits.jobs_per_answer_max;
        let mut refused = 0usize;
        let dropped_before = self.results_dropped;
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
                    self.schedule.report_wanted = true;
                }
                continue;
            }
            if index >= max {
                if let Some(id) = id {
                    refused += 1;
                    self.refuse_new(id, ErrCode::Internal, QUEUE_FULL);
                }
                continue;
            }
            match jobs::parse_job(&value, &self.limits, self.facts.host.cpus) {
                Ok((id, Job::Config { svrlist, step_s })) => {
                    let received = (ErrCode::Success, "");
                    if self.record(id.clone(), JobState::Received, received, false) {
                        self.run_config(id, svrlist, step_s);
                    }
                }
                Ok((id, job)) if self.queue.len() < self.limits.jobs_queue_max => {
                    if self.record(
                        id.clone(),
                        JobState::Received,
                        (ErrCode::Success, ""),
                        false,
                    ) {
                        info!("job {id} queued: {}", describe(&job));
                        if matches!(job, Job::SelfUpgrade(_)) {
                            if let Some(record) = jobs::find_record(&mut self.meta, &id) {
                                record.action = Some(jobs::SELF_UPGRADE_ACTION.to_string());
                            }
                        }
                        self.queue.push_back((id, job));
                    }
                }
                Ok((id, _)) => {
                    refused += 1;
                    self.refuse_new(id, ErrCode::Internal, QUEUE_FULL);
                }
                Err(rejected) => match rejected.id {
                    Some(id) => {
                        warn!("job {id} rejected: {}", rejected.message);
                        let message = rejected.message.as_str();
                        self.record(id, JobState::Finished, (ErrCode::Invalid, message), false);
                        self.schedule.report_wanted = true;
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
            self.schedule.report_wanted = true;
        }
        if self.results_dropped > dropped_before {
            warn!(
                "{} job result(s) dropped: {} results at most wait for delivery",
                self.results_dropped - dropped_before,
                self.limits.pending_results_max
            );
        }
    }

    pub fn queued_jobs(&self) -> usize {
        self.queue.len()
    }

    /// The next queued job for the edge to carry out, marked running, once its
    /// receipt is on disk. The edge writes the metafile again before starting it
    /// (write-ahead): if that fails, `save_failed` refuses it.
    pub fn take_job(&mut self, effects: &mut Vec<Effect>) -> Option<(String, Job)> {
        let (id, _) = self.queue.front()?;
        let record = jobs::find_record(&mut self.meta, id)?;
        if record.unsaved {
            return None; // its receipt is not on disk yet
        }
        record.state = JobState::Running;
        record.unsaved = true;
        effects.push(Effect::SaveMeta);
        self.queue.pop_front()
    }

    /// The edge wrote the metafile: everything in it is on disk.
    pub fn saved(&mut self) {
        for record in self.meta.jobs.iter_mut() {
            record.unsaved = false;
        }
        self.config_undo = None;
    }

    /// Runs a `config` job at once, so that the next report is scheduled with
    /// it; `save_failed` undoes it if its receipt cannot be written. Nothing of it
    /// leaves the core before the metafile is written.
    fn run_config(&mut self, id: String, svrlist: Option<Vec<ServerAddr>>, step_s: Option<u64>) {
        let before = (self.meta.servers_server.clone(), self.meta.step_s);
        self.config_undo
            .get_or_insert_with(|| (before, Vec::new()))
            .1
            .push(id.clone());
        let message = self.configure(svrlist, step_s);
        jobs::finish(&mut self.meta, &id, ErrCode::Success as u32, message);
        self.schedule.report_wanted = true;
    }

    /// The edge could not write the metafile (`why`): every job whose receipt is
    /// not on disk is refused with errcode 5, not remembered, and reported.
    pub fn save_failed(&mut self, now: Millis, why: &str) {
        let message = format!("not run: cannot write the metafile: {why}");
        let mut refused = Vec::new();
        for record in self.meta.jobs.iter() {
            let not_begun = matches!(record.state, JobState::Received | JobState::Running);
            if record.unsaved && not_begun && !record.refused {
                refused.push(record.id.clone());
            }
        }
        if let Some(((servers, step_s), ids)) = self.config_undo.take() {
            info!("config job(s) undone: their receipt could not be written");
            self.meta.step_s = step_s;
            // Persisted lists were written by us, from validated lists.
            self.servers
                .set_server_given(crate::addr::parse_list(&servers).unwrap_or_default());
            self.meta.servers_server = servers;
            refused.extend(ids);
        }
        if refused.is_empty() {
            return;
        }
        self.queue.retain(|(id, _)| !refused.contains(id));
        for id in &refused {
            jobs::refuse(
                &mut self.meta,
                id,
                ErrCode::InstallFailed as u32,
                message.clone(),
            );
            if self
                .meta
                .child_upgrade
                .as_ref()
                .is_some_and(|u| u.id == *id)
            {
                self.meta.child_upgrade = None; // it never started
            }
        }
        warn!("{} job(s) refused: {message}", refused.len());
        self.request_report(now);
    }

    /// Records what an install or upgrade that is about to start must restore if
    /// BootAgent stops before its result is on disk.
    pub fn begin_upgrade(&mut self, upgrade: ChildUpgrade, effects: &mut Vec<Effect>) {
        self.meta.child_upgrade = Some(upgrade);
        effects.push(Effect::SaveMeta);
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
        // The result and the end of the upgrade go to disk in one write.
        if self.meta.child_upgrade.as_ref().is_some_and(|u| u.id == id) {
            self.meta.child_upgrade = None;
        }
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

    /// A job refused before it was received: its result is reported, its id not
    /// remembered.
    fn refuse_new(&mut self, id: String, code: ErrCode, message: &str) {
        self.record(id, JobState::Finished, (code, message), true);
    }

    /// Enters a job in the journal; past `pending_results_max` results to
    /// deliver, it is not entered (a job not run) and counted as dropped.
    fn record(
        &mut self,
        id: String,
        state: JobState,
        result: (ErrCode, &str),
        refused: bool,
    ) -> bool {
        let entered = jobs::record(
            &mut self.meta,
            id,
            state,
            (result.0 as u32, result.1.to_string()),
            refused,
            self.limits.pending_results_max,
        );
        if entered {
            jobs::forget_delivered(&mut self.meta, self.limits.job_ids_remembered);
            return true;
        }
        self.results_dropped = self.results_dropped.saturating_add(1);
        self.drop_results(1);
        false
    }
}
