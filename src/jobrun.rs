//! Carries out the jobs that touch the host (PROTOCOL.md section 7), one at a
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
//! new symlink over it. A `kill -9` at any point leaves the old version current, or
//! the new one complete and current; the journal reports the job as interrupted.

use crate::download::{self, DownloadLimits};
use crate::event_loop::Event;
use crate::jobs::{ErrCode, Install, Job, Settings};
use crate::supervisor::{Supervisor, CHILDREN_MAX};
use crate::unpack::{self, UnpackLimits};
use crate::wheel::Millis;
use log::{info, warn};
use serde_json::{Map, Value};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread;

/// The staging directory under the data directory, wiped at every start.
pub const TMP_DIR: &str = "tmp";
/// How long a restart or start may take to show a running process, past the grace period.
const START_WAIT_MS: u64 = 5_000;
/// How long a stop may take past the grace period (after SIGKILL) before the job fails.
const STOP_WAIT_MS: u64 = 30_000;

/// A result of a job: its errcode and one line.
pub type JobResult = (ErrCode, String);

/// What the worker thread is asked to do.
pub struct Prepare {
    pub id: String,
    pub install: Install,
}

/// What the worker thread did: the package is in `agents/NAME/VERSION`.
#[derive(Debug)]
pub struct Prepared {
    pub id: String,
    pub result: Result<String, JobResult>,
}

enum Phase {
    Preparing,
    /// Waiting for the child to be down, until `until`; then `uninstall` removes it.
    Stopping {
        uninstall: bool,
        until: Millis,
    },
    /// Waiting for a running process other than `old_pid`.
    Starting {
        old_pid: Option<i32>,
        until: Millis,
    },
    /// A new version must stay up until `until`.
    Probation(Box<Probation>),
}

struct Probation {
    until: Millis,
    /// The process of the version being replaced, stopping: not the new one.
    old_pid: Option<i32>,
    pid: Option<i32>,
    restarts: u32,
    new_version: String,
    old_version: Option<String>,
    old_settings: Option<Vec<u8>>,
}

struct Current {
    id: String,
    job: Job,
    phase: Phase,
}

pub struct JobRunner {
    data_dir: PathBuf,
    worker: SyncSender<Prepare>,
    cancel: Arc<AtomicBool>,
    current: Option<Current>,
}

/// What the runner needs from the loop to carry a job on.
pub struct Ctx<'a> {
    pub supervisor: &'a mut Supervisor,
    pub now: Millis,
    pub wall_s: i64,
    /// Changes to the desired states (the metafile's `stopped` set), for the core.
    pub stopped: &'a mut Vec<(String, bool)>,
}

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
        })
    }

    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Ends the job in progress without waiting for it (BootAgent's shutdown): its
    /// result is errcode 9 with `why`. A package still being prepared is left
    /// where it is, not switched to.
    pub fn abandon(&mut self, why: &str) -> Option<(String, JobResult)> {
        let current = self.current.take()?;
        Some((current.id, (ErrCode::Internal, why.to_string())))
    }

    /// Aborts a download in progress (shutdown).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// When the loop must call `poll` even if nothing else happens.
    pub fn next_deadline(&self) -> Option<Millis> {
        match &self.current.as_ref()?.phase {
            Phase::Starting { until, .. } | Phase::Stopping { until, .. } => Some(*until),
            Phase::Probation(p) => Some(p.until),
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
            Job::Install(_) if !known && ctx.supervisor.count() >= CHILDREN_MAX => {
                let why =
                    format!("{CHILDREN_MAX} agents are installed: the most BootAgent supervises");
                return Some((ErrCode::InstallFailed, why));
            }
            Job::Install(install) => {
                let prepare = Prepare {
                    id: id.clone(),
                    install: (**install).clone(),
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
                let old_pid = ctx.supervisor.pid(&name);
                ctx.supervisor.reload(&name, ctx.now);
                ctx.supervisor.restart(&name, ctx.now, ctx.wall_s);
                Phase::Starting {
                    old_pid,
                    until: ctx.now + ctx.supervisor.grace_ms(&name) + START_WAIT_MS,
                }
            }
            Job::Start { .. } => {
                ctx.stopped.push((name.clone(), false));
                let old_pid = ctx.supervisor.pid(&name);
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
        self.current = Some(Current { id, job, phase });
        self.poll(ctx).map(|(_, result)| result)
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
        let Job::Install(install) = &current.job else {
            return None;
        };
        let install = (**install).clone();
        let version = match prepared.result {
            Ok(version) => version,
            Err(result) => return self.finish(result),
        };
        match self.switch_to(&install, &version, ctx) {
            Ok(phase) => {
                if let Some(current) = self.current.as_mut() {
                    current.phase = phase;
                }
                self.poll(ctx)
            }
            Err(result) => self.finish(result),
        }
    }

    /// Writes the settings, points `current` at `version` and (re)starts the child.
    fn switch_to(
        &mut self,
        install: &Install,
        version: &str,
        ctx: &mut Ctx<'_>,
    ) -> Result<Phase, JobResult> {
        let name = &install.name;
        let agent_dir = self.data_dir.join("agents").join(name);
        let old_version = current_version(&agent_dir);
        let old_settings = fs::read(agent_dir.join("agent.json")).ok();
        // Settings first: a kill -9 between the two steps then leaves the old
        // version running with the new settings, never the new one without them.
        self.write_settings(name, &install.settings)?;
        switch_current(&agent_dir, version).map_err(|err| {
            (
                ErrCode::InstallFailed,
                format!("cannot switch {name} to {version}: {err}"),
            )
        })?;
        ctx.stopped.push((name.to_string(), false));
        let old_pid = ctx.supervisor.pid(name);
        ctx.supervisor.reload(name, ctx.now);
        ctx.supervisor.restart(name, ctx.now, ctx.wall_s);
        info!(
            "{name}: switched to {version} (was {})",
            old_version.as_deref().unwrap_or("none")
        );
        let grace = ctx.supervisor.grace_ms(name);
        if old_version.is_none() {
            // A first install has nothing to roll back to: it must just start.
            return Ok(Phase::Starting {
                old_pid: None,
                until: ctx.now + grace + START_WAIT_MS,
            });
        }
        Ok(Phase::Probation(Box::new(Probation {
            until: ctx.now + grace + install.probation_s * 1000,
            old_pid,
            pid: None,
            restarts: ctx.supervisor.restarts(name),
            new_version: version.to_string(),
            old_version: old_version.filter(|old| old != version),
            old_settings,
        })))
    }

    /// Carries the current job on; returns its result when it is done.
    pub fn poll(&mut self, ctx: &mut Ctx<'_>) -> Option<(String, JobResult)> {
        let current = self.current.as_mut()?;
        let name = current.job.agent().unwrap_or_default().to_string();
        match &mut current.phase {
            Phase::Preparing => None,
            Phase::Stopping { uninstall, until } => {
                if ctx.supervisor.pid(&name).is_some() {
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
                let pid = ctx.supervisor.pid(&name);
                if pid.is_some()
                    && pid != *old_pid
                    && ctx.supervisor.status(&name) == Some("running")
                {
                    return self.finish((
                        ErrCode::Success,
                        format!("{name} running, pid {}", pid.unwrap_or(0)),
                    ));
                }
                if ctx.now >= *until {
                    let status = ctx.supervisor.status(&name).unwrap_or("gone");
                    return self.finish((
                        ErrCode::StartFailed,
                        format!("{name} did not start: {status}"),
                    ));
                }
                None
            }
            Phase::Probation(p) => {
                let pid = ctx.supervisor.pid(&name);
                let running = ctx.supervisor.status(&name) == Some("running") && pid.is_some();
                if p.pid.is_none()
                    && running
                    && pid != p.old_pid
                    && ctx.supervisor.restarts(&name) == p.restarts
                {
                    p.pid = pid; // the new version's first process
                }
                let died = p.pid.is_some() && (pid != p.pid || !running)
                    || ctx.supervisor.restarts(&name) != p.restarts
                    || matches!(ctx.supervisor.status(&name), Some("fatal" | "killed"));
                if died {
                    let why = ctx
                        .supervisor
                        .last_exit(&name)
                        .unwrap_or_else(|| "it stopped".into());
                    let p = (**p).clone_for_rollback();
                    let result = self.roll_back(&name, p, &why, ctx);
                    return self.finish(result);
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

    fn roll_back(&mut self, name: &str, p: Probation, why: &str, ctx: &mut Ctx<'_>) -> JobResult {
        let agent_dir = self.data_dir.join("agents").join(name);
        let Some(old) = p.old_version else {
            return (
                ErrCode::StartFailed,
                format!("{name} {} failed to start: {why}", p.new_version),
            );
        };
        if let Err(err) = switch_current(&agent_dir, &old) {
            return (
                ErrCode::StartFailed,
                format!(
                    "{name} {} failed ({why}) and the switch back to {old} failed: {err}",
                    p.new_version
                ),
            );
        }
        match p.old_settings {
            Some(settings) => {
                let _ = write_atomically(&agent_dir.join("agent.json"), &settings);
            }
            None => {
                let _ = fs::remove_file(agent_dir.join("agent.json"));
            }
        }
        let _ = fs::remove_dir_all(agent_dir.join(&p.new_version));
        let _ = fs::remove_file(agent_dir.join(format!("{}{SHA256_SUFFIX}", p.new_version)));
        ctx.supervisor.reload(name, ctx.now);
        ctx.supervisor.restart(name, ctx.now, ctx.wall_s);
        ctx.supervisor
            .note_rollback(name, &p.new_version, &old, why, ctx.wall_s);
        (
            ErrCode::StartFailed,
            format!(
                "{name} {} did not stay up ({why}); rolled back to {old}",
                p.new_version
            ),
        )
    }

    /// Removes an agent that is down: its files, its settings, its logs.
    fn remove_agent(&mut self, name: &str, ctx: &mut Ctx<'_>) -> JobResult {
        let agent_dir = self.data_dir.join("agents").join(name);
        let trash = self
            .data_dir
            .join(TMP_DIR)
            .join(format!("uninstall-{name}"));
        let _ = fs::remove_dir_all(&trash);
        if let Err(err) = fs::rename(&agent_dir, &trash) {
            return (
                ErrCode::InstallFailed,
                format!("cannot remove {}: {err}", agent_dir.display()),
            );
        }
        let _ = fs::remove_dir_all(&trash);
        let logs = self.data_dir.join("logs");
        for suffix in ["", ".1", ".2", ".3", ".4", ".5", ".6", ".7", ".8", ".9"] {
            let _ = fs::remove_file(logs.join(format!("{name}.log{suffix}")));
        }
        ctx.supervisor.remove(name);
        ctx.stopped.push((name.to_string(), false));
        (ErrCode::Success, format!("{name} uninstalled"))
    }

    fn write_settings(&self, name: &str, settings: &Settings) -> Result<(), JobResult> {
        if settings.0.is_empty() {
            return Ok(());
        }
        let path = self.data_dir.join("agents").join(name).join("agent.json");
        let mut merged: Map<String, Value> = fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        for (key, value) in &settings.0 {
            merged.insert(key.clone(), value.clone());
        }
        let bytes = serde_json::to_vec_pretty(&merged).unwrap_or_default();
        write_atomically(&path, &bytes).map_err(|err| {
            (
                ErrCode::InstallFailed,
                format!("cannot write {}: {err}", path.display()),
            )
        })
    }

    fn finish(&mut self, result: JobResult) -> Option<(String, JobResult)> {
        let current = self.current.take()?;
        Some((current.id, result))
    }
}

impl Probation {
    fn clone_for_rollback(&self) -> Probation {
        Probation {
            until: self.until,
            old_pid: self.old_pid,
            pid: self.pid,
            restarts: self.restarts,
            new_version: self.new_version.clone(),
            old_version: self.old_version.clone(),
            old_settings: self.old_settings.clone(),
        }
    }
}

/// The worker thread: download, verify, unpack, move into place.
fn work(
    data_dir: &Path,
    requests: Receiver<Prepare>,
    events: SyncSender<Event>,
    download: &DownloadLimits,
    unpack: &UnpackLimits,
    cancel: &AtomicBool,
) {
    for request in requests {
        let result = prepare(data_dir, &request.install, download, unpack, cancel);
        let prepared = Prepared {
            id: request.id,
            result,
        };
        if events.send(Event::JobPrepared(prepared)).is_err() {
            return;
        }
    }
}

fn prepare(
    data_dir: &Path,
    install: &Install,
    download_limits: &DownloadLimits,
    unpack_limits: &UnpackLimits,
    cancel: &AtomicBool,
) -> Result<String, JobResult> {
    let tmp = data_dir.join(TMP_DIR);
    let code = |errcode: u32| match errcode {
        1 => ErrCode::Invalid,
        2 => ErrCode::DownloadFailed,
        3 => ErrCode::ChecksumMismatch,
        4 => ErrCode::BadPackage,
        5 => ErrCode::InstallFailed,
        _ => ErrCode::Internal,
    };
    let file = download::download(&install.url, &tmp, download_limits, cancel)
        .map_err(|err| (code(err.errcode()), err.to_string()))?;
    let result = (|| {
        if file.sha256 != install.checksum {
            return Err((
                ErrCode::ChecksumMismatch,
                format!(
                    "checksum mismatch: expected SHA256:{}, got SHA256:{}",
                    download::hex(&install.checksum),
                    download::hex(&file.sha256)
                ),
            ));
        }
        let staging = tmp.join(format!("unpack-{}", install.name));
        let _ = fs::remove_dir_all(&staging);
        let unpacked = unpack::unpack(&file.path, &staging, unpack_limits)
            .map_err(|err| (code(err.errcode), err.message))?;
        let mut version = install
            .version
            .clone()
            .or(unpacked.version_file)
            .or_else(|| unpack::version_from_url(&install.url, &install.name))
            .unwrap_or_else(|| "0".to_string());
        let agent_dir = data_dir.join("agents").join(&install.name);
        let sha = download::hex(&file.sha256);
        if current_version(&agent_dir).as_deref() == Some(version.as_str()) {
            if recorded_sha256(&agent_dir, &version).as_deref() == Some(sha.as_str()) {
                // The very package that runs: keep it, do not pull it away.
                let _ = fs::remove_dir_all(&staging);
                return Ok(version);
            }
            // Same version name, other content: installed beside it, never over
            // the running one, and never silently skipped.
            version = format!("{version}+{}", &sha[..8]);
        }
        let target = agent_dir.join(&version);
        fs::DirBuilder::new()
            .recursive(true)
            .create(&agent_dir)
            .and_then(|()| match fs::remove_dir_all(&target) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            })
            .and_then(|()| fs::rename(&staging, &target))
            .and_then(|()| fs::write(agent_dir.join(format!("{version}{SHA256_SUFFIX}")), &sha))
            .and_then(|()| fs::File::open(&agent_dir)?.sync_all())
            .map_err(|err| {
                let _ = fs::remove_dir_all(&staging);
                (
                    ErrCode::InstallFailed,
                    format!("cannot install into {}: {err}", target.display()),
                )
            })?;
        Ok(version)
    })();
    let _ = fs::remove_file(&file.path);
    result
}

/// Beside each version directory, `VERSION.sha256` holds its package's SHA256.
const SHA256_SUFFIX: &str = ".sha256";

/// The SHA256 (hex) of the package a version was installed from, if recorded.
fn recorded_sha256(agent_dir: &Path, version: &str) -> Option<String> {
    let text = fs::read_to_string(agent_dir.join(format!("{version}{SHA256_SUFFIX}"))).ok()?;
    Some(text.trim().to_string())
}

/// The version `current` points to.
pub fn current_version(agent_dir: &Path) -> Option<String> {
    let target = fs::read_link(agent_dir.join("current")).ok()?;
    target.file_name().map(|v| v.to_string_lossy().into_owned())
}

/// Points `current` at `version` atomically: a new link renamed over the old one.
fn switch_current(agent_dir: &Path, version: &str) -> io::Result<()> {
    let tmp = agent_dir.join("current.tmp");
    let _ = fs::remove_file(&tmp);
    symlink(version, &tmp)?;
    fs::rename(&tmp, agent_dir.join("current"))?;
    fs::File::open(agent_dir)?.sync_all()
}

/// Removes version directories other than `keep`.
fn remove_old_versions(agent_dir: &Path, keep: &[Option<String>]) {
    let Ok(entries) = fs::read_dir(agent_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let kept = |version: &str| keep.iter().flatten().any(|k| k == version);
        if is_dir && !kept(&name) {
            info!("removing old version {}", entry.path().display());
            let _ = fs::remove_dir_all(entry.path());
        } else if name.strip_suffix(SHA256_SUFFIX).is_some_and(|v| !kept(v)) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Replaces `path` atomically; mode 0600, since envs may carry secrets.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}
