//! Tracking cgroups: where a child's processes are gathered when no cgroup enforces its
//! limits (as systemd gives every service a cgroup of its own), and the sweep of what a
//! killed predecessor left in its children's cgroups.
//!
//! A cgroup only for tracking needs no controller: in v2 any cgroup will do (the "no
//! internal processes" rule applies only to controllers enabled for children), in v1
//! any hierarchy, a named one (`name=systemd`) or a controller's (`pids` first, which
//! limits nothing by itself).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::detect::{make_dir_with, Mechanism, V1_PARENT_NAME, V2_PARENT_NAME, V2_SUPERVISOR_NAME};
use super::facts::{cgroup_dir, Facts};
use super::shared::PROCS_FILE;
use crate::sys;

/// Where children's tracking cgroups go when the limit mechanism makes none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackParent {
    /// cgroup v2 (else a v1 hierarchy).
    pub v2: bool,
    pub dir: PathBuf,
}

/// The parent for tracking cgroups, when `mechanism` makes no cgroups of its own
/// (`Proc`, found by detection, not chosen by the operator); the reasons when there is
/// none. Creates the parent directory.
pub fn detect_tracking(mechanism: &Mechanism) -> Result<Option<TrackParent>, String> {
    if *mechanism != Mechanism::Proc {
        return Ok(None); // the mechanism's own cgroups track
    }
    let facts = Facts::read()?;
    find_tracking(&facts).map(Some)
}

/// The first usable of: a v2 cgroup below BootAgent's own, a v1 hierarchy.
fn find_tracking(facts: &Facts) -> Result<TrackParent, String> {
    let mut reasons = Vec::new();
    match track_v2(facts) {
        Ok(dir) => return Ok(TrackParent { v2: true, dir }),
        Err(reason) => reasons.push(format!("cgroup v2: {reason}")),
    }
    match track_v1(facts) {
        Ok(dir) => return Ok(TrackParent { v2: false, dir }),
        Err(reason) => reasons.push(format!("cgroup v1: {reason}")),
    }
    Err(reasons.join("; "))
}

/// `<own>/bootagent-children` (or beside BootAgent's leaf, if an earlier start moved it
/// into `bootagent-supervisor`), made if missing.
fn track_v2(facts: &Facts) -> Result<PathBuf, String> {
    let mount = (facts.mounts.iter())
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup2 file system is mounted")?;
    let own_path = (facts.memberships.iter())
        .find(|m| m.hierarchy == "0")
        .map(|m| m.path.as_str())
        .ok_or("BootAgent is in no v2 cgroup")?;
    let own = cgroup_dir(mount, own_path)
        .ok_or_else(|| format!("own cgroup {own_path} is not visible here"))?;
    let base = match own.parent() {
        Some(delegated) if own.file_name() == Some(V2_SUPERVISOR_NAME.as_ref()) => {
            delegated.to_path_buf()
        }
        _ => own,
    };
    let dir = base.join(V2_PARENT_NAME);
    make_parent(&base, &dir)?;
    Ok(dir)
}

/// `bootagent` in the first usable v1 hierarchy: `pids`, then a named one, then any.
fn track_v1(facts: &Facts) -> Result<PathBuf, String> {
    let mut mounts: Vec<_> = (facts.mounts.iter())
        .filter(|m| m.fstype == "cgroup")
        .collect();
    let rank = |options: &str| {
        let words: Vec<&str> = options.split(',').collect();
        if words.contains(&"pids") {
            0
        } else if words.iter().any(|w| w.starts_with("name=")) {
            1
        } else {
            2
        }
    };
    mounts.sort_by_key(|m| rank(&m.super_options));
    if mounts.is_empty() {
        return Err("no hierarchy is mounted".into());
    }
    let mut reasons = Vec::new();
    for mount in mounts {
        let words: Vec<&str> = mount.super_options.split(',').collect();
        let own = (facts.memberships.iter())
            .find(|m| m.hierarchy != "0" && m.controllers.split(',').any(|c| words.contains(&c)))
            .and_then(|m| cgroup_dir(mount, &m.path))
            .unwrap_or_else(|| mount.point.clone());
        let dir = own.join(V1_PARENT_NAME);
        match make_parent(&own, &dir) {
            Ok(()) => return Ok(dir),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

/// Makes `dir` below `base` where BootAgent may move a child (it can write `base`'s
/// `cgroup.procs`, the common ancestor's) and `dir`'s `cgroup.procs`.
fn make_parent(base: &Path, dir: &Path) -> Result<(), String> {
    let procs = base.join(PROCS_FILE);
    if !sys::writable(&procs) {
        return Err(format!("{} is not writable", procs.display()));
    }
    make_dir_with(dir, || {
        let procs = dir.join(PROCS_FILE);
        if procs.is_file() && sys::writable(&procs) {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is not writable", procs.display()),
            ))
        }
    })
    .map_err(|e| e.to_string())
}

/// Every child cgroup directory under `parents` whose name `ours` accepts: what a
/// previous run of this BootAgent left (its children's cgroups are `agent-NAME-TAG`).
pub fn leftover_cgroups(parents: &[PathBuf], ours: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for entry in entries.flatten() {
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if is_dir && entry.file_name().to_str().is_some_and(&ours) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}

/// The parent directories of children's cgroups that `mechanism` and `track` use.
pub fn parent_dirs(mechanism: &Mechanism, track: Option<&TrackParent>) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = match mechanism {
        Mechanism::CgroupV2 { dir } => vec![dir.clone()],
        Mechanism::CgroupV1 { memory, cpu } => memory.iter().chain(cpu).cloned().collect(),
        Mechanism::Proc => Vec::new(),
    };
    dirs.extend(track.map(|t| t.dir.clone()));
    dirs.dedup();
    dirs
}

#[cfg(test)]
#[path = "track_tests.rs"]
mod tests;
