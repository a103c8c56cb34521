//! The job runner's types: the runner and the job in progress with its phase, what
//! the worker thread is asked, what the loop lends it (`Ctx`), and its bounds. The
//! files of `jobrun/` take them from here, never from `mod.rs`, so that their imports
//! form no circle.

use crate::jobs::{Install, Job, SelfUpgrade};
use crate::supervisor::{ChildFacts, Supervisor};
use crate::wheel::Millis;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

/// The staging directory under the data directory, wiped at every start.
pub const TMP_DIR: &str = "tmp";
/// How long a restart or start may take to show a running process, past the grace period.
pub(super) const START_WAIT_MS: u64 = 5_000;
/// How long a stop may take past the grace period (after SIGKILL) before the job fails.
pub(super) const STOP_WAIT_MS: u64 = 30_000;

/// Beside each version directory, `VERSION.sha256` holds its package's SHA256.
pub(super) const SHA256_SUFFIX: &str = ".sha256";

/// What the worker thread is asked to do.
pub struct Prepare {
    pub id: String,
    pub work: Work,
}

/// A package to install, or a new BootAgent binary.
pub enum Work {
    Install(Install),
    SelfUpgrade(SelfUpgrade),
}

/// A self-upgrade ready to switch to: the loop execs `bin/VERSION/bootagent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSwitch {
    pub id: String,
    pub version: String,
    pub probation_s: u64,
}

pub(super) enum Phase {
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
    /// A new BootAgent binary is ready: the loop execs it (`take_switch`).
    Switching,
}

pub(super) struct Probation {
    pub(super) until: Millis,
    /// How long the new version must stay up (after it is ready, with `notify`).
    pub(super) stay_ms: u64,
    /// The new version has `notify` and is not ready yet: no deadline, the ready
    /// notification or the ready timeout's restart decides.
    pub(super) awaiting_ready: bool,
    /// `READY=1` of the new version was seen, and `until` moved after it.
    pub(super) ready_seen: bool,
    /// The process of the version being replaced, stopping: not the new one.
    pub(super) old_pid: Option<i32>,
    pub(super) pid: Option<i32>,
    pub(super) restarts: u32,
    pub(super) new_version: String,
    pub(super) old_version: Option<String>,
    pub(super) old_settings: Option<Vec<u8>>,
}

pub(super) struct Current {
    pub(super) id: String,
    pub(super) job: Job,
    pub(super) phase: Phase,
    /// Its child as last seen: when the job commanded it, then with every change
    /// the supervisor returned (`on_change`). `look` decides from it alone.
    pub(super) child: ChildFacts,
    /// Appended to a successful result's message.
    pub(super) note: Option<String>,
}

pub struct JobRunner {
    pub(super) data_dir: PathBuf,
    pub(super) worker: SyncSender<Prepare>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) current: Option<Current>,
    pub(super) switch: Option<SelfSwitch>,
}

/// What the runner needs from the loop to carry a job on.
pub struct Ctx<'a> {
    pub supervisor: &'a mut Supervisor,
    pub now: Millis,
    pub wall_s: i64,
    /// Changes to the desired states (the metafile's `stopped` set), for the core.
    pub stopped: &'a mut Vec<(String, bool)>,
}
