//! The job journal (docs/protocol.md section 7): every job received, where it is
//! and its result until a server acknowledged it, kept in the metafile (`jobs`);
//! and, in memory only, the jobs waiting for the edge, what the `config` jobs not
//! yet on disk changed, and how many results were dropped past the bound.
//!
//! Its rules, exactly once:
//! - an id received is never run twice; a refusal (the metafile could not be
//!   written, the queue was full) is not remembered, so that sent again it runs;
//! - at most `results_max` results wait for delivery, jobs not finished counted
//!   in: past that a job is not entered (not run) and counted dropped;
//! - a result is reported once it is on disk (a refusal at once), and a report
//!   acknowledged takes away exactly the results it carried;
//! - delivered ids are forgotten oldest delivered first past `ids_remembered`,
//!   never one whose result is undelivered;
//! - a queued job goes to the edge only once its receipt is on disk;
//! - a job queued or running when BootAgent stopped is finished failed at start.
//!
//! Pure: the core says when the metafile was written (`saved`) or could not be
//! (`refuse_unsaved`).

use crate::jobs::{ErrCode, Job, SELF_UPGRADE_ACTION};
use crate::limits::Limits;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// One job received and its result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub errcode: u32,
    pub message: String,
    /// True once a report carrying this result got an HTTP 200 answer.
    #[serde(default)]
    pub delivered: bool,
    /// Where the job is; only a finished job has a result to deliver.
    #[serde(default)]
    pub state: JobState,
    /// Not executed: refused before it ran (the metafile could not be written,
    /// the queue was full). Such an id is not remembered: sent again, it runs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refused: bool,
    /// Changed since the metafile was last written. A result is reported only
    /// once it is on disk (a refusal aside), so that what a server was told
    /// survives a crash.
    #[serde(skip)]
    pub unsaved: bool,
    /// `self_upgrade` for a self-upgrade: interrupted, it ends rolled back (errcode 6),
    /// never in between (section 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The journal's states of a job (section 7, exactly once).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Accepted and queued, not started.
    Received,
    /// Being carried out.
    Running,
    #[default]
    Finished,
}

/// The journal's bounds, from `Limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Jobs waiting for the edge (`jobs_queue_max`).
    pub queue_max: usize,
    /// Results waiting for delivery, jobs not finished counted in
    /// (`pending_results_max`).
    pub results_max: usize,
    /// Delivered ids remembered against a second run (`job_ids_remembered`).
    pub ids_remembered: usize,
}

impl Bounds {
    pub fn new(limits: &Limits) -> Self {
        Bounds {
            queue_max: limits.jobs_queue_max,
            results_max: limits.pending_results_max,
            ids_remembered: limits.job_ids_remembered,
        }
    }
}

/// The server list and step before the `config` jobs whose receipt is not on
/// disk yet, and their ids: what a failed write of the metafile undoes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigUndo {
    pub servers: String,
    pub step_s: u64,
    pub ids: Vec<String>,
}

/// What a failed write of the metafile refused.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Refused {
    /// The jobs refused, `config` jobs included.
    pub ids: Vec<String>,
    /// The server list and step to restore: `config` jobs were undone.
    pub config: Option<(String, u64)>,
}

/// The journal: `jobs` of the metafile (flattened into it), and what lives only
/// in memory beside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// The jobs received: those delivered first, in order of delivery, then the
    /// others in order of arrival (`forget_delivered` relies on it).
    #[serde(default, rename = "jobs")]
    pub records: Vec<JobRecord>,
    /// Jobs waiting for the edge, in order of arrival (`queue_max` at most).
    #[serde(skip)]
    queue: VecDeque<(String, Job)>,
    /// What the `config` jobs not yet on disk changed.
    #[serde(skip)]
    config_undo: Option<ConfigUndo>,
    /// Results dropped past `results_max` since this image started, for the log.
    #[serde(skip)]
    dropped: u64,
}

/// The entry of a job received (and not refused), if any.
fn find<'r>(records: &'r mut [JobRecord], id: &str) -> Option<&'r mut JobRecord> {
    (records.iter_mut()).find(|record| record.id == id && !record.refused)
}

impl Journal {
    /// The entry of a job received (and not refused), if any.
    pub fn find(&mut self, id: &str) -> Option<&mut JobRecord> {
        find(&mut self.records, id)
    }

    /// Results not yet delivered, jobs still to run included.
    pub fn undelivered(&self) -> usize {
        self.records.iter().filter(|r| !r.delivered).count()
    }

    /// Results dropped past the bound since this image started.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// A job whose id was received before (`None` if it was not): it is not run
    /// again, and its result, once there is one, is reported again. True when it
    /// has one, to report.
    pub fn received_again(&mut self, id: &str) -> Option<bool> {
        let record = self.find(id)?;
        let finished = record.state == JobState::Finished;
        if finished {
            record.delivered = false;
        }
        Some(finished)
    }

    /// Enters a job in `state` (a finished one with its result). A refusal of the
    /// same id still there gives way: the last result for an id counts. Returns
    /// false, entering nothing, when `results_max` results are waiting for
    /// delivery already: the job is counted dropped.
    pub fn enter(
        &mut self,
        id: String,
        state: JobState,
        (errcode, message): (u32, &str),
        refused: bool,
        bounds: Bounds,
    ) -> bool {
        self.records.retain(|r| !(r.refused && r.id == id));
        if self.undelivered() >= bounds.results_max.max(1) {
            self.dropped = self.dropped.saturating_add(1);
            return false;
        }
        self.records.push(JobRecord {
            id,
            errcode,
            message: crate::message::one_line(message),
            delivered: false,
            state,
            refused,
            unsaved: true,
            action: None,
        });
        self.forget_delivered(bounds.ids_remembered);
        true
    }

    /// True when `queue_max` jobs wait for the edge.
    pub fn queue_full(&self, bounds: Bounds) -> bool {
        self.queue.len() >= bounds.queue_max
    }

    /// Enters a job received and queues it for the edge (a self-upgrade marked as
    /// such); false when it was dropped past the bound of results.
    pub fn enqueue(&mut self, id: String, job: Job, bounds: Bounds) -> bool {
        let received = (ErrCode::Success as u32, "");
        if !self.enter(id.clone(), JobState::Received, received, false, bounds) {
            return false;
        }
        if matches!(job, Job::SelfUpgrade(_)) {
            if let Some(record) = self.find(&id) {
                record.action = Some(SELF_UPGRADE_ACTION.to_string());
            }
        }
        self.queue.push_back((id, job));
        true
    }

    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// True when job `id` waits in the queue for the edge.
    pub fn is_queued(&self, id: &str) -> bool {
        self.queue.iter().any(|(queued, _)| queued == id)
    }

    /// The next queued job, marked running (not on disk yet), once its receipt is
    /// on disk.
    pub fn take(&mut self) -> Option<(String, Job)> {
        let (id, _) = self.queue.front()?;
        let record = find(&mut self.records, id)?;
        if record.unsaved {
            return None; // its receipt is not on disk yet
        }
        record.state = JobState::Running;
        record.unsaved = true;
        self.queue.pop_front()
    }

    /// The metafile was written: everything in the journal is on disk.
    pub fn saved(&mut self) {
        for record in self.records.iter_mut() {
            record.unsaved = false;
        }
        self.config_undo = None;
    }

    /// A `config` job `id` is about to change the server list and step, which
    /// were `servers` and `step_s`: undone if its receipt cannot be written. The
    /// first such job since the last write keeps what was on disk.
    pub fn config_run(&mut self, id: &str, servers: &str, step_s: u64) {
        let undo = self.config_undo.get_or_insert_with(|| ConfigUndo {
            servers: servers.to_string(),
            step_s,
            ids: Vec::new(),
        });
        undo.ids.push(id.to_string());
    }

    /// The metafile could not be written: every job whose receipt is not on disk
    /// is refused with `message` (errcode 5) and leaves the queue; `config` jobs
    /// not on disk are undone.
    pub fn refuse_unsaved(&mut self, message: &str) -> Refused {
        let mut ids: Vec<String> = (self.records.iter())
            .filter(|r| {
                let not_begun = matches!(r.state, JobState::Received | JobState::Running);
                r.unsaved && not_begun && !r.refused
            })
            .map(|r| r.id.clone())
            .collect();
        let config = self.config_undo.take().map(|undo| {
            ids.extend(undo.ids);
            (undo.servers, undo.step_s)
        });
        self.queue.retain(|(id, _)| !ids.contains(id));
        for id in &ids {
            if let Some(record) = self.find(id) {
                record.state = JobState::Finished;
                record.errcode = ErrCode::InstallFailed as u32;
                record.message = crate::message::one_line(message);
                record.delivered = false;
                record.refused = true;
            }
        }
        Refused { ids, config }
    }

    /// A job finished with its result, to deliver once on disk.
    pub fn finish(&mut self, id: &str, errcode: u32, message: &str) {
        if let Some(record) = self.find(id) {
            record.state = JobState::Finished;
            record.errcode = errcode;
            record.message = crate::message::one_line(message);
            record.delivered = false;
            record.unsaved = true;
        }
    }

    /// The results the next report carries: finished, undelivered, and on disk
    /// (a refusal at once, having no state).
    pub fn to_deliver(&self) -> impl Iterator<Item = &JobRecord> {
        self.records.iter().filter(|record| {
            !record.delivered
                && record.state == JobState::Finished
                && (!record.unsaved || record.refused)
        })
    }

    /// A server acknowledged a report carrying these results (id, errcode,
    /// message): they are delivered; refusals are forgotten, and the others move
    /// behind the ones delivered earlier, so the journal stays in order of delivery
    /// for `forget_delivered`. Returns whether anything changed.
    pub fn acknowledge(&mut self, carried: &[(String, u32, String)], remembered: usize) -> bool {
        let mut newly = Vec::new();
        let mut rest = Vec::with_capacity(self.records.len());
        let mut changed = false;
        for record in self.records.drain(..) {
            let carried_now = !record.delivered
                && record.state == JobState::Finished
                && carried.iter().any(|(id, code, msg)| {
                    *id == record.id && *code == record.errcode && *msg == record.message
                });
            if !carried_now {
                rest.push(record);
                continue;
            }
            changed = true;
            if !record.refused {
                newly.push(JobRecord {
                    delivered: true,
                    ..record
                });
            }
        }
        let (mut delivered, undelivered): (Vec<_>, Vec<_>) =
            rest.into_iter().partition(|r| r.delivered);
        delivered.extend(newly);
        delivered.extend(undelivered);
        self.records = delivered;
        self.forget_delivered(remembered);
        changed
    }

    /// Forgets delivered ids beyond the last `remembered`, oldest delivered first.
    /// An id whose result is undelivered is never forgotten; refusals, which are
    /// not remembered as executed, do not count.
    fn forget_delivered(&mut self, remembered: usize) {
        let executed = self.records.iter().filter(|r| !r.refused).count();
        let mut excess = executed.saturating_sub(remembered.max(1));
        self.records.retain(|r| {
            let forget = excess > 0 && r.delivered;
            excess -= usize::from(forget);
            !forget
        });
    }

    /// At start: every job queued or running when BootAgent stopped is finished
    /// failed, saying so, except `keep` (a self-upgrade on probation in this
    /// image, which settles it itself). Returns how many.
    pub fn fail_interrupted(&mut self, keep: Option<&str>) -> usize {
        let mut count = 0;
        for record in self.records.iter_mut() {
            if keep == Some(record.id.as_str()) {
                continue;
            }
            let (errcode, message) = match record.state {
                JobState::Finished => continue,
                _ if record.action.as_deref() == Some(SELF_UPGRADE_ACTION) => (
                    // Never switched (a switched one is settled by `selfup::settle`):
                    // the previous version runs, so it is rolled back (section 7).
                    ErrCode::StartFailed,
                    format!(
                        "interrupted before the switch: BootAgent stopped; still bootagent {}",
                        crate::job_fields::running_version()
                    ),
                ),
                JobState::Received => (
                    ErrCode::Internal,
                    "interrupted: BootAgent stopped before the job started".to_string(),
                ),
                JobState::Running => (
                    ErrCode::Internal,
                    "interrupted: BootAgent stopped while the job was running".to_string(),
                ),
            };
            record.state = JobState::Finished;
            record.errcode = errcode as u32;
            record.message = message;
            record.delivered = false;
            count += 1;
        }
        count
    }
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
