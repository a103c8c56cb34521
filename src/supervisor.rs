//! The supervisor: the edge that carries out what each child's state machine
//! (`child.rs`) decides. It finds the children on disk, spawns them, signals
//! their process groups, reaps them by pid on `SIGCHLD`, enforces resource limits
//! (cgroups, or sampling `/proc`), and turns every incident into an event.
//!
//! It owns its own timer wheel (restart delays, grace periods, `/proc` samples);
//! the event loop sleeps until the earlier of its deadline and the core's.
//! Nothing here polls: with no limits enforced through `/proc`, a supervisor
//! whose children run wakes only for `SIGCHLD`.

use crate::child::{Action, Child, EventKind, Exit, Input, RestartPolicy, State};
use crate::childlog::ChildLogs;
use crate::reslimit::{self, Cgroup, Mechanism, ResourceLimits, Throttle, Verdict};
use crate::sys::{self, Reaped, SpawnSpec};
use crate::wheel::{Millis, TimerId, Wheel};
use crate::wire::{AgentStatus, ChildEvent};
use log::{debug, info, warn};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The base `PATH` of every child (section 6).
pub const CHILD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Most children supervised at once.
pub const CHILDREN_MAX: usize = 256;
/// Largest `agent.json` read.
const AGENT_JSON_BYTES_MAX: u64 = 64 * 1024;
/// Most environment variables a child gets from its settings.
const ENVS_MAX: usize = 256;
/// Longest environment variable (name plus value).
const ENV_BYTES_MAX: usize = 32 * 1024;

/// What a child runs with: from its `agent.json`, or from a job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub envs: BTreeMap<String, String>,
    pub limits: ResourceLimits,
    pub policy: RestartPolicy,
}

impl Settings {
    /// Reads `{"envs": {…}, "limits": {…}, "restart": {…}}`; every part optional.
    pub fn from_json(value: &Value, cpus: u32) -> Result<Settings, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "settings are {}, not an object",
                crate::wire::kind(value)
            ));
        };
        let mut settings = Settings::default();
        for (key, value) in map {
            match key.as_str() {
                "envs" => settings.envs = parse_envs(value)?,
                "limits" => settings.limits = reslimit::parse_limits(value, cpus)?,
                "restart" => settings.policy = RestartPolicy::from_json(value)?,
                other => return Err(format!("unknown setting {other:?}")),
            }
        }
        Ok(settings)
    }
}

/// Reads `envs`: names of letters, digits and `_`; `BOOT_AGENT_*` is reserved.
pub fn parse_envs(value: &Value) -> Result<BTreeMap<String, String>, String> {
    read_envs(value).map_err(|message| crate::wire::one_line(&message))
}

fn read_envs(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "envs is {}, not an object",
            crate::wire::kind(value)
        ));
    };
    if map.len() > ENVS_MAX {
        return Err(format!(
            "envs has {} entries, more than {ENVS_MAX}",
            map.len()
        ));
    }
    let mut envs = BTreeMap::new();
    for (name, value) in map {
        let Value::String(value) = value else {
            return Err(format!("envs.{name} must be a string"));
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(format!("envs: {name:?} is not a valid variable name"));
        }
        if name.starts_with("BOOT_AGENT_") || name == "PATH" && value.is_empty() {
            return Err(format!(
                "envs: {name} is set by BootAgent and cannot be replaced"
            ));
        }
        if value.contains('\0') || name.len() + value.len() > ENV_BYTES_MAX {
            return Err(format!(
                "envs.{name}: NUL byte, or longer than {ENV_BYTES_MAX} bytes"
            ));
        }
        envs.insert(name.clone(), value.clone());
    }
    Ok(envs)
}

/// A child name (section 7): 1–64 of `A–Z a–z 0–9 . _ -`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    /// The deadline of the child's state (restart delay, grace period).
    State,
    /// Time for a `/proc` sample.
    Sample,
    /// End of a `/proc` CPU throttle pause: `SIGCONT`.
    Resume,
}

struct Slot {
    child: Child,
    version: String,
    /// The version directory, absolute: cwd and `BOOT_AGENT_DIR`.
    dir: PathBuf,
    settings: Settings,
    /// Why the child cannot run (a bad `agent.json`); it stays `fatal` until fixed.
    broken: Option<String>,
    state_timer: Option<(TimerId, Millis)>,
    sample_timer: Option<TimerId>,
    resume_timer: Option<TimerId>,
    cgroup: Option<Cgroup>,
    oom_kills_at_start: u64,
    throttle: Option<Throttle>,
    /// Limit the `/proc` sampler killed the child for.
    killed_for: Option<String>,
    /// Wall-clock start of the current process, for the local status view.
    started_wall: Option<i64>,
}

/// One line of the local status view (`bootagent status`).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ChildView {
    pub name: String,
    pub version: String,
    pub status: String,
    pub pid: u32,
    pub started: Option<i64>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// The limits in force, as `agent.json` or a job set them ("none" without).
    #[serde(default)]
    pub limits: String,
    /// The environment a job or `agent.json` added, as `NAME=value`.
    #[serde(default)]
    pub envs: Vec<String>,
}

pub struct Supervisor {
    data_dir: PathBuf,
    /// Names this data directory's cgroups (`agent-NAME-TAG`), so that two
    /// BootAgents on one host never take each other's cgroups for leftovers.
    cgroup_tag: String,
    slots: BTreeMap<String, Slot>,
    wheel: Wheel<(String, Timer)>,
    mechanism: Mechanism,
    logs: Option<ChildLogs>,
    cpus: u32,
    events: Vec<ChildEvent>,
    /// Something a report or the status view shows has changed.
    changed: bool,
}

impl Supervisor {
    /// `data_dir` must be absolute.
    pub fn new(
        data_dir: &Path,
        mechanism: Mechanism,
        logs: Option<ChildLogs>,
        cpus: u32,
        now: Millis,
    ) -> Self {
        Supervisor {
            data_dir: data_dir.to_path_buf(),
            cgroup_tag: path_tag(data_dir),
            slots: BTreeMap::new(),
            wheel: Wheel::new(now),
            mechanism,
            logs,
            cpus,
            events: Vec::new(),
            changed: false,
        }
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

    /// Finds every `agents/NAME/current/run` and supervises it; starts those not
    /// in `stopped`. Returns one line per agent directory that was skipped.
    pub fn discover(
        &mut self,
        stopped: &BTreeSet<String>,
        now: Millis,
        wall_s: i64,
    ) -> Vec<String> {
        let agents = self.data_dir.join("agents");
        let mut skipped = Vec::new();
        let entries = match fs::read_dir(&agents) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return skipped,
            Err(err) => {
                skipped.push(format!("{}: {err}", agents.display()));
                return skipped;
            }
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .collect();
        names.sort();
        for name in names {
            if !valid_name(&name) {
                skipped.push(format!("agents/{name}: not a valid agent name"));
                continue;
            }
            if !agents.join(&name).join("current").join("run").exists() {
                continue; // not (yet) installed
            }
            if self.slots.len() >= CHILDREN_MAX {
                skipped.push(format!("agents/{name}: more than {CHILDREN_MAX} agents"));
                continue;
            }
            self.add(&name, now);
            if !stopped.contains(&name) {
                self.input(&name, Input::Start, now, wall_s);
            }
        }
        skipped
    }

    /// Supervises the installed agent `name` (reads `current` and `agent.json`).
    fn add(&mut self, name: &str, now: Millis) {
        let agent_dir = self.data_dir.join("agents").join(name);
        let current = agent_dir.join("current");
        let (version, dir, mut broken) = match fs::read_link(&current) {
            Ok(target) => {
                let version = target
                    .file_name()
                    .map(|v| v.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let dir = if target.is_absolute() {
                    target
                } else {
                    agent_dir.join(target)
                };
                (version, dir, None)
            }
            // A plain directory instead of a link: its name is the version.
            Err(_) => ("0".to_string(), current.clone(), None),
        };
        let settings = match read_settings(&agent_dir.join("agent.json"), self.cpus) {
            Ok(settings) => settings,
            Err(err) => {
                broken = Some(err);
                Settings::default()
            }
        };
        let mut child = Child::new(settings.policy);
        if let Some(why) = &broken {
            warn!("agent {name}: {why}; it will not be started");
            child.state = State::Fatal;
            self.push_event(name, EventKind::Fatal, None, why.clone(), 0);
        }
        debug!("supervising {name} {version} in {}", dir.display());
        let _ = now;
        self.slots.insert(
            name.to_string(),
            Slot {
                child,
                version,
                dir,
                settings,
                broken,
                state_timer: None,
                sample_timer: None,
                resume_timer: None,
                cgroup: None,
                oom_kills_at_start: 0,
                throttle: None,
                killed_for: None,
                started_wall: None,
            },
        );
        self.changed = true;
    }

    /// Feeds one input to a child and carries out what it decides.
    pub fn input(&mut self, name: &str, input: Input, now: Millis, wall_s: i64) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if slot.broken.is_some() && matches!(input, Input::Start | Input::Restart) {
            return;
        }
        let mut pending = vec![input];
        while let Some(input) = pending.pop() {
            let Some(slot) = self.slots.get_mut(name) else {
                return;
            };
            let status_before = slot.child.status();
            let actions = slot.child.step(now, input);
            if slot.child.status() != status_before {
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
        self.arm_state_timer(name);
    }

    fn spawn(&mut self, name: &str, now: Millis, wall_s: i64) -> Input {
        let log_path = self.data_dir.join("logs").join(format!("{name}.log"));
        let Some(slot) = self.slots.get_mut(name) else {
            return Input::SpawnFailed {
                error: "no such agent".into(),
            };
        };
        let cgroup_name = format!("agent-{name}-{}", self.cgroup_tag);
        match spawn_slot(
            name,
            &cgroup_name,
            slot,
            &self.mechanism,
            self.logs.as_ref(),
            &log_path,
        ) {
            Ok(pid) => {
                slot.started_wall = Some(wall_s);
                slot.killed_for = None;
                // What no cgroup enforces (all of it under /proc sampling, or one
                // controller missing on cgroup v1) is sampled.
                let mut sampled = self.mechanism.fallback_limits(&slot.settings.limits);
                if slot.cgroup.is_none() {
                    sampled = slot.settings.limits;
                }
                if !sampled.is_empty() {
                    let throttle = Throttle::new(sampled, now);
                    let at = now.saturating_add(throttle.interval_ms());
                    slot.throttle = Some(throttle);
                    slot.sample_timer =
                        Some(self.wheel.insert(at, (name.to_string(), Timer::Sample)));
                }
                Input::Spawned { pid }
            }
            Err(err) => {
                warn!(
                    "{name}: could not start {}: {err}",
                    slot.dir.join("run").display()
                );
                Input::SpawnFailed {
                    error: err.to_string(),
                }
            }
        }
    }

    fn signal(&mut self, name: &str, signal: i32) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if let Some(pid) = slot.child.pid() {
            if let Err(err) = sys::signal_group(pid, signal) {
                warn!("{name}: signal {signal} to process group {pid}: {err}");
            }
            // A group paused by the CPU throttle must run to handle SIGTERM.
            if let Some(id) = slot.resume_timer.take() {
                self.wheel.cancel(id);
            }
            let _ = sys::signal_group(pid, libc::SIGCONT);
        }
    }

    fn push_event(
        &mut self,
        name: &str,
        kind: EventKind,
        exit: Option<Exit>,
        message: String,
        wall_s: i64,
    ) {
        let (code, signal) = match exit {
            Some(Exit::Code(code)) => (Some(code), None),
            Some(Exit::Signal(signal)) => (None, Some(signal)),
            None => (None, None),
        };
        match kind {
            EventKind::Started | EventKind::Restarted | EventKind::Stopped => {
                info!("{name}: {message}")
            }
            _ => warn!("{name}: {message}"),
        }
        self.events.push(ChildEvent {
            time: wall_s,
            name: name.to_string(),
            event: kind.as_str(),
            code,
            signal,
            message,
        });
        self.changed = true;
    }

    /// Keeps the wheel's timer of a child at its state's deadline.
    fn arm_state_timer(&mut self, name: &str) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let wanted = slot.child.deadline();
        if slot.state_timer.map(|(_, at)| at) == wanted {
            return;
        }
        if let Some((id, _)) = slot.state_timer.take() {
            self.wheel.cancel(id);
        }
        if let Some(at) = wanted {
            slot.state_timer = Some((self.wheel.insert(at, (name.to_string(), Timer::State)), at));
        }
    }

    pub fn next_deadline(&self) -> Option<Millis> {
        self.wheel.next_deadline()
    }

    /// Fires the timers due at `now`.
    pub fn on_time(&mut self, now: Millis, wall_s: i64) {
        while let Some((id, (name, timer))) = self.wheel.poll(now) {
            let Some(slot) = self.slots.get_mut(&name) else {
                continue;
            };
            match timer {
                Timer::State => {
                    if slot.state_timer.is_some_and(|(pending, _)| pending == id) {
                        slot.state_timer = None;
                        self.input(&name, Input::Deadline, now, wall_s);
                    }
                }
                Timer::Sample => {
                    slot.sample_timer = None;
                    self.sample(&name, now);
                }
                Timer::Resume => {
                    slot.resume_timer = None;
                    if let Some(pid) = slot.child.pid() {
                        let _ = sys::signal_group(pid, libc::SIGCONT);
                    }
                }
            }
        }
    }

    /// One `/proc` sample of a child with limits: throttle or kill as decided.
    fn sample(&mut self, name: &str, now: Millis) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let (Some(pid), Some(throttle)) = (slot.child.pid(), slot.throttle.as_mut()) else {
            return;
        };
        let verdict = match reslimit::group_usage(pid) {
            Ok(usage) => throttle.sample(now, usage),
            Err(err) => {
                debug!("{name}: /proc sample failed: {err}");
                Verdict::Ok
            }
        };
        let interval = throttle.interval_ms();
        match verdict {
            Verdict::Ok => {}
            Verdict::KillMemory {
                rss_bytes,
                limit_bytes,
            } => {
                info!("{name}: {rss_bytes} bytes resident, over its memory limit of {limit_bytes}: killing");
                slot.killed_for = Some(memory_limit(limit_bytes));
                let _ = sys::signal_group(pid, libc::SIGKILL);
                return; // SIGCHLD follows
            }
            Verdict::Stop { resume_at } => {
                let _ = sys::signal_group(pid, libc::SIGSTOP);
                if let Some(id) = slot.resume_timer.take() {
                    self.wheel.cancel(id);
                }
                slot.resume_timer = Some(
                    self.wheel
                        .insert(resume_at, (name.to_string(), Timer::Resume)),
                );
            }
        }
        let next = now.saturating_add(interval);
        slot.sample_timer = Some(self.wheel.insert(next, (name.to_string(), Timer::Sample)));
    }

    /// Reaps every child that has exited (after `SIGCHLD`; several may have).
    pub fn on_sigchld(&mut self, now: Millis, wall_s: i64) {
        let running: Vec<(String, i32)> = self
            .slots
            .iter()
            .filter_map(|(name, slot)| slot.child.pid().map(|pid| (name.clone(), pid)))
            .collect();
        for (name, pid) in running {
            let Some(reaped) = sys::reap(pid) else {
                continue;
            };
            let exit = match reaped {
                Reaped::Code(code) => Exit::Code(code),
                Reaped::Signal(signal) => Exit::Signal(signal),
            };
            let limit = self.after_exit(&name, pid);
            self.input(&name, Input::Exited { exit, limit }, now, wall_s);
        }
    }

    /// Cleans up after the leader of a group exited; names the limit it was killed for.
    fn after_exit(&mut self, name: &str, pid: i32) -> Option<String> {
        let slot = self.slots.get_mut(name)?;
        // What is left of the group goes too: no orphans holding ports or files.
        let _ = sys::signal_group(pid, libc::SIGKILL);
        for id in [slot.sample_timer.take(), slot.resume_timer.take()]
            .into_iter()
            .flatten()
        {
            self.wheel.cancel(id);
        }
        slot.throttle = None;
        slot.started_wall = None;
        let mut limit = slot.killed_for.take();
        if let Some(cgroup) = slot.cgroup.take() {
            // The kernel's OOM killer may have hit the leader or a process under it
            // (a shell's child): either way the child was killed for its limit.
            if cgroup.oom_kills() > slot.oom_kills_at_start {
                limit = slot.settings.limits.memory_bytes.map(memory_limit);
            }
            cgroup.remove();
        }
        limit
    }

    /// Asks every child to stop (BootAgent's own shutdown).
    pub fn stop_all(&mut self, now: Millis, wall_s: i64) {
        let names: Vec<String> = self.slots.keys().cloned().collect();
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

    /// The status word of the wire, for jobs that wait on a child.
    pub fn status(&self, name: &str) -> Option<&'static str> {
        Some(self.slots.get(name)?.child.status())
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
            .map_or(RestartPolicy::default().grace_ms, |slot| {
                slot.child.policy.grace_ms
            })
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
            if let Some((id, _)) = old.state_timer {
                self.wheel.cancel(id);
            }
            slot.cgroup = old.cgroup;
            slot.oom_kills_at_start = old.oom_kills_at_start;
            slot.throttle = old.throttle;
            slot.sample_timer = old.sample_timer;
            slot.resume_timer = old.resume_timer;
            slot.started_wall = old.started_wall;
        }
        self.arm_state_timer(name);
    }

    /// Forgets an agent that is down (uninstalled).
    pub fn remove(&mut self, name: &str) {
        if let Some(slot) = self.slots.remove(name) {
            for id in [
                slot.state_timer.map(|(id, _)| id),
                slot.sample_timer,
                slot.resume_timer,
            ]
            .into_iter()
            .flatten()
            {
                self.wheel.cancel(id);
            }
            if let Some(cgroup) = slot.cgroup {
                cgroup.remove();
            }
            self.changed = true;
        }
    }

    /// Reports an upgrade that was rolled back.
    pub fn note_rollback(&mut self, name: &str, new: &str, old: &str, why: &str, wall_s: i64) {
        let message = format!("version {new} did not stay up ({why}); rolled back to {old}");
        self.push_event(name, EventKind::RolledBack, None, message, wall_s);
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

    /// The children for a status report.
    pub fn agents(&self, now: Millis) -> Vec<AgentStatus> {
        self.slots
            .iter()
            .map(|(name, slot)| AgentStatus {
                name: name.clone(),
                version: slot.version.clone(),
                status: slot.child.status(),
                uptime: slot.child.uptime_ms(now) / 1000,
                pid: slot.child.pid().map_or(0, |pid| pid as u32),
                restarts: slot.child.restarts,
            })
            .collect()
    }

    /// The children for the local status view.
    pub fn views(&self) -> Vec<ChildView> {
        self.slots
            .iter()
            .map(|(name, slot)| ChildView {
                name: name.clone(),
                version: slot.version.clone(),
                status: slot.child.status().to_string(),
                pid: slot.child.pid().map_or(0, |pid| pid as u32),
                started: slot.started_wall,
                restarts: slot.child.restarts,
                last_exit: slot.broken.clone().or_else(|| slot.child.last_exit.clone()),
                limits: slot.settings.limits.to_string(),
                envs: slot
                    .settings
                    .envs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect(),
            })
            .collect()
    }

    /// Events since the last call.
    pub fn take_events(&mut self) -> Vec<ChildEvent> {
        std::mem::take(&mut self.events)
    }

    /// Whether anything shown changed since the last call.
    pub fn take_changed(&mut self) -> bool {
        std::mem::replace(&mut self.changed, false)
    }
}

fn read_settings(path: &Path, cpus: u32) -> Result<Settings, String> {
    let bytes = match fs::metadata(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Settings::default()),
        Err(err) => return Err(format!("agent.json: {err}")),
        Ok(meta) if meta.len() > AGENT_JSON_BYTES_MAX => {
            return Err(format!(
                "agent.json is larger than {AGENT_JSON_BYTES_MAX} bytes"
            ))
        }
        Ok(_) => fs::read(path).map_err(|err| format!("agent.json: {err}"))?,
    };
    let value: Value =
        serde_json::from_slice(&bytes).map_err(|err| format!("agent.json: {err}"))?;
    Settings::from_json(&value, cpus).map_err(|err| format!("agent.json: {err}"))
}

/// Everything a spawn needs, carried out: the cgroup, the log pipe, the process.
fn spawn_slot(
    name: &str,
    cgroup_name: &str,
    slot: &mut Slot,
    mechanism: &Mechanism,
    logs: Option<&ChildLogs>,
    log_path: &Path,
) -> io::Result<i32> {
    let run = slot.dir.join("run");
    let meta = fs::metadata(&run)?;
    if !meta.is_file() {
        return Err(io::Error::other("./run is not a file"));
    }
    if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 == 0 {
        return Err(io::Error::other("./run is not executable"));
    }
    let mut env = vec![
        ("PATH".to_string(), CHILD_PATH.to_string()),
        ("BOOT_AGENT_NAME".to_string(), name.to_string()),
        ("BOOT_AGENT_VERSION".to_string(), slot.version.clone()),
        (
            "BOOT_AGENT_DIR".to_string(),
            slot.dir.to_string_lossy().into_owned(),
        ),
    ];
    for (key, value) in &slot.settings.envs {
        if key.starts_with("BOOT_AGENT_") {
            continue; // never replaced (checked when read, too)
        }
        env.retain(|(k, _)| k != key);
        env.push((key.clone(), value.clone()));
    }

    if !slot.settings.limits.is_empty() && *mechanism != Mechanism::Proc {
        // Prefixed, so that no agent name can clash with a cgroup interface file.
        match Cgroup::create(mechanism, cgroup_name, &slot.settings.limits) {
            Ok(cgroup) => {
                slot.oom_kills_at_start = cgroup.oom_kills();
                slot.cgroup = Some(cgroup);
            }
            Err(err) => warn!(
                "{name}: cannot create its cgroup ({err}); enforcing its limits by sampling /proc"
            ),
        }
    }
    let (reader, writer) = io::pipe()?;
    let output: std::os::fd::OwnedFd = match logs {
        Some(logs) => match logs.attach(log_path.to_path_buf(), reader.into()) {
            Ok(()) => writer.into(),
            Err(err) => {
                warn!("{name}: output discarded: {err}");
                fs::OpenOptions::new().write(true).open("/dev/null")?.into()
            }
        },
        None => fs::OpenOptions::new().write(true).open("/dev/null")?.into(),
    };
    let cgroup_procs = slot
        .cgroup
        .as_ref()
        .map(Cgroup::procs_fds)
        .unwrap_or_default();
    let result = sys::spawn_child(SpawnSpec {
        program: &run,
        cwd: &slot.dir,
        env: &env,
        output,
        cgroup_procs,
    });
    if result.is_err() {
        if let Some(cgroup) = slot.cgroup.take() {
            cgroup.remove();
        }
    }
    result
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

/// A memory limit named as the `limits` object spells it: "memory 20M".
fn memory_limit(bytes: u64) -> String {
    ResourceLimits {
        cpu_pct: None,
        memory_bytes: Some(bytes),
    }
    .to_string()
}
