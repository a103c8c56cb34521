//! What a start does about self-upgrades: first thing, the installed binary hands
//! over to the confirmed one (or does not: it changed, or that one keeps failing);
//! then, with the metafile loaded, a self-upgrade left pending is settled.

use super::handover::{exec_marker, Direction, Handover};
use super::state::{
    current_exe, is_upgraded_binary, Failed, Identity, Pending, Phase, State, Store,
};
use crate::job_fields::running_version;
use crate::jobs::ErrCode;
use crate::meta::{JobState, Meta};
use std::path::{Path, PathBuf};

/// A confirmed version that fails to start this many times within
/// `START_FAILURE_WINDOW_S` is abandoned for the installed binary.
pub const START_FAILURES_MAX: usize = 3;
pub const START_FAILURE_WINDOW_S: i64 = 600;

fn wall_now() -> i64 {
    use crate::clock::Clock;
    crate::clock::RealClock::new().wall_s()
}

/// Before anything else of a run (not `-V`, `-T`, `status`): if this is the installed
/// binary and a confirmed version is kept in `bin/`, exec it. Returns only when this
/// binary should run itself. Messages go to stderr (the log is not open yet); the
/// image that runs reports what happened.
pub fn hand_over_at_start(data_dir: &Path) {
    if exec_marker().is_some() {
        return; // the other side of an exec: the hand-over already happened
    }
    let store = Store::new(data_dir);
    let mut state = match store.load() {
        Ok(state) => state,
        Err(err) => {
            eprintln!("bootagent: self-upgrade state unreadable ({err}); running this binary");
            return;
        }
    };
    let Some(exe) = current_exe() else {
        return;
    };
    if is_upgraded_binary(data_dir, &exe) {
        return; // an upgraded binary started directly, or by this very hand-over
    }
    let before = state.clone();
    let target = decide(&mut state, &exe, wall_now());
    if state != before {
        if let Err(err) = store.save(&state) {
            eprintln!("bootagent: cannot save the self-upgrade state: {err}; running this binary");
            return;
        }
    }
    if state.confirmed.is_none() && before.confirmed.is_some() {
        store.remove_versions_except(&[]);
    }
    let Some(version) = target else {
        return;
    };
    let program = store.binary(&version);
    let err = exec_plain(&program);
    eprintln!(
        "bootagent: cannot start {}: {err}; running the installed binary",
        program.display()
    );
}

/// Decides the start hand-over on the state; returns the version to exec.
fn decide(state: &mut State, exe: &Path, now: i64) -> Option<String> {
    let installed_changed = match &state.installed {
        Some(recorded) => match Identity::of(exe) {
            Ok(id) => id != *recorded,
            Err(_) => true,
        },
        None => false,
    };
    let interrupted = state
        .pending
        .as_ref()
        .is_some_and(|p| p.phase == Phase::Switched && p.failure.is_none());
    if interrupted {
        if let Some(p) = state.pending.as_mut() {
            // A start without the exec marker: the process ended during probation.
            p.failure = Some(format!(
                "bootagent {} stopped during probation (crashed or killed) and was restarted",
                p.version
            ));
        }
    }
    if installed_changed && (state.confirmed.is_some() || state.installed.is_some()) {
        let installed = exe.display().to_string();
        if let Some(version) = state.confirmed.take() {
            state.notice = Some(format!(
                "the installed binary {installed} changed since bootagent {version} was \
                 confirmed: running the installed one, upgraded ones removed"
            ));
        }
        state.installed = None;
        state.start_attempts.clear();
        return None;
    }
    let version = state.confirmed.clone()?;
    state
        .start_attempts
        .retain(|&at| now.saturating_sub(at) < START_FAILURE_WINDOW_S && at <= now);
    if state.start_attempts.len() >= START_FAILURES_MAX {
        state.notice = Some(format!(
            "bootagent {version} failed to start {START_FAILURES_MAX} times within {} min: \
             abandoned for the installed binary {}",
            START_FAILURE_WINDOW_S / 60,
            exe.display()
        ));
        state.failed = Some(Failed {
            version,
            reason: "failed to start repeatedly".to_string(),
            at: now,
        });
        state.confirmed = None;
        state.start_attempts.clear();
        return None;
    }
    state.start_attempts.push(now);
    Some(version)
}

/// execve `program` with this process's arguments and environment (no marker).
fn exec_plain(program: &Path) -> std::io::Error {
    let mut argv = vec![program.as_os_str().to_os_string()];
    argv.extend(std::env::args_os().skip(1));
    let env: Vec<std::ffi::OsString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut pair = k;
            pair.push("=");
            pair.push(v);
            pair
        })
        .collect();
    match crate::sys::ExecImage::new(program, &argv, &env, Vec::new()) {
        Some(image) => image.exec(),
        None => std::io::Error::other("an argument or variable holds a NUL byte"),
    }
}

/// A self-upgrade on probation in this image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OnProbation {
    pub job: String,
    pub version: String,
    pub from_version: String,
    pub until_ms: u64,
    pub previous: PathBuf,
    /// The previous binary takes the notify sockets over (a rollback hands them back).
    pub previous_notify_sockets: bool,
}

/// What settling found: the state to save once the metafile is saved, an upgrade
/// on probation in this image, events to report.
#[derive(Debug, Default)]
pub struct Settled {
    pub state: State,
    pub probation: Option<OnProbation>,
    pub notices: Vec<String>,
    pub changed_meta: bool,
}

/// Settles a pending self-upgrade against the job journal (the metafile, loaded,
/// not yet saved): a result already in the journal decides; else the upgrade is
/// on probation in this image, or it failed (errcode 6). Runs before the journal's
/// other interrupted jobs are failed.
pub fn settle(
    mut state: State,
    meta: &mut Meta,
    handover: Option<&Handover>,
    now_wall: i64,
) -> Settled {
    let mut settled = Settled::default();
    let mut settled_meta = false;
    if let Some(notice) = state.notice.take() {
        settled.notices.push(notice);
    }
    let Some(pending) = state.pending.clone() else {
        settled.state = state;
        return settled;
    };
    let record = meta.journal.records.iter().find(|r| r.id == pending.job);
    let decided = record
        .filter(|r| r.state == JobState::Finished)
        .map(|r| (r.errcode, r.message.clone()));
    let running = running_version();
    let mut fail = |state: &mut State, reason: String, meta: &mut Meta| {
        settled_meta |= fail_pending(state, meta, &pending, reason, now_wall);
    };
    match (decided, pending.phase) {
        (Some((code, message)), _) => {
            if code == ErrCode::Success as u32 && running == pending.version {
                state.confirmed = Some(pending.version.clone());
                state.failed = None;
            } else if code != ErrCode::Success as u32 {
                state.failed = Some(Failed {
                    version: pending.version.clone(),
                    reason: message,
                    at: now_wall,
                });
            }
            state.pending = None;
        }
        (None, Phase::Preparing) => {
            let reason = "interrupted before the switch (BootAgent stopped)".to_string();
            fail(&mut state, reason, meta);
        }
        (None, Phase::Confirming) if running == pending.version => {
            // Confirmed, then stopped before the result was written: it is 0.
            meta.journal.finish(
                &pending.job,
                ErrCode::Success as u32,
                &format!(
                    "bootagent {} running (was {})",
                    pending.version, pending.from_version
                ),
            );
            settled_meta = true;
            state.pending = None;
            state.failed = None;
        }
        (None, Phase::Confirming) => {
            let reason = format!(
                "bootagent {} was confirmed but this start is {running}",
                pending.version
            );
            fail(&mut state, reason, meta);
        }
        (None, Phase::Switched) => {
            let forward = handover.filter(|h| h.direction == Direction::Forward);
            match (forward, &pending.failure) {
                (Some(h), None) if h.forced_rollback.is_none() && running == pending.version => {
                    settled.probation = Some(OnProbation {
                        job: pending.job.clone(),
                        version: pending.version.clone(),
                        from_version: pending.from_version.clone(),
                        until_ms: h.probation_until_ms.unwrap_or(0),
                        previous: h.previous.clone().unwrap_or_default(),
                        previous_notify_sockets: h.previous_notify_sockets,
                    });
                }
                _ if handover.is_some_and(|h| h.reason.is_some()) => {
                    let reason = handover.and_then(|h| h.reason.clone()).unwrap_or_default();
                    fail(&mut state, reason, meta);
                }
                (Some(h), _) if h.forced_rollback.is_some() => {
                    let reason = format!(
                        "bootagent {} hung: neither confirmed nor rolled back within its \
                         probation of {} s",
                        pending.version, pending.probation_s
                    );
                    fail(&mut state, reason, meta);
                }
                (_, Some(failure)) => {
                    let failure = failure.clone();
                    fail(&mut state, failure, meta);
                }
                _ => {
                    let reason = format!(
                        "bootagent {} did not run its probation (this start is {running})",
                        pending.version
                    );
                    fail(&mut state, reason, meta);
                }
            }
        }
    }
    settled.changed_meta = settled_meta;
    settled.state = state;
    settled
}

/// The upgrade failed: errcode 6 in the journal (if the job is there), `failed` set.
/// True when the metafile changed.
fn fail_pending(
    state: &mut State,
    meta: &mut Meta,
    pending: &Pending,
    reason: String,
    now_wall: i64,
) -> bool {
    let running = running_version();
    let changed = record_exists(meta, &pending.job);
    if changed {
        meta.journal.finish(
            &pending.job,
            ErrCode::StartFailed as u32,
            &format!("rolled back to bootagent {running}: {reason}"),
        );
    }
    state.failed = Some(Failed {
        version: if pending.version.is_empty() {
            "?".to_string()
        } else {
            pending.version.clone()
        },
        reason,
        at: now_wall,
    });
    state.pending = None;
    changed
}

fn record_exists(meta: &Meta, id: &str) -> bool {
    meta.journal.records.iter().any(|r| r.id == id)
}

/// `decide`, for the unit tests.
#[cfg(test)]
pub(super) fn decide_for_tests(state: &mut State, exe: &Path, now: i64) -> Option<String> {
    decide(state, exe, now)
}
