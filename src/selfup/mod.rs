//! BootAgent upgrades itself (docs/protocol.md section 10): the `self_upgrade` job, the
//! exec hand-over that keeps every child, probation and rollback, and the hand-over
//! at start from the installed binary to the confirmed one.
//!
//! ```text
//!  job ─► Preparing (worker: download, SHA256, ELF + `-V` check, bin/V/bootagent)
//!            │ ok                                  │ refused: errcode 2/3/4, nothing changed
//!            ▼
//!        Switched (state saved, alarm armed) ── execve(bin/V, same pid) ──► new image
//!                                                                           │ adopts children,
//!                                                                           │ reports at once
//!            ┌── report answered 200 and up until `probation` ends ◄────────┤
//!            ▼                                                              │ no report in time,
//!        confirmed: errcode 0                                               │ exit, hang (alarm),
//!                                                                           ▼ crash (init restarts)
//!                                                      previous binary again: errcode 6
//! ```
//!
//! The decision is written to the job journal (the metafile) first; `bin/state.json`
//! follows it. At every start the journal settles what `state.json` left pending, so
//! that after a `kill -9` anywhere exactly one version runs and one result is reported.
//!
//! # Files
//!
//! This file: the status lines. `state.rs`: `bin/state.json` (what is installed,
//! confirmed, pending, failed) and its atomic store. `check.rs`: is a file a BootAgent for this machine (ELF, `-V`).
//! `prepare.rs`: the worker's part of the job. `handover.rs`: the exec hand-over (the
//! marker, `handover.json`, the descriptors kept, the alarm). `start.rs`: what a start
//! does first (hand over to the confirmed binary, or not) and settling a pending upgrade.

mod check;
mod handover;
mod job;
mod prepare;
mod start;
mod state;

pub use check::{
    check_binary, elf_machine_ok, parse_version_output, takes_notify_sockets, Checked,
    NOTIFY_SOCKETS_LINE,
};
pub use handover::{
    after_exec, exec_marker, take_handover, CarriedSlot, ExecPlan, Handover, HANDOVER_ENV,
    HANDOVER_FILE, ROLLBACK_ENV,
};
pub use handover::{arm_rollback_on_alarm, exec, settle as settle_handover, Direction};
pub use job::{begin, confirmed, confirming, refused, rolled_back, started_well, switching};
pub use prepare::{prepare, Ready};
pub use start::{hand_over_at_start, settle, OnProbation, Settled};

pub use handover::HANG_MARGIN_S;
pub use start::{START_FAILURES_MAX, START_FAILURE_WINDOW_S};
pub use state::{
    current_exe, is_upgraded_binary, Failed, Identity, Pending, Phase, State, Store, BINARY_NAME,
    BIN_DIR, NOTIFY_SOCKETS_MARK, STATE_FILE,
};

pub use crate::job_fields::running_version;
use std::path::Path;

/// One line for `-T` and `bootagent status`: the running version, where it came
/// from, and a self-upgrade pending or failed.
pub fn describe(state: &State, running_version: &str, exe: Option<&Path>) -> Vec<String> {
    let mut lines = Vec::new();
    let source = match (&state.confirmed, exe) {
        (_, Some(exe)) => exe.display().to_string(),
        (Some(v), None) => format!("bin/{v}/{BINARY_NAME}"),
        (None, None) => "the installed binary".to_string(),
    };
    lines.push(format!("bootagent {running_version} from {source}"));
    match &state.confirmed {
        Some(version) => lines.push(format!(
            "self-upgrade: confirmed {version} (starts hand over from the installed binary{})",
            state
                .installed
                .as_ref()
                .map(|i| format!(" {}", i.path))
                .unwrap_or_default()
        )),
        None => lines.push("self-upgrade: none confirmed (the installed binary runs)".into()),
    }
    if let Some(p) = &state.pending {
        let phase = match p.phase {
            Phase::Preparing => "downloading and checking".to_string(),
            Phase::Switched => format!("on probation ({} s)", p.probation_s),
            Phase::Confirming => "confirmed".to_string(),
        };
        let to = if p.version.is_empty() {
            "a new version".to_string()
        } else {
            p.version.clone()
        };
        lines.push(format!(
            "self-upgrade pending: {} -> {to}, {phase}, job {}",
            p.from_version, p.job
        ));
    }
    if let Some(f) = &state.failed {
        lines.push(format!(
            "self-upgrade failed: {} ({}), at {}",
            f.version, f.reason, f.at
        ));
    }
    lines
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
