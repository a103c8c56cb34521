//! The jobs of the server's answers: validation, the `config` job run at once, the
//! others queued for the edge, and their results, all in the journal
//! (`crate::journal`, whose rules these follow).
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
use crate::journal::{Bounds, JobState};
use crate::meta::ChildUpgrade;
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
    fn bounds(&self) -> Bounds {
        Bounds::new(&self.limits)
    }

    /// Validates the jobs of one answer, in order of arrival, and enters them in
    /// the journal as received: a `config` job runs once its receipt is on disk
    /// (`saved`); the others join the queue for the edge (`take_job`). A repeated
    /// id is not run again; its result, once there is one, is reported again.
    pub(super) fn run_jobs(&mut self, jobs: Vec<serde_json::Value>) {
        let max = self.limits.jobs_per_answer_max;
        let bounds = self.bounds();
        let mut refused = 0usize;
        let dropped_before = self.meta.journal.dropped();
        for (index, value) in jobs.into_iter().enumerate() {
            // A repeated id first: it is never run twice, nor answered twice.
            let id = jobs::job_id(&value);
            if let Some(again) = (id.as_deref()).and_then(|id| self.meta.journal.received_again(id))
            {
                debug!(
                    "job {} was already received: not run again",
                    id.unwrap_or_default()
                );
                self.schedule.report_wanted |= again;
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
                Ok((id, job)) if !self.meta.journal.queue_full(bounds) => {
                    let line = describe(&job);
                    if self.meta.journal.enqueue(id.clone(), job, bounds) {
                        info!("job {id} queued: {line}");
                    } else {
                        self.drop_results(1);
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
        let dropped = self.meta.journal.dropped() - dropped_before;
        if dropped > 0 {
            warn!(
                "{dropped} job result(s) dropped: {} results at most wait for delivery",
                self.limits.pending_results_max
            );
        }
    }

    pub fn queued_jobs(&self) -> usize {
        self.meta.journal.queued()
    }

    /// The next queued job for the edge to carry out, marked running, once its
    /// receipt is on disk. The edge writes the metafile again before starting it
    /// (write-ahead): if that fails, `save_failed` refuses it.
    pub fn take_job(&mut self, effects: &mut Vec<Effect>) -> Option<(String, Job)> {
        let taken = self.meta.journal.take()?;
        effects.push(Effect::SaveMeta);
        Some(taken)
    }

    /// The edge wrote the metafile: everything in it is on disk.
    pub fn saved(&mut self) {
        self.meta.journal.saved();
    }

    /// Runs a `config` job at once, so that the next report is scheduled with
    /// it; `save_failed` undoes it if its receipt cannot be written. Nothing of it
    /// leaves the core before the metafile is written.
    fn run_config(&mut self, id: String, svrlist: Option<Vec<ServerAddr>>, step_s: Option<u64>) {
        (self.meta.journal).config_run(&id, &self.meta.servers_server, self.meta.step_s);
        let message = self.configure(svrlist, step_s);
        (self.meta.journal).finish(&id, ErrCode::Success as u32, &message);
        self.schedule.report_wanted = true;
    }

    /// The edge could not write the metafile (`why`): every job whose receipt is
    /// not on disk is refused with errcode 5, not remembered, and reported.
    pub fn save_failed(&mut self, now: Millis, why: &str) {
        let message = format!("not run: cannot write the metafile: {why}");
        let refused = self.meta.journal.refuse_unsaved(&message);
        if let Some((servers, step_s)) = refused.config {
            info!("config job(s) undone: their receipt could not be written");
            self.meta.step_s = step_s;
            // Persisted lists were written by us, from validated lists.
            self.servers
                .set_server_given(crate::addr::parse_list(&servers).unwrap_or_default());
            self.meta.servers_server = servers;
        }
        if refused.ids.is_empty() {
            return;
        }
        if (self.meta.child_upgrade.as_ref()).is_some_and(|u| refused.ids.contains(&u.id)) {
            self.meta.child_upgrade = None; // it never started
        }
        warn!("{} job(s) refused: {message}", refused.ids.len());
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
        self.meta.journal.finish(id, code as u32, &message);
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
    /// deliver, it is not entered (a job not run) and counted as dropped, in a
    /// `dropped` event of the reports.
    fn record(
        &mut self,
        id: String,
        state: JobState,
        (code, message): (ErrCode, &str),
        refused: bool,
    ) -> bool {
        let bounds = self.bounds();
        let result = (code as u32, message);
        if (self.meta.journal).enter(id, state, result, refused, bounds) {
            return true;
        }
        self.drop_results(1);
        false
    }
}
