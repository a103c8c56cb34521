//! Memory kills of one process of a running child (docs/protocol.md section 6): the
//! kernel's OOM killer, held to a child's memory cgroup, may kill a worker and leave the
//! main process running (always in cgroup v1; in v2 without `memory.oom.group`). The
//! child stays `running`, and a `killed` event names the limit and the process.
//!
//! The cgroup's count of OOM kills (`oom_kill` in v1 `memory.oom_control`, v2
//! `memory.events`) is read when the loop wakes anyway, at most once per
//! `OOM_CHECK_MS` (so never a wake-up of its own, and at the latest just before each
//! report). A rise while the main process lives, and is not being killed itself, is one
//! event with `count`; the core coalesces those of one child until a report carries them.
//! The process is named from the kernel's log (`/dev/kmsg`, opened at start and read
//! only after a rise): its `oom-kill:` record gives the victim's `task_memcg`, `pid` and
//! `task`. Without `/dev/kmsg` (not root, a container) the event says "a worker process".

use super::state::Supervisor;
use crate::reslimit::{Mechanism, ResourceLimits};
use crate::wheel::Millis;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// Least time between two reads of the children's OOM-kill counts.
pub(super) const OOM_CHECK_MS: u64 = 1_000;
/// Most kernel log records read after one rise (the ring buffer holds a few thousand).
const KMSG_RECORDS_MAX: usize = 8_192;
/// Largest kernel log record (the kernel's own bound is 8 KiB less a header).
const KMSG_RECORD_BYTES_MAX: usize = 8_192;

/// One victim of the OOM killer, from the kernel's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Victim {
    /// The victim's memory cgroup, as the kernel names it (relative to its hierarchy).
    pub(super) memcg: String,
    pub(super) pid: i32,
    pub(super) task: String,
}

/// `/dev/kmsg` opened non-blocking at its end, when the mechanism has a memory cgroup.
pub(super) fn open_kmsg(mechanism: &Mechanism) -> Option<File> {
    let has_memory = match mechanism {
        Mechanism::CgroupV2 { .. } => true,
        Mechanism::CgroupV1 { memory, .. } => memory.is_some(),
        Mechanism::Proc => false,
    };
    if !has_memory {
        return None;
    }
    let mut kmsg = (OpenOptions::new())
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    kmsg.seek(SeekFrom::End(0)).ok()?;
    Some(kmsg)
}

/// The OOM victims recorded in the kernel log since the last call, bounded.
fn read_victims(kmsg: &mut File) -> Vec<Victim> {
    let mut victims = Vec::new();
    let mut record = vec![0; KMSG_RECORD_BYTES_MAX];
    for _ in 0..KMSG_RECORDS_MAX {
        match kmsg.read(&mut record) {
            Ok(0) => break,
            Ok(n) => {
                let text = String::from_utf8_lossy(record.get(..n).unwrap_or_default());
                victims.extend(parse_oom_record(&text));
            }
            // Overwritten before it was read (EPIPE): the next read goes on after it.
            Err(err) if err.raw_os_error() == Some(libc::EPIPE) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break, // EAGAIN: nothing more
        }
    }
    victims
}

/// A `/dev/kmsg` record `PRIO,SEQ,TIME,FLAGS;oom-kill:constraint=…,task_memcg=/a/b,task=x,pid=12,uid=0`.
pub(super) fn parse_oom_record(record: &str) -> Option<Victim> {
    let (_, message) = record.split_once(';')?;
    let fields = message.lines().next()?.strip_prefix("oom-kill:")?;
    let value = |key: &str| {
        fields
            .split(',')
            .find_map(|field| field.strip_prefix(key)?.strip_prefix('='))
    };
    Some(Victim {
        memcg: value("task_memcg")?.to_string(),
        pid: value("pid")?.parse().ok()?,
        task: value("task")?.chars().take(64).collect(),
    })
}

/// Whether the process `pid` is gone, a zombie, or has a `SIGKILL` pending (the OOM
/// killer's victim on its way out): its exit, not a worker's kill, is then the news.
fn dying(pid: i32) -> bool {
    let Ok(status) = fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    let kill_bit = 1u64 << (libc::SIGKILL - 1);
    status.lines().any(|line| match line.split_once(':') {
        Some(("State", state)) => {
            matches!(state.trim_start().as_bytes().first(), Some(b'Z' | b'X'))
        }
        Some(("SigPnd" | "ShdPnd", mask)) => {
            u64::from_str_radix(mask.trim(), 16).is_ok_and(|mask| mask & kill_bit != 0)
        }
        _ => false,
    })
}

impl Supervisor {
    /// Reads the OOM-kill counts of running children with a memory cgroup, at most once
    /// per `OOM_CHECK_MS`, and reports the kills of their workers.
    pub fn check_oom(&mut self, now: Millis, wall_s: i64) {
        if self
            .oom_checked_at
            .is_some_and(|at| now < at.saturating_add(OOM_CHECK_MS))
        {
            return;
        }
        self.oom_checked_at = Some(now);
        let mut risen = BTreeMap::new();
        for (name, slot) in &mut self.slots {
            let (Some(pid), Some(cgroup)) = (slot.child.pid(), &slot.cgroup) else {
                continue;
            };
            let kills = cgroup.oom_kills();
            if kills <= slot.oom_kills_seen || dying(pid) {
                continue; // a kill of the main process is reported when it is reaped
            }
            let count = kills - slot.oom_kills_seen;
            slot.oom_kills_seen = kills;
            risen.insert(name.clone(), count);
        }
        if risen.is_empty() {
            return;
        }
        let victims = self.kmsg.as_mut().map(read_victims).unwrap_or_default();
        for (name, count) in risen {
            let tag = format!("/agent-{name}-{}", self.cgroup_tag);
            let victim = (victims.iter().rev())
                .find(|v| v.memcg.ends_with(&tag) || v.memcg.contains(&format!("{tag}/")));
            let who = match victim {
                Some(v) => format!("worker {} ({})", v.pid, v.task),
                None => "a worker process".to_string(),
            };
            let limit = (self.slots.get(&name))
                .and_then(|slot| slot.settings.limits.memory_bytes)
                .map(memory_limit);
            let message = match limit {
                Some(limit) => {
                    format!("{who} killed by the kernel: over the child's {limit} limit")
                }
                // Counted in the child's cgroup, but the host (or a cgroup above) ran out.
                None => format!("{who} killed by the kernel: out of memory"),
            };
            self.push_worker_kills(&name, message, count, wall_s);
        }
    }
}

/// A memory limit named as the `limits` object spells it: "memory 20M".
pub(super) fn memory_limit(bytes: u64) -> String {
    ResourceLimits {
        cpu_pct: None,
        memory_bytes: Some(bytes),
    }
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_records_name_the_victim_and_its_cgroup() {
        let record = "6,1234,5678,-;oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),\
            cpuset=/,mems_allowed=0,oom_memcg=/bootagent/agent-hog-0a1b2c3d,\
            task_memcg=/bootagent/agent-hog-0a1b2c3d,task=python3,pid=4311,uid=0\n";
        assert_eq!(
            parse_oom_record(record),
            Some(Victim {
                memcg: "/bootagent/agent-hog-0a1b2c3d".into(),
                pid: 4311,
                task: "python3".into(),
            })
        );
        for other in [
            "6,1,2,-;Memory cgroup out of memory: Killed process 4311 (python3)",
            "6,1,2,-;oom-kill:constraint=CONSTRAINT_MEMCG,task=x,uid=0",
            "no header at all",
            "6,1,2,-;oom-kill:task_memcg=/a,task=x,pid=many",
        ] {
            assert_eq!(parse_oom_record(other), None, "{other}");
        }
    }

    #[test]
    fn a_process_being_killed_or_gone_is_dying() {
        assert!(dying(i32::MAX), "no such process");
        let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
        assert!(!dying(me), "this test runs");
    }
}
