//! Switching an agent to a new version, and back: the probation a new version
//! must pass, and the rollback to the old one when it does not.

use super::files::{current_version, switch_current, write_atomically};
use super::state::{Ctx, JobRunner, Phase, Probation, SHA256_SUFFIX, START_WAIT_MS};
use crate::events::JobResult;
use crate::jobs::{ErrCode, Install};
use log::info;
use std::fs;

impl JobRunner {
    /// Writes the settings, points `current` at `version` and (re)starts the child.
    pub(super) fn switch_to(
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
        let old_pid = ctx.supervisor.facts(name).pid;
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
            stay_ms: install.probation_s * 1000,
            awaiting_ready: false,
            ready_seen: false,
            old_pid,
            pid: None,
            restarts: ctx.supervisor.facts(name).restarts,
            new_version: version.to_string(),
            old_version: old_version.filter(|old| old != version),
            old_settings,
        })))
    }

    pub(super) fn roll_back(
        &mut self,
        name: &str,
        p: Probation,
        why: &str,
        ctx: &mut Ctx<'_>,
    ) -> JobResult {
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
}

impl Probation {
    pub(super) fn clone_for_rollback(&self) -> Probation {
        Probation {
            until: self.until,
            stay_ms: self.stay_ms,
            awaiting_ready: self.awaiting_ready,
            ready_seen: self.ready_seen,
            old_pid: self.old_pid,
            pid: self.pid,
            restarts: self.restarts,
            new_version: self.new_version.clone(),
            old_version: self.old_version.clone(),
            old_settings: self.old_settings.clone(),
        }
    }
}
