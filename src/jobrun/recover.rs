//! An install or upgrade interrupted by a crash, a `kill -9`, a power cut or a
//! stop of BootAgent ends rolled back, never in between (docs/protocol.md section 7).
//!
//! Before an install or upgrade touches `agents/NAME`, the loop writes a
//! `ChildUpgrade` record to the metafile with what to restore (`undo_record`);
//! the job's result removes it in the same write. A start that finds one, before
//! any child starts, points `current` back at the old version, puts the old
//! `agent.json` back, removes the version that was switched in, and finishes the
//! job with errcode 6. Every step is idempotent, so a crash during the rollback
//! itself is rolled back again at the next start.

use super::files::{current_version, switch_current, write_atomically};
use super::state::{JobRunner, SHA256_SUFFIX};
use crate::events::JobResult;
use crate::jobs::ErrCode;
use crate::meta::ChildUpgrade;
use log::warn;
use std::fs;
use std::io;
use std::path::Path;

impl JobRunner {
    /// What an install or upgrade of `name` must restore if it is interrupted.
    pub fn undo_record(&self, id: &str, name: &str) -> ChildUpgrade {
        let agent_dir = self.data_dir.join("agents").join(name);
        ChildUpgrade {
            id: id.to_string(),
            name: name.to_string(),
            old_version: current_version(&agent_dir),
            old_settings: fs::read_to_string(agent_dir.join("agent.json")).ok(),
        }
    }
}

/// Rolls back an interrupted install or upgrade (see the module documentation);
/// the result is errcode 6 and says what runs now.
pub fn roll_back_interrupted(data_dir: &Path, upgrade: &ChildUpgrade) -> JobResult {
    let name = &upgrade.name;
    let agent_dir = data_dir.join("agents").join(name);
    let switched_in =
        current_version(&agent_dir).filter(|v| Some(v) != upgrade.old_version.as_ref());
    let outcome = match &upgrade.old_version {
        Some(old) => restore(
            &agent_dir,
            old,
            upgrade.old_settings.as_deref(),
            switched_in.as_deref(),
        )
        .map(|()| format!("rolled back: {name} {old} is current")),
        None if upgrade.old_settings.is_none() => {
            remove_dir(&agent_dir).map(|()| format!("rolled back: {name} is not installed"))
        }
        None => remove_new(
            &agent_dir,
            upgrade.old_settings.as_deref(),
            switched_in.as_deref(),
        )
        .map(|()| format!("rolled back: {name} is not installed")),
    };
    match outcome {
        Ok(what) => (
            ErrCode::StartFailed,
            format!("interrupted: BootAgent stopped during the install or upgrade; {what}"),
        ),
        Err(err) => {
            warn!("rolling back the interrupted upgrade of {name}: {err}");
            (
                ErrCode::StartFailed,
                format!(
                    "interrupted: BootAgent stopped during the install or upgrade, and the \
                     rollback failed: {err}"
                ),
            )
        }
    }
}

fn restore(
    agent_dir: &Path,
    old: &str,
    settings: Option<&str>,
    new: Option<&str>,
) -> io::Result<()> {
    restore_settings(agent_dir, settings)?;
    if current_version(agent_dir).as_deref() != Some(old) {
        switch_current(agent_dir, old)?;
    }
    remove_version(agent_dir, new)
}

fn remove_new(agent_dir: &Path, settings: Option<&str>, new: Option<&str>) -> io::Result<()> {
    restore_settings(agent_dir, settings)?;
    match fs::remove_file(agent_dir.join("current")) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    remove_version(agent_dir, new)
}

fn restore_settings(agent_dir: &Path, settings: Option<&str>) -> io::Result<()> {
    let path = agent_dir.join("agent.json");
    match settings {
        Some(text) => write_atomically(&path, text.as_bytes()),
        None => match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        },
    }
}

fn remove_version(agent_dir: &Path, version: Option<&str>) -> io::Result<()> {
    let Some(version) = version else {
        return Ok(());
    };
    let _ = fs::remove_file(agent_dir.join(format!("{version}{SHA256_SUFFIX}")));
    remove_dir(&agent_dir.join(version))
}

fn remove_dir(dir: &Path) -> io::Result<()> {
    match fs::remove_dir_all(dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}
