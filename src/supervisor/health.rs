//! The edge of health checks (docs/protocol.md section 6, "Health"): per run of a
//! child, its readiness, `STATUS=` text and watchdog from sd_notify, and its
//! heartbeat file, each driven by a timer of the loop's wheel (`ChildTimer::Ready`,
//! `Watchdog`, `Heartbeat`). A child with
//! no check configured has no timer: an idle agent does not wake for it. What the
//! checks keep (`HealthRun`, the lazily started notifier) is in `health_state.rs`.

use super::health_state::{HealthRun, NotifierFactory};
use super::state::{child_key, Slot, Supervisor};
use crate::child::{Input, State};
use crate::health::{HeartbeatWatch, Read, Verdict, HEARTBEAT_READ_BYTES_MAX};
use crate::notify::{Message, Notice, ProcessFacts};
use crate::timers::{ChildTimer, TimerRequests};
use crate::wheel::Millis;
use log::{info, warn};
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The timers of the health checks.
const CHECK_TIMERS: [ChildTimer; 3] = [
    ChildTimer::Ready,
    ChildTimer::Watchdog,
    ChildTimer::Heartbeat,
];

impl HealthRun {
    /// Forgets the run the checks were about, and cancels their timers.
    pub(super) fn cancel_checks(&mut self, name: &str, timers: &mut TimerRequests) {
        self.run_pid = None;
        cancel_check_timers(name, timers);
    }
}

fn cancel_check_timers(name: &str, timers: &mut TimerRequests) {
    for timer in CHECK_TIMERS {
        timers.cancel(child_key(name, timer));
    }
}

impl Supervisor {
    /// Starts the checks of a run that began, or ends those of a run that ended;
    /// called after every input to a child.
    pub(super) fn sync_health(&mut self, name: &str, now: Millis) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let running = match slot.child.state {
            State::Running { pid, .. } => Some(pid),
            _ => None,
        };
        match (running, slot.health.run_pid) {
            (Some(pid), run) if run != Some(pid) => self.start_checks(name, pid, now),
            (None, Some(_)) => {
                slot.health.run_pid = None;
                slot.health.ready = false;
                slot.health.main_pid = None;
                slot.health.heartbeat = None;
                cancel_check_timers(name, &mut self.timers);
            }
            _ => {}
        }
    }

    /// A new run: not ready yet, healthy, each configured check armed from `now`
    /// (also for a child adopted after an exec hand-over, which gets a fresh
    /// timeout rather than a verdict on a run this image did not see).
    fn start_checks(&mut self, name: &str, pid: i32, now: Millis) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let spec = slot.settings.health.clone();
        let run = &mut slot.health;
        cancel_check_timers(name, &mut self.timers);
        *run = HealthRun {
            run_pid: Some(pid),
            ..HealthRun::default()
        };
        if spec.notify {
            let at = now.saturating_add(spec.ready_timeout_ms);
            self.timers.set(child_key(name, ChildTimer::Ready), at);
        } else if let Some(watchdog_ms) = spec.watchdog_ms {
            let at = now.saturating_add(watchdog_ms);
            self.timers.set(child_key(name, ChildTimer::Watchdog), at);
        }
        if let Some(heartbeat) = &spec.heartbeat {
            let watch = HeartbeatWatch::new(now, heartbeat.timeout_ms);
            let at = watch.first_check();
            run.heartbeat = Some(watch);
            self.timers.set(child_key(name, ChildTimer::Heartbeat), at);
        }
        if spec.is_set() {
            self.changed = true;
        }
    }

    /// A health timer of `name` came due.
    pub(super) fn on_health_timer(
        &mut self,
        name: &str,
        timer: ChildTimer,
        now: Millis,
        wall_s: i64,
    ) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let spec = &slot.settings.health;
        let reason = match timer {
            ChildTimer::Ready => (!slot.health.ready)
                .then(|| format!("not ready within {} s", spec.ready_timeout_ms / 1000)),
            ChildTimer::Watchdog => {
                let watchdog_s = spec.watchdog_ms.unwrap_or_default() / 1000;
                Some(format!("no WATCHDOG=1 for {watchdog_s} s"))
            }
            ChildTimer::Heartbeat => {
                let (Some(heartbeat), Some(watch)) = (&spec.heartbeat, &mut slot.health.heartbeat)
                else {
                    return;
                };
                let read = read_heartbeat(&slot.dir.join(&heartbeat.file));
                match watch.observe(read, now) {
                    Verdict::CheckAt(at) => {
                        self.timers.set(child_key(name, ChildTimer::Heartbeat), at);
                        None
                    }
                    Verdict::Stale(reason) => Some(reason),
                }
            }
            ChildTimer::State | ChildTimer::Sample | ChildTimer::Resume => None,
        };
        if let Some(reason) = reason {
            self.unhealthy(name, reason, now, wall_s);
        }
    }

    /// A check failed: the event, and a stop whose end is a failure.
    fn unhealthy(&mut self, name: &str, reason: String, now: Millis, wall_s: i64) {
        if let Some(slot) = self.slots.get_mut(name) {
            slot.health.unhealthy = true;
            self.changed = true;
        }
        self.input(name, Input::Unhealthy { reason }, now, wall_s);
    }

    /// `WATCHDOG=1`: the watchdog starts over.
    pub(super) fn feed_watchdog(&mut self, name: &str, now: Millis) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let Some(watchdog_ms) = slot.settings.health.watchdog_ms else {
            return;
        };
        if slot.health.run_pid.is_none() {
            return;
        }
        let at = now.saturating_add(watchdog_ms);
        self.timers.set(child_key(name, ChildTimer::Watchdog), at);
    }

    /// `READY=1`: ready, the ready timeout ends, and the watchdog starts.
    pub(super) fn mark_ready(&mut self, name: &str, now: Millis) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if slot.health.run_pid.is_none() || slot.health.ready {
            return;
        }
        slot.health.ready = true;
        self.changed = true;
        self.timers.cancel(child_key(name, ChildTimer::Ready));
        self.note_change(name);
        self.feed_watchdog(name, now);
    }

    /// Whether `name` is ready: `None` without `notify`.
    pub fn ready(&self, name: &str) -> Option<bool> {
        let slot = self.slots.get(name)?;
        slot.settings.health.notify.then_some(slot.health.ready)
    }
}

impl Supervisor {
    /// How to start the sd_notify thread when a child first needs it.
    pub fn set_notifier(&mut self, factory: NotifierFactory) {
        self.notifier.factory = Some(factory);
    }

    /// An sd_notify message on `msg.child`'s socket: taken only from a process of that
    /// child (its session, a descendant, or its cgroup), else logged once a run and
    /// ignored, so that no other process can make a child ready or name a pid for it.
    pub fn on_notify(&mut self, msg: Message, now: Millis, wall_s: i64) {
        let name = msg.child.as_str();
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        if !owns(slot, &msg.sender) {
            if !slot.health.foreign_logged && slot.health.run_pid.is_some() {
                slot.health.foreign_logged = true;
                warn!(
                    "{name}: sd_notify message from pid {}, not a process of this child; ignored",
                    msg.sender.pid
                );
            }
            return;
        }
        for notice in msg.notices {
            match notice {
                Notice::Ready
                    if self
                        .slots
                        .get(name)
                        .is_some_and(|s| s.settings.health.notify) =>
                {
                    self.mark_ready(name, now)
                }
                Notice::Watchdog => self.feed_watchdog(name, now),
                Notice::WatchdogTrigger => {
                    let reason = "it asked to be treated as hung (WATCHDOG=trigger)";
                    self.unhealthy(name, reason.to_string(), now, wall_s);
                }
                Notice::Status(text) => {
                    let Some(slot) = self.slots.get_mut(name) else {
                        return;
                    };
                    if slot.health.status_text.as_deref() != Some(text.as_str()) {
                        slot.health.status_text = Some(text);
                        self.view_changed = true;
                    }
                }
                Notice::MainPid(pid) => {
                    let Some(slot) = self.slots.get_mut(name) else {
                        return;
                    };
                    match &msg.main_pid {
                        Some(facts) if facts.pid == pid && owns(slot, facts) => {
                            slot.health.main_pid = Some(pid);
                        }
                        _ => warn!("{name}: MAINPID={pid} is not a process of this child; ignored"),
                    }
                }
                Notice::Stopping => info!("{name}: says it is stopping"),
                Notice::Ready | Notice::Reloading | Notice::Barrier => {}
            }
        }
    }
}

/// Whether the process is one of the child's: its main process, in its session or
/// below it, or in its cgroup (which holds every process of it, `setsid` or not).
fn owns(slot: &Slot, facts: &ProcessFacts) -> bool {
    let Some(pid) = slot.child.pid() else {
        return false;
    };
    if facts.of_session(pid) {
        return true;
    }
    let (Some(cgroup), Some(lines)) = (&slot.cgroup, &facts.cgroup) else {
        return false;
    };
    // `/proc/PID/cgroup` names the cgroup from the namespace's root; the child's own
    // cgroup has a name unique to the child and the data directory.
    cgroup
        .dirs()
        .iter()
        .filter_map(|dir| dir.file_name())
        .any(|own| {
            let own = own.to_string_lossy();
            lines.lines().any(|line| {
                let path = line.splitn(3, ':').nth(2).unwrap_or_default();
                path.split('/').any(|part| part == own)
            })
        })
}

/// The health word of a report: `None` without a check configured.
pub(super) fn health_word(slot: &Slot) -> Option<&'static str> {
    let set = slot.settings.health.is_set();
    set.then_some(if slot.health.unhealthy {
        "unhealthy"
    } else {
        "ok"
    })
}

/// Reads the first bytes of a heartbeat file without ever blocking: a FIFO or a
/// device planted there is no value, not a hang of BootAgent.
fn read_heartbeat(path: &Path) -> Read {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path);
    let mut file = match file {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Read::Missing,
        Err(_) => return Read::NoValue,
    };
    if !file.metadata().is_ok_and(|meta| meta.is_file()) {
        return Read::NoValue;
    }
    let mut buf = [0u8; HEARTBEAT_READ_BYTES_MAX];
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Read::NoValue,
        }
    }
    Read::of_content(&buf[..len])
}
