//! Across BootAgent's exec hand-over (docs/protocol.md section 10): what the old image
//! carries of each child, and how the new one adopts it (same pid, same counters,
//! same deadlines on the continued monotonic scale), never starting it again.

use super::settings::valid_name;
use super::state::Supervisor;
use crate::child::{Child, Exit, Input, State};
use crate::reslimit::Cgroup;
use crate::selfup::CarriedSlot;
use crate::wheel::Millis;
use log::{info, warn};
use std::collections::BTreeSet;
use std::os::fd::IntoRawFd;

impl Supervisor {
    /// What the next image needs of every child; with `notify_sockets` (the next
    /// image takes them), new descriptors of their notify sockets, left open for the
    /// exec (or, if it fails, for good: a few descriptors).
    pub fn carry(&self, notify_sockets: bool) -> Vec<CarriedSlot> {
        self.slots
            .iter()
            .map(|(name, slot)| CarriedSlot {
                name: name.clone(),
                child: slot.child.carry(),
                started_wall: slot.started_wall,
                cgroup: slot.cgroup.as_ref().map(Cgroup::parts),
                oom_kills_seen: slot.oom_kills_seen,
                ready: slot.health.ready,
                status_text: slot.health.status_text.clone(),
                notify_fd: (notify_sockets)
                    .then(|| self.notifier.handover(name))
                    .flatten()
                    .map(IntoRawFd::into_raw_fd),
            })
            .collect()
    }

    /// Takes over the children of the previous image (call before `discover`, which
    /// then leaves them be). A process that is no longer this process's child is
    /// taken as exited. Returns how many processes were adopted.
    pub fn adopt(
        &mut self,
        carried: Vec<CarriedSlot>,
        stopped: &BTreeSet<String>,
        now: Millis,
        wall_s: i64,
    ) -> usize {
        let me = std::process::id() as i32;
        let mut adopted = 0;
        for slot in carried {
            if let Some(fd) = slot.notify_fd {
                // Whether it is taken over below or not, no later child inherits it.
                let _ = crate::sys::set_cloexec(fd, true);
            }
            let name = slot.name;
            if !valid_name(&name) || self.slots.len() >= self.children_max {
                warn!("hand-over: child {name:?} not adopted");
                continue;
            }
            self.add(&name, now);
            let Some(own) = self.slots.get_mut(&name) else {
                continue;
            };
            if own.broken.is_some() {
                continue; // its agent.json went bad: fatal, as at any start
            }
            let policy = own.child.policy;
            let health = own.settings.health.clone();
            own.child = Child::adopt(policy, slot.child);
            own.started_wall = slot.started_wall;
            own.oom_kills_seen = slot.oom_kills_seen;
            if let Some(parts) = slot.cgroup {
                match Cgroup::adopt(parts) {
                    Ok(cgroup) => own.cgroup = Some(cgroup),
                    Err(err) => warn!("{name}: its cgroup cannot be taken over: {err}"),
                }
            }
            let pid = own.child.pid();
            let tracked = own.cgroup.is_some();
            if let Some(pid) = pid {
                if self.procs.parent_of(pid) == Some(me) {
                    adopted += 1;
                    info!("{name}: adopted, pid {pid}");
                    if !tracked {
                        // Its escaped processes are found as at its spawn without a cgroup.
                        self.without_cgroups(&format!("{name}: adopted without a cgroup"));
                    }
                    self.arm_sampling(&name, now);
                } else {
                    warn!("{name}: pid {pid} is gone since the hand-over");
                    let exit = Exit::Signal(libc::SIGKILL);
                    self.input(&name, Input::Exited { exit, limit: None }, now, wall_s);
                }
            } else if own.child.state == State::Stopped && !stopped.contains(&name) {
                // Not running though it should (it was being started): as at any start.
                self.input(&name, Input::Start, now, wall_s);
            }
            self.arm_state_timer(&name);
            self.sync_health(&name, now);
            // The old image's notify socket, the same one (a datagram sent across the
            // exec waits in it), and what the child already said.
            match slot.notify_fd {
                Some(fd) => {
                    self.notifier.inherit(&name, fd);
                }
                None if health.notify || health.watchdog_ms.is_some() => {
                    self.notifier.open(&name);
                }
                None => {}
            }
            if let Some(own) = self.slots.get_mut(&name) {
                own.health.status_text = slot.status_text;
            }
            if slot.ready {
                self.mark_ready(&name, now);
            }
        }
        self.changed = true;
        adopted
    }
}
