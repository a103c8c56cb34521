//! The cgroup of one child: made before the spawn, joined between fork and exec,
//! emptied and removed after the child.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::detect::{make_dir_with, make_v2_parent, Mechanism};
use super::parse::{ResourceLimits, CPU_PCT_PER_CPU};
use super::shared::{context, quoted, read_text, with_path, write_file, PROCS_FILE};
use super::track::TrackParent;
use crate::sys;

/// What a process writes into `cgroup.procs` to move itself.
const JOIN_SELF: &[u8] = b"0";
/// CFS period of both versions: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;
/// How long `remove` (and `create`, for a leftover) waits for killed processes to leave.
const CGROUP_EMPTY_WAIT_MS: u64 = 1_000;
/// Pauses between two looks at a cgroup that is being emptied: the first short (killed
/// processes are usually gone within a millisecond, and a child's restart waits on
/// this), doubling up to the longest.
const CGROUP_EMPTY_POLL_FIRST_US: u64 = 100;
const CGROUP_EMPTY_POLL_MS: u64 = 10;
/// Deepest nesting of sub-cgroups (a child may make its own) that removal walks.
const CGROUP_DEPTH_MAX: usize = 16;
/// Longest child cgroup name: a file name.
const NAME_BYTES_MAX: usize = 255;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// The cgroup(s) of one child: created before the spawn, joined by the child between
/// fork and exec, removed after the child and its group are gone.
///
/// Dropping it without [`Cgroup::remove`] removes the directories only if they are
/// empty (no kill, no wait); one left behind is cleared by the next `create` of the
/// same name.
#[derive(Debug)]
pub struct Cgroup {
    version: Version,
    /// The child's directories, one per hierarchy (one in v2; one or two in v1).
    dirs: Vec<PathBuf>,
    /// The directory that has the memory controller, for `oom_kills`.
    memory_dir: Option<PathBuf>,
    /// `cgroup.procs` of each directory, opened write-only and close-on-exec.
    procs: Vec<File>,
}

/// What names a child's cgroup across BootAgent's exec hand-over (docs/protocol.md
/// section 10): the next image opens it again with [`Cgroup::adopt`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupParts {
    pub v2: bool,
    pub dirs: Vec<PathBuf>,
    pub memory_dir: Option<PathBuf>,
}

impl Cgroup {
    /// What the next image needs to take this cgroup over.
    pub fn parts(&self) -> CgroupParts {
        CgroupParts {
            v2: self.version == Version::V2,
            dirs: self.dirs.clone(),
            memory_dir: self.memory_dir.clone(),
        }
    }

    /// Takes over the cgroup of a child adopted after an exec hand-over, as it is
    /// (limits and processes untouched): opens its `cgroup.procs` again.
    pub fn adopt(parts: CgroupParts) -> io::Result<Cgroup> {
        let mut cgroup = Cgroup::new(if parts.v2 { Version::V2 } else { Version::V1 });
        for dir in &parts.dirs {
            let procs = dir.join(PROCS_FILE);
            let file = OpenOptions::new().write(true).open(&procs); // O_CLOEXEC
            cgroup.procs.push(file.map_err(|e| with_path(e, &procs))?);
        }
        cgroup.dirs = parts.dirs;
        cgroup.memory_dir = parts.memory_dir;
        Ok(cgroup)
    }

    /// Creates `<parent>/<name>` in each hierarchy of `mechanism` and writes the limits
    /// that are set (a new cgroup has none): v2 `memory.max`, `memory.swap.max` 0 and
    /// `memory.oom.group` 1 where present, `cpu.max`; v1 `memory.limit_in_bytes`,
    /// `memory.memsw.limit_in_bytes` where present, `cpu.cfs_period_us` and
    /// `cpu.cfs_quota_us`. The directories are made even without a limit of their kind:
    /// they still gather the child's processes for `remove`.
    ///
    /// A leftover directory of a previous run is emptied (its processes killed, bounded
    /// by one second) and made anew, so no stale limit or sub-cgroup survives; if it
    /// cannot be emptied, this fails. `name` must be a plain file name that does not
    /// start with `.`; one that is also a cgroup interface file (`cpu.max`) fails, so a
    /// caller with untrusted names should prefix them.
    pub fn create(
        mechanism: &Mechanism,
        name: &str,
        limits: &ResourceLimits,
    ) -> io::Result<Cgroup> {
        check_name(name)?;
        let bytes = limits.memory_bytes.map(|bytes| bytes.to_string());
        let quota_us = limits.cpu_pct.map(cpu_quota_us);
        match mechanism {
            Mechanism::Proc => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no cgroup hierarchy is in use (limits are enforced by /proc sampling)",
            )),
            Mechanism::CgroupV2 { dir } => {
                let mut cgroup = Cgroup::new(Version::V2);
                let leaf = cgroup.make_leaf(dir, name)?;
                if let Some(bytes) = &bytes {
                    write_file(&leaf, "memory.max", bytes)?;
                    write_if_present(&leaf, "memory.swap.max", "0")?;
                }
                write_if_present(&leaf, "memory.oom.group", "1")?;
                if let Some(quota_us) = quota_us {
                    write_file(&leaf, "cpu.max", &format!("{quota_us} {CPU_PERIOD_US}"))?;
                }
                cgroup.memory_dir = Some(leaf);
                Ok(cgroup)
            }
            Mechanism::CgroupV1 { memory, cpu } => {
                let mut cgroup = Cgroup::new(Version::V1);
                if let Some(parent) = memory {
                    let leaf = cgroup.make_leaf(parent, name)?;
                    if let Some(bytes) = &bytes {
                        // memsw (memory + swap) may never be below the memory limit:
                        // set the memory limit first.
                        write_file(&leaf, "memory.limit_in_bytes", bytes)?;
                        write_if_present(&leaf, "memory.memsw.limit_in_bytes", bytes)?;
                    }
                    cgroup.memory_dir = Some(leaf);
                }
                if let Some(parent) = cpu {
                    let leaf = cgroup.make_leaf(parent, name)?;
                    if let Some(quota_us) = quota_us {
                        write_file(&leaf, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                        write_file(&leaf, "cpu.cfs_quota_us", &quota_us.to_string())?;
                    }
                }
                Ok(cgroup)
            }
        }
    }

    /// A cgroup only to gather the child's processes (no controller, no limit), below
    /// `parent` (see `track.rs`); a leftover of the same name is cleared as by `create`.
    pub fn create_tracking(parent: &TrackParent, name: &str) -> io::Result<Cgroup> {
        check_name(name)?;
        let version = if parent.v2 { Version::V2 } else { Version::V1 };
        let mut cgroup = Cgroup::new(version);
        cgroup.make_leaf(&parent.dir, name)?;
        Ok(cgroup)
    }

    /// The processes in the cgroup and its sub-cgroups (of every hierarchy it is in).
    pub fn pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            let _ = collect_pids(dir, 0, &mut pids); // a failed read: what was read
        }
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Sends `signal` to every process in the cgroup, however it left its process group
    /// or session; `SIGKILL` through `cgroup.kill` where v2 has it. Returns how many.
    pub fn signal(&self, signal: libc::c_int) -> usize {
        let pids = self.pids();
        match (signal, self.dirs.first()) {
            (libc::SIGKILL, Some(dir)) => kill_all(dir, self.version, &pids),
            _ => signal_pids(&pids, signal),
        }
        pids.len()
    }

    /// Descriptors of the `cgroup.procs` files, opened in advance (write-only,
    /// close-on-exec), for [`join_in_child`]. They stay valid while `self` lives.
    pub fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The child's cgroup directories, one per hierarchy.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// OOM kills in the cgroup so far (v2 `memory.events`, v1 `memory.oom_control`,
    /// both `oom_kill`); 0 if unknown (no memory hierarchy, a kernel before 4.13).
    pub fn oom_kills(&self) -> u64 {
        let Some(dir) = &self.memory_dir else {
            return 0;
        };
        let file = match self.version {
            Version::V2 => "memory.events",
            Version::V1 => "memory.oom_control",
        };
        (read_text(&dir.join(file)).ok())
            .and_then(|text| keyed_value(&text, "oom_kill"))
            .unwrap_or(0)
    }

    /// SIGKILLs anything left in the cgroup (and in sub-cgroups the child made), then
    /// removes the directories. Bounded: gives up after about a second, logging; what
    /// is left is cleared by the next `create` of the same name.
    pub fn remove(mut self) {
        self.procs.clear();
        let deadline = Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
        for dir in std::mem::take(&mut self.dirs) {
            if let Err(e) = clear(&dir, self.version, deadline) {
                log::warn!("cgroup {} left in place: {e}", dir.display());
            }
        }
    }

    fn new(version: Version) -> Cgroup {
        Cgroup {
            version,
            dirs: Vec::new(),
            memory_dir: None,
            procs: Vec::new(),
        }
    }

    /// Makes `<parent>/<name>` afresh (clearing a leftover) and opens its `cgroup.procs`.
    fn make_leaf(&mut self, parent: &Path, name: &str) -> io::Result<PathBuf> {
        let dir = parent.join(name);
        if self.dirs.contains(&dir) {
            return Ok(dir); // memory and cpu co-mounted in one v1 hierarchy
        }
        if !parent.is_dir() {
            // Removed since `detect` (by `release`, or by hand): make it again.
            self.make_parent(parent)?;
        }
        if dir.exists() {
            let deadline = Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
            clear(&dir, self.version, deadline)
                .map_err(|e| context(e, format_args!("leftover cgroup {}", dir.display())))?;
            log::info!(
                "cgroup {}: cleared a leftover of a previous run",
                dir.display()
            );
        }
        match fs::create_dir(&dir) {
            // Another BootAgent sharing the parent released it at its shutdown, between
            // the look above and here: make it again, once.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.make_parent(parent)?;
                fs::create_dir(&dir)
            }
            created => created,
        }
        .map_err(|e| with_path(e, &dir))?;
        self.dirs.push(dir.clone());
        let procs = dir.join(PROCS_FILE);
        let file = OpenOptions::new().write(true).open(&procs); // std opens with O_CLOEXEC
        self.procs.push(file.map_err(|e| with_path(e, &procs))?);
        Ok(dir)
    }

    fn make_parent(&self, parent: &Path) -> io::Result<()> {
        match self.version {
            Version::V2 => make_v2_parent(parent),
            Version::V1 => make_dir_with(parent, || Ok(())),
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            let _ = fs::remove_dir(dir); // best effort; see the type's doc
        }
    }
}

/// What the child runs between fork and exec: writes `"0"` into each `cgroup.procs`
/// descriptor, which moves the calling process. Async-signal-safe: `write(2)` only,
/// no allocation (building the error reads `errno`, nothing more).
pub fn join_in_child(fds: &[RawFd]) -> io::Result<()> {
    for &fd in fds {
        loop {
            match sys::write_fd(fd, JOIN_SELF) {
                Ok(written) if written == JOIN_SELF.len() => break,
                Ok(_) => return Err(io::Error::from_raw_os_error(libc::EIO)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn check_name(name: &str) -> io::Result<()> {
    let plain = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && !name.starts_with('.')
        && !name.contains(['/', '\0']);
    if plain {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("cgroup name {} is not a plain file name", quoted(name)),
    ))
}

fn cpu_quota_us(pct: u32) -> u64 {
    CPU_PERIOD_US * u64::from(pct) / u64::from(CPU_PCT_PER_CPU)
}

/// For interface files that depend on the kernel (`memory.swap.max` needs swap
/// accounting, `memory.memsw.*` too, `memory.oom.group` Linux 4.19).
fn write_if_present(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    if dir.join(file).exists() {
        write_file(dir, file, value)
    } else {
        Ok(())
    }
}

/// Kills everything in `dir` and below, then removes the directories, until done or
/// `deadline`. A directory that is already gone is done.
fn clear(dir: &Path, version: Version, deadline: Instant) -> io::Result<()> {
    let mut pause = Duration::from_micros(CGROUP_EMPTY_POLL_FIRST_US);
    loop {
        let mut pids = Vec::new();
        match collect_pids(dir, 0, &mut pids) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            other => other?,
        }
        let past_deadline = Instant::now() >= deadline;
        if pids.is_empty() {
            match remove_tree(dir, 0) {
                Ok(()) => return Ok(()),
                Err(e) if past_deadline => return Err(e),
                Err(_) => {} // a process still leaving; try again
            }
        } else if past_deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{} processes survived SIGKILL for {CGROUP_EMPTY_WAIT_MS} ms",
                    pids.len()
                ),
            ));
        } else {
            kill_all(dir, version, &pids);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(CGROUP_EMPTY_POLL_MS));
    }
}

/// The pids of `dir/cgroup.procs` and of its sub-cgroups'.
fn collect_pids(dir: &Path, depth: usize, pids: &mut Vec<i32>) -> io::Result<()> {
    let procs = read_text(&dir.join(PROCS_FILE))?;
    pids.extend(
        procs
            .split_whitespace()
            .filter_map(|pid| pid.parse::<i32>().ok()),
    );
    if depth >= CGROUP_DEPTH_MAX {
        return Ok(());
    }
    for dir in sub_dirs(dir)? {
        match collect_pids(&dir, depth + 1, pids) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed meanwhile
            other => other?,
        }
    }
    Ok(())
}

fn kill_all(dir: &Path, version: Version, pids: &[i32]) {
    // v2 (Linux 5.14+) kills the whole subtree at once, forks in flight included.
    let killed = version == Version::V2
        && dir.join("cgroup.kill").is_file()
        && write_file(dir, "cgroup.kill", "1").is_ok();
    if !killed {
        signal_pids(pids, libc::SIGKILL);
    }
}

fn signal_pids(pids: &[i32], signal: libc::c_int) {
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    for &pid in pids.iter().filter(|&&pid| pid != me) {
        // A pid that exited meanwhile is no error; one reused since the read could be
        // hit, a window of microseconds that only a freezer would close.
        let _ = sys::signal_process(pid, signal);
    }
}

/// Kills what is in a leftover cgroup `dir` of a previous run (and its sub-cgroups),
/// then removes it; bounded by about a second. Returns how many processes it found.
pub fn clear_leftover(dir: &Path, v2: bool) -> io::Result<usize> {
    let mut pids = Vec::new();
    let _ = collect_pids(dir, 0, &mut pids);
    let version = if v2 { Version::V2 } else { Version::V1 };
    let deadline = Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
    clear(dir, version, deadline).map(|()| pids.len())
}

/// Removes `dir` and its sub-cgroups, deepest first (cgroupfs removes the interface
/// files with the directory).
fn remove_tree(dir: &Path, depth: usize) -> io::Result<()> {
    if depth < CGROUP_DEPTH_MAX {
        let subs = match sub_dirs(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            subs => subs?,
        };
        for sub in subs {
            remove_tree(&sub, depth + 1)?;
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| with_path(e, dir)),
    }
}

/// The directories in `dir` (the sub-cgroups of a cgroup).
fn sub_dirs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let entries = fs::read_dir(dir).map_err(|e| with_path(e, dir))?;
    Ok((entries.flatten())
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .map(|entry| entry.path())
        .collect())
}

/// `key value` lines, as in `memory.events`: the value of `key`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
#[path = "cgroup_tests.rs"]
mod tests;
