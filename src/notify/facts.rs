//! Who a process is, read from `/proc`: enough to tell whether it belongs to a child.

use std::fs::File;
use std::io::Read;

/// Most parents recorded in [`ProcessFacts::ancestors`].
pub const ANCESTORS_MAX: usize = 16;
/// Most bytes of `/proc/PID/cgroup` kept in [`ProcessFacts::cgroup`].
pub const CGROUP_BYTES_MAX: usize = 1024;
/// Most bytes of `/proc/PID/stat` read: its fields of interest come early, after a
/// command name of at most 64 bytes.
const STAT_BYTES_MAX: usize = 512;
/// Most bytes of `/proc/PID/status` read: `Uid:` is on its ninth line.
const STATUS_BYTES_MAX: usize = 4096;

/// Who sent a datagram (or the process a `MAINPID=` names), read from `/proc` at
/// receipt, before the descriptors of the datagram are closed (so that a
/// `systemd-notify` waiting on `BARRIER=1` is still alive): enough for the loop to
/// decide whether the process belongs to a child.
///
/// A process that has already exited (or whose pid is not visible here) has `sid:
/// None`, `cgroup: None` and no ancestors: it cannot be placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessFacts {
    /// The pid, as the kernel attested it (`SCM_CREDENTIALS`; a process with
    /// `CAP_SYS_ADMIN`, such as `systemd-notify` run as root, may name its parent).
    pub pid: i32,
    /// Real user id: the kernel's for a sender, `/proc/PID/status`'s for a `MAINPID=`
    /// (`u32::MAX` when unreadable).
    pub uid: u32,
    /// Session id (`/proc/PID/stat`): a child is spawned with `setsid`, so its
    /// processes have its pid here unless they made a session of their own.
    pub sid: Option<i32>,
    /// `/proc/PID/cgroup`, trimmed, at most [`CGROUP_BYTES_MAX`] bytes: in cgroup v2 one
    /// line `0::/path`; in v1 (or hybrid) one line `N:controllers:/path` per hierarchy.
    /// See [`ProcessFacts::in_cgroup_of`].
    pub cgroup: Option<String>,
    /// The parent, its parent, … up to (not including) pid 1 or 0, at most
    /// [`ANCESTORS_MAX`]. A daemon that double-forked was reparented: its chain then
    /// ends at BootAgent (the subreaper) or init, not at the child.
    pub ancestors: Vec<i32>,
}

impl ProcessFacts {
    /// Reads the facts of `pid`; `uid` is the kernel's word when known.
    pub fn read(pid: i32, uid: Option<u32>) -> ProcessFacts {
        let stat = read_stat(pid);
        let mut ancestors = Vec::new();
        let mut parent = stat.map(|s| s.ppid);
        while let Some(ppid) = parent.filter(|&p| p > 1) {
            if ancestors.len() >= ANCESTORS_MAX || ancestors.contains(&ppid) {
                break;
            }
            ancestors.push(ppid);
            parent = read_stat(ppid).map(|s| s.ppid);
        }
        ProcessFacts {
            pid,
            uid: uid.or_else(|| status_uid(pid)).unwrap_or(u32::MAX),
            sid: stat.map(|s| s.sid),
            cgroup: stat.and_then(|_| read_cgroup(pid)),
            ancestors,
        }
    }

    /// Whether this process is of the child whose process (spawned with `setsid`) is
    /// `child_pid`: that process itself, in its session, or below it. A sender that
    /// exited before its datagram was read is known by its pid alone: it passes only as
    /// the child's process itself, whose pid cannot have been reused while BootAgent has
    /// not reaped it (check that it has not).
    pub fn of_session(&self, child_pid: i32) -> bool {
        child_pid > 1
            && (self.pid == child_pid
                || self.sid == Some(child_pid)
                || self.ancestors.contains(&child_pid))
    }

    /// Whether this process is in a cgroup of a child's own, or one below it: `child` is
    /// the [`ProcessFacts::cgroup`] of the child's process read right after its spawn
    /// (it joined its cgroup before exec), `agent` BootAgent's own. Only the
    /// hierarchies where the two differ count (the child has a cgroup of its own
    /// there): a child without one has no process here, and neither has a root path.
    pub fn in_cgroup_of(&self, child: &str, agent: &str) -> bool {
        let Some(mine) = &self.cgroup else {
            return false;
        };
        cgroup_lines(child).any(|(hierarchy, path)| {
            let agents = cgroup_lines(agent).find(|(h, _)| *h == hierarchy);
            if path == "/" || agents.is_some_and(|(_, p)| p == path) {
                return false; // not the child's own
            }
            cgroup_lines(mine).any(|(h, p)| {
                h == hierarchy
                    && (p == path || p.strip_prefix(path).is_some_and(|r| r.starts_with('/')))
            })
        })
    }
}

/// The lines of `/proc/PID/cgroup` as (hierarchy `N:controllers`, path).
fn cgroup_lines(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|line| {
        let first = line.find(':')?;
        let second = first + 1 + line.get(first + 1..)?.find(':')?;
        Some((line.get(..second)?, line.get(second + 1..)?))
    })
}

/// The fields of `/proc/PID/stat` used here.
#[derive(Clone, Copy)]
struct Stat {
    ppid: i32,
    sid: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = read_bounded(&format!("/proc/{pid}/stat"), STAT_BYTES_MAX)?;
    // "pid (comm) state ppid pgrp session …": comm may hold anything, so read after
    // its last ')'.
    let mut fields = text.get(text.rfind(')')? + 1..)?.split_whitespace();
    let ppid = fields.nth(1)?.parse().ok()?;
    let sid = fields.nth(1)?.parse().ok()?;
    Some(Stat { ppid, sid })
}

fn status_uid(pid: i32) -> Option<u32> {
    let text = read_bounded(&format!("/proc/{pid}/status"), STATUS_BYTES_MAX)?;
    let line = text.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn read_cgroup(pid: i32) -> Option<String> {
    let text = read_bounded(&format!("/proc/{pid}/cgroup"), CGROUP_BYTES_MAX)?;
    Some(text.trim().to_string())
}

/// At most `max` bytes of a file as text (lossy), cut at a character boundary.
fn read_bounded(path: &str, max: usize) -> Option<String> {
    let mut bytes = Vec::new();
    File::open(path)
        .ok()?
        .take(max as u64)
        .read_to_end(&mut bytes)
        .ok()?;
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    while text.len() > max {
        text.pop();
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cgroup: Option<&str>) -> ProcessFacts {
        ProcessFacts {
            pid: 100,
            uid: 0,
            sid: Some(100),
            cgroup: cgroup.map(str::to_string),
            ancestors: vec![50, 10],
        }
    }

    #[test]
    fn membership_by_session_and_parents() {
        let sender = facts(None);
        assert!(sender.of_session(100), "the child's process itself");
        assert!(sender.of_session(50), "below it");
        assert!(!sender.of_session(101));
        assert!(!sender.of_session(1) && !sender.of_session(0) && !sender.of_session(-100));
        let gone = ProcessFacts {
            sid: None,
            ancestors: Vec::new(),
            ..facts(None)
        };
        assert!(gone.of_session(100), "known by its pid only");
        assert!(!gone.of_session(50));
    }

    #[test]
    fn membership_by_cgroup_counts_only_a_cgroup_of_the_childs_own() {
        let agent = "0::/system.slice/bootagent.service";
        let child = "0::/system.slice/bootagent.service/children/web";
        assert!(facts(Some(child)).in_cgroup_of(child, agent));
        assert!(
            facts(Some("0::/system.slice/bootagent.service/children/web/sub"))
                .in_cgroup_of(child, agent)
        );
        assert!(
            !facts(Some("0::/system.slice/bootagent.service/children/web2"))
                .in_cgroup_of(child, agent)
        );
        assert!(!facts(Some(agent)).in_cgroup_of(child, agent));
        assert!(!facts(None).in_cgroup_of(child, agent));
        // No cgroup of its own: BootAgent's is shared by everything it runs.
        assert!(!facts(Some(agent)).in_cgroup_of(agent, agent));
        assert!(!facts(Some("0::/")).in_cgroup_of("0::/", "0::/x"));

        // v1 (hybrid): the child has its own cgroup in cpu and memory only.
        let agent = "9:name=systemd:/\n4:memory:/\n1:cpu:/\n0::/";
        let child = "9:name=systemd:/\n4:memory:/bootagent/web\n1:cpu:/bootagent/web\n0::/";
        let stranger = "9:name=systemd:/\n4:memory:/\n1:cpu:/\n0::/";
        assert!(facts(Some(child)).in_cgroup_of(child, agent));
        assert!(!facts(Some(stranger)).in_cgroup_of(child, agent));
        let mixed = "9:name=systemd:/\n4:memory:/other\n1:cpu:/bootagent/web\n0::/";
        assert!(facts(Some(mixed)).in_cgroup_of(child, agent));
        // A path holding ':' stays whole.
        assert!(facts(Some("0::/a:b")).in_cgroup_of("0::/a:b", "0::/"));
    }
}
