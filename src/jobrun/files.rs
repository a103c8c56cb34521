//! An agent's files: its merged `agent.json`, the `current` link, old versions,
//! and the removal of everything it left (uninstall).

use super::state::{Ctx, JobRunner, SHA256_SUFFIX, TMP_DIR};
use crate::events::JobResult;
use crate::jobs::{ErrCode, Settings};
use log::info;
use serde_json::{Map, Value};
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

/// Removes a child's log files: `NAME.log` and every rotated `NAME.log.N`, however
/// many `child_log_files_max` allowed (up to 100).
fn remove_logs(logs: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(logs) else {
        return;
    };
    let current = format!("{name}.log");
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let rotated = file_name
            .strip_prefix(&current)
            .and_then(|rest| rest.strip_prefix('.'))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if file_name == current || rotated {
            let _ = fs::remove_file(entry.path());
        }
    }
}

impl JobRunner {
    /// Removes an agent that is down: its files, its settings, its logs.
    pub(super) fn remove_agent(&mut self, name: &str, ctx: &mut Ctx<'_>) -> JobResult {
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
        remove_logs(&self.data_dir.join("logs"), name);
        ctx.supervisor.remove(name);
        ctx.stopped.push((name.to_string(), false));
        (ErrCode::Success, format!("{name} uninstalled"))
    }

    pub(super) fn write_settings(&self, name: &str, settings: &Settings) -> Result<(), JobResult> {
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
}

/// The version `current` points to.
pub fn current_version(agent_dir: &Path) -> Option<String> {
    let target = fs::read_link(agent_dir.join("current")).ok()?;
    target.file_name().map(|v| v.to_string_lossy().into_owned())
}

/// Points `current` at `version` atomically: a new link renamed over the old one.
pub(super) fn switch_current(agent_dir: &Path, version: &str) -> io::Result<()> {
    let tmp = agent_dir.join("current.tmp");
    let _ = fs::remove_file(&tmp);
    symlink(version, &tmp)?;
    fs::rename(&tmp, agent_dir.join("current"))?;
    fs::File::open(agent_dir)?.sync_all()
}

/// Removes version directories other than `keep`.
pub(super) fn remove_old_versions(agent_dir: &Path, keep: &[Option<String>]) {
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

/// Replaces `path` atomically and durably; mode 0600, since envs may carry secrets.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic_file::replace(path, bytes, 0o600)
}
