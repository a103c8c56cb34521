//! Every process of a child, tracked (docs/protocol.md section 6): a process that calls
//! `setsid` or daemonizes leaves the child's process group, but not its cgroup.
//!
//! - **A cgroup per child, always**, with or without limits, as systemd gives every
//!   service one: the limit mechanism's (`reslimit::Cgroup::create`), else a tracking
//!   cgroup without controllers (`reslimit::detect_tracking`). Stopping a child signals
//!   its group and every process of its cgroup; once its main process has exited, what
//!   is left of the cgroup is killed and the cgroup removed.
//! - **Without a cgroup** (none can be made, or `limit_mechanism=proc`): BootAgent says
//!   so once in the log and becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`), so that
//!   a daemon's orphans are reparented to it rather than to init; a child's escaped
//!   processes are found by the environment they inherited (`BOOT_AGENT_DIR` under
//!   `agents/NAME/`). The orphans are reaped by pid: `waitid(WNOWAIT)` names an exited
//!   child without reaping it, and one that is a supervised child's main process goes
//!   through the normal path, so no status is ever taken from its owner. What the
//!   environment cannot name (a daemon that overwrote its environment) is still ended
//!   at BootAgent's shutdown, as a child of BootAgent.
//!
//! The price: a start waits for the child to join its cgroup between fork and exec, and
//! the kernel's move of a process into a cgroup may wait for an RCU grace period (a few
//! milliseconds, up to some 15 ms on cgroup v1; starts close together share one), so a
//! restart takes that much longer than one without a cgroup.
//!
//! # At start: end the leftovers, or adopt
//!
//! [`AtStart::decide`] is the one place that decides what a start does with processes a
//! previous BootAgent's children left running. After a `SIGKILL`, an OOM kill or a power
//! cut it is [`AtStart::EndLeftovers`]: [`Supervisor::end_leftovers`] kills what is in
//! this data directory's child cgroups (`agent-NAME-TAG`) and every process carrying this
//! data directory's marker, before any child starts, so no child ever runs twice. The
//! exec hand-over of a self-upgrade (docs/protocol.md section 10) is the one start that
//! adopts them instead: it passes `handover = true`, ends nothing, and each adopted child
//! keeps its cgroup (`adopt.rs`).

use super::state::{agents_marker, path_tag, Supervisor};
use crate::reslimit::{self, Mechanism};
use crate::wheel::Millis;
use log::{debug, info, warn};

/// Most exited processes reaped in one `SIGCHLD`, so that a fork bomb of orphans cannot
/// hold the loop; the rest are reaped at the next `SIGCHLD`.
const STRAYS_REAPED_MAX: usize = 1024;

/// What a start does with the processes of a previous BootAgent's children.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AtStart {
    /// Kill them all, then start the children afresh: never two instances.
    EndLeftovers,
    /// Keep them: they are this BootAgent's children, carried across its own exec.
    Adopt,
}

impl AtStart {
    /// `handover`: this process was exec'd by its predecessor to hand its children over
    /// (a self-upgrade), rather than started by init after the predecessor died.
    pub fn decide(handover: bool) -> AtStart {
        if handover {
            AtStart::Adopt
        } else {
            AtStart::EndLeftovers
        }
    }
}

impl Supervisor {
    /// Falls back to subreaper and marker scan for children without a cgroup; says so
    /// once.
    pub(super) fn without_cgroups(&mut self, why: &str) {
        if self.subreaper {
            return;
        }
        self.subreaper = true;
        match self.procs.become_subreaper() {
            Ok(()) => warn!(
                "{why}: a child's processes that leave its process group are tracked by \
                 their environment, with BootAgent as their subreaper"
            ),
            Err(err) => warn!(
                "{why}, and BootAgent cannot be a child subreaper ({err}): a child's \
                 processes that leave its process group are tracked by their environment only"
            ),
        }
    }

    /// Ends what a previous BootAgent's children left running: the processes in this
    /// data directory's child cgroups, then those carrying its marker. Returns how many.
    pub fn end_leftovers(&self) -> usize {
        let tag = format!("-{}", path_tag(&self.data_dir));
        let ours = |name: &str| name.starts_with("agent-") && name.ends_with(&tag);
        let mut ended = 0;
        let v2_dirs: Vec<_> = match (&self.mechanism, &self.track) {
            (Mechanism::CgroupV2 { dir }, _) => vec![dir.clone()],
            (_, Some(track)) if track.v2 => vec![track.dir.clone()],
            _ => Vec::new(),
        };
        let parents = reslimit::parent_dirs(&self.mechanism, self.track.as_ref());
        for dir in reslimit::leftover_cgroups(&parents, ours) {
            let v2 = dir.parent().is_some_and(|p| v2_dirs.iter().any(|d| d == p));
            match reslimit::clear_leftover(&dir, v2) {
                Ok(count) => {
                    ended += count;
                    info!(
                        "cgroup {}: cleared a leftover of a previous run",
                        dir.display()
                    );
                }
                Err(err) => warn!("leftover cgroup {}: {err}", dir.display()),
            }
        }
        ended
            + self
                .procs
                .kill_marked_processes(&agents_marker(&self.data_dir))
    }

    /// As a subreaper: reaps orphans reparented to BootAgent, each by its pid; a
    /// supervised child's main process among them goes through the normal path.
    pub(super) fn reap_strays(&mut self, now: Millis, wall_s: i64) {
        for _ in 0..STRAYS_REAPED_MAX {
            let Some(pid) = self.procs.peek_exited_child() else {
                return;
            };
            let reaped = match self.owner_of(pid) {
                Some(name) => self.reap_child(&name, pid, now, wall_s),
                None => self.procs.reap(pid).is_some(),
            };
            if !reaped {
                return; // not an exit after all: leave it to the next SIGCHLD
            }
        }
    }

    /// At BootAgent's exit, once every child is gone: removes its parent cgroups
    /// (`bootagent-children`, v1's `bootagent`, a tracking parent) where they are empty,
    /// so that a stopped BootAgent leaves nothing in the cgroup tree. One that still holds
    /// cgroups (another BootAgent's children, beside this one) stays.
    pub fn release_cgroups(&self) {
        for dir in reslimit::parent_dirs(&self.mechanism, self.track.as_ref()) {
            if let Err(err) = std::fs::remove_dir(&dir) {
                debug!("cgroup {} left in place: {err}", dir.display());
            }
        }
    }

    /// At BootAgent's exit, once every child's main process is gone: as a subreaper,
    /// kills the orphans still running (reparented to BootAgent, or marked). Returns how
    /// many.
    pub fn end_strays(&mut self) -> usize {
        if !self.subreaper {
            return 0; // the cgroups were emptied as each child ended
        }
        let mut strays = self.procs.children_of(std::process::id());
        strays.extend(
            self.procs
                .marked_processes(&[&agents_marker(&self.data_dir)]),
        );
        strays.sort_unstable();
        strays.dedup();
        let ended = strays
            .into_iter()
            .filter(|&pid| self.procs.signal_process(pid, libc::SIGKILL).is_ok())
            .count();
        // Not reaped: BootAgent exits next, and init reaps what it leaves.
        if ended > 0 {
            info!("ended {ended} process(es) that had left their child's process group");
        }
        ended
    }
}
