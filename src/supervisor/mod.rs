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
//!
//! This file holds the entry points (construction, inputs to a child, its timers,
//! reaping, start, stop, reload, removal) and the re-exports. What the supervisor
//! holds is in `state.rs` (`Supervisor`, each child's `Slot`); the types it tells
//! in `status.rs`; what the health checks keep in `health_state.rs`. The other
//! files each add an `impl Supervisor` for one concern; they import `state.rs` and
//! those leaf files, never this one, so the imports of `supervisor/` form no circle.

mod adopt;
mod discover;
mod health;
mod health_state;
mod limits;
mod oom;
mod procs;
mod report;
mod settings;
mod spawn;
mod state;
mod status;
mod tracking;

pub use health_state::NotifierFactory;
pub use settings::{parse_envs, valid_name, Settings};
pub use state::Supervisor;
pub use status::{Change, ChildFacts, ChildView, Status};
pub use tracking::AtStart;

use crate::child::{Action, Exit, Input, RestartPolicy, State};
use crate::childlog::ChildLogs;
use crate::limits::Limits;
use crate::reslimit::{Mechanism, TrackParent};
use crate::sys::Reaped;
use crate::timers::{ChildTimer, TimerRequests};
use crate::wheel::Millis;
use health_state::LazyNotifier;
use log::warn;
pub(crate) use procs::Processes;
use state::{child_key, child_marker, path_tag};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

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
            notifier: LazyNotifier::default(),
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
