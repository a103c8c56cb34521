//! Enforcing a child's resource limits: the `/proc` samples that throttle or kill
//! it, and after it exits, the cgroup's OOM kills that name the limit it hit.

use super::oom::memory_limit;
use super::state::{child_key, child_marker, Supervisor};
use crate::reslimit::{self, Verdict};
use crate::timers::ChildTimer;
use crate::wheel::Millis;
use log::{debug, info};

impl Supervisor {
    /// One `/proc` sample of a child with limits: throttle or kill as decided.
    pub(super) fn sample(&mut self, name: &str, now: Millis) {
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
                let _ = self.procs.signal_group(pid, libc::SIGKILL);
                return; // SIGCHLD follows
            }
            Verdict::Stop { resume_at } => {
                let _ = self.procs.signal_group(pid, libc::SIGSTOP);
                self.timers
                    .set(child_key(name, ChildTimer::Resume), resume_at);
            }
        }
        let next = now.saturating_add(interval);
        self.timers.set(child_key(name, ChildTimer::Sample), next);
    }

    /// Cleans up after the leader of a group exited; names the limit it was killed for.
    pub(super) fn after_exit(&mut self, name: &str, pid: i32) -> Option<String> {
        let slot = self.slots.get_mut(name)?;
        // What is left of the group goes too: no orphans holding ports or files. Without
        // a cgroup (emptied below), so do those that left the group but carry its mark.
        let _ = self.procs.signal_group(pid, libc::SIGKILL);
        if slot.cgroup.is_none() && self.subreaper {
            for stray in self
                .procs
                .marked_processes(&[&child_marker(&self.data_dir, name)])
            {
                let _ = self.procs.signal_process(stray, libc::SIGKILL);
            }
        }
        for timer in [ChildTimer::Sample, ChildTimer::Resume] {
            self.timers.cancel(child_key(name, timer));
        }
        slot.throttle = None;
        slot.started_wall = None;
        let mut limit = slot.killed_for.take();
        if let Some(cgroup) = slot.cgroup.take() {
            // The kernel's OOM killer may have hit the leader or a process under it
            // (a shell's child): either way the child was killed for its limit.
            if cgroup.oom_kills() > slot.oom_kills_seen {
                limit = slot.settings.limits.memory_bytes.map(memory_limit);
            }
            cgroup.remove();
        }
        limit
    }
}
