//! The supervisor: the edge that carries out what each child's state machine
//! (`child.rs`) decides. It finds the children on disk, spawns them, signals
//! their process groups, reaps them by pid on `SIGCHLD`, enforces resource limits
//! (cgroups, or sampling `/proc`), and turns every incident into an event.
//!
//! Its timers (restart delays, grace periods, `/proc` samples, health checks) are
//! keys of the event loop's one wheel, `TimerKey::Child(name, ChildTimer)`: it asks
//! for them through its `TimerRequests`, and the loop calls `on_timer` when one
//! fires. Nothing here polls: with no limits enforced through `/proc`, a supervisor
//! whose children run wakes only for `SIGCHLD`.

mod adopt;
mod discover;
mod health;
mod limits;
mod oom;
mod procs;
mod report;
mod settings;
mod spawn;
mod tracking;

pub use health::NotifierFactory;
pub use report::{Change, ChildView, Status};
pub use settings::{parse_envs, valid_name, Settings};
pub use tracking::AtStart;

use crate::child::{Action, Child, Exit, Input, RestartPolicy, State};
use crate::childlog::ChildLogs;
use crate::limits::Limits;
use crate::reslimit::{Cgroup, Mechanism, Throttle, TrackParent};
use crate::sys::Reaped;
use crate::timers::{ChildTimer, TimerKey, TimerRequests};
use crate::wheel::Millis;
use log::warn;
pub(crate) use procs::Processes;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The base `PATH` of every child (section 6).
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

struct Slot {
    child: Child,
    version: String,
    /// The version directory, absolute: cwd and `BOOT_AGENT_DIR`.
    dir: PathBuf,
    settings: Settings,
    /// Why the child cannot run (a bad `agent.json`); it stays `fatal` until fixed.
    broken: Option<String>,
    /// The deadline its `ChildTimer::State` is armed for: the state's, once the
    /// loop applied the requests.
    state_at: Option<Millis>,
    cgroup: Option<Cgroup>,
    /// OOM kills in the child's cgroup already accounted for (at its start, or
    /// reported as a worker's).
    oom_kills_seen: u64,
    throttle: Option<Throttle>,
    /// Limit the `/proc` sampler killed the child for.
    killed_for: Option<String>,
    /// Wall-clock start of the current process, for the local status view.
    started_wall: Option<i64>,
    /// The health checks of the current run.
    health: health::HealthRun,
}

pub struct Supervisor {
    data_dir: PathBuf,
    /// Names this data directory's cgroups (`agent-NAME-TAG`), so that two
    /// BootAgents on one host never take each other's cgroups for leftovers.
    cgroup_tag: String,
    slots: BTreeMap<String, Slot>,
    /// The timers asked for since the loop last applied them to its wheel.
    timers: TimerRequests,
    mechanism: Mechanism,
    /// Where tracking cgroups go when `mechanism` makes none (see `tracking.rs`).
    track: Option<TrackParent>,
    /// Some child runs without a cgroup: BootAgent is a child subreaper and finds that
    /// child's escaped processes by their environment (see `tracking.rs`).
    subreaper: bool,
    logs: Option<ChildLogs>,
    cpus: u32,
    /// What changed in the children since the loop last took it.
    changes: Vec<Change>,
    /// Something a report or the status view shows has changed.
    changed: bool,
    /// Something changed that waits for the next report without asking for a prompt
    /// one (a `STATUS=` text); the status view shows it at once.
    view_changed: bool,
    /// When the OOM-kill counts were last read (see `oom.rs`).
    oom_checked_at: Option<Millis>,
    /// The kernel's log, to name a worker the OOM killer took (see `oom.rs`).
    kmsg: Option<std::fs::File>,
    /// The sd_notify sockets, started when the first child that needs one spawns
    /// (see `health.rs`).
    notifier: health::LazyNotifier,
    /// Most children supervised (`children_max`).
    children_max: usize,
    /// The restart policy of a child whose settings say nothing (`restart_*`).
    policy: RestartPolicy,
    /// Spawning, signalling and reaping: the host's, or a simulation's.
    procs: Box<dyn Processes>,
}

impl Supervisor {
    /// `data_dir` must be absolute.
    pub fn new(
        data_dir: &Path,
        mechanism: Mechanism,
        track: Option<TrackParent>,
        logs: Option<ChildLogs>,
        cpus: u32,
    ) -> Self {
        Self::with_processes(
            data_dir,
            (mechanism, track),
            logs,
            cpus,
            Box::new(procs::Os),
        )
    }

    /// The same, with processes other than the host's (the whole-agent simulation's).
    pub(crate) fn with_processes(
        data_dir: &Path,
        (mechanism, track): (Mechanism, Option<TrackParent>),
        logs: Option<ChildLogs>,
        cpus: u32,
        procs: Box<dyn Processes>,
    ) -> Self {
        let mut supervisor = Supervisor {
            data_dir: data_dir.to_path_buf(),
            cgroup_tag: path_tag(data_dir),
            slots: BTreeMap::new(),
            timers: TimerRequests::default(),
            mechanism,
            track,
            subreaper: false,
            logs,
            cpus,
            changes: Vec::new(),
            changed: false,
            view_changed: false,
            oom_checked_at: None,
            kmsg: None,
            notifier: health::LazyNotifier::default(),
            children_max: Limits::default().children_max,
            policy: RestartPolicy::default(),
            procs,
        };
        supervisor.kmsg = oom::open_kmsg(&supervisor.mechanism);
        if supervisor.mechanism == Mechanism::Proc && supervisor.track.is_none() {
            supervisor.without_cgroups(
                "children get no cgroup of their own (limit_mechanism=proc, or none can be made here)",
            );
        }
        supervisor
    }

    /// The limits in force (`children_max`, `restart_*`), before any child is added.
    pub fn set_limits(&mut self, limits: &Limits) {
        self.children_max = limits.children_max;
        self.policy = RestartPolicy::new(limits);
    }

    /// Most children supervised (`children_max`).
    pub fn children_max(&self) -> usize {
        self.children_max
    }

    pub fn mechanism(&self) -> &Mechanism {
        &self.mechanism
    }

    /// `BOOT_AGENT_DIR=<data>/agents/`: the mark of every process BootAgent started.
    pub fn marker(data_dir: &Path) -> Vec<u8> {
        let mut marker = b"BOOT_AGENT_DIR=".to_vec();
        marker.extend_from_slice(data_dir.join("agents").as_os_str().as_encoded_bytes());
        marker.push(b'/');
        marker
    }

    /// Feeds one input to a child and carries out what it decides.
    pub fn input(&mut self, name: &str, input: Input, now: Millis, wall_s: i64) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if slot.broken.is_some() && matches!(input, Input::Start | Input::Restart) {
            return;
        }
        let before = (Status::of(&slot.child.state), slot.child.pid());
        let first_change = self.changes.len();
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            let Some(slot) = self.slots.get_mut(name) else {
                return;
            };
            let status_before = Status::of(&slot.child.state);
            let actions = slot.child.step(now, input);
            if Status::of(&slot.child.state) != status_before {
                self.changed = true;
            }
            for action in actions {
                match action {
                    Action::Spawn => pending.push(self.spawn(name, now, wall_s)),
                    Action::Terminate => self.signal(name, libc::SIGTERM),
                    Action::Kill => self.signal(name, libc::SIGKILL),
                    Action::Event {
                        kind,
                        exit,
                        message,
                    } => self.push_event(name, kind, exit, message, wall_s),
                }
            }
        }
        self.note_input(name, before, first_change);
        self.arm_state_timer(name);
        self.sync_health(name, now);
    }

    fn signal(&mut self, name: &str, signal: i32) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if let Some(pid) = slot.child.pid() {
            if let Err(err) = self.procs.signal_group(pid, signal) {
                warn!("{name}: signal {signal} to process group {pid}: {err}");
            }
            // Those that left the group (`setsid`, daemons) too, each once: a second
            // SIGTERM may mean "now" to a process already stopping gracefully.
            let strays = match &slot.cgroup {
                Some(cgroup) if signal == libc::SIGKILL => {
                    cgroup.signal(signal);
                    Vec::new()
                }
                Some(cgroup) => cgroup.pids(),
                None if self.subreaper => self
                    .procs
                    .marked_processes(&[&child_marker(&self.data_dir, name)]),
                None => Vec::new(),
            };
            for stray in strays {
                if self.procs.process_group(stray) != Some(pid) {
                    let _ = self.procs.signal_process(stray, signal);
                }
            }
            // A group paused by the CPU throttle must run to handle SIGTERM.
            self.timers.cancel(child_key(name, ChildTimer::Resume));
            let _ = self.procs.signal_group(pid, libc::SIGCONT);
        }
    }

    /// Keeps the child's `ChildTimer::State` at its state's deadline.
    fn arm_state_timer(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let wanted = slot.child.deadline();
        if slot.state_at == wanted {
            return;
        }
        slot.state_at = wanted;
        let key = child_key(name, ChildTimer::State);
        match wanted {
            Some(at) => self.timers.set(key, at),
            None => self.timers.cancel(key),
        }
    }

    /// The timers asked for since the last call, for the loop's wheel.
    pub fn timer_requests(&mut self) -> &mut TimerRequests {
        &mut self.timers
    }

    /// A timer of the child `name` fired at `now`.
    pub fn on_timer(&mut self, name: &str, timer: ChildTimer, now: Millis, wall_s: i64) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        match timer {
            ChildTimer::State => {
                slot.state_at = None;
                self.input(name, Input::Deadline, now, wall_s);
            }
            ChildTimer::Sample => self.sample(name, now),
            ChildTimer::Resume => {
                if let Some(pid) = slot.child.pid() {
                    let _ = self.procs.signal_group(pid, libc::SIGCONT);
                }
            }
            ChildTimer::Ready | ChildTimer::Watchdog | ChildTimer::Heartbeat => {
                self.on_health_timer(name, timer, now, wall_s)
            }
        }
    }

    /// Reaps every child that has exited (after `SIGCHLD`; several may have), each by
    /// its pid; as a subreaper, also the orphans reparented to BootAgent.
    pub fn on_sigchld(&mut self, now: Millis, wall_s: i64) {
        let running: Vec<(String, i32)> = self
            .slots
            .iter()
            .filter_map(|(name, slot)| slot.child.pid().map(|pid| (name.clone(), pid)))
            .collect();
        for (name, pid) in running {
            self.reap_child(&name, pid, now, wall_s);
        }
        if self.subreaper {
            self.reap_strays(now, wall_s);
        }
    }

    /// Reaps the child `name` if its process `pid` has exited. False if it has not.
    fn reap_child(&mut self, name: &str, pid: i32, now: Millis, wall_s: i64) -> bool {
        let Some(reaped) = self.procs.reap(pid) else {
            return false;
        };
        let exit = match reaped {
            Reaped::Code(code) => Exit::Code(code),
            Reaped::Signal(signal) => Exit::Signal(signal),
        };
        let limit = self.after_exit(name, pid);
        self.input(name, Input::Exited { exit, limit }, now, wall_s);
        true
    }

    /// Asks every child to stop (BootAgent's own shutdown).
    pub fn stop_all(&mut self, now: Millis, wall_s: i64) {
        // A fatal child has no process; it stays fatal, as the metafile says.
        let names: Vec<String> = self
            .slots
            .iter()
            .filter(|(_, slot)| slot.child.state != State::Fatal)
            .map(|(name, _)| name.clone())
            .collect();
        for name in names {
            self.input(&name, Input::Stop, now, wall_s);
        }
    }

    /// How many agents are supervised.
    pub fn count(&self) -> usize {
        self.slots.len()
    }

    pub fn knows(&self, name: &str) -> bool {
        self.slots.contains_key(name)
    }

    pub fn pid(&self, name: &str) -> Option<i32> {
        self.slots.get(name)?.child.pid()
    }

    /// The status of a child, for jobs that wait on it.
    pub fn status(&self, name: &str) -> Option<Status> {
        Some(Status::of(&self.slots.get(name)?.child.state))
    }

    pub fn restarts(&self, name: &str) -> u32 {
        self.slots.get(name).map_or(0, |slot| slot.child.restarts)
    }

    pub fn last_exit(&self, name: &str) -> Option<String> {
        self.slots.get(name)?.child.last_exit.clone()
    }

    pub fn grace_ms(&self, name: &str) -> u64 {
        self.slots
            .get(name)
            .map_or(self.policy.grace_ms, |slot| slot.child.policy.grace_ms)
    }

    /// The children that the restart policy made `fatal` (not those whose
    /// `agent.json` is broken: fixing the file and restarting BootAgent starts them).
    pub fn fatal_names(&self) -> BTreeSet<String> {
        self.slots
            .iter()
            .filter(|(_, slot)| slot.child.state == State::Fatal && slot.broken.is_none())
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Holds a child `fatal` without starting it: it was fatal when BootAgent last
    /// ran in this boot. A `restart`, `start`, `install` or `upgrade` revives it.
    pub fn hold_fatal(&mut self, name: &str) {
        if let Some(slot) = self.slots.get_mut(name) {
            if slot.child.state == State::Stopped {
                slot.child.state = State::Fatal;
                self.changed = true;
            }
        }
    }

    pub fn start(&mut self, name: &str, now: Millis, wall_s: i64) {
        self.input(name, Input::Start, now, wall_s);
    }

    pub fn stop(&mut self, name: &str, now: Millis, wall_s: i64) {
        self.input(name, Input::Stop, now, wall_s);
    }

    /// Stops the child if it runs, then starts it; revives a `fatal` one.
    pub fn restart(&mut self, name: &str, now: Millis, wall_s: i64) {
        self.input(name, Input::Restart, now, wall_s);
    }

    /// Reads an agent's `current` and `agent.json` again (after an install, an
    /// upgrade or new settings), keeping its process and counters; supervises it
    /// if it was not yet.
    pub fn reload(&mut self, name: &str, now: Millis) {
        let Some(old) = self.slots.remove(name) else {
            self.add(name, now);
            return;
        };
        self.add(name, now);
        if let Some(slot) = self.slots.get_mut(name) {
            let policy = slot.child.policy;
            slot.child = old.child;
            slot.child.policy = policy;
            // The timers are the child's by name: they stay armed.
            slot.state_at = old.state_at;
            slot.cgroup = old.cgroup;
            slot.oom_kills_seen = old.oom_kills_seen;
            slot.throttle = old.throttle;
            slot.started_wall = old.started_wall;
            slot.health = old.health;
            if slot.settings.health != old.settings.health {
                // Other checks: they start over for the process that runs.
                slot.health.cancel_checks(name, &mut self.timers);
            }
        }
        self.arm_state_timer(name);
        self.sync_health(name, now);
    }

    /// Forgets an agent that is down (uninstalled).
    pub fn remove(&mut self, name: &str) {
        if let Some(slot) = self.slots.remove(name) {
            for timer in ChildTimer::ALL {
                self.timers.cancel(child_key(name, timer));
            }
            if let Some(cgroup) = slot.cgroup {
                cgroup.remove();
            }
            self.notifier.close(name);
            self.changed = true;
        }
    }

    /// `SIGKILL` to every child's group (a second shutdown signal).
    pub fn kill_all(&mut self) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
        for name in names {
            self.signal(&name, libc::SIGKILL);
        }
    }

    /// True when no child process is left.
    pub fn all_down(&self) -> bool {
        self.slots.values().all(|slot| slot.child.pid().is_none())
    }

    /// The pid of the child `name`'s main process, and its name, for a pid.
    fn owner_of(&self, pid: i32) -> Option<String> {
        (self.slots.iter())
            .find(|(_, slot)| slot.child.pid() == Some(pid))
            .map(|(name, _)| name.clone())
    }
}

/// The key of a timer of the child `name` in the loop's wheel.
fn child_key(name: &str, timer: ChildTimer) -> TimerKey {
    TimerKey::Child(name.to_string(), timer)
}

/// `BOOT_AGENT_DIR=<data>/agents/NAME/`: the mark of every process of the child `name`.
fn child_marker(data_dir: &Path, name: &str) -> Vec<u8> {
    let mut marker = Supervisor::marker(data_dir);
    marker.extend_from_slice(name.as_bytes());
    marker.push(b'/');
    marker
}

/// Eight hex digits of FNV-1a over a path: short, stable, distinct enough.
fn path_tag(path: &Path) -> String {
    let hash = path
        .as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{:08x}", hash as u32)
}
