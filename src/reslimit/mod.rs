//! Resource limits of a child agent (docs/protocol.md section 6): the `limits` object read
//! into [`ResourceLimits`], and the means to hold a child to it.
//!
//! # Three mechanisms
//!
//! [`detect`] picks one per host, in this order, and logs why it passed over the others.
//!
//! - **cgroup v2.** A cgroup that enables controllers for its children may hold no
//!   process itself (the "no internal processes" rule), so the children's parent,
//!   `bootagent-children`, holding none, with `memory` and `cpu` enabled in its
//!   `cgroup.subtree_control`, goes where BootAgent may put it, first found of:
//!   1. *inside* BootAgent's own cgroup (the `0::` line of `/proc/self/cgroup`), when
//!      BootAgent is alone in it and may write it: a service manager's delegated
//!      cgroup (systemd's `Delegate=yes`). BootAgent moves itself into the leaf
//!      `<own>/bootagent-supervisor` and the children go to `<own>/bootagent-children`,
//!      inside the subtree handed to it, so that stopping the service reaches them;
//!   2. *beside* it, `<parent of own>/bootagent-children`, when BootAgent shares its
//!      cgroup (started from a login shell) or cannot write it;
//!   3. *below the root*, `<root>/bootagent-children`, when BootAgent sits in the root
//!      cgroup, which the rule exempts.
//!
//!   Each child gets `bootagent-children/NAME` with `memory.max`, `memory.swap.max` 0
//!   (swap must not stretch the limit), `memory.oom.group` 1 (an OOM kill takes the whole
//!   child) and `cpu.max`. Needs both controllers offered and the right to write there
//!   (root, or a delegated subtree); otherwise v1 is tried.
//! - **cgroup v1.** Each controller has its own hierarchy, found in
//!   `/proc/self/mountinfo` (possibly co-mounted, as `cpu,cpuacct`). Children go into
//!   `<mount>/<own path>/bootagent/NAME`, else `<mount>/bootagent/NAME`, with
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, against swap) and
//!   `cpu.cfs_quota_us` per `cpu.cfs_period_us`. One hierarchy may be usable without the
//!   other: [`Mechanism::fallback_limits`] says which limit is then left to `/proc`.
//! - **`/proc` sampling**, where no cgroup can be made (no cgroupfs, not root, read-only).
//!
//! # Tracking
//!
//! Every child gets a cgroup, with or without limits, so that a process that leaves its
//! process group is still found: the mechanism's, or where that is `/proc` (found, not
//! chosen), a tracking cgroup without controllers from [`detect_tracking`] (`track.rs`):
//! any v2 cgroup below BootAgent's own, else a v1 hierarchy (`pids`, a named one, any).
//! [`Cgroup::signal`] reaches every member; [`leftover_cgroups`] and [`clear_leftover`]
//! end what a killed predecessor's children left in theirs.
//!
//! # Joining a cgroup
//!
//! A child must be in its cgroup before its first instruction, so that nothing it forks
//! escapes. [`Cgroup::create`] opens each `cgroup.procs` in advance; between fork and exec
//! the child writes `"0"` ("myself") into each with [`join_in_child`], one `write(2)` per
//! descriptor, which is async-signal-safe. A failed join fails the spawn: a child never
//! runs without the limits it was given.
//!
//! # Recognising an OOM kill
//!
//! Over its memory limit, the kernel's OOM killer kills inside the cgroup: the whole child
//! in v2 (`memory.oom.group`), only the largest process in v1. Both count it (`oom_kill`
//! in `memory.events` or `memory.oom_control`). The caller reads [`Cgroup::oom_kills`]
//! when the child exits: killed by `SIGKILL` with the count risen means killed for memory.
//! A child's main process can outlive a killed worker (always in v1, in v2 without
//! `memory.oom.group`): the caller also reads the count while the child runs, and reports
//! such a kill without ending the child (`supervisor/oom.rs`).
//!
//! # The `/proc` fallback and its duty cycle
//!
//! The caller sums the process group's usage with [`group_usage`] every
//! [`Throttle::interval_ms`] and hands it to [`Throttle::sample`], which is pure (`now` is
//! a parameter). Over the memory limit, the answer is to kill. For the CPU, the throttle
//! keeps a balance: each millisecond earns `limit` % of a CPU-millisecond, and what the
//! group used is spent. In debt, the group is stopped (`SIGSTOP`) just long enough for the
//! earnings to pay it, then continued (`SIGCONT`): at 10 %, a group that spun through a
//! whole 100 ms interval is stopped for 900 ms, and so averages 10 %. Savings are capped
//! at one second's worth, so that an hour of idling does not buy minutes of spinning.
//!
//! What the fallback cannot do, honestly: it sees the process group only (a process that
//! calls `setsid` escapes it); RSS counts a page shared by several processes once per
//! process, so it over-estimates; CPU time of a member reaped outside the group is lost;
//! usage between two samples is caught after the fact; and a stop never lasts more than
//! 30 s, so a child that spins many CPUs under a small limit gets somewhat more than it.
//! A stopped group holds a `SIGTERM` pending: the caller sends `SIGCONT` after it.
//!
//! # Files
//!
//! `parse.rs` reads the `limits` object; `detect.rs` chooses the mechanism and makes
//! BootAgent's parent cgroups, from what `facts.rs` reads of `/proc/self/mountinfo` and
//! `/proc/self/cgroup`; `cgroup.rs` is the cgroup of one child; `track.rs` the tracking
//! cgroups and leftovers; `proc.rs` is the `/proc` fallback; `shared.rs` is what they share
//! (bounded reads of cgroupfs and procfs files, one-write files, error context). The raw
//! system calls (`write`, `kill`, `access`, `sysconf`) are in `sys.rs`.

mod cgroup;
mod detect;
mod facts;
mod parse;
mod proc;
mod shared;
#[cfg(test)]
mod testing;
mod track;

pub use crate::limits::Choice;
pub use crate::wheel::Millis;
pub use cgroup::{clear_leftover, join_in_child, Cgroup, CgroupParts};
pub use detect::{describe, detect, release, Mechanism};
pub use parse::{
    parse_limits, ResourceLimits, CPU_PCT_MIN, CPU_PCT_PER_CPU, MEMORY_BYTES_MAX, MEMORY_BYTES_MIN,
};
pub use proc::{group_usage, GroupUsage, Throttle, Verdict};
pub use track::{detect_tracking, leftover_cgroups, parent_dirs, TrackParent};
