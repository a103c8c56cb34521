//! Which mechanism holds children to their limits on this host, and BootAgent's parent
//! cgroups (see the module doc of `reslimit` for where they are).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::facts::{cgroup_dir, Facts};
use super::parse::ResourceLimits;
use super::shared::{read_text, text, with_path, write_file, PROCS_FILE};
use crate::limits::Choice;
use crate::sys;

/// BootAgent's parent cgroup in v2 and in v1.
pub(super) const V2_PARENT_NAME: &str = "bootagent-children";
/// The v2 leaf BootAgent moves into when its own cgroup is delegated to it.
pub(super) const V2_SUPERVISOR_NAME: &str = "bootagent-supervisor";
pub(super) const V1_PARENT_NAME: &str = "bootagent";
/// The v2 controllers BootAgent needs, as written to `cgroup.subtree_control`.
const V2_CONTROLLERS: [&str; 2] = ["memory", "cpu"];

/// Which mechanism is in force on this host. The paths are BootAgent's parent cgroups;
/// each child gets a directory below them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mechanism {
    CgroupV2 {
        dir: PathBuf,
    },
    CgroupV1 {
        memory: Option<PathBuf>,
        cpu: Option<PathBuf>,
    },
    Proc,
}

impl Mechanism {
    /// The part of `limits` this mechanism leaves to the `/proc` fallback: all of them
    /// for `Proc`, none for v2, and in v1 those whose hierarchy is missing.
    pub fn fallback_limits(&self, limits: &ResourceLimits) -> ResourceLimits {
        match self {
            Mechanism::CgroupV2 { .. } => ResourceLimits::default(),
            Mechanism::CgroupV1 { memory, cpu } => ResourceLimits {
                cpu_pct: limits.cpu_pct.filter(|_| cpu.is_none()),
                memory_bytes: limits.memory_bytes.filter(|_| memory.is_none()),
            },
            Mechanism::Proc => *limits,
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn shown(dir: &Option<PathBuf>) -> String {
            dir.as_ref()
                .map_or_else(|| "none".to_owned(), |d| d.display().to_string())
        }
        match self {
            Mechanism::CgroupV2 { dir } => write!(f, "cgroup v2 ({})", dir.display()),
            Mechanism::CgroupV1 { memory, cpu } => write!(
                f,
                "cgroup v1 (memory: {}, cpu: {})",
                shown(memory),
                shown(cpu)
            ),
            Mechanism::Proc => f.write_str("/proc sampling"),
        }
    }
}

/// Detects the mechanism, creating BootAgent's parent cgroup directories where it can
/// (see the module doc for where). Never fails: without a usable cgroup it is `Proc`,
/// with the reasons logged.
pub fn detect(choice: Choice) -> Mechanism {
    let (mechanism, notes) = choose(choice, Mode::Create);
    let forced_cgroup = matches!(choice, Choice::CgroupV2 | Choice::CgroupV1);
    if mechanism == Mechanism::Proc && forced_cgroup && !notes.is_empty() {
        log::warn!(
            "resource limits: {choice} is not usable, falling back to {mechanism}: {}",
            notes.join("; ")
        );
    } else {
        log::info!("resource limits: {}", summary(&mechanism, &notes));
    }
    mechanism
}

/// Only for `-T`: what [`detect`] would pick and why, without creating anything. It
/// cannot foresee every refusal of the kernel (a busy cgroup, a rejected write).
pub fn describe(choice: Choice) -> String {
    let (mechanism, notes) = choose(choice, Mode::Check);
    summary(&mechanism, &notes)
}

/// `mechanism; why the ones before it were passed over`.
fn summary(mechanism: &Mechanism, notes: &[String]) -> String {
    if notes.is_empty() {
        mechanism.to_string()
    } else {
        format!("{mechanism}; {}", notes.join("; "))
    }
}

/// Removes BootAgent's parent cgroup directories if they are empty (at shutdown, and
/// in tests). Best effort: a parent that still has children stays.
pub fn release(mechanism: &Mechanism) {
    let dirs = match mechanism {
        Mechanism::CgroupV2 { dir } => vec![dir],
        Mechanism::CgroupV1 { memory, cpu } => memory.iter().chain(cpu).collect(),
        Mechanism::Proc => Vec::new(),
    };
    for dir in dirs {
        if let Err(e) = fs::remove_dir(dir) {
            log::debug!("cgroup {} left in place: {e}", dir.display());
        }
    }
}

/// Whether detection may create and write, or only look.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Create,
    Check,
}

/// The mechanism, and why the ones before it in the order were passed over.
fn choose(choice: Choice, mode: Mode) -> (Mechanism, Vec<String>) {
    if choice == Choice::Proc {
        return (Mechanism::Proc, Vec::new());
    }
    let facts = match Facts::read() {
        Ok(facts) => facts,
        Err(reason) => return (Mechanism::Proc, vec![reason]),
    };
    let mut notes = Vec::new();
    if matches!(choice, Choice::Auto | Choice::CgroupV2) {
        match setup_v2(mode, &facts) {
            Ok(dir) => return (Mechanism::CgroupV2 { dir }, notes),
            Err(reason) => notes.push(format!("cgroup v2: {reason}")),
        }
    }
    if matches!(choice, Choice::Auto | Choice::CgroupV1) {
        let mut setup = |controller, probe| {
            setup_v1(mode, &facts, controller, probe)
                .map_err(|reason| notes.push(format!("cgroup v1 {controller}: {reason}")))
                .ok()
        };
        let memory = setup("memory", "memory.limit_in_bytes");
        let cpu = setup("cpu", "cpu.cfs_quota_us");
        if memory.is_some() || cpu.is_some() {
            return (Mechanism::CgroupV1 { memory, cpu }, notes);
        }
    }
    (Mechanism::Proc, notes)
}

/// The v2 parent (see the module doc of `reslimit`): inside BootAgent's own cgroup when
/// that is delegated to it, else beside it, else below the root.
fn setup_v2(mode: Mode, facts: &Facts) -> Result<PathBuf, String> {
    let mount = (facts.mounts.iter())
        .find(|m| m.fstype == "cgroup2")
        .ok_or("no cgroup2 file system is mounted")?;
    let own_path = (facts.memberships.iter())
        .find(|m| m.hierarchy == "0")
        .map(|m| m.path.as_str())
        .ok_or("BootAgent is in no v2 cgroup")?;
    let own = cgroup_dir(mount, own_path).ok_or_else(|| {
        format!(
            "own cgroup {own_path} is not under {}",
            mount.point.display()
        )
    })?;
    let at_mount = own == mount.point;
    // The root cgroup (the only one without `cgroup.type`) is exempt from the "no
    // internal processes" rule. The root of a cgroup namespace (a container's) is not,
    // and is treated as a delegated cgroup.
    if at_mount && !own.join("cgroup.type").exists() {
        return setup_v2_in(mode, &own, true);
    }
    // Moved into the leaf by an earlier start in the same cgroup.
    if !at_mount && own.file_name() == Some(V2_SUPERVISOR_NAME.as_ref()) {
        if let Some(delegated) = own.parent() {
            return setup_v2_in(mode, delegated, false);
        }
    }
    let delegated = match delegate_own(mode, &own) {
        // A check leaves BootAgent in `own`, where the move would take it out.
        Ok(()) => return setup_v2_in(mode, &own, mode == Mode::Check),
        Err(reason) => reason,
    };
    if at_mount {
        return Err(format!(
            "{delegated}; the cgroups above it are not visible here (a cgroup namespace)"
        ));
    }
    let beside = own
        .parent()
        .ok_or_else(|| format!("own cgroup {} has no parent", own.display()))?;
    setup_v2_in(mode, beside, false).map_err(|reason| format!("{delegated}; {reason}"))
}

/// Makes BootAgent's own cgroup `own` able to hold the children's parent: BootAgent
/// must be alone in it (a service manager's delegated cgroup, not a login session) and
/// may write it; then BootAgent moves into the leaf `own/bootagent-supervisor`, since a
/// cgroup that enables controllers for children may hold no process.
fn delegate_own(mode: Mode, own: &Path) -> Result<(), String> {
    let me = std::process::id().to_string();
    let procs = text(&own.join(PROCS_FILE))?;
    if procs.split_whitespace().any(|pid| pid != me) {
        return Err(format!(
            "own cgroup {} holds other processes than BootAgent",
            own.display()
        ));
    }
    for file in [PROCS_FILE, "cgroup.subtree_control"] {
        let path = own.join(file);
        if !sys::writable(&path) {
            return Err(format!(
                "own cgroup is not delegated: {}",
                not_writable(&path)
            ));
        }
    }
    let missing = missing_controllers(&text(&own.join("cgroup.controllers"))?);
    if !missing.is_empty() {
        return Err(format!(
            "controllers {} not available in own cgroup {}",
            missing.join(", "),
            own.display()
        ));
    }
    let leaf = own.join(V2_SUPERVISOR_NAME);
    match mode {
        Mode::Check if leaf.exists() || sys::writable(own) => Ok(()),
        Mode::Check => Err(not_writable(own)),
        Mode::Create => {
            match fs::create_dir(&leaf) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(with_path(e, &leaf).to_string())
                }
                _ => {}
            }
            write_file(&leaf, PROCS_FILE, &me)
                .map_err(|e| format!("cannot move BootAgent into {}: {e}", leaf.display()))?;
            log::debug!("moved into cgroup {}", leaf.display());
            Ok(())
        }
    }
}

/// The parent `base/bootagent-children`, with `memory` and `cpu` enabled in `base` and
/// in it. `may_have_processes`: processes in `base` do not stand in the way (the root
/// cgroup, or a check of a cgroup BootAgent would leave).
fn setup_v2_in(mode: Mode, base: &Path, may_have_processes: bool) -> Result<PathBuf, String> {
    let missing = missing_controllers(&text(&base.join("cgroup.controllers"))?);
    if !missing.is_empty() {
        return Err(format!(
            "controllers {} not available in {}",
            missing.join(", "),
            base.display()
        ));
    }
    enable_v2_controllers(mode, base, may_have_processes)?;
    // Moving a child out of BootAgent's cgroup needs write access to the common ancestor.
    let procs = base.join(PROCS_FILE);
    if !sys::writable(&procs) {
        return Err(not_writable(&procs));
    }
    let dir = base.join(V2_PARENT_NAME);
    match mode {
        Mode::Create => make_v2_parent(&dir).map_err(|e| e.to_string())?,
        Mode::Check if dir.is_dir() => enable_v2_controllers(mode, &dir, false)?,
        Mode::Check if !sys::writable(base) => return Err(not_writable(base)),
        Mode::Check => {}
    }
    Ok(dir)
}

/// Makes the v2 parent, or finds it, with the controllers enabled for its children.
pub(super) fn make_v2_parent(dir: &Path) -> io::Result<()> {
    make_dir_with(dir, || {
        enable_v2_controllers(Mode::Create, dir, false).map_err(io::Error::other)
    })
}

/// Enables `memory` and `cpu` for the children of `dir` where they are not yet.
/// `may_have_processes`: `dir` is a root, exempt from the "no internal processes" rule.
fn enable_v2_controllers(mode: Mode, dir: &Path, may_have_processes: bool) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let missing = missing_controllers(&text(&control)?);
    if missing.is_empty() {
        return Ok(());
    }
    let names = missing.join(", ");
    match mode {
        Mode::Create => {
            let request: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
            write_file(dir, "cgroup.subtree_control", &request.join(" ")).map_err(|e| {
                format!(
                    "cannot enable {names} for children of {}: {e}",
                    dir.display()
                )
            })
        }
        Mode::Check if !sys::writable(&control) => Err(not_writable(&control)),
        Mode::Check if !may_have_processes && has_processes(dir) => Err(format!(
            "{} has processes, so it cannot enable {names} for children",
            dir.display()
        )),
        Mode::Check => Ok(()),
    }
}

fn has_processes(dir: &Path) -> bool {
    read_text(&dir.join(PROCS_FILE)).is_ok_and(|procs| !procs.trim().is_empty())
}

/// The controllers BootAgent needs that are not among the space-separated words of `list`.
fn missing_controllers(list: &str) -> Vec<&'static str> {
    let present: Vec<&str> = list.split_whitespace().collect();
    (V2_CONTROLLERS.into_iter())
        .filter(|c| !present.contains(c))
        .collect()
}

/// The v1 parent for one controller: `bootagent` below BootAgent's own cgroup of that
/// hierarchy (which keeps the children inside whatever limits BootAgent is under),
/// else at the root of the hierarchy. `probe` is a file the controller must offer.
fn setup_v1(mode: Mode, facts: &Facts, controller: &str, probe: &str) -> Result<PathBuf, String> {
    let is_controller = |list: &str| list.split(',').any(|c| c == controller);
    let mount = (facts.mounts.iter())
        .find(|m| m.fstype == "cgroup" && is_controller(&m.super_options))
        .ok_or_else(|| format!("no {controller} hierarchy is mounted"))?;
    let at_root = mount.point.join(V1_PARENT_NAME);
    let below_own = (facts.memberships.iter())
        .find(|m| m.hierarchy != "0" && is_controller(&m.controllers))
        .and_then(|m| cgroup_dir(mount, &m.path))
        .map(|dir| dir.join(V1_PARENT_NAME))
        .filter(|dir| *dir != at_root);
    let mut reasons = Vec::new();
    for dir in below_own.into_iter().chain([at_root]) {
        match prepare_v1_parent(mode, &dir, probe) {
            Ok(()) => return Ok(dir),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

fn prepare_v1_parent(mode: Mode, dir: &Path, probe: &str) -> Result<(), String> {
    let parent = (dir.parent()).ok_or_else(|| format!("{} has no parent", dir.display()))?;
    if !parent.join(probe).is_file() {
        // For example a kernel without CFS bandwidth control has no cpu.cfs_quota_us.
        return Err(format!("{} has no {probe}", parent.display()));
    }
    let procs = dir.join(PROCS_FILE);
    match mode {
        Mode::Create => make_dir_with(dir, || {
            let opened = OpenOptions::new().write(true).open(&procs);
            opened.map(drop).map_err(|e| with_path(e, &procs))
        })
        .map_err(|e| e.to_string()),
        Mode::Check if dir.is_dir() && sys::writable(&procs) => Ok(()),
        Mode::Check if !dir.exists() && sys::writable(parent) => Ok(()),
        Mode::Check => Err(not_writable(dir)),
    }
}

/// Creates `dir` if it is not there, then runs `finish`; a directory it created is
/// removed again if `finish` fails, so that nothing is left half made.
pub(super) fn make_dir_with(dir: &Path, finish: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let created = match fs::create_dir(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => false,
        Err(e) => return Err(with_path(e, dir)),
    };
    let finished = finish();
    if finished.is_err() && created {
        let _ = fs::remove_dir(dir);
    }
    finished
}

fn not_writable(path: &Path) -> String {
    format!("{} is not writable", path.display())
}

#[cfg(test)]
#[path = "detect_tests.rs"]
mod tests;
