//! Carries out the jobs that touch the host (docs/protocol.md section 7), one at a
//! time, for the event loop: install and upgrade (with probation and rollback),
//! uninstall, restart, stop and start.
//!
//! The slow part of an install (download, checksum, unpack) runs on the worker
//! thread, so reports and supervision go on meanwhile; everything that touches a
//! child (switching `current`, starting, stopping) happens on the loop thread,
//! through the supervisor. A job moves through these phases:
//!
//! ```text
//!  install/upgrade:  Preparing (worker) ─► switch `current`, (re)start ─► Probation ─► done
//!                                                                 │ dies or never runs
//!                                                                 ▼
//!                                           switch back, restart the old one: errcode 6
//!  uninstall/stop:   Stopping ─► (uninstall: remove files, state, logs) ─► done
//!  restart/start:    Starting ─► running with a new pid ─► done
//! ```
//!
//! Crash safety: packages are unpacked under `tmp/` (wiped at every start) and
//! renamed into `agents/NAME/VERSION` whole; `current` is switched by renaming a
//! new symlink over it. Before an install or upgrade starts, what it must restore
//! is in the metafile (`recover.rs`): a `kill -9`, a power cut or a stop at any
//! point before its result is on disk is rolled back at the next start, before any
//! child starts, and reported with errcode 6; a confirmed one is errcode 0.

mod files;
mod prepare;
mod probation;
mod recover;
mod state;

pub use files::current_version;
pub use recover::roll_back_interrupted;
pub use state::{Ctx, JobRunner, Prepare, SelfSwitch, Work, TMP_DIR};
use state::{Current, Phase, START_WAIT_MS, STOP_WAIT_MS};

use crate::download::DownloadLimits;
use crate::events::{Event, JobResult, Prepared};
use crate::jobs::{ErrCode, Job};
use crate::supervisor::{Change, Status};
use crate::unpack::UnpackLimits;
use crate::wheel::Millis;
use files::remove_old_versions;
use log::warn;
use prepare::work;
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::thread;

impl JobRunner {
    /// Wipes the staging directory and starts the worker thread.
    pub fn start(
        data_dir: &Path,
        download: DownloadLimits,
        unpack: UnpackLimits,
        events: SyncSender<Event>,
    ) -> io::Result<JobRunner> {
        let tmp = data_dir.join(TMP_DIR);
        match fs::remove_dir_all(&tmp) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        fs::DirBuilder::new().recursive(true).create(&tmp)?;
        let (worker, requests) = std::sync::mpsc::sync_channel::<Prepare>(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let worker_data = data_dir.to_path_buf();
        let worker_cancel = Arc::clone(&cancel);
        thread::Builder::new()
            .name("jobs".to_string())
            .spawn(move || {
                work(
                    &worker_data,
                    requests,
                    events,
                    &download,
                    &unpack,
                    &worker_cancel,
                )
            })?;
        Ok(JobRunner {
            data_dir: data_dir.to_path_buf(),
            worker,
            cancel,
            current: None,
            switch: None,
        })
    }

    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Ends the job in progress without waiting for it (BootAgent's shutdown): its
    /// result is errcode 9 with `why`. A package still being prepared is left
    /// where it is, not switched to. An install or upgrade gets no result here:
    /// its record in the metafile makes the next start roll it back (errcode 6).
    pub fn abandon(&mut self, why: &str) -> Option<(String, JobResult)> {
        let current = self.current.take()?;
        self.switch = None;
        if matches!(current.job, Job::Install(_)) {
            return None;
        }
        if matches!(current.job, Job::SelfUpgrade(_)) {
            // An upgrade ends confirmed or rolled back (section 7): nothing switched.
            let why = format!(
                "{why}; still bootagent {}",
                crate::selfup::running_version()
            );
            self.self_upgrade_done(&(ErrCode::StartFailed, why.clone()));
            return Some((current.id, (ErrCode::StartFailed, why)));
        }
        Some((current.id, (ErrCode::Internal, why.to_string())))
    }

    /// The self-upgrade ready to switch to, once: the loop execs it. The job stays
    /// in progress; the image after the exec settles it.
    pub fn take_switch(&mut self) -> Option<SelfSwitch> {
        let switch = self.switch.take()?;
        self.current = None;
        Some(switch)
    }

    /// Aborts a download in progress (shutdown).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// When the loop must call `look` even if its child does not change: the loop
    /// arms its `TimerKey::Job` there.
    pub fn next_deadline(&self) -> Option<Millis> {
        match &self.current.as_ref()?.phase {
            Phase::Starting { until, .. } | Phase::Stopping { until, .. } => Some(*until),
            Phase::Probation(p) if !p.awaiting_ready => Some(p.until),
            _ => None,
        }
    }

    /// Starts a job. A result at once means it is already done.
    pub fn begin(&mut self, id: String, job: Job, ctx: &mut Ctx<'_>) -> Option<JobResult> {
        let name = job.agent().unwrap_or_default().to_string();
        let known = ctx.supervisor.knows(&name);
        let phase = match &job {
            Job::Config { .. } => {
                return Some((ErrCode::Internal, "config jobs run in the core".into()))
            }
            Job::Install(_)
                if !known && ctx.supervisor.count() >= ctx.supervisor.children_max() =>
            {
                let why = format!(
                    "{} agents are installed: the most BootAgent supervises (children_max)",
                    ctx.supervisor.children_max()
                );
                return Some((ErrCode::InstallFailed, why));
            }
            Job::SelfUpgrade(job) => {
                if let Err(why) = crate::selfup::begin(&self.data_dir, &id, job, ctx.wall_s) {
                    return Some((ErrCode::InstallFailed, why));
                }
                let prepare = Prepare {
                    id: id.clone(),
                    work: Work::SelfUpgrade((**job).clone()),
                };
                if self.worker.try_send(prepare).is_err() {
                    let result = (ErrCode::Internal, "the job worker is not available".into());
                    self.self_upgrade_done(&result);
                    return Some(result);
                }
                Phase::Preparing
            }
            Job::Install(install) => {
                let prepare = Prepare {
                    id: id.clone(),
                    work: Work::Install((**install).clone()),
                };
                if self.worker.try_send(prepare).is_err() {
                    return Some((ErrCode::Internal, "the job worker is not available".into()));
                }
                Phase::Preparing
            }
            _ if !known => return Some((ErrCode::NoSuchAgent, format!("no agent named {name}"))),
            Job::Uninstall { .. } | Job::Stop { .. } => {
                ctx.stopped.push((name.clone(), true));
                ctx.supervisor.stop(&name, ctx.now, ctx.wall_s);
                Phase::Stopping {
                    uninstall: matches!(job, Job::Uninstall { .. }),
                    until: ctx.now + ctx.supervisor.grace_ms(&name) + STOP_WAIT_MS,
                }
            }
            Job::Restart { settings, .. } => {
                if let Err(err) = self.write_settings(&name, settings) {
                    return Some(err);
                }
                ctx.stopped.push((name.clone(), false));
                let old_pid = ctx.supervisor.facts(&name).pid;
                ctx.supervisor.reload(&name, ctx.now);
                ctx.supervisor.restart(&name, ctx.now, ctx.wall_s);
                Phase::Starting {
                    old_pid,
                    until: ctx.now + ctx.supervisor.grace_ms(&name) + START_WAIT_MS,
                }
            }
            Job::Start { .. } => {
                ctx.stopped.push((name.clone(), false));
                let old_pid = ctx.supervisor.facts(&name).pid;
                if old_pid.is_some() {
                    return Some((ErrCode::Success, format!("{name} is already running")));
                }
                ctx.supervisor.start(&name, ctx.now, ctx.wall_s);
                Phase::Starting {
                    old_pid,
                    until: ctx.now + START_WAIT_MS,
                }
            }
        };
        self.current = Some(Current {
            id,
            job,
            phase,
            child: ctx.supervisor.facts(&name),
            note: None,
        });
        self.look(ctx).map(|(_, result)| result)
    }

    /// The worker finished preparing a package: switch to it and start it.
    pub fn prepared(
        &mut self,
        prepared: Prepared,
        ctx: &mut Ctx<'_>,
    ) -> Option<(String, JobResult)> {
        let current = self.current.as_mut()?;
        if current.id != prepared.id || !matches!(current.phase, Phase::Preparing) {
            warn!(
                "job {}: an unexpected package arrived; ignored",
                prepared.id
            );
            return None;
        }
        if let Job::SelfUpgrade(job) = &current.job {
            return match prepared.result {
                Ok(version) => {
                    self.switch = Some(SelfSwitch {
                        id: prepared.id,
                        version,
                        probation_s: job.probation_s,
                    });
                    current.phase = Phase::Switching;
                    None
                }
                Err(result) => self.finish(result),
            };
        }
        let Job::Install(install) = &current.job else {
            return None;
        };
        let install = (**install).clone();
        current.note = prepared.note;
        let version = match prepared.result {
            Ok(version) => version,
            Err(result) => return self.finish(result),
        };
        match self.switch_to(&install, &version, ctx) {
            Ok(phase) => {
                if let Some(current) = self.current.as_mut() {
                    current.phase = phase;
                    current.child = ctx.supervisor.facts(&install.name);
                }
                self.look(ctx)
            }
            Err(result) => self.finish(result),
        }
    }

    /// A change the supervisor returned: the job in progress keeps what it says of
    /// its child. True when the job waits on that child: then the loop has it
    /// `look` again.
    pub fn on_change(&mut self, change: &Change) -> bool {
        let Some(current) = &mut self.current else {
            return false;
        };
        if current.job.agent() != Some(change.name.as_str()) {
            return false;
        }
        current.child = change.child.clone();
        matches!(
            current.phase,
            Phase::Stopping { .. } | Phase::Starting { .. } | Phase::Probation(_)
        )
    }

    /// Carries the current job on, after a change of its child (`on_change`) or at
    /// its deadline (`next_deadline`); returns its result when it is done. It
    /// decides from its child as last seen (status, process, restarts,
    /// readiness), never asking the supervisor.
    pub fn look(&mut self, ctx: &mut Ctx<'_>) -> Option<(String, JobResult)> {
        let current = self.current.as_mut()?;
        let name = current.job.agent().unwrap_or_default().to_string();
        let child = &current.child;
        match &mut current.phase {
            Phase::Preparing | Phase::Switching => None,
            Phase::Stopping { uninstall, until } => {
                if child.pid.is_some() {
                    if ctx.now >= *until {
                        let why = format!("{name} did not stop (a process that ignores SIGKILL?)");
                        return self.finish((ErrCode::InstallFailed, why));
                    }
                    return None;
                }
                if !*uninstall {
                    return self.finish((ErrCode::Success, format!("{name} stopped")));
                }
                let result = self.remove_agent(&name, ctx);
                self.finish(result)
            }
            Phase::Starting { old_pid, until } => {
                let pid = child.pid;
                if pid.is_some() && pid != *old_pid && child.status == Some(Status::Running) {
                    return self.finish((
                        ErrCode::Success,
                        format!("{name} running, pid {}", pid.unwrap_or(0)),
                    ));
                }
                if ctx.now >= *until {
                    let status = child.status.map_or("gone", Status::as_str);
                    return self.finish((
                        ErrCode::StartFailed,
                        format!("{name} did not start: {status}"),
                    ));
                }
                None
            }
            Phase::Probation(p) => {
                let pid = child.pid;
                let running = child.status == Some(Status::Running) && pid.is_some();
                if p.pid.is_none() && running && pid != p.old_pid && child.restarts == p.restarts {
                    p.pid = pid; // the new version's first process
                }
                let died = p.pid.is_some() && (pid != p.pid || !running)
                    || child.restarts != p.restarts
                    || matches!(child.status, Some(Status::Fatal | Status::Killed));
                if died {
                    let why = (child.last_exit.clone()).unwrap_or_else(|| "it stopped".into());
                    let p = (**p).clone_for_rollback();
                    let result = self.roll_back(&name, p, &why, ctx);
                    return self.finish(result);
                }
                // With `notify`, the stay counts from `READY=1` (docs/protocol.md section 6).
                p.awaiting_ready = false;
                match child.ready {
                    Some(false) if p.pid.is_some() => {
                        p.awaiting_ready = true;
                        return None;
                    }
                    Some(true) if !p.ready_seen && p.pid.is_some() => {
                        p.ready_seen = true;
                        p.until = p.until.max(ctx.now.saturating_add(p.stay_ms));
                    }
                    _ => {}
                }
                if ctx.now < p.until {
                    return None;
                }
                if !running {
                    let p = (**p).clone_for_rollback();
                    let result = self.roll_back(&name, p, "it never came up", ctx);
                    return self.finish(result);
                }
                let message = format!("{name} {} running", p.new_version);
                let keep = [Some(p.new_version.clone()), p.old_version.clone()];
                remove_old_versions(&self.data_dir.join("agents").join(&name), &keep);
                self.finish((ErrCode::Success, message))
            }
        }
    }

    fn finish(&mut self, result: JobResult) -> Option<(String, JobResult)> {
        let current = self.current.take()?;
        if matches!(current.job, Job::SelfUpgrade(_)) {
            self.self_upgrade_done(&result);
        }
        let (code, mut message) = result;
        if let (ErrCode::Success, Some(note)) = (code, &current.note) {
            message = format!("{message}; {note}");
        }
        Some((current.id, (code, message)))
    }

    /// A self-upgrade ended before any switch: `bin/state.json` forgets it.
    fn self_upgrade_done(&self, result: &JobResult) {
        crate::selfup::refused(&self.data_dir, &result.1);
    }
}

#[cfg(test)]
mod tests;
