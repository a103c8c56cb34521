//! What the supervisor holds: the `Supervisor` itself and each child's `Slot`, and
//! the names derived from them (a child's timer keys, the environment marks of its
//! processes, the tag of this data directory's cgroups, the base `PATH`). The
//! `impl Supervisor` files of `supervisor/` import this one; it imports only the
//! leaf files that declare what it holds (`settings.rs`, `procs.rs`, `status.rs`,
//! `health_state.rs`).

use super::health_state::{HealthRun, LazyNotifier};
use super::procs::Processes;
use super::settings::Settings;
use super::status::Change;
use crate::child::{Child, RestartPolicy};
use crate::childlog::ChildLogs;
use crate::reslimit::{Cgroup, Mechanism, Throttle, TrackParent};
use crate::timers::{ChildTimer, TimerKey, TimerRequests};
use crate::wheel::Millis;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The base `PATH` of every child (section 6).
pub(super) const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One supervised child: its state machine and what its edge keeps beside it.
pub(super) struct Slot {
    pub(super) child: Child,
    pub(super) version: String,
    /// The version directory, absolute: cwd and `BOOT_AGENT_DIR`.
    pub(super) dir: PathBuf,
    pub(super) settings: Settings,
    /// Why the child cannot run (a bad `agent.json`); it stays `fatal` until fixed.
    pub(super) broken: Option<String>,
    /// The deadline its `ChildTimer::State` is armed for: the state's, once the
    /// loop applied the requests.
    pub(super) state_at: Option<Millis>,
    pub(super) cgroup: Option<Cgroup>,
    /// OOM kills in the child's cgroup already accounted for (at its start, or
    /// reported as a worker's).
    pub(super) oom_kills_seen: u64,
    pub(super) throttle: Option<Throttle>,
    /// Limit the `/proc` sampler killed the child for.
    pub(super) killed_for: Option<String>,
    /// Wall-clock start of the current process, for the local status view.
    pub(super) started_wall: Option<i64>,
    /// The health checks of the current run.
    pub(super) health: HealthRun,
}

/// The edge for children (see `mod.rs` for its API).
pub struct Supervisor {
    pub(super) data_dir: PathBuf,
    /// Names this data directory's cgroups (`agent-NAME-TAG`), so that two
    /// BootAgents on one host never take each other's cgroups for leftovers.
    pub(super) cgroup_tag: String,
    pub(super) slots: BTreeMap<String, Slot>,
    /// The timers asked for since the loop last applied them to its wheel.
    pub(super) timers: TimerRequests,
    pub(super) mechanism: Mechanism,
    /// Where tracking cgroups go when `mechanism` makes none (see `tracking.rs`).
    pub(super) track: Option<TrackParent>,
    /// Some child runs without a cgroup: BootAgent is a child subreaper and finds that
    /// child's escaped processes by their environment (see `tracking.rs`).
    pub(super) subreaper: bool,
    pub(super) logs: Option<ChildLogs>,
    pub(super) cpus: u32,
    /// What changed in the children since the loop last took it.
    pub(super) changes: Vec<Change>,
    /// Something a report or the status view shows has changed.
    pub(super) changed: bool,
    /// Something changed that waits for the next report without asking for a prompt
    /// one (a `STATUS=` text); the status view shows it at once.
    pub(super) view_changed: bool,
    /// When the OOM-kill counts were last read (see `oom.rs`).
    pub(super) oom_checked_at: Option<Millis>,
    /// The kernel's log, to name a worker the OOM killer took (see `oom.rs`).
    pub(super) kmsg: Option<std::fs::File>,
    /// The sd_notify sockets, started when the first child that needs one spawns
    /// (see `health.rs`).
    pub(super) notifier: LazyNotifier,
    /// Most children supervised (`children_max`).
    pub(super) children_max: usize,
    /// The restart policy of a child whose settings say nothing (`restart_*`).
    pub(super) policy: RestartPolicy,
    /// Spawning, signalling and reaping: the host's, or a simulation's.
    pub(super) procs: Box<dyn Processes>,
}

/// The key of a timer of the child `name` in the loop's wheel.
pub(super) fn child_key(name: &str, timer: ChildTimer) -> TimerKey {
    TimerKey::Child(name.to_string(), timer)
}

/// `BOOT_AGENT_DIR=<data>/agents/`: the mark of every process BootAgent started.
pub(super) fn agents_marker(data_dir: &Path) -> Vec<u8> {
    let mut marker = b"BOOT_AGENT_DIR=".to_vec();
    marker.extend_from_slice(data_dir.join("agents").as_os_str().as_encoded_bytes());
    marker.push(b'/');
    marker
}

/// `BOOT_AGENT_DIR=<data>/agents/NAME/`: the mark of every process of the child `name`.
pub(super) fn child_marker(data_dir: &Path, name: &str) -> Vec<u8> {
    let mut marker = agents_marker(data_dir);
    marker.extend_from_slice(name.as_bytes());
    marker.push(b'/');
    marker
}

/// Eight hex digits of FNV-1a over a path: short, stable, distinct enough.
pub(super) fn path_tag(path: &Path) -> String {
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{:08x}", hash as u32)
}
