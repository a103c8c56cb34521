//! The event loop: one thread that owns the core, the supervisor, the job runner,
//! the metafile and the one timer wheel that drives them all (`Timers`, keyed by
//! `TimerKey`). Everything else arrives as an `Event` over one bounded channel,
//! and the loop sleeps in `Clock::wait` until the wheel's earliest deadline. There
//! is no polling tick: an idle agent wakes only for its next exchange, a child's
//! exit (`SIGCHLD`) or a timer.
//!
//! A turn: the child timers and the metafile retry that came due fire; the
//! supervisor's changes go to the core and the job runner; the job runner looks at
//! its job if its child changed or its `TimerKey::Job` came; the self-upgrade
//! acts; the metafile is written; then the core's exchange goes out if its
//! `TimerKey::Exchange` came, so a report carries what the turn changed.
//!
//! Shutdown (`SIGTERM`, `SIGINT`): every child is stopped (`SIGTERM` to its group,
//! `SIGKILL` after its grace period), and the loop returns once none is left. A
//! second signal during shutdown kills the children at once.

use crate::agent::{Core, Effect, Outcome};
use crate::clock::Clock;
use crate::control::local::{self, LocalCommands};
use crate::events::{Event, Prepared};
use crate::http::Exchange;
use crate::jobrun::{Ctx, JobRunner};
use crate::jobs::ErrCode;
use crate::jobs::Job;
use crate::logging::LogHandle;
use crate::meta::MetaStore;
use crate::selfup::{CarriedSlot, ExecPlan, OnProbation};
use crate::supervisor::Supervisor;
use crate::timers::{ChildTimer, TimerKey, Timers};
use log::{error, info, warn};
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};

/// What the job runner is given on a loop turn.
enum JobInput {
    /// The worker prepared a package.
    Prepared(Prepared),
    /// Its child changed, or its deadline came: it looks at the job in progress.
    Look,
    /// Nothing for the job in progress; a queued job may start.
    Nothing,
}

/// The loop's own keys that came due in a turn, each taken at its place in it.
#[derive(Default)]
struct Due {
    job: bool,
    probation: bool,
    exchange: bool,
}

/// Why the loop stopped.
#[derive(Debug)]
pub enum Exit {
    /// `SIGTERM` or `SIGINT`.
    Signalled(i32),
    /// Every sender of events is gone: a thread died.
    ChannelsClosed,
    /// A self-upgrade (or its rollback): exec `plan.program`, handing the children over.
    Exec(Box<ExecOut>),
}

/// What the exec hand-over needs from the loop.
#[derive(Debug)]
pub struct ExecOut {
    pub plan: ExecPlan,
    pub children: Vec<CarriedSlot>,
}

/// A self-upgrade on probation in this image, and whether a report was answered.
pub struct SelfProbation {
    pub upgrade: OnProbation,
    pub reported: bool,
}

pub struct EventLoop<'a, C: Clock> {
    pub core: Core,
    pub supervisor: Supervisor,
    pub jobs: JobRunner,
    pub store: &'a MetaStore,
    /// Where the local status view (`bootagent status`) is kept current.
    pub state_file: PathBuf,
    pub clock: &'a C,
    /// The one timer wheel: every deadline of the core, the supervisor, the job
    /// runner, the metafile retry and the self-upgrade's probation.
    pub timers: Timers,
    pub events: Receiver<Event>,
    pub http: SyncSender<Exchange>,
    pub log: LogHandle,
    /// Commands from the console, waiting for the job runner or carried out by it.
    pub local: LocalCommands,
    /// After a failed write of the metafile, how long until the next try.
    pub save_retry_ms: u64,
    /// When to try writing the metafile again (`None` at start).
    pub save_retry_at: Option<u64>,
    /// Writes of the metafile that failed in a row, for the log (0 at start).
    pub save_failures: u64,
    /// The data directory (the self-upgrade state lives in it).
    pub data_dir: PathBuf,
    /// A self-upgrade this image is on probation for.
    pub self_probation: Option<SelfProbation>,
}

impl<C: Clock> EventLoop<'_, C> {
    pub fn run(mut self) -> Exit {
        let mut effects = Vec::new();
        let mut stopping: Option<i32> = None;
        let mut started_well = false;
        // A change of the child the job in progress waits on: the runner looks again.
        let mut job_wake = self.sync_children(self.clock.now_ms(), &mut effects);
        loop {
            let now = self.clock.now_ms();
            let wall_s = self.clock.wall_s();
            self.core.set_wall_clock(self.clock.wall_ms());
            let due = self.fire_timers(now, wall_s, &mut effects);
            job_wake |= self.hand_over_changes(now, &mut effects);
            // On probation after a self-upgrade, the next job waits for the verdict.
            if stopping.is_none() && self.self_probation.is_none() {
                let look = if job_wake || due.job {
                    JobInput::Look
                } else {
                    JobInput::Nothing
                };
                self.run_jobs(now, wall_s, look, &mut effects);
            }
            job_wake = false;
            if stopping.is_none() {
                if let Some(exit) = self.self_upgrade(now, wall_s, due.probation, &mut effects) {
                    return exit;
                }
            }
            job_wake |= self.sync_children(now, &mut effects);
            // Write-ahead: what changed is on disk before a report can tell it.
            self.carry_out(&mut effects);
            // A prompt report asked for in this turn may be due already.
            self.sync_timers();
            if due.exchange | self.timers.take_due(&TimerKey::Exchange, now) {
                self.core.on_time(now, self.clock.wall_ms(), &mut effects);
                self.carry_out(&mut effects);
            }
            if !started_well && self.core.reports_answered() > 0 {
                started_well = true;
                crate::selfup::started_well(&self.data_dir);
            }
            if let Some(signal) = stopping {
                if self.supervisor.all_down() {
                    self.supervisor.end_strays();
                    self.supervisor.release_cgroups();
                    let _ = self.flush(&mut effects);
                    return Exit::Signalled(signal);
                }
            }

            self.sync_timers();
            // What the runner did changed its child again: it looks at once.
            let deadline = if job_wake && stopping.is_none() && self.self_probation.is_none() {
                Some(now)
            } else {
                self.timers.next_deadline()
            };
            let event = self.clock.wait(&self.events, deadline);
            let now = self.clock.now_ms();
            let wall_s = self.clock.wall_s();
            match event {
                Ok(Event::Exchanged(outcome)) => {
                    self.core.on_outcome(now, outcome, &mut effects);
                    self.carry_out(&mut effects);
                }
                Ok(Event::Signal(libc::SIGCHLD)) => self.supervisor.on_sigchld(now, wall_s),
                Ok(Event::Notify(message)) => self.supervisor.on_notify(message, now, wall_s),
                // While stopping, a package that arrives is not switched to: the
                // job was already finished as interrupted.
                Ok(Event::JobPrepared(_)) if stopping.is_some() => {}
                Ok(Event::JobPrepared(prepared)) => {
                    self.run_jobs(now, wall_s, JobInput::Prepared(prepared), &mut effects);
                }
                Ok(Event::Control(request)) if stopping.is_some() => {
                    local::answer(
                        &request,
                        crate::control::Reply::new(
                            crate::control::EXIT_FAILED,
                            "bootagent is stopping",
                        ),
                    );
                }
                Ok(Event::Control(request)) => {
                    if !self.supervisor.knows(&request.name) {
                        local::no_such_child(&request);
                    } else if self.jobs.busy() && !self.local.running() {
                        // A server job (a download may take minutes): the person is
                        // told now rather than left waiting for a command that
                        // would run after they gave up.
                        local::server_job_busy(&request);
                    } else {
                        self.local.push(request);
                        self.run_jobs(now, wall_s, JobInput::Nothing, &mut effects);
                    }
                }
                Ok(Event::Signal(libc::SIGHUP)) => {
                    if let Err(err) = self.log.reopen() {
                        error!("cannot reopen the log file: {err}");
                    }
                    info!("SIGHUP: log file reopened");
                }
                Ok(Event::Signal(signal)) => match stopping {
                    None => {
                        info!("signal {signal}: stopping every child, then exiting");
                        stopping = Some(signal);
                        self.jobs.cancel();
                        // The job in progress ends here, with a true result; queued
                        // ones stay queued and are reported interrupted at the next start.
                        if let Some((id, (code, message))) =
                            self.jobs.abandon("interrupted: BootAgent is stopping")
                        {
                            self.job_done(now, wall_s, &id, code, message, &mut effects);
                        }
                        self.local.refuse_all("bootagent is stopping");
                        self.supervisor.stop_all(now, wall_s);
                    }
                    Some(_) => {
                        warn!("signal {signal} again: killing every child now");
                        self.supervisor.kill_all();
                    }
                },
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.flush(&mut effects);
                    return Exit::ChannelsClosed;
                }
            }
        }
    }

    /// Fires what came due at `now`: the child timers at once, the metafile retry
    /// as a write; the job's deadline, the probation and the exchange are
    /// returned, for their place in the turn.
    fn fire_timers(&mut self, now: u64, wall_s: i64, effects: &mut Vec<Effect>) -> Due {
        let mut due = Due::default();
        self.sync_timers();
        loop {
            // A child timer that fired may set another, due already.
            self.timers.apply(self.supervisor.timer_requests());
            let Some(key) = self.timers.poll(now) else {
                return due;
            };
            match key {
                TimerKey::Child(name, timer) => self.supervisor.on_timer(&name, timer, now, wall_s),
                TimerKey::SaveRetry => effects.push(Effect::SaveMeta),
                TimerKey::Job => due.job = true,
                TimerKey::SelfProbation => due.probation = true,
                TimerKey::Exchange => due.exchange = true,
            }
        }
    }

    /// Brings the wheel up to date: the timers the supervisor asked for, and the
    /// one deadline each of the core, the job runner, the metafile retry and the
    /// probation.
    fn sync_timers(&mut self) {
        self.timers.apply(self.supervisor.timer_requests());
        self.timers
            .sync(TimerKey::Exchange, self.core.next_deadline());
        self.timers.sync(TimerKey::Job, self.jobs.next_deadline());
        self.timers.sync(TimerKey::SaveRetry, self.save_retry_at);
        let probation = self.self_probation.as_ref().map(|p| p.upgrade.until_ms);
        self.timers.sync(TimerKey::SelfProbation, probation);
        // Bounded: a few keys of the loop's own, and each child's few. More would
        // mean a child's timers outlived it.
        debug_assert!(
            self.timers.len() <= 4 + ChildTimer::ALL.len() * self.supervisor.count(),
            "{} timers armed for {} children",
            self.timers.len(),
            self.supervisor.count()
        );
    }

    /// A self-upgrade: switch to a prepared binary (exec), and judge the probation of
    /// this image (confirm, or exec the previous binary). `Some` ends the loop.
    fn self_upgrade(
        &mut self,
        now: u64,
        wall_s: i64,
        probation_due: bool,
        effects: &mut Vec<Effect>,
    ) -> Option<Exit> {
        if let Some(switch) = self.jobs.take_switch() {
            let plan = crate::selfup::switching(
                &self.data_dir,
                &switch.id,
                &switch.version,
                switch.probation_s,
                wall_s,
            );
            match plan {
                Ok(plan) => {
                    info!(
                        "self-upgrade: bootagent {} -> {}, probation {} s",
                        crate::selfup::running_version(),
                        switch.version,
                        switch.probation_s
                    );
                    let _ = self.flush(effects);
                    let children = self.supervisor.carry(plan.notify_sockets);
                    return Some(Exit::Exec(Box::new(ExecOut { plan, children })));
                }
                Err(why) => {
                    crate::selfup::refused(&self.data_dir, &why);
                    self.core
                        .job_done(now, &switch.id, ErrCode::InstallFailed, why, effects);
                }
            }
        }
        let probation = self.self_probation.as_mut()?;
        probation.reported |= self.core.reports_answered() > 0;
        if !probation_due {
            return None;
        }
        let SelfProbation { upgrade, reported } = self.self_probation.take()?;
        if reported {
            let message = format!(
                "bootagent {} running (was {})",
                upgrade.version, upgrade.from_version
            );
            info!("self-upgrade confirmed: {message}");
            if let Err(err) = crate::selfup::confirming(&self.data_dir, &upgrade.version) {
                error!("cannot save the self-upgrade state: {err}");
            }
            self.core
                .job_done(now, &upgrade.job, ErrCode::Success, message, effects);
            self.carry_out(effects); // the result is on disk before the state says so
            crate::selfup::confirmed(&self.data_dir, &upgrade.version, &upgrade.from_version);
            return None;
        }
        let reason = "no status report answered 200 within its probation".to_string();
        let message = format!(
            "rolled back to bootagent {}: {reason}",
            upgrade.from_version
        );
        warn!("self-upgrade of {} failed: {message}", upgrade.version);
        self.core
            .job_done(now, &upgrade.job, ErrCode::StartFailed, message, effects);
        self.carry_out(effects);
        crate::selfup::rolled_back(&self.data_dir, &upgrade.version, &reason, wall_s);
        let plan = ExecPlan {
            program: upgrade.previous,
            direction: crate::selfup::Direction::Rollback,
            job: None,
            probation_s: 0,
            previous: None,
            notify_sockets: upgrade.previous_notify_sockets,
        };
        let children = self.supervisor.carry(plan.notify_sockets);
        Some(Exit::Exec(Box::new(ExecOut { plan, children })))
    }

    /// Carries the current job on (with a prepared package, or after a change of its
    /// child or its deadline), and starts the next queued one when none runs;
    /// results go to the core.
    fn run_jobs(&mut self, now: u64, wall_s: i64, input: JobInput, effects: &mut Vec<Effect>) {
        let mut stopped = Vec::new();
        let mut ctx = Ctx {
            supervisor: &mut self.supervisor,
            now,
            wall_s,
            stopped: &mut stopped,
        };
        let mut done = match input {
            JobInput::Prepared(prepared) => self.jobs.prepared(prepared, &mut ctx),
            JobInput::Look => self.jobs.look(&mut ctx),
            JobInput::Nothing => None,
        };
        // Bounded: each pass either finishes a job or leaves one running.
        for _ in 0..self.core.queued_jobs() + self.local.waiting() + 1 {
            if let Some((id, (code, message))) = done.take() {
                self.job_done(now, wall_s, &id, code, message, effects);
            }
            if self.jobs.busy() {
                break;
            }
            // A person at the console waits for a local command: it goes first.
            let (next, server_job) = match self.local.next_job() {
                Some(job) => (Some((local::JOB_ID.to_string(), job)), false),
                None => (self.core.take_job(effects), true),
            };
            let Some((id, job)) = next else {
                break;
            };
            if server_job {
                if let Job::Install(install) = &job {
                    let upgrade = self.jobs.undo_record(&id, &install.name);
                    self.core.begin_upgrade(upgrade, effects);
                }
                // Write-ahead: a server's job starts only once "running" is on
                // disk; when that fails, the core has refused it.
                if self.flush(effects).is_err() {
                    continue;
                }
            }
            let mut ctx = Ctx {
                supervisor: &mut self.supervisor,
                now,
                wall_s,
                stopped: &mut stopped,
            };
            done = self
                .jobs
                .begin(id.clone(), job, &mut ctx)
                .map(|result| (id, result));
        }
        if let Some((id, (code, message))) = done {
            self.job_done(now, wall_s, &id, code, message, effects);
        }
        for (name, is_stopped) in stopped {
            self.core.set_stopped(&name, is_stopped, effects);
        }
    }

    /// A job is done: a server's goes to the core (journal, result in the next
    /// report); a local command's is answered and reported as an event.
    fn job_done(
        &mut self,
        now: u64,
        wall_s: i64,
        id: &str,
        code: crate::jobs::ErrCode,
        message: String,
        effects: &mut Vec<Effect>,
    ) {
        if !self.local.running() {
            self.core.job_done(now, id, code, message, effects);
            return;
        }
        let agents = self.supervisor.agents(now);
        let name = self.local.running_name().unwrap_or_default().to_string();
        let sv = local::sv_of(&name, &agents);
        info!("console command: errcode {}: {message}", code as u32);
        if let Some(event) = self.local.finish(code, &message, &sv, wall_s) {
            self.core.push_event(now, event, effects);
        }
    }

    /// Hands each change the supervisor saw to the core (its event, persisted until
    /// acknowledged) and to the job runner. True if the job in progress waits on
    /// a child that changed.
    fn hand_over_changes(&mut self, now: u64, effects: &mut Vec<Effect>) -> bool {
        let mut wake = false;
        for change in self.supervisor.take_changes() {
            wake |= self.jobs.on_change(&change);
            if let Some(event) = change.event {
                self.core.push_event(now, event, effects);
            }
        }
        wake
    }

    /// Hands what the supervisor saw to the core: the children for the next
    /// report, the changes (`hand_over_changes`), and a prompt report and a fresh
    /// status view after any change. True if the job in progress waits on a child
    /// that changed.
    fn sync_children(&mut self, now: u64, effects: &mut Vec<Effect>) -> bool {
        // Piggybacks on this wake-up (at most once a second): a worker's OOM kill is
        // in the report this wake-up may send.
        self.supervisor.check_oom(now, self.clock.wall_s());
        self.core.set_agents(self.supervisor.agents(now));
        let wake = self.hand_over_changes(now, effects);
        let changed = self.supervisor.take_changed();
        if changed {
            self.core.set_fatal(self.supervisor.fatal_names(), effects);
            self.core.request_report(now);
        }
        if self.supervisor.take_view_changed() || changed {
            let view = crate::status::StateFile {
                pid: std::process::id(),
                updated: self.clock.wall_s(),
                children: self.supervisor.views(),
                version: crate::selfup::running_version().to_string(),
                exe: crate::selfup::current_exe()
                    .map(|exe| exe.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            if let Err(err) = view.write(&self.state_file) {
                warn!("cannot write {}: {err}", self.state_file.display());
            }
        }
        wake
    }

    /// Writes the metafile when asked to, then starts the exchanges: a report is
    /// built only from what is on disk.
    fn carry_out(&mut self, effects: &mut Vec<Effect>) {
        if effects.contains(&Effect::SaveMeta) {
            let _ = self.flush(effects);
        }
        let mut more = Vec::new();
        for effect in effects.drain(..) {
            let Effect::Send {
                server,
                path,
                body,
                headers,
            } = effect
            else {
                continue;
            };
            let exchange = Exchange {
                url: server.url(path),
                body,
                headers,
            };
            if let Err(err) = self.http.try_send(exchange) {
                let why = match err {
                    TrySendError::Full(_) => "HTTP thread busy",
                    TrySendError::Disconnected(_) => "HTTP thread gone",
                };
                warn!("cannot start an exchange: {why}");
                let now = self.clock.now_ms();
                // A failure schedules the next try; it sends nothing itself.
                self.core
                    .on_outcome(now, Outcome::Failed(why.to_string()), &mut more);
            }
        }
        if more.contains(&Effect::SaveMeta) {
            let _ = self.flush(&mut more);
        }
    }

    /// Writes the metafile and tells the core; a failure is retried after
    /// `save_retry_ms` even if nothing changes. Takes every `SaveMeta` out of
    /// `effects`: they are done.
    fn flush(&mut self, effects: &mut Vec<Effect>) -> Result<(), ()> {
        effects.retain(|e| *e != Effect::SaveMeta);
        let now = self.clock.now_ms();
        if let Err(err) = self.store.save(self.core.meta()) {
            self.save_failures += 1;
            if self.save_failures.is_power_of_two() {
                error!(
                    "{err}; keeping the state in memory, refusing new jobs and retrying \
                     every {} ms ({} failed write(s) in a row)",
                    self.save_retry_ms, self.save_failures
                );
            }
            self.core.save_failed(now, &err.to_string());
            self.save_retry_at = Some(now.saturating_add(self.save_retry_ms));
            return Err(());
        }
        if self.save_failures > 0 {
            info!(
                "metafile written again after {} failed write(s)",
                self.save_failures
            );
            self.save_failures = 0;
        }
        self.save_retry_at = None;
        self.core.saved();
        Ok(())
    }
}
