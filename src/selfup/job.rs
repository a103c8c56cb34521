//! The `bin/state.json` side of a self-upgrade job, step by step, for the job
//! runner and the event loop: begin, refused, switching, confirmed, rolled back.
//! Each step is written before the step it guards is taken.

use super::handover::{Direction, ExecPlan};
use super::state::{current_exe, is_upgraded_binary, Failed, Identity, Pending, Phase, Store};
use crate::job_fields::running_version;
use crate::jobs::SelfUpgrade;
use std::path::Path;

/// The job starts: records the installed binary's identity (before any exec; after
/// one `/proc/self/exe` is the upgraded binary) and the upgrade as preparing.
pub fn begin(data_dir: &Path, id: &str, job: &SelfUpgrade, wall_s: i64) -> Result<(), String> {
    let store = Store::new(data_dir);
    let mut state = store
        .load()
        .map_err(|err| format!("self-upgrade state unreadable: {err}"))?;
    let exe = current_exe().ok_or("cannot read /proc/self/exe")?;
    let upgraded = is_upgraded_binary(data_dir, &exe);
    if !upgraded {
        let identity = Identity::of(&exe)
            .map_err(|err| format!("cannot read the running binary {}: {err}", exe.display()))?;
        state.installed = Some(identity);
    }
    state.pending = Some(Pending {
        job: id.to_string(),
        phase: Phase::Preparing,
        version: job.version.clone().unwrap_or_default(),
        from_version: running_version().to_string(),
        from_bin: upgraded.then(|| running_version().to_string()),
        probation_s: job.probation_s,
        since: wall_s,
        failure: None,
    });
    store
        .save(&state)
        .map_err(|err| format!("cannot save the self-upgrade state: {err}"))
}

/// The job ended before any switch (refused, or already running): forgotten as
/// pending, kept as the last failure when it failed.
pub fn refused(data_dir: &Path, message: &str) {
    let store = Store::new(data_dir);
    let Ok(mut state) = store.load() else {
        return;
    };
    if let Some(pending) = state.pending.take() {
        if !message.contains("already runs this very binary") {
            state.failed = Some(Failed {
                version: if pending.version.is_empty() {
                    "?".to_string()
                } else {
                    pending.version
                },
                reason: message.to_string(),
                at: pending.since,
            });
        }
    }
    if let Err(err) = store.save(&state) {
        log::warn!("cannot save the self-upgrade state: {err}");
    }
}

/// The new binary is in place: marks the upgrade switched and says what to exec.
/// An error means no exec (the job fails with it).
pub fn switching(
    data_dir: &Path,
    id: &str,
    version: &str,
    probation_s: u64,
    wall_s: i64,
) -> Result<ExecPlan, String> {
    let store = Store::new(data_dir);
    let mut state = store
        .load()
        .map_err(|err| format!("self-upgrade state unreadable: {err}"))?;
    let previous = current_exe().ok_or("cannot read /proc/self/exe")?;
    let pending = state
        .pending
        .as_mut()
        .filter(|p| p.job == id)
        .ok_or("the self-upgrade state lost the job")?;
    pending.phase = Phase::Switched;
    pending.version = version.to_string();
    pending.since = wall_s;
    store
        .save(&state)
        .map_err(|err| format!("cannot save the self-upgrade state: {err}"))?;
    Ok(ExecPlan {
        program: store.binary(version),
        direction: Direction::Forward,
        job: Some(id.to_string()),
        probation_s,
        previous: Some(previous),
        notify_sockets: store.takes_notify_sockets(version),
    })
}

/// Probation passed: before its result is written, the state says this version is
/// confirmed, so that whatever happens next, a start runs it (and settles the job 0).
pub fn confirming(data_dir: &Path, version: &str) -> std::io::Result<()> {
    let store = Store::new(data_dir);
    let mut state = store.load().map_err(std::io::Error::other)?;
    state.confirmed = Some(version.to_string());
    if let Some(pending) = state.pending.as_mut() {
        pending.phase = Phase::Confirming;
    }
    store.save(&state)
}

/// Probation passed (the result is in the journal already): this version is the
/// one starts hand over to; the running and the previous are kept, older removed.
pub fn confirmed(data_dir: &Path, version: &str, from_version: &str) {
    let store = Store::new(data_dir);
    let mut state = store.load().unwrap_or_default();
    state.confirmed = Some(version.to_string());
    state.pending = None;
    state.failed = None;
    state.start_attempts.clear();
    if let Err(err) = store.save(&state) {
        log::error!("cannot save the self-upgrade state: {err}");
    }
    store.remove_versions_except(&[version, from_version]);
    super::handover::settle(data_dir);
}

/// Probation failed (the result is in the journal already): the previous binary
/// takes over by exec.
pub fn rolled_back(data_dir: &Path, version: &str, reason: &str, wall_s: i64) {
    let store = Store::new(data_dir);
    let mut state = store.load().unwrap_or_default();
    state.pending = None;
    state.failed = Some(Failed {
        version: version.to_string(),
        reason: reason.to_string(),
        at: wall_s,
    });
    if let Err(err) = store.save(&state) {
        log::error!("cannot save the self-upgrade state: {err}");
    }
}

/// A confirmed version answered a report: its starts are proven good.
pub fn started_well(data_dir: &Path) {
    let store = Store::new(data_dir);
    let Ok(mut state) = store.load() else {
        return;
    };
    if !state.start_attempts.is_empty() {
        state.start_attempts.clear();
        if let Err(err) = store.save(&state) {
            log::warn!("cannot save the self-upgrade state: {err}");
        }
    }
}
