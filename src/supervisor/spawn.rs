//! Spawning a child: the checks on `./run`, its environment, its cgroup, its log
//! pipe, and the `/proc` sampling of what no cgroup enforces.

use super::procs::Processes;
use super::state::{child_key, Slot, Supervisor, CHILD_PATH};
use crate::child::Input;
use crate::childlog::ChildLogs;
use crate::reslimit::{Cgroup, Mechanism, Throttle, TrackParent};
use crate::sys::SpawnSpec;
use crate::timers::ChildTimer;
use crate::wheel::Millis;
use log::warn;
use std::fs;
use std::io;
use std::path::Path;

impl Supervisor {
    pub(super) fn spawn(&mut self, name: &str, now: Millis, wall_s: i64) -> Input {
        let log_path = self.data_dir.join("logs").join(format!("{name}.log"));
        let Some(slot) = self.slots.get_mut(name) else {
            return Input::SpawnFailed {
                error: "no such agent".into(),
            };
        };
        let cgroup_name = format!("agent-{name}-{}", self.cgroup_tag);
        let mut no_cgroup = None;
        let health = slot.settings.health.clone();
        let notify_socket = match health.notify || health.watchdog_ms.is_some() {
            true => self.notifier.open(name),
            false => None,
        };
        let Some(slot) = self.slots.get_mut(name) else {
            return Input::SpawnFailed {
                error: "no such agent".into(),
            };
        };
        let spawned = spawn_slot(
            (name, &cgroup_name),
            slot,
            (&self.mechanism, self.track.as_ref()),
            (self.logs.as_ref(), &log_path),
            self.procs.as_ref(),
            notify_socket,
            &mut no_cgroup,
        );
        if let Some(why) = no_cgroup {
            self.without_cgroups(&why);
        }
        let Some(slot) = self.slots.get_mut(name) else {
            return Input::SpawnFailed {
                error: "no such agent".into(),
            };
        };
        match spawned {
            Ok(pid) => {
                slot.started_wall = Some(wall_s);
                slot.killed_for = None;
                self.arm_sampling(name, now);
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
}

impl Supervisor {
    /// Samples `/proc` for what no cgroup enforces (all of it under `/proc`
    /// sampling, or one controller missing on cgroup v1).
    pub(super) fn arm_sampling(&mut self, name: &str, now: Millis) {
        let Some(slot) = self.slots.get_mut(name) else {
            return;
        };
        let mut sampled = self.mechanism.fallback_limits(&slot.settings.limits);
        if slot.cgroup.is_none() {
            sampled = slot.settings.limits;
        }
        if !sampled.is_empty() {
            let throttle = Throttle::new(sampled, now);
            let at = now.saturating_add(throttle.interval_ms());
            slot.throttle = Some(throttle);
            self.timers.set(child_key(name, ChildTimer::Sample), at);
        }
    }
}

/// Everything a spawn needs, carried out: the cgroup, the log pipe, the process.
/// `no_cgroup` gets the reason when the child runs without a cgroup of its own.
fn spawn_slot(
    (name, cgroup_name): (&str, &str),
    slot: &mut Slot,
    (mechanism, track): (&Mechanism, Option<&TrackParent>),
    (logs, log_path): (Option<&ChildLogs>, &Path),
    procs: &dyn Processes,
    notify_socket: Option<String>,
    no_cgroup: &mut Option<String>,
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
    // sd_notify (docs/protocol.md section 6, "Health"): these win over `envs`.
    let watchdog_ms = slot.settings.health.watchdog_ms;
    let health_env = [
        notify_socket.map(|socket| ("NOTIFY_SOCKET", socket)),
        watchdog_ms.map(|ms| ("WATCHDOG_USEC", (ms * 1000).to_string())),
    ];
    for (key, value) in health_env.into_iter().flatten() {
        env.retain(|(k, _)| k != key);
        env.push((key.to_string(), value));
    }

    // A cgroup of its own, with or without limits, so that every process of the child
    // is tracked. Prefixed, so that no agent name can clash with a cgroup interface file.
    let limited = !slot.settings.limits.is_empty();
    let made = match (mechanism, track) {
        (Mechanism::Proc, None) => None,
        (Mechanism::Proc, Some(track)) => Some(Cgroup::create_tracking(track, cgroup_name)),
        _ => Some(Cgroup::create(
            mechanism,
            cgroup_name,
            &slot.settings.limits,
        )),
    };
    match made {
        Some(Ok(cgroup)) => {
            slot.oom_kills_seen = cgroup.oom_kills();
            slot.cgroup = Some(cgroup);
        }
        Some(Err(err)) => {
            if limited {
                warn!("{name}: cannot create its cgroup ({err}); enforcing its limits by sampling /proc");
            }
            *no_cgroup = Some(format!("{name}: cannot create its cgroup ({err})"));
        }
        None => {}
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
    let result = procs.spawn(SpawnSpec {
        program: &run,
        cwd: &slot.dir,
        env: &env,
        output,
        cgroup_procs,
        watchdog_pid: watchdog_ms.is_some(),
    });
    if result.is_err() {
        if let Some(cgroup) = slot.cgroup.take() {
            cgroup.remove();
        }
    }
    result
}
