//! One child agent's life: an explicit state machine over (state, input), and
//! the restart policy of docs/protocol.md section 6. Pure: `now` is a parameter, and
//! what must happen (spawn, signal the group, report an event) comes back as
//! `Action`s for the supervisor to carry out.
//!
//! ```text
//!                 Start, Restart                 Spawned
//!   ┌─────────┐ ───────────────► ┌──────────┐ ─────────► ┌─────────┐
//!   │ Stopped │                  │ Starting │            │ Running │
//!   └─────────┘                  └──────────┘            └─────────┘
//!     ▲     ▲             Deadline ▲      │ SpawnFailed    │    │ Stop, Restart, Unhealthy:
//!     │     │ Stop                 │      ▼                │    ▼ SIGTERM
//!     │     │              ┌─────────┐   crash ◄─ Exited ──┘   ┌──────────┐
//!     │     └───────────── │ Waiting │ ◄──┤ ◄── Exited after ─ │ Stopping │ Deadline: SIGKILL
//!     │                    └─────────┘    │     Unhealthy      └──────────┘
//!     │ Stop    ┌───────┐                 │                          │ Exited after Stop:
//!     └──────── │ Fatal │ ◄───────────────┘ more than failures_max   │ Stopped; after
//!               └───────┘                   failures in a row        │ Restart: Starting
//!         Start, Restart: Starting
//! ```
//!
//! A crash restarts the child at once (`Starting`) when the policy's delay is 0 and the
//! last start is a second old, else it waits (`Waiting`, also where a start that was
//! asked for waits out the one-start-a-second rule). A start reports `started` when it
//! was asked for (`Start`, `Restart`, BootAgent's start) and `restarted` when the policy
//! made it after a crash (`StartReason`).
//!
//! A crash is any exit BootAgent did not ask for. A crash less than `window_ms`
//! after the start is a *failure*; a crash after a longer run resets the count.
//! After failure n the restart waits 0 (n = 1), then `delay_ms`, doubling, capped
//! at `delay_max_ms`; more than `failures_max` failures in a row is `fatal`.

use crate::limits::Limits;
use crate::wheel::Millis;
use serde_json::Value;

/// The restart policy of one child: `Limits`' `restart_*` unless its settings say otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    /// Delay after the second failure; doubles after each further one.
    pub delay_ms: u64,
    /// Ceiling of the restart delay.
    pub delay_max_ms: u64,
    /// A crash sooner than this after the start is a failure.
    pub window_ms: u64,
    /// More consecutive failures than this is `fatal`.
    pub failures_max: u32,
    /// Between `SIGTERM` and `SIGKILL` when stopping.
    pub grace_ms: u64,
    /// Never two starts of the same child closer than this.
    pub start_gap_min_ms: u64,
}

impl Default for RestartPolicy {
    /// The policy of `Limits::default()`.
    fn default() -> Self {
        RestartPolicy::new(&Limits::default())
    }
}

/// Largest value of a `restart` field in seconds (a day).
const RESTART_FIELD_S_MAX: u64 = 86_400;
/// Largest `failures_max`.
const FAILURES_MAX_MAX: u64 = 1_000;

impl RestartPolicy {
    /// The policy of `limits` (`restart_*`), for a child whose settings say nothing.
    pub fn new(limits: &Limits) -> Self {
        RestartPolicy {
            delay_ms: limits.restart_delay_ms,
            delay_max_ms: limits.restart_delay_max_ms,
            window_ms: limits.restart_window_ms,
            failures_max: limits.restart_failures_max,
            grace_ms: limits.restart_grace_ms,
            start_gap_min_ms: limits.restart_start_gap_min_ms,
        }
    }

    /// Reads a `restart` object (`delay_s`, `delay_max_s`, `window_s`, `failures_max`,
    /// `grace_s`; any may be left out) over `RestartPolicy::default()`.
    pub fn from_json(value: &Value) -> Result<RestartPolicy, String> {
        Self::from_json_over(value, RestartPolicy::default())
    }

    /// Reads a `restart` object over `defaults` (the policy of the limits in force).
    pub fn from_json_over(value: &Value, defaults: RestartPolicy) -> Result<RestartPolicy, String> {
        Self::read(value, defaults).map_err(|message| crate::message::one_line(&message))
    }

    fn read(value: &Value, defaults: RestartPolicy) -> Result<RestartPolicy, String> {
        let Value::Object(map) = value else {
            return Err(format!(
                "restart is {}, not an object",
                crate::message::kind(value)
            ));
        };
        let mut policy = defaults;
        for (key, value) in map {
            let number = value
                .as_u64()
                .ok_or_else(|| format!("restart.{key} must be a whole number, not {value}"))?;
            let seconds = |max: u64| {
                if number <= max {
                    Ok(number * 1000)
                } else {
                    Err(format!("restart.{key} {number} is over {max}"))
                }
            };
            match key.as_str() {
                "delay_s" => policy.delay_ms = seconds(RESTART_FIELD_S_MAX)?,
                "delay_max_s" => policy.delay_max_ms = seconds(RESTART_FIELD_S_MAX)?,
                "window_s" => policy.window_ms = seconds(RESTART_FIELD_S_MAX)?,
                "grace_s" => policy.grace_ms = seconds(RESTART_FIELD_S_MAX)?,
                "failures_max" if number <= FAILURES_MAX_MAX => policy.failures_max = number as u32,
                "failures_max" => {
                    return Err(format!(
                        "restart.failures_max {number} is over {FAILURES_MAX_MAX}"
                    ))
                }
                other => return Err(format!("unknown restart setting {other:?}")),
            }
        }
        Ok(policy)
    }

    /// The restart delay after the `failures`-th failure in a row (from 1).
    pub fn delay_after(&self, failures: u32) -> u64 {
        match failures {
            0 | 1 => 0,
            n => {
                let doublings = (n - 2).min(32);
                self.delay_ms
                    .saturating_mul(1u64 << doublings)
                    .min(self.delay_max_ms)
            }
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What happens once a stop completes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Then {
    StayStopped,
    Start,
    /// A stop of an unhealthy child: its exit is a failure of the restart policy.
    Fail,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum State {
    /// Stopped on purpose, or never started: `stoped` on the wire.
    Stopped,
    /// A spawn was asked for; the supervisor answers with `Spawned` or `SpawnFailed`.
    Starting {
        reason: StartReason,
    },
    Running {
        pid: i32,
        since: Millis,
    },
    /// `SIGTERM` sent; `SIGKILL` at `kill_at` unless it exits first.
    Stopping(Stopping),
    /// Down until `until`, after a crash (`restarting`, or `killed` after a limit kill),
    /// or a start held back by the one-start-a-second rule.
    Waiting {
        until: Millis,
        limit_killed: bool,
        /// Absent in the hand-over of an image that did not know it: a crash.
        #[serde(default)]
        reason: StartReason,
    },
    /// Gave up after repeated failures.
    Fatal,
}

/// Why a child starts, which decides the event its start reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum StartReason {
    /// Asked for: a `start` or `restart` job, a local command, the desired state at
    /// BootAgent's start. Reported `started`.
    Asked,
    /// The restart policy's start after a crash, a limit kill or an unhealthy stop.
    /// Reported `restarted`.
    #[default]
    Crash,
}

/// A child being stopped: `SIGTERM` sent, `SIGKILL` at `kill_at` unless it exits first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stopping {
    pub pid: i32,
    /// When the process started.
    pub since: Millis,
    pub kill_at: Millis,
    /// `SIGKILL` was sent.
    pub killed: bool,
    /// What happens once it has exited.
    pub then: Then,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// Should run (a `start` job, or the desired state at BootAgent's start).
    Start,
    /// Should stop, and stay stopped.
    Stop,
    /// Stop if running, then start; revives a `fatal` child.
    Restart,
    Spawned {
        pid: i32,
    },
    SpawnFailed {
        error: String,
    },
    /// The process exited; `limit` names the resource limit it was killed for.
    Exited {
        exit: Exit,
        limit: Option<String>,
    },
    /// The deadline of the state (`State::deadline`) has come.
    Deadline,
    /// A health check says the running process is hung (docs/protocol.md section 6,
    /// "Health"): stop it, and count its end as a failure.
    Unhealthy {
        reason: String,
    },
}

/// Events of section 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Started,
    Restarted,
    Exited,
    Killed,
    Fatal,
    Stopped,
    Unhealthy,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Restarted => "restarted",
            EventKind::Exited => "exited",
            EventKind::Killed => "killed",
            EventKind::Fatal => "fatal",
            EventKind::Stopped => "stopped",
            EventKind::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start `./run` now and answer with `Spawned` or `SpawnFailed`.
    Spawn,
    /// Send `SIGTERM` to the process group.
    Terminate,
    /// Send `SIGKILL` to the process group.
    Kill,
    Event {
        kind: EventKind,
        exit: Option<Exit>,
        message: String,
    },
}

/// One child's state, counters and policy.
#[derive(Clone, Debug)]
pub struct Child {
    pub state: State,
    pub policy: RestartPolicy,
    /// Consecutive failures.
    pub failures: u32,
    /// Restarts after crashes since BootAgent started (reported as `restarts`).
    pub restarts: u32,
    last_start: Option<Millis>,
    /// One line about the last exit, for the local status view.
    pub last_exit: Option<String>,
}

/// A child's life as it crosses BootAgent's exec hand-over (docs/protocol.md section 10):
/// its state (a monotonic scale that the new image continues), counters and last exit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Carried {
    pub state: State,
    pub failures: u32,
    pub restarts: u32,
    pub last_start: Option<Millis>,
    pub last_exit: Option<String>,
}

impl Child {
    /// What the next image needs to go on with this child.
    pub fn carry(&self) -> Carried {
        Carried {
            // `Starting` never outlives one input: a spawn is answered at once.
            state: match &self.state {
                State::Starting { .. } => State::Stopped,
                state => state.clone(),
            },
            failures: self.failures,
            restarts: self.restarts,
            last_start: self.last_start,
            last_exit: self.last_exit.clone(),
        }
    }

    /// A child taken over from the previous image, under `policy`.
    pub fn adopt(policy: RestartPolicy, carried: Carried) -> Self {
        Child {
            state: carried.state,
            policy,
            failures: carried.failures,
            restarts: carried.restarts,
            last_start: carried.last_start,
            last_exit: carried.last_exit,
        }
    }

    pub fn new(policy: RestartPolicy) -> Self {
        Child {
            state: State::Stopped,
            policy,
            failures: 0,
            restarts: 0,
            last_start: None,
            last_exit: None,
        }
    }

    /// When `Input::Deadline` is due, if the state has a deadline.
    pub fn deadline(&self) -> Option<Millis> {
        match self.state {
            State::Waiting { until, .. } => Some(until),
            State::Stopping(Stopping {
                kill_at,
                killed: false,
                ..
            }) => Some(kill_at),
            _ => None,
        }
    }

    /// The pid of the running process, if any.
    pub fn pid(&self) -> Option<i32> {
        match self.state {
            State::Running { pid, .. } | State::Stopping(Stopping { pid, .. }) => Some(pid),
            _ => None,
        }
    }

    /// The status word of the wire (section 3), spelled as the original API spells it.
    pub fn status(&self) -> &'static str {
        match self.state {
            State::Stopped => "stoped",
            State::Starting { .. } | State::Running { .. } | State::Stopping(_) => "running",
            State::Waiting {
                limit_killed: true, ..
            } => "killed",
            State::Waiting { .. } => "restarting",
            State::Fatal => "fatal",
        }
    }

    /// Milliseconds since the current process started; 0 when not running.
    pub fn uptime_ms(&self, now: Millis) -> u64 {
        match self.state {
            State::Running { since, .. } | State::Stopping(Stopping { since, .. }) => {
                now.saturating_sub(since)
            }
            _ => 0,
        }
    }

    /// Takes one input at `now` and says what to do. The table has a row for every
    /// (state, input) pair, without a catch-all: a new state or input does not compile
    /// until its rows are written.
    pub fn step(&mut self, now: Millis, input: Input) -> Vec<Action> {
        let mut actions = Vec::new();
        let state = std::mem::replace(&mut self.state, State::Stopped);
        self.state = match (state, input) {
            (State::Stopped, Input::Start | Input::Restart) => {
                self.failures = 0;
                self.start(now, StartReason::Asked, &mut actions)
            }
            (State::Stopped, Input::Stop) => State::Stopped,
            // No process, no deadline: stray answers and reports change nothing.
            (
                State::Stopped,
                Input::Spawned { .. }
                | Input::SpawnFailed { .. }
                | Input::Exited { .. }
                | Input::Deadline
                | Input::Unhealthy { .. },
            ) => State::Stopped,

            (State::Starting { reason }, Input::Spawned { pid }) => {
                let kind = match reason {
                    StartReason::Asked => EventKind::Started,
                    StartReason::Crash => EventKind::Restarted,
                };
                self.last_start = Some(now);
                actions.push(event(kind, None, format!("started, pid {pid}")));
                State::Running { pid, since: now }
            }
            (State::Starting { .. }, Input::SpawnFailed { error }) => {
                self.last_start = Some(now);
                self.crashed(
                    now,
                    0,
                    None,
                    Cause::Crash,
                    &format!("could not start: {error}"),
                    &mut actions,
                )
            }
            // The supervisor answers `Spawn` before it feeds any other input.
            (
                state @ State::Starting { .. },
                Input::Start
                | Input::Stop
                | Input::Restart
                | Input::Exited { .. }
                | Input::Deadline
                | Input::Unhealthy { .. },
            ) => state,

            (State::Running { since, .. }, Input::Exited { exit, limit }) => {
                let ran_ms = now.saturating_sub(since);
                let what = describe_exit(exit, ran_ms);
                let cause = limit.map_or(Cause::Crash, Cause::Limit);
                self.crashed(now, ran_ms, Some(exit), cause, &what, &mut actions)
            }
            (State::Running { pid, since }, Input::Stop) => {
                self.stop(now, pid, since, Then::StayStopped, &mut actions)
            }
            (State::Running { pid, since }, Input::Restart) => {
                self.failures = 0;
                self.stop(now, pid, since, Then::Start, &mut actions)
            }
            (State::Running { pid, since }, Input::Unhealthy { reason }) => {
                actions.push(event(
                    EventKind::Unhealthy,
                    None,
                    format!("unhealthy: {reason}; stopping it"),
                ));
                self.last_exit = Some(format!("unhealthy: {reason}"));
                self.stop(now, pid, since, Then::Fail, &mut actions)
            }
            // Running already; no spawn is outstanding and the state has no deadline.
            (
                state @ State::Running { .. },
                Input::Start | Input::Spawned { .. } | Input::SpawnFailed { .. } | Input::Deadline,
            ) => state,

            (State::Stopping(stopping), Input::Exited { exit, .. }) => match stopping.then {
                Then::Fail => {
                    let ran_ms = now.saturating_sub(stopping.since);
                    let what = format!("stopped as unhealthy, {}", describe_exit(exit, ran_ms));
                    self.crashed(
                        now,
                        ran_ms,
                        Some(exit),
                        Cause::Unhealthy,
                        &what,
                        &mut actions,
                    )
                }
                Then::StayStopped => {
                    self.last_exit = Some(format!("{} (stopped)", describe_exit(exit, 0)));
                    actions.push(event(EventKind::Stopped, Some(exit), "stopped".to_string()));
                    State::Stopped
                }
                Then::Start => {
                    self.last_exit = Some(format!("{} (stopped)", describe_exit(exit, 0)));
                    self.start(now, StartReason::Asked, &mut actions)
                }
            },
            (State::Stopping(stopping), Input::Deadline)
                if !stopping.killed && now >= stopping.kill_at =>
            {
                actions.push(Action::Kill);
                State::Stopping(Stopping {
                    killed: true,
                    ..stopping
                })
            }
            (State::Stopping(stopping), Input::Stop) => State::Stopping(Stopping {
                then: Then::StayStopped,
                ..stopping
            }),
            (State::Stopping(stopping), Input::Start | Input::Restart) => {
                State::Stopping(Stopping {
                    then: Then::Start,
                    ..stopping
                })
            }
            // Killed already or not yet due: the exit comes next. Stopping already, and
            // no spawn is outstanding.
            (
                state @ State::Stopping(_),
                Input::Deadline
                | Input::Unhealthy { .. }
                | Input::Spawned { .. }
                | Input::SpawnFailed { .. },
            ) => state,

            (State::Waiting { until, reason, .. }, Input::Deadline) if now >= until => {
                self.start(now, reason, &mut actions)
            }
            (State::Waiting { .. }, Input::Stop) => {
                actions.push(event(
                    EventKind::Stopped,
                    None,
                    "stopped while waiting to restart".into(),
                ));
                State::Stopped
            }
            (State::Waiting { .. }, Input::Restart) => {
                self.failures = 0;
                self.start(now, StartReason::Asked, &mut actions)
            }
            // A start is due already (a deadline fed early changes nothing); no process.
            (
                state @ State::Waiting { .. },
                Input::Start
                | Input::Deadline
                | Input::Spawned { .. }
                | Input::SpawnFailed { .. }
                | Input::Exited { .. }
                | Input::Unhealthy { .. },
            ) => state,

            (State::Fatal, Input::Start | Input::Restart) => {
                self.failures = 0;
                self.start(now, StartReason::Asked, &mut actions)
            }
            (State::Fatal, Input::Stop) => State::Stopped,
            // Given up: only a job revives it. No process, no deadline.
            (
                State::Fatal,
                Input::Spawned { .. }
                | Input::SpawnFailed { .. }
                | Input::Exited { .. }
                | Input::Deadline
                | Input::Unhealthy { .. },
            ) => State::Fatal,
        };
        actions
    }

    /// Starts now, or as soon as the one-start-a-second rule allows.
    fn start(&mut self, now: Millis, reason: StartReason, actions: &mut Vec<Action>) -> State {
        let earliest = self
            .last_start
            .map_or(now, |at| at.saturating_add(self.policy.start_gap_min_ms));
        if earliest > now {
            return State::Waiting {
                until: earliest,
                limit_killed: false,
                reason,
            };
        }
        actions.push(Action::Spawn);
        State::Starting { reason }
    }

    fn stop(
        &mut self,
        now: Millis,
        pid: i32,
        since: Millis,
        then: Then,
        actions: &mut Vec<Action>,
    ) -> State {
        actions.push(Action::Terminate);
        State::Stopping(Stopping {
            pid,
            since,
            kill_at: now.saturating_add(self.policy.grace_ms),
            killed: false,
            then,
        })
    }

    /// An exit nobody asked for: count it, then restart, wait, or give up.
    fn crashed(
        &mut self,
        now: Millis,
        ran_ms: u64,
        exit: Option<Exit>,
        cause: Cause,
        what: &str,
        actions: &mut Vec<Action>,
    ) -> State {
        if cause == Cause::Crash && ran_ms >= self.policy.window_ms {
            self.failures = 0; // a long run: the crash loop, if any, is over
        } else {
            self.failures = self.failures.saturating_add(1);
        }
        self.last_exit = Some(what.to_string());
        let (kind, what) = match &cause {
            Cause::Limit(limit) => (
                EventKind::Killed,
                format!("killed for exceeding its {limit} limit; {what}"),
            ),
            Cause::Crash | Cause::Unhealthy => (EventKind::Exited, what.to_string()),
        };
        if self.failures > self.policy.failures_max {
            actions.push(event(kind, exit, what));
            actions.push(event(
                EventKind::Fatal,
                exit,
                format!("gave up after {} failures in a row", self.failures),
            ));
            return State::Fatal;
        }
        self.restarts = self.restarts.saturating_add(1);
        let delay = self.policy.delay_after(self.failures.max(1));
        let earliest = self
            .last_start
            .map_or(now, |at| at.saturating_add(self.policy.start_gap_min_ms));
        let at = now.saturating_add(delay).max(earliest);
        actions.push(event(
            kind,
            exit,
            format!(
                "{what}; restart {} in {} s",
                self.restarts,
                (at - now).div_ceil(1000)
            ),
        ));
        if at <= now {
            actions.push(Action::Spawn);
            return State::Starting {
                reason: StartReason::Crash,
            };
        }
        State::Waiting {
            until: at,
            limit_killed: matches!(cause, Cause::Limit(_)),
            reason: StartReason::Crash,
        }
    }
}

/// Why a process ended without being asked to. Limit kills and unhealthy stops are
/// failures however long the process ran; a crash after a long run is not.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Cause {
    Crash,
    /// Killed for exceeding this resource limit.
    Limit(String),
    /// Stopped because a health check failed.
    Unhealthy,
}

fn event(kind: EventKind, exit: Option<Exit>, message: String) -> Action {
    Action::Event {
        kind,
        exit,
        message,
    }
}

/// "exited with code 1 after 3 s", "killed by signal 9 after 0 s".
pub fn describe_exit(exit: Exit, ran_ms: u64) -> String {
    let secs = ran_ms / 1000;
    match exit {
        Exit::Code(code) => format!("exited with code {code} after {secs} s"),
        Exit::Signal(signal) => format!("killed by signal {signal} after {secs} s"),
    }
}

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
