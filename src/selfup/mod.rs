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
//! This file: `bin/state.json` (what is installed, confirmed, pending, failed) and its
//! atomic store. `check.rs`: is a file a BootAgent for this machine (ELF, `-V`).
//! `prepare.rs`: the worker's part of the job. `handover.rs`: the exec hand-over (the
//! marker, `handover.json`, the descriptors kept, the alarm). `start.rs`: what a start
//! does first (hand over to the confirmed binary, or not) and settling a pending upgrade.

mod check;
mod handover;
mod job;
mod prepare;
mod start;

pub use check::{check_binary, elf_machine_ok, parse_version_output};
pub use handover::{
    after_exec, exec_marker, take_handover, CarriedSlot, ExecPlan, Handover, HANDOVER_ENV,
    HANDOVER_FILE, ROLLBACK_ENV,
};
pub use handover::{arm_rollback_on_alarm, exec, settle as settle_handover, Direction};
pub use job::{begin, confirmed, confirming, refused, rolled_back, started_well, switching};
pub use prepare::{prepare, Ready};
pub use start::{hand_over_at_start, settle, OnProbation, Settled};

pub use crate::job_fields::running_version;
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where received BootAgent binaries are kept: `bin/VERSION/bootagent`.
pub const BIN_DIR: &str = "bin";
/// The self-upgrade state, in `BIN_DIR`.
pub const STATE_FILE: &str = "state.json";
/// The binary's name inside its version directory.
pub const BINARY_NAME: &str = "bootagent";
/// Largest `state.json` read.
const STATE_BYTES_MAX: u64 = 64 * 1024;
/// The alarm armed before the exec fires this long after the probation should have
/// ended: a new image that neither confirmed nor rolled back by then is hung.
pub const HANG_MARGIN_S: u64 = 15;
/// A confirmed version that fails to start this many times within
/// `START_FAILURE_WINDOW_S` is abandoned for the installed binary.
pub const START_FAILURES_MAX: usize = 3;
pub const START_FAILURE_WINDOW_S: i64 = 600;

/// Size, modification time and SHA256 of the installed binary: when any changes
/// (the host's package manager installed another), the installed one wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub sha256: String,
}

impl Identity {
    /// Reads the identity of the binary at `path`.
    pub fn of(path: &Path) -> io::Result<Identity> {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path)?;
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(Identity {
            path: path.to_string_lossy().into_owned(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            sha256: crate::download::hex(&hasher.finalize()),
        })
    }
}

/// Where a self-upgrade in progress is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Downloading and checking; nothing has changed yet.
    Preparing,
    /// The exec to the new version happened (or was about to): on probation.
    Switched,
    /// Probation passed: the new version is confirmed; its result (errcode 0) is being
    /// written to the journal.
    Confirming,
}

/// A self-upgrade in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The job id, whose result settles the upgrade.
    pub job: String,
    pub phase: Phase,
    /// The new version (known once prepared).
    #[serde(default)]
    pub version: String,
    /// The version that ran before it, and where it came from (`None`: installed).
    pub from_version: String,
    pub from_bin: Option<String>,
    pub probation_s: u64,
    /// Wall-clock Unix seconds of the switch, for the status view.
    #[serde(default)]
    pub since: i64,
    /// Why the new version failed, when the installed binary found it so at start.
    #[serde(default)]
    pub failure: Option<String>,
}

/// The last self-upgrade that failed, for the status view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub version: String,
    pub reason: String,
    pub at: i64,
}

/// `bin/state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The installed binary (what init runs), recorded before the first exec.
    #[serde(default)]
    pub installed: Option<Identity>,
    /// The version in `bin/` that starts hand over to; `None`: the installed one runs.
    #[serde(default)]
    pub confirmed: Option<String>,
    #[serde(default)]
    pub pending: Option<Pending>,
    #[serde(default)]
    pub failed: Option<Failed>,
    /// Wall-clock starts of the confirmed version not yet followed by an answered
    /// report (a version that cannot start piles them up).
    #[serde(default)]
    pub start_attempts: Vec<i64>,
    /// Something to report as an event once a loop runs (the abandonment of a
    /// confirmed version that would not start).
    #[serde(default)]
    pub notice: Option<String>,
}

/// Reads and writes `bin/state.json` of one data directory.
#[derive(Clone, Debug)]
pub struct Store {
    data_dir: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.data_dir.join(BIN_DIR)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `bin/VERSION/bootagent`.
    pub fn binary(&self, version: &str) -> PathBuf {
        self.bin_dir().join(version).join(BINARY_NAME)
    }

    /// The state; a missing file is the default (nothing upgraded). A damaged one is
    /// an error: the caller runs the binary it is, which is always safe.
    pub fn load(&self) -> Result<State, String> {
        let path = self.bin_dir().join(STATE_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(STATE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        if bytes.len() as u64 > STATE_BYTES_MAX {
            return Err(format!(
                "{}: larger than {STATE_BYTES_MAX} bytes",
                path.display()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|err| {
            format!(
                "{}: {}",
                path.display(),
                crate::wire::one_line(&err.to_string())
            )
        })
    }

    /// Writes the state atomically and durably (temporary file, fsync, rename, fsync
    /// of the directory), mode 0600 in a 0700 directory.
    pub fn save(&self, state: &State) -> io::Result<()> {
        let dir = self.bin_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomically(&dir.join(STATE_FILE), &bytes)
    }

    /// Removes every `bin/VERSION` except those in `keep` (the running and the
    /// previous version). Errors are logged, never fatal.
    pub fn remove_versions_except(&self, keep: &[&str]) {
        let Ok(entries) = fs::read_dir(self.bin_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == STATE_FILE || keep.contains(&name.as_str()) {
                continue;
            }
            if entry.path().is_dir() {
                if let Err(err) = fs::remove_dir_all(entry.path()) {
                    log::warn!("cannot remove {}: {err}", entry.path().display());
                }
            }
        }
    }
}

/// Temporary file, fsync, rename over `path`, fsync of the directory (mode 0600).
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic_file::replace(path, bytes, 0o600)
}

/// The path of the running binary (`/proc/self/exe`).
pub fn current_exe() -> Option<PathBuf> {
    fs::read_link("/proc/self/exe").ok()
}

/// True when `exe` is one of the binaries kept under `bin/` of `data_dir`.
pub fn is_upgraded_binary(data_dir: &Path, exe: &Path) -> bool {
    let bin = data_dir.join(BIN_DIR);
    let bin = bin.canonicalize().unwrap_or(bin);
    exe.starts_with(&bin)
}

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
