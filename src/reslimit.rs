//! Resource limits of a child agent (PROTOCOL.md section 6): the `limits` object read
//! into [`ResourceLimits`], and the means to hold a child to it.
//!
//! # Three mechanisms
//!
//! [`detect`] picks one per host, in this order, and logs why it passed over the others.
//!
//! - **cgroup v2.** BootAgent's own cgroup (the `0::` line of `/proc/self/cgroup`) holds
//!   BootAgent, and a cgroup with processes cannot enable controllers for children (the
//!   "no internal processes" rule). So children go into a *sibling* of it,
//!   `<parent of own cgroup>/bootagent-children`, which holds no process itself and has
//!   `memory` and `cpu` enabled in its `cgroup.subtree_control`. When BootAgent sits in
//!   the root cgroup, which the rule exempts, that is `<root>/bootagent-children`. Each
//!   child gets `bootagent-children/NAME` with `memory.max`, `memory.swap.max` 0 (swap
//!   must not stretch the limit), `memory.oom.group` 1 (an OOM kill takes the whole child)
//!   and `cpu.max`. Needs both controllers offered by the parent and the right to write
//!   there (root, or a delegated subtree); otherwise v1 is tried.
//! - **cgroup v1.** Each controller has its own hierarchy, found in
//!   `/proc/self/mountinfo` (possibly co-mounted, as `cpu,cpuacct`). Children go into
//!   `<mount>/<own path>/bootagent/NAME`, else `<mount>/bootagent/NAME`, with
//!   `memory.limit_in_bytes` (and `memory.memsw.limit_in_bytes`, against swap) and
//!   `cpu.cfs_quota_us` per `cpu.cfs_period_us`. One hierarchy may be usable without the
//!   other: [`Mechanism::fallback_limits`] says which limit is then left to `/proc`.
//! - **`/proc` sampling**, where no cgroup can be made (no cgroupfs, not root, read-only).
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
//! In v1 a child's main process can outlive a killed helper, so the caller should also
//! read the count at each report, and kill the group itself when it has risen.
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
//! The raw system calls are `write` in [`join_in_child`] and `kill`, `access` and
//! `sysconf` in the `ffi` section at the bottom, each `unsafe` block with its
//! `// SAFETY:` line, to move into `sys.rs`.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Milliseconds of the monotonic clock, as the caller's clock gives them.
pub type Millis = u64;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// Smallest memory limit: below it not even a shell starts.
pub const MEMORY_BYTES_MIN: u64 = MIB;
/// Largest memory limit, 1 TiB: above any host BootAgent runs on, so a bigger value is
/// a mistake, not a wish.
pub const MEMORY_BYTES_MAX: u64 = 1024 * GIB;
/// Smallest CPU limit: 1 ms per 100 ms period is the kernel's smallest CFS quota.
pub const CPU_PCT_MIN: u32 = 1;
/// One whole CPU; the largest limit is this times the number of CPUs.
pub const CPU_PCT_PER_CPU: u32 = 100;
/// Keys of the `limits` object, as PROTOCOL.md spells them (matched in any case).
const CPU_KEY: &str = "CPU";
const MEMORY_KEY: &str = "memory";
/// Longest piece of a bad value quoted in an error message.
const QUOTED_CHARS_MAX: usize = 32;

/// BootAgent's parent cgroup in v2 (a sibling of its own cgroup) and in v1.
const V2_PARENT_NAME: &str = "bootagent-children";
const V1_PARENT_NAME: &str = "bootagent";
/// The v2 controllers BootAgent needs, as written to `cgroup.subtree_control`.
const V2_CONTROLLERS: [&str; 2] = ["memory", "cpu"];
const PROCS_FILE: &str = "cgroup.procs";
/// What a process writes into `cgroup.procs` to move itself.
const JOIN_SELF: &[u8] = b"0";
/// CFS period of both versions: 100 ms, the kernel's default.
const CPU_PERIOD_US: u64 = 100_000;
/// How long `remove` (and `create`, for a leftover) waits for killed processes to leave.
const CGROUP_EMPTY_WAIT_MS: u64 = 1_000;
/// Pause between two looks at a cgroup that is being emptied.
const CGROUP_EMPTY_POLL_MS: u64 = 10;
/// Deepest nesting of sub-cgroups (a child may make its own) that removal walks.
const CGROUP_DEPTH_MAX: usize = 16;
/// Longest child cgroup name: a file name.
const NAME_BYTES_MAX: usize = 255;
/// Largest cgroupfs or procfs text file read (`mountinfo` of a busy host, `cgroup.procs`).
const TEXT_BYTES_MAX: u64 = 1024 * 1024;

/// Sampling interval of the `/proc` fallback while it enforces a CPU limit.
const CPU_SAMPLE_INTERVAL_MS: u64 = 100;
/// Sampling interval when it enforces a memory limit only (PROTOCOL.md: at least 1/s).
const MEMORY_SAMPLE_INTERVAL_MS: u64 = 1_000;
/// Unused CPU is saved for at most this long a stretch of time.
const CPU_SAVINGS_MAX_MS: u64 = 1_000;
/// Longest single stop of a group; a bigger debt is forgiven.
const CPU_STOP_MAX_MS: u64 = 30_000;
/// Largest `/proc/PID/stat` read (the kernel's is a few hundred bytes).
const STAT_BYTES_MAX: u64 = 4096;
/// Used only if `sysconf` cannot tell.
const PAGE_BYTES_DEFAULT: u64 = 4096;
const CLOCK_TICKS_PER_S_DEFAULT: u64 = 100;
const MS_PER_S: u64 = 1_000;

// ---------------------------------------------------------------------------------
// The `limits` object
// ---------------------------------------------------------------------------------

/// Parsed limits of one child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Percent of one CPU; up to 100 × the number of CPUs.
    pub cpu_pct: Option<u32>,
    pub memory_bytes: Option<u64>,
}

impl ResourceLimits {
    pub fn is_empty(&self) -> bool {
        self.cpu_pct.is_none() && self.memory_bytes.is_none()
    }
}

/// In the syntax of the `limits` object: `CPU 10%, memory 20M`, or `none`.
impl fmt::Display for ResourceLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.cpu_pct, self.memory_bytes) {
            (None, None) => f.write_str("none"),
            (Some(pct), None) => write!(f, "{CPU_KEY} {pct}%"),
            (None, Some(bytes)) => write!(f, "{MEMORY_KEY} {}", Bytes(bytes)),
            (Some(pct), Some(bytes)) => {
                write!(f, "{CPU_KEY} {pct}%, {MEMORY_KEY} {}", Bytes(bytes))
            }
        }
    }
}

/// Parses a `limits` object; `cpus` is the number of CPUs (for the upper bound of the
/// CPU limit). The CPU limit is a string `"N%"`, N whole. The memory limit is a string
/// of digits with an optional `K`, `M` or `G` suffix (either case; powers of 1024), or a
/// JSON number of bytes (unambiguous, so accepted). Keys are case-insensitive; an
/// unknown key, a key given twice and a malformed or out-of-range value are errors,
/// each a one-line message. `{}` means no limits.
pub fn parse_limits(value: &Value, cpus: u32) -> Result<ResourceLimits, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "limits must be an object, not {}",
            json_kind(value)
        ));
    };
    let mut limits = ResourceLimits::default();
    for (key, value) in map {
        if key.eq_ignore_ascii_case(CPU_KEY) {
            if limits.cpu_pct.is_some() {
                return Err(format!("limit {CPU_KEY} is given twice"));
            }
            limits.cpu_pct = Some(parse_cpu(value, cpus)?);
        } else if key.eq_ignore_ascii_case(MEMORY_KEY) {
            if limits.memory_bytes.is_some() {
                return Err(format!("limit {MEMORY_KEY} is given twice"));
            }
            limits.memory_bytes = Some(parse_memory(value)?);
        } else {
            return Err(format!(
                "unknown limit {} (known: {CPU_KEY}, {MEMORY_KEY})",
                quoted(key)
            ));
        }
    }
    Ok(limits)
}

fn parse_cpu(value: &Value, cpus: u32) -> Result<u32, String> {
    let Value::String(text) = value else {
        return Err(format!(
            "{CPU_KEY} limit must be a string like \"10%\", not {}",
            json_kind(value)
        ));
    };
    let Some(pct) = text.strip_suffix('%').and_then(decimal) else {
        return Err(format!(
            "{CPU_KEY} limit {} must be a whole percentage like \"10%\"",
            quoted(text)
        ));
    };
    let cpus = cpus.max(1);
    let max = CPU_PCT_PER_CPU.saturating_mul(cpus);
    match u32::try_from(pct) {
        Ok(pct) if (CPU_PCT_MIN..=max).contains(&pct) => Ok(pct),
        _ => Err(format!(
            "{CPU_KEY} limit {} is out of range {CPU_PCT_MIN}%..{max}% ({cpus} CPUs)",
            quoted(text)
        )),
    }
}

fn parse_memory(value: &Value) -> Result<u64, String> {
    let (bytes, shown) = match value {
        Value::Number(number) => match number.as_u64() {
            Some(bytes) => (bytes, number.to_string()),
            None => {
                return Err(format!(
                    "{MEMORY_KEY} limit {number} must be a whole number of bytes"
                ))
            }
        },
        Value::String(text) => match parse_size(text) {
            Some(bytes) => (bytes, quoted(text)),
            None => {
                return Err(format!(
                    "{MEMORY_KEY} limit {} must be digits with an optional K, M or G suffix, like \"20M\"",
                    quoted(text)
                ))
            }
        },
        other => {
            return Err(format!(
                "{MEMORY_KEY} limit must be a string like \"20M\" or a number of bytes, not {}",
                json_kind(other)
            ))
        }
    };
    if (MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX).contains(&bytes) {
        Ok(bytes)
    } else {
        Err(format!(
            "{MEMORY_KEY} limit {shown} is out of range {}..{}",
            Bytes(MEMORY_BYTES_MIN),
            Bytes(MEMORY_BYTES_MAX)
        ))
    }
}

/// `"20M"` → 20 MiB; saturates, so that a huge value is out of range, not malformed.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = if let Some(digits) = text.strip_suffix(['K', 'k']) {
        (digits, KIB)
    } else if let Some(digits) = text.strip_suffix(['M', 'm']) {
        (digits, MIB)
    } else if let Some(digits) = text.strip_suffix(['G', 'g']) {
        (digits, GIB)
    } else {
        (text, 1)
    };
    decimal(digits).map(|n| n.saturating_mul(unit))
}

/// ASCII digits only (no sign, no space); saturates at `u64::MAX`.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX)) // only overflow can fail here
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A value from the wire, quoted and escaped onto one line, and cut short.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// A byte count in the syntax of the memory limit: the largest suffix that divides it.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, suffix) in [(GIB, 'G'), (MIB, 'M'), (KIB, 'K')] {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

// ---------------------------------------------------------------------------------
// Which mechanism
// ---------------------------------------------------------------------------------

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

/// What the operator asked for (`-o limit_mechanism=auto|cgroup2|cgroup1|proc`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    Auto,
    CgroupV2,
    CgroupV1,
    Proc,
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Choice::Auto),
            "cgroup2" => Ok(Choice::CgroupV2),
            "cgroup1" => Ok(Choice::CgroupV1),
            "proc" => Ok(Choice::Proc),
            _ => Err(format!(
                "limit_mechanism must be auto, cgroup2, cgroup1 or proc, not {}",
                quoted(text)
            )),
        }
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Choice::Auto => "auto",
            Choice::CgroupV2 => "cgroup2",
            Choice::CgroupV1 => "cgroup1",
            Choice::Proc => "proc",
        })
    }
}

/// Detects the mechanism, creating BootAgent's parent cgroup directories where it can
/// (see the module doc for where). Never fails: without a usable cgroup it is `Proc`,
/// with the reasons logged.
pub fn detect(choice: Choice) -> Mechanism {
    let (mechanism, notes) = choose(choice, Mode::Create);
    let forced_cgroup = matches!(choice, Choice::CgroupV2 | Choice::CgroupV1);
    if notes.is_empty() {
        log::info!("resource limits: {mechanism}");
    } else if mechanism == Mechanism::Proc && forced_cgroup {
        log::warn!(
            "resource limits: {choice} is not usable, falling back to {mechanism}: {}",
            notes.join("; ")
        );
    } else {
        log::info!("resource limits: {mechanism}; {}", notes.join("; "));
    }
    mechanism
}

/// Only for `-T`: what [`detect`] would pick and why, without creating anything. It
/// cannot foresee every refusal of the kernel (a busy cgroup, a rejected write).
pub fn describe(choice: Choice) -> String {
    match choose(choice, Mode::Check) {
        (mechanism, notes) if notes.is_empty() => mechanism.to_string(),
        (mechanism, notes) => format!("{mechanism}; {}", notes.join("; ")),
    }
}

/// Removes BootAgent's parent cgroup directories if they are empty (at shutdown, and
/// in tests). Best effort: a parent that still has children stays.
pub fn release(mechanism: &Mechanism) {
    let dirs = match mechanism {
        Mechanism::CgroupV2 { dir } => vec![dir],
        Mechanism::CgroupV1 { memory, cpu } => memory.iter().chain(cpu.iter()).collect(),
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
        let memory = setup_v1(mode, &facts, "memory", "memory.limit_in_bytes");
        let cpu = setup_v1(mode, &facts, "cpu", "cpu.cfs_quota_us");
        if let Err(reason) = &memory {
            notes.push(format!("cgroup v1 memory: {reason}"));
        }
        if let Err(reason) = &cpu {
            notes.push(format!("cgroup v1 cpu: {reason}"));
        }
        if memory.is_ok() || cpu.is_ok() {
            let (memory, cpu) = (memory.ok(), cpu.ok());
            return (Mechanism::CgroupV1 { memory, cpu }, notes);
        }
    }
    (Mechanism::Proc, notes)
}

/// What `/proc/self` says about mounts and BootAgent's own cgroups.
struct Facts {
    mounts: Vec<Mount>,
    memberships: Vec<Membership>,
}

impl Facts {
    fn read() -> Result<Facts, String> {
        let mountinfo = read_text(Path::new("/proc/self/mountinfo")).map_err(|e| e.to_string())?;
        let cgroups = read_text(Path::new("/proc/self/cgroup")).map_err(|e| e.to_string())?;
        Ok(Facts {
            mounts: parse_mountinfo(&mountinfo),
            memberships: parse_proc_cgroup(&cgroups),
        })
    }
}

/// One line of `/proc/self/mountinfo`, the fields that matter here.
#[derive(Debug, PartialEq, Eq)]
struct Mount {
    /// The directory of the file system that is mounted (a cgroup path for cgroupfs).
    root: String,
    point: PathBuf,
    fstype: String,
    /// For cgroup v1, the controllers (`rw,cpu,cpuacct`).
    super_options: String,
}

/// `36 35 98:0 /root /point rw,noatime [optional fields] - fstype source super,options`.
fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Mount {
                root: String::from_utf8_lossy(&unescape_octal(fields.get(3)?)).into_owned(),
                point: PathBuf::from(std::ffi::OsString::from_vec(unescape_octal(fields.get(4)?))),
                fstype: (*fields.get(dash + 1)?).to_owned(),
                super_options: (*fields.get(dash + 3)?).to_owned(),
            })
        })
        .collect()
}

/// The kernel writes a space in a path as `\040`, and so on.
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = bytes
            .get(i + 1..i + 4)
            .filter(|digits| bytes[i] == b'\\' && digits.iter().all(|d| (b'0'..=b'7').contains(d)));
        match code.and_then(|d| {
            u8::try_from(d.iter().fold(0u32, |n, d| n * 8 + u32::from(d - b'0'))).ok()
        }) {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

/// One line of `/proc/self/cgroup`: `4:memory:/path`, `2:cpu,cpuacct:/`, `0::/path` (v2).
#[derive(Debug, PartialEq, Eq)]
struct Membership {
    hierarchy: String,
    controllers: String,
    path: String,
}

fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some(Membership {
                hierarchy: parts.next()?.to_owned(),
                controllers: parts.next()?.to_owned(),
                path: parts.next()?.to_owned(),
            })
        })
        .collect()
}

/// Where the cgroup `path` of a hierarchy is under `mount`; `None` when the mount does
/// not show it (it mounts a subtree that does not contain it).
fn cgroup_dir(mount: &Mount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None; // "/ab" is not under "/a"
        }
        rest
    };
    let relative = relative.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return None;
    }
    Some(if relative.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(relative)
    })
}

/// The v2 parent: `bootagent-children` beside BootAgent's own cgroup.
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
    // The root cgroup may have processes and delegate; any other may not, so the
    // children go beside BootAgent's cgroup, not below it.
    let base = if own == mount.point {
        own
    } else {
        own.parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("own cgroup {} has no parent", own.display()))?
    };
    let available = read_text(&base.join("cgroup.controllers")).map_err(|e| e.to_string())?;
    let missing = missing_words(&available, &V2_CONTROLLERS);
    if !missing.is_empty() {
        return Err(format!(
            "controllers {} not available in {}",
            missing.join(", "),
            base.display()
        ));
    }
    enable_v2_controllers(mode, &base, base == mount.point)?;
    // Moving a child out of BootAgent's cgroup needs write access to the common ancestor.
    let procs = base.join(PROCS_FILE);
    if !writable(&procs) {
        return Err(format!("{} is not writable", procs.display()));
    }
    let dir = base.join(V2_PARENT_NAME);
    match mode {
        Mode::Create => make_v2_parent(&dir).map_err(|e| e.to_string())?,
        Mode::Check if dir.is_dir() => enable_v2_controllers(mode, &dir, false)?,
        Mode::Check if !writable(&base) => {
            return Err(format!("{} is not writable", base.display()))
        }
        Mode::Check => {}
    }
    Ok(dir)
}

/// Makes the v2 parent, or finds it, with the controllers enabled for its children.
fn make_v2_parent(dir: &Path) -> io::Result<()> {
    let created = ensure_dir(dir)?;
    let enabled = enable_v2_controllers(Mode::Create, dir, false);
    if enabled.is_err() && created {
        let _ = fs::remove_dir(dir); // leave nothing half made
    }
    enabled.map_err(io::Error::other)
}

/// Enables `memory` and `cpu` for the children of `dir` where they are not yet.
/// `may_have_processes`: `dir` is a root, exempt from the "no internal processes" rule.
fn enable_v2_controllers(mode: Mode, dir: &Path, may_have_processes: bool) -> Result<(), String> {
    let control = dir.join("cgroup.subtree_control");
    let enabled = read_text(&control).map_err(|e| e.to_string())?;
    let missing = missing_words(&enabled, &V2_CONTROLLERS);
    if missing.is_empty() {
        return Ok(());
    }
    let request: Vec<String> = missing.iter().map(|c| format!("+{c}")).collect();
    match mode {
        Mode::Create => write_file(&control, &request.join(" ")).map_err(|e| {
            format!(
                "cannot enable {} for children of {}: {e}",
                missing.join(", "),
                dir.display()
            )
        }),
        Mode::Check if !writable(&control) => Err(format!("{} is not writable", control.display())),
        Mode::Check if !may_have_processes && has_processes(dir) => Err(format!(
            "{} has processes, so it cannot enable {} for children",
            dir.display(),
            missing.join(", ")
        )),
        Mode::Check => Ok(()),
    }
}

fn has_processes(dir: &Path) -> bool {
    read_text(&dir.join(PROCS_FILE)).is_ok_and(|procs| !procs.trim().is_empty())
}

/// The words of `wanted` that are not among the space-separated words of `list`.
fn missing_words<'a>(list: &str, wanted: &[&'a str]) -> Vec<&'a str> {
    let present: Vec<&str> = list.split_whitespace().collect();
    (wanted.iter().copied())
        .filter(|w| !present.contains(w))
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
    let own = (facts.memberships.iter())
        .find(|m| m.hierarchy != "0" && is_controller(&m.controllers))
        .and_then(|m| cgroup_dir(mount, &m.path));
    let at_root = mount.point.join(V1_PARENT_NAME);
    let mut candidates: Vec<PathBuf> = own
        .map(|dir| dir.join(V1_PARENT_NAME))
        .into_iter()
        .collect();
    if !candidates.contains(&at_root) {
        candidates.push(at_root);
    }
    let mut reasons = Vec::new();
    for dir in candidates {
        match prepare_v1_parent(mode, &dir, probe) {
            Ok(()) => return Ok(dir),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons.join("; "))
}

fn prepare_v1_parent(mode: Mode, dir: &Path, probe: &str) -> Result<(), String> {
    let parent = dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", dir.display()))?;
    if !parent.join(probe).is_file() {
        // For example a kernel without CFS bandwidth control has no cpu.cfs_quota_us.
        return Err(format!("{} has no {probe}", parent.display()));
    }
    match mode {
        Mode::Create => {
            let created = ensure_dir(dir).map_err(|e| e.to_string())?;
            let procs = dir.join(PROCS_FILE);
            let opened = OpenOptions::new().write(true).open(&procs);
            if opened.is_err() && created {
                let _ = fs::remove_dir(dir); // leave nothing half made
            }
            opened
                .map(drop)
                .map_err(|e| with_path(e, &procs).to_string())
        }
        Mode::Check if dir.is_dir() && writable(&dir.join(PROCS_FILE)) => Ok(()),
        Mode::Check if !dir.exists() && writable(parent) => Ok(()),
        Mode::Check => Err(format!("{} is not writable", dir.display())),
    }
}

// ---------------------------------------------------------------------------------
// The cgroup of one child
// ---------------------------------------------------------------------------------

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

impl Cgroup {
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
        match mechanism {
            Mechanism::Proc => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no cgroup hierarchy is in use (limits are enforced by /proc sampling)",
            )),
            Mechanism::CgroupV2 { dir } => {
                let mut cgroup = Cgroup::new(Version::V2);
                let leaf = cgroup.make_leaf(dir, name)?;
                if let Some(bytes) = limits.memory_bytes {
                    write_file(&leaf.join("memory.max"), &bytes.to_string())?;
                    write_if_present(&leaf.join("memory.swap.max"), "0")?;
                }
                write_if_present(&leaf.join("memory.oom.group"), "1")?;
                if let Some(pct) = limits.cpu_pct {
                    let max = format!("{} {CPU_PERIOD_US}", cpu_quota_us(pct));
                    write_file(&leaf.join("cpu.max"), &max)?;
                }
                cgroup.memory_dir = Some(leaf);
                Ok(cgroup)
            }
            Mechanism::CgroupV1 { memory, cpu } => {
                let mut cgroup = Cgroup::new(Version::V1);
                if let Some(parent) = memory {
                    let leaf = cgroup.make_leaf(parent, name)?;
                    if let Some(bytes) = limits.memory_bytes {
                        // memsw (memory + swap) may never be below the memory limit:
                        // set the memory limit first.
                        write_file(&leaf.join("memory.limit_in_bytes"), &bytes.to_string())?;
                        write_if_present(
                            &leaf.join("memory.memsw.limit_in_bytes"),
                            &bytes.to_string(),
                        )?;
                    }
                    cgroup.memory_dir = Some(leaf);
                }
                if let Some(parent) = cpu {
                    let leaf = cgroup.make_leaf(parent, name)?;
                    if let Some(pct) = limits.cpu_pct {
                        write_file(&leaf.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                        write_file(
                            &leaf.join("cpu.cfs_quota_us"),
                            &cpu_quota_us(pct).to_string(),
                        )?;
                    }
                }
                Ok(cgroup)
            }
        }
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
            match self.version {
                Version::V2 => make_v2_parent(parent)?,
                Version::V1 => drop(ensure_dir(parent)?),
            }
        }
        if dir.exists() {
            let deadline = Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
            clear(&dir, self.version, deadline).map_err(|e| {
                io::Error::new(e.kind(), format!("leftover cgroup {}: {e}", dir.display()))
            })?;
            log::info!(
                "cgroup {}: cleared a leftover of a previous run",
                dir.display()
            );
        }
        fs::create_dir(&dir).map_err(|e| with_path(e, &dir))?;
        self.dirs.push(dir.clone());
        let procs = dir.join(PROCS_FILE);
        let file = OpenOptions::new().write(true).open(&procs); // std opens with O_CLOEXEC
        self.procs.push(file.map_err(|e| with_path(e, &procs))?);
        Ok(dir)
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
            // SAFETY: `JOIN_SELF` is a valid buffer of `len()` bytes for the call;
            // write(2) touches no memory of ours besides reading it. A bad fd only
            // makes it fail with EBADF.
            let written = unsafe { libc::write(fd, JOIN_SELF.as_ptr().cast(), JOIN_SELF.len()) };
            if written >= 0 && written.unsigned_abs() == JOIN_SELF.len() {
                break;
            }
            if written >= 0 {
                return Err(io::Error::from_raw_os_error(libc::EIO));
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
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
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cgroup name {} is not a plain file name", quoted(name)),
        ))
    }
}

fn cpu_quota_us(pct: u32) -> u64 {
    CPU_PERIOD_US * u64::from(pct) / u64::from(CPU_PCT_PER_CPU)
}

/// Kills everything in `dir` and below, then removes the directories, until done or
/// `deadline`. A directory that is already gone is done.
fn clear(dir: &Path, version: Version, deadline: Instant) -> io::Result<()> {
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
        std::thread::sleep(Duration::from_millis(CGROUP_EMPTY_POLL_MS));
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
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, dir))?.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            match collect_pids(&entry.path(), depth + 1, pids) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // removed meanwhile
                other => other?,
            }
        }
    }
    Ok(())
}

fn kill_all(dir: &Path, version: Version, pids: &[i32]) {
    // v2 (Linux 5.14+) kills the whole subtree at once, forks in flight included.
    let kill_file = dir.join("cgroup.kill");
    if version == Version::V2 && kill_file.is_file() && write_file(&kill_file, "1").is_ok() {
        return;
    }
    let me = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    for &pid in pids.iter().filter(|&&pid| pid != me) {
        // A pid that exited meanwhile is no error; one reused since the read could be
        // hit, a window of microseconds that only a freezer would close.
        let _ = kill_process(pid, libc::SIGKILL);
    }
}

/// Removes `dir` and its sub-cgroups, deepest first (cgroupfs removes the interface
/// files with the directory).
fn remove_tree(dir: &Path, depth: usize) -> io::Result<()> {
    if depth < CGROUP_DEPTH_MAX {
        let entries = match fs::read_dir(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            entries => entries.map_err(|e| with_path(e, dir))?,
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&entry.path(), depth + 1)?;
            }
        }
    }
    match fs::remove_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other.map_err(|e| with_path(e, dir)),
    }
}

/// `key value` lines, as in `memory.events`: the value of `key`.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

/// Creates `dir`; true if it did, false if it was there already.
fn ensure_dir(dir: &Path) -> io::Result<bool> {
    match fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(false),
        Err(e) => Err(with_path(e, dir)),
    }
}

fn read_text(path: &Path) -> io::Result<String> {
    let file = File::open(path).map_err(|e| with_path(e, path))?;
    let mut text = String::new();
    (file.take(TEXT_BYTES_MAX).read_to_string(&mut text)).map_err(|e| with_path(e, path))?;
    Ok(text)
}

/// One `write(2)` of `value`, as cgroupfs wants it.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    (OpenOptions::new().write(true).open(path))
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("writing {value:?} to {}: {e}", path.display()),
            )
        })
}

/// For interface files that depend on the kernel (`memory.swap.max` needs swap
/// accounting, `memory.memsw.*` too, `memory.oom.group` Linux 4.19).
fn write_if_present(path: &Path, value: &str) -> io::Result<()> {
    if path.exists() {
        write_file(path, value)
    } else {
        Ok(())
    }
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// The /proc fallback
// ---------------------------------------------------------------------------------

/// Usage of a whole process group.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GroupUsage {
    /// Resident memory, summed over the processes (a shared page once per process).
    pub rss_bytes: u64,
    /// CPU time since the processes started: their own (`utime + stime`) and that of
    /// their children they have reaped (`cutime + cstime`), so that short-lived workers
    /// of a shell loop are counted too. It can fall when a member exits and is reaped
    /// outside the group; [`Throttle`] allows for that.
    pub cpu_ms: u64,
    pub processes: u32,
}

/// Scans `/proc/PID/stat` of every process for those whose process group is `pgid`.
/// Costs one small read per process on the host.
pub fn group_usage(pgid: i32) -> io::Result<GroupUsage> {
    if pgid <= 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("process group {pgid} is not a group"),
        ));
    }
    let page_bytes = sysconf(libc::_SC_PAGESIZE).unwrap_or(PAGE_BYTES_DEFAULT);
    let ticks_per_s = sysconf(libc::_SC_CLK_TCK).unwrap_or(CLOCK_TICKS_PER_S_DEFAULT);
    let mut usage = GroupUsage::default();
    let mut ticks: u64 = 0;
    let mut text = String::new();
    for entry in fs::read_dir("/proc")
        .map_err(|e| with_path(e, Path::new("/proc")))?
        .flatten()
    {
        let name = entry.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        text.clear();
        let read = (File::open(entry.path().join("stat")))
            .and_then(|file| file.take(STAT_BYTES_MAX).read_to_string(&mut text));
        // A process that exited between the listing and the read is simply not counted.
        let Some(stat) = read.ok().and_then(|_| parse_stat(&text)) else {
            continue;
        };
        if stat.pgrp != pgid {
            continue;
        }
        usage.processes = usage.processes.saturating_add(1);
        usage.rss_bytes =
            (usage.rss_bytes).saturating_add(stat.rss_pages.saturating_mul(page_bytes));
        ticks = ticks.saturating_add(stat.cpu_ticks);
    }
    usage.cpu_ms = ticks.saturating_mul(MS_PER_S) / ticks_per_s.max(1);
    Ok(usage)
}

/// The fields of `/proc/PID/stat` the fallback needs.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    pgrp: i32,
    /// utime + stime + cutime + cstime.
    cpu_ticks: u64,
    rss_pages: u64,
}

/// `pid (comm) state ppid pgrp …`: `comm` may hold spaces and `)`, so the fields are
/// counted from the last `)`. Fields 3 on (state = 3, pgrp = 5, utime = 14, stime = 15,
/// cutime = 16, cstime = 17, rss = 24; proc(5)) are at index field − 3 after it.
fn parse_stat(text: &str) -> Option<Stat> {
    const PGRP: usize = 5 - 3;
    const UTIME: usize = 14 - 3;
    const CSTIME: usize = 17 - 3;
    const RSS: usize = 24 - 3;
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Signed in the kernel; a negative value counts as nothing.
    let count = |i: usize| -> Option<u64> {
        let value: i64 = fields.get(i)?.parse().ok()?;
        Some(value.max(0).unsigned_abs())
    };
    let mut cpu_ticks: u64 = 0;
    for i in UTIME..=CSTIME {
        cpu_ticks = cpu_ticks.saturating_add(count(i)?);
    }
    Some(Stat {
        pgrp: fields.get(PGRP)?.parse().ok()?,
        cpu_ticks,
        rss_pages: count(RSS)?,
    })
}

/// What to do after a sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to change.
    Ok,
    /// Over the memory limit: kill the group and report it `killed`, naming the limit.
    KillMemory { rss_bytes: u64, limit_bytes: u64 },
    /// Over the CPU limit: `SIGSTOP` the group now (unless it is stopped already),
    /// `SIGCONT` it at `resume_at`, and take the next sample `interval_ms` after that.
    Stop { resume_at: Millis },
}

/// Pure decision logic of the `/proc` fallback, with `now` passed in: the caller feeds
/// it samples, it says what to do (see the module doc for the duty cycle).
#[derive(Clone, Debug)]
pub struct Throttle {
    limits: ResourceLimits,
    last_at: Millis,
    last_cpu_ms: u64,
    /// CPU the group may still use (positive) or owes (negative), in CPU-milliseconds
    /// times 100, so that `limit` % of a millisecond is a whole number.
    balance: i128,
    stopped_until: Option<Millis>,
    killed: bool,
}

impl Throttle {
    /// Create it when the child is spawned: its group has used no CPU yet.
    pub fn new(limits: ResourceLimits, now: Millis) -> Self {
        Throttle {
            limits,
            last_at: now,
            last_cpu_ms: 0,
            balance: 0,
            stopped_until: None,
            killed: false,
        }
    }

    /// One sample of the group's usage at `now`. Over the memory limit it says
    /// `KillMemory` once, and `Ok` after that (the caller is killing the group). Over
    /// the CPU budget it says `Stop`; a sample while stopped repeats the same
    /// `resume_at`.
    pub fn sample(&mut self, now: Millis, usage: GroupUsage) -> Verdict {
        if self.killed {
            return Verdict::Ok;
        }
        if let Some(limit_bytes) = self.limits.memory_bytes {
            if usage.rss_bytes > limit_bytes {
                self.killed = true;
                return Verdict::KillMemory {
                    rss_bytes: usage.rss_bytes,
                    limit_bytes,
                };
            }
        }
        let Some(pct) = self.limits.cpu_pct.filter(|&pct| pct > 0) else {
            return Verdict::Ok;
        };
        let pct = i128::from(pct);
        let elapsed_ms = now.saturating_sub(self.last_at);
        // A fall (a member reaped outside the group) counts as no use; the new sum is
        // the baseline from here on.
        let used_ms = usage.cpu_ms.saturating_sub(self.last_cpu_ms);
        self.last_at = now;
        self.last_cpu_ms = usage.cpu_ms;
        // i128 holds any product of a u64 and a u32, so nothing here can overflow.
        let earned = i128::from(elapsed_ms) * pct;
        let spent = i128::from(used_ms) * i128::from(CPU_PCT_PER_CPU);
        let savings_max = i128::from(CPU_SAVINGS_MAX_MS) * pct;
        let debt_max = i128::from(CPU_STOP_MAX_MS) * pct;
        self.balance = (self.balance + earned - spent).clamp(-debt_max, savings_max);
        if let Some(until) = self.stopped_until {
            if now < until {
                return Verdict::Stop { resume_at: until };
            }
            self.stopped_until = None;
        }
        if self.balance >= 0 {
            return Verdict::Ok;
        }
        // Stopped, the group earns `pct` per ms and spends nothing: the debt is paid
        // after debt / pct ms, rounded up (at most CPU_STOP_MAX_MS, by the clamp).
        let stop_ms = (-self.balance + pct - 1) / pct;
        let resume_at = now.saturating_add(u64::try_from(stop_ms).unwrap_or(CPU_STOP_MAX_MS));
        self.stopped_until = Some(resume_at);
        Verdict::Stop { resume_at }
    }

    /// How long until the next sample: 100 ms while a CPU limit is enforced (a burst
    /// is caught within one interval), 1000 ms for memory only.
    pub fn interval_ms(&self) -> u64 {
        if self.limits.cpu_pct.is_some() {
            CPU_SAMPLE_INTERVAL_MS
        } else {
            MEMORY_SAMPLE_INTERVAL_MS
        }
    }
}

// ---------------------------------------------------------------------------------
// ffi: the raw system calls of this module (to join `sys.rs`)
// ---------------------------------------------------------------------------------

/// `kill(2)` on one process; a process that is gone is not an error.
fn kill_process(pid: i32, signal: libc::c_int) -> io::Result<()> {
    if pid <= 1 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL)); // never a group, never init
    }
    // SAFETY: kill(2) on one positive pid; no memory effects.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ESRCH) => Ok(()),
        _ => Err(err),
    }
}

/// `access(2)` with `W_OK` (the same as `sys::writable`).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c_path` is a valid NUL-terminated string for the call's duration.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

/// `sysconf(3)`; `None` when the value is unknown.
fn sysconf(name: libc::c_int) -> Option<u64> {
    // SAFETY: sysconf reads a system value; no memory effects.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).ok().filter(|&v| v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command, Stdio};
    use std::sync::Mutex;

    const CPUS: u32 = 4;

    /// `input` is the JSON of a `limits` object, parsed for a host of `CPUS` CPUs.
    fn check(input: &str, expected: Result<(Option<u32>, Option<u64>), &str>) {
        let value: Value = serde_json::from_str(input).expect("test input is JSON");
        let expected = expected
            .map(|(cpu_pct, memory_bytes)| ResourceLimits {
                cpu_pct,
                memory_bytes,
            })
            .map_err(str::to_owned);
        assert_eq!(parse_limits(&value, CPUS), expected, "input {input}");
    }

    #[test]
    fn parse_limits_cpu() {
        check(r#"{"CPU": "10%"}"#, Ok((Some(10), None)));
        check(r#"{"CPU": "1%"}"#, Ok((Some(1), None)));
        check(r#"{"CPU": "100%"}"#, Ok((Some(100), None)));
        check(r#"{"CPU": "250%"}"#, Ok((Some(250), None)));
        check(r#"{"CPU": "400%"}"#, Ok((Some(400), None)));
        check(
            r#"{"CPU": "401%"}"#,
            Err(r#"CPU limit "401%" is out of range 1%..400% (4 CPUs)"#),
        );
        check(
            r#"{"CPU": "0%"}"#,
            Err(r#"CPU limit "0%" is out of range 1%..400% (4 CPUs)"#),
        );
        check(
            r#"{"CPU": "99999999999999999999999%"}"#,
            Err(r#"CPU limit "99999999999999999999999%" is out of range 1%..400% (4 CPUs)"#),
        );
        check(
            r#"{"CPU": "abc"}"#,
            Err(r#"CPU limit "abc" must be a whole percentage like "10%""#),
        );
        check(
            r#"{"CPU": "10"}"#,
            Err(r#"CPU limit "10" must be a whole percentage like "10%""#),
        );
        check(
            r#"{"CPU": "12.5%"}"#,
            Err(r#"CPU limit "12.5%" must be a whole percentage like "10%""#),
        );
        check(
            r#"{"CPU": "+10%"}"#,
            Err(r#"CPU limit "+10%" must be a whole percentage like "10%""#),
        );
        check(
            r#"{"CPU": " 10%"}"#,
            Err(r#"CPU limit " 10%" must be a whole percentage like "10%""#),
        );
        check(
            r#"{"CPU": "%"}"#,
            Err(r#"CPU limit "%" must be a whole percentage like "10%""#),
        );
        check(
            r#"{"CPU": 10}"#,
            Err(r#"CPU limit must be a string like "10%", not a number"#),
        );
        check(
            r#"{"CPU": null}"#,
            Err(r#"CPU limit must be a string like "10%", not null"#),
        );
    }

    #[test]
    fn parse_limits_memory() {
        check(r#"{"memory": "20M"}"#, Ok((None, Some(20 * MIB))));
        check(r#"{"memory": "20m"}"#, Ok((None, Some(20 * MIB))));
        check(r#"{"memory": "1G"}"#, Ok((None, Some(GIB))));
        check(r#"{"memory": "1024K"}"#, Ok((None, Some(MIB))));
        check(r#"{"memory": "1048576"}"#, Ok((None, Some(MIB))));
        check(r#"{"memory": "1024G"}"#, Ok((None, Some(1024 * GIB))));
        check(r#"{"memory": 20971520}"#, Ok((None, Some(20 * MIB))));
        check(
            r#"{"memory": "512K"}"#,
            Err(r#"memory limit "512K" is out of range 1M..1024G"#),
        );
        check(
            r#"{"memory": "20"}"#,
            Err(r#"memory limit "20" is out of range 1M..1024G"#),
        );
        check(
            r#"{"memory": 20}"#,
            Err("memory limit 20 is out of range 1M..1024G"),
        );
        check(
            r#"{"memory": "1025G"}"#,
            Err(r#"memory limit "1025G" is out of range 1M..1024G"#),
        );
        check(
            r#"{"memory": "99999999999999999999G"}"#,
            Err(r#"memory limit "99999999999999999999G" is out of range 1M..1024G"#),
        );
        check(
            r#"{"memory": "20MB"}"#,
            Err(
                r#"memory limit "20MB" must be digits with an optional K, M or G suffix, like "20M""#,
            ),
        );
        check(
            r#"{"memory": "-1M"}"#,
            Err(
                r#"memory limit "-1M" must be digits with an optional K, M or G suffix, like "20M""#,
            ),
        );
        check(
            r#"{"memory": "1T"}"#,
            Err(
                r#"memory limit "1T" must be digits with an optional K, M or G suffix, like "20M""#,
            ),
        );
        check(
            r#"{"memory": ""}"#,
            Err(r#"memory limit "" must be digits with an optional K, M or G suffix, like "20M""#),
        );
        check(
            r#"{"memory": -1}"#,
            Err("memory limit -1 must be a whole number of bytes"),
        );
        check(
            r#"{"memory": 2.5e7}"#,
            Err("memory limit 25000000.0 must be a whole number of bytes"),
        );
        check(
            r#"{"memory": ["20M"]}"#,
            Err(r#"memory limit must be a string like "20M" or a number of bytes, not an array"#),
        );
    }

    #[test]
    fn parse_limits_keys_and_shape() {
        check("{}", Ok((None, None)));
        check(
            r#"{"cpu": "10%", "Memory": "20M"}"#,
            Ok((Some(10), Some(20 * MIB))),
        );
        check(
            r#"{"CPU": "10%", "MEMORY": "20M"}"#,
            Ok((Some(10), Some(20 * MIB))),
        );
        check(r#"{"cPu": "10%"}"#, Ok((Some(10), None)));
        check(
            r#"{"CPU": "10%", "cpu": "20%"}"#,
            Err("limit CPU is given twice"),
        );
        check(
            r#"{"memory": "20M", "MEMORY": "30M"}"#,
            Err("limit memory is given twice"),
        );
        check(
            r#"{"disk": "1G"}"#,
            Err(r#"unknown limit "disk" (known: CPU, memory)"#),
        );
        check(
            r#"{"a\nvery long key that goes on and on and on": 1}"#,
            Err(r#"unknown limit "a\nvery long key that goes on and"… (known: CPU, memory)"#),
        );
        check(r#""20M""#, Err("limits must be an object, not a string"));
        check("null", Err("limits must be an object, not null"));
        // Zero CPUs (unknown) still allows one whole CPU.
        let value = serde_json::json!({"CPU": "100%"});
        assert_eq!(parse_limits(&value, 0).map(|l| l.cpu_pct), Ok(Some(100)));
    }

    #[test]
    fn limits_display_in_their_own_syntax() {
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: Some(20 * MIB),
        };
        assert_eq!(limits.to_string(), "CPU 10%, memory 20M");
        assert_eq!(ResourceLimits::default().to_string(), "none");
        assert!(ResourceLimits::default().is_empty());
        assert!(!limits.is_empty());
        let odd = ResourceLimits {
            cpu_pct: None,
            memory_bytes: Some(MIB + 1),
        };
        assert_eq!(odd.to_string(), "memory 1048577");
    }

    #[test]
    fn choice_from_str_and_back() {
        for choice in [
            Choice::Auto,
            Choice::CgroupV2,
            Choice::CgroupV1,
            Choice::Proc,
        ] {
            assert_eq!(choice.to_string().parse::<Choice>(), Ok(choice));
        }
        assert_eq!(
            "cgroups".parse::<Choice>(),
            Err(
                r#"limit_mechanism must be auto, cgroup2, cgroup1 or proc, not "cgroups""#
                    .to_owned()
            )
        );
    }

    #[test]
    fn mechanism_display_and_fallback_limits() {
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: Some(20 * MIB),
        };
        let v1 = Mechanism::CgroupV1 {
            memory: Some(PathBuf::from("/sys/fs/cgroup/memory/bootagent")),
            cpu: None,
        };
        assert_eq!(
            v1.to_string(),
            "cgroup v1 (memory: /sys/fs/cgroup/memory/bootagent, cpu: none)"
        );
        assert_eq!(
            v1.fallback_limits(&limits),
            ResourceLimits {
                cpu_pct: Some(10),
                memory_bytes: None
            }
        );
        let v2 = Mechanism::CgroupV2 {
            dir: PathBuf::from("/sys/fs/cgroup/bootagent-children"),
        };
        assert_eq!(
            v2.to_string(),
            "cgroup v2 (/sys/fs/cgroup/bootagent-children)"
        );
        assert!(v2.fallback_limits(&limits).is_empty());
        assert_eq!(Mechanism::Proc.to_string(), "/proc sampling");
        assert_eq!(Mechanism::Proc.fallback_limits(&limits), limits);
    }

    #[test]
    fn detect_and_describe_proc() {
        assert_eq!(detect(Choice::Proc), Mechanism::Proc);
        assert_eq!(describe(Choice::Proc), "/proc sampling");
        let mechanism = Mechanism::Proc;
        let err = Cgroup::create(&mechanism, "x", &ResourceLimits::default()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::Unsupported);
    }

    #[test]
    fn describe_auto_names_a_mechanism_and_creates_nothing() {
        let before = Facts::read().map(|f| f.mounts.len());
        let text = describe(Choice::Auto);
        assert!(
            ["cgroup v2 (", "cgroup v1 (", "/proc sampling"]
                .iter()
                .any(|p| text.starts_with(p)),
            "{text}"
        );
        let forced = describe(Choice::CgroupV2);
        assert!(
            forced.starts_with("cgroup v2 (") || forced.starts_with("/proc sampling; cgroup v2: "),
            "{forced}"
        );
        assert_eq!(Facts::read().map(|f| f.mounts.len()), before);
        println!("describe(auto): {text}");
    }

    #[test]
    fn mountinfo_is_parsed_with_escapes_and_optional_fields() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/my\\040unified rw master:1 shared:2 - cgroup2 cgroup2 rw
bad line
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 4);
        assert_eq!(mounts[1].point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(mounts[1].super_options, "rw,cpu,cpuacct");
        assert_eq!(mounts[2].root, "/docker/abc");
        assert_eq!(mounts[3].point, PathBuf::from("/sys/fs/cgroup/my unified"));
        assert_eq!(mounts[3].fstype, "cgroup2");
        assert_eq!(unescape_octal(r"a\134b\0"), b"a\\b\\0".to_vec());
    }

    #[test]
    fn own_cgroup_is_found_under_its_mount() {
        let memberships =
            parse_proc_cgroup("4:memory:/docker/abc/app\n2:cpu,cpuacct:/\n0::/a/b:c\n");
        assert_eq!(memberships.len(), 3);
        assert_eq!(memberships[1].controllers, "cpu,cpuacct");
        assert_eq!(memberships[2].path, "/a/b:c");
        let mount = |root: &str| Mount {
            root: root.to_owned(),
            point: PathBuf::from("/sys/fs/cgroup/memory"),
            fstype: "cgroup".to_owned(),
            super_options: "rw,memory".to_owned(),
        };
        let cases = [
            ("/", "/", Some("/sys/fs/cgroup/memory")),
            ("/", "/x/y", Some("/sys/fs/cgroup/memory/x/y")),
            (
                "/docker/abc",
                "/docker/abc/app",
                Some("/sys/fs/cgroup/memory/app"),
            ),
            ("/docker/abc", "/docker/abc", Some("/sys/fs/cgroup/memory")),
            ("/docker/abc", "/docker/abcd", None),
            ("/docker/abc", "/other", None),
            ("/", "/x/../../etc", None),
        ];
        for (root, path, expected) in cases {
            assert_eq!(
                cgroup_dir(&mount(root), path),
                expected.map(PathBuf::from),
                "{root} {path}"
            );
        }
    }

    #[test]
    fn stat_is_split_at_the_last_parenthesis() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
        // vsize rss …
        let tail = "S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 20 -1 20 0 1 0 100 1000000 250 18446744073709551615";
        for comm in ["sh", "a b", "x) S 1 99 (", ")", "(("] {
            let text = format!("4243 ({comm}) {tail}\n");
            assert_eq!(
                parse_stat(&text),
                Some(Stat {
                    pgrp: 4242,
                    cpu_ticks: 7 + 3 + 20,
                    rss_pages: 250
                }),
                "comm {comm:?}"
            );
        }
        assert_eq!(parse_stat("4243 (sh) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn keyed_values_of_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 1\n";
        assert_eq!(keyed_value(events, "oom_kill"), Some(2));
        assert_eq!(
            keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
        assert_eq!(
            keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
            None
        );
    }

    /// Removes a scratch directory tree, even when the test fails.
    struct RemoveAll(PathBuf);

    impl Drop for RemoveAll {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// This host has no v2 controllers, so the v2 choice of a parent is checked on a
    /// fake hierarchy of plain files.
    #[test]
    fn v2_parent_is_a_sibling_of_own_cgroup() {
        let root = std::env::temp_dir().join(format!("reslimit-{}-v2", std::process::id()));
        let _cleanup = RemoveAll(root.clone());
        let base = root.join("system.slice");
        fs::create_dir_all(base.join("bootagent.service")).expect("scratch tree");
        let put = |dir: &Path, file: &str, text: &str| {
            fs::write(dir.join(file), text).expect("scratch file")
        };
        put(&base, "cgroup.controllers", "cpuset cpu io memory pids\n");
        put(&base, "cgroup.subtree_control", "cpu memory pids\n");
        put(&base, PROCS_FILE, "");
        let facts = |own: &str| Facts {
            mounts: parse_mountinfo(&format!(
                "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
                root.display()
            )),
            memberships: parse_proc_cgroup(&format!("0::{own}\n")),
        };
        let service = facts("/system.slice/bootagent.service");
        let sibling = base.join(V2_PARENT_NAME);
        assert_eq!(setup_v2(Mode::Check, &service), Ok(sibling.clone()));
        assert!(!sibling.exists(), "a check creates nothing");

        // Create, where the kernel would have made the interface files of the new directory.
        fs::create_dir(&sibling).expect("scratch dir");
        put(&sibling, "cgroup.subtree_control", "");
        assert_eq!(setup_v2(Mode::Create, &service), Ok(sibling.clone()));
        assert_eq!(
            read_trimmed(&sibling.join("cgroup.subtree_control")),
            "+memory +cpu"
        );

        put(&base, "cgroup.controllers", "cpu pids\n");
        let missing = format!("controllers memory not available in {}", base.display());
        assert_eq!(setup_v2(Mode::Check, &service), Err(missing));

        put(&base, "cgroup.controllers", "cpu memory\n");
        put(&base, "cgroup.subtree_control", "\n");
        put(&base, PROCS_FILE, "1234\n");
        let busy = format!(
            "{} has processes, so it cannot enable memory, cpu for children",
            base.display()
        );
        assert_eq!(setup_v2(Mode::Check, &service), Err(busy));

        // In the root cgroup, which may have processes, the parent is below it.
        put(&root, "cgroup.controllers", "cpu memory\n");
        put(&root, "cgroup.subtree_control", "\n");
        put(&root, PROCS_FILE, "1\n");
        assert_eq!(
            setup_v2(Mode::Check, &facts("/")),
            Ok(root.join(V2_PARENT_NAME))
        );
    }

    #[test]
    fn cgroup_names_must_be_plain() {
        for bad in ["", ".", "..", ".hidden", "a/b", "a\0b"] {
            assert_eq!(
                check_name(bad).map_err(|e| e.kind()),
                Err(io::ErrorKind::InvalidInput),
                "{bad:?}"
            );
        }
        assert!(check_name("agent-1.2_x").is_ok());
        assert!(check_name(&"n".repeat(NAME_BYTES_MAX + 1)).is_err());
        assert_eq!(cpu_quota_us(10), 10_000);
        assert_eq!(cpu_quota_us(250), 250_000);
    }

    // ----- Throttle, with a manual clock -----

    const TICK_MS: u64 = 10; // /proc counts CPU time in ticks of 10 ms (USER_HZ 100)

    /// A group of `spinning` busy CPUs under `throttle`, driven by a caller that obeys
    /// the verdicts (stopped from a `Stop` until `resume_at`, sampled an interval after
    /// that), for `duration_ms`. Returns the CPU time used and the count of stops.
    fn simulate(throttle: &mut Throttle, spinning: u64, duration_ms: u64) -> (u64, u32) {
        let (mut cpu_ms, mut stops) = (0, 0);
        let mut running_since = 0;
        let mut next_sample = throttle.interval_ms();
        while next_sample <= duration_ms {
            let now = next_sample;
            cpu_ms += (now - running_since) * spinning;
            let seen = GroupUsage {
                rss_bytes: MIB,
                cpu_ms: cpu_ms / TICK_MS * TICK_MS,
                processes: 1,
            };
            match throttle.sample(now, seen) {
                Verdict::Ok => {
                    running_since = now;
                    next_sample = now + throttle.interval_ms();
                }
                Verdict::Stop { resume_at } => {
                    assert!(resume_at > now);
                    stops += 1;
                    running_since = resume_at;
                    next_sample = resume_at + throttle.interval_ms();
                }
                Verdict::KillMemory { .. } => panic!("no memory limit here"),
            }
        }
        (cpu_ms, stops)
    }

    #[test]
    fn throttle_stops_a_group_that_used_a_whole_interval_for_900_ms() {
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: None,
        };
        let mut throttle = Throttle::new(limits, 1_000);
        assert_eq!(throttle.interval_ms(), CPU_SAMPLE_INTERVAL_MS);
        let spun = GroupUsage {
            rss_bytes: 0,
            cpu_ms: 100,
            processes: 1,
        };
        assert_eq!(
            throttle.sample(1_100, spun),
            Verdict::Stop { resume_at: 2_000 }
        );
        // A sample while stopped repeats the same resume time.
        assert_eq!(
            throttle.sample(1_500, spun),
            Verdict::Stop { resume_at: 2_000 }
        );
        // Stopped for 900 ms, the debt is paid: the next 100 ms of spinning costs 900 again.
        let again = GroupUsage {
            cpu_ms: 200,
            ..spun
        };
        assert_eq!(
            throttle.sample(2_100, again),
            Verdict::Stop { resume_at: 3_000 }
        );
    }

    #[test]
    fn throttle_holds_a_spinning_group_at_its_limit_over_a_minute() {
        const MINUTE_MS: u64 = 60_000;
        for (pct, spinning) in [(10, 1), (10, 2), (25, 1), (50, 2), (150, 2)] {
            let limits = ResourceLimits {
                cpu_pct: Some(pct),
                memory_bytes: None,
            };
            let mut throttle = Throttle::new(limits, 0);
            let (cpu_ms, stops) = simulate(&mut throttle, spinning, MINUTE_MS);
            let average_pct = cpu_ms as f64 * 100.0 / MINUTE_MS as f64;
            assert!(
                (average_pct - f64::from(pct)).abs() <= 2.0,
                "limit {pct}%, {spinning} CPUs spinning: average {average_pct:.2}%"
            );
            assert!(stops > 0);
        }
    }

    #[test]
    fn throttle_never_stops_a_group_under_its_limit() {
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: None,
        };
        let mut throttle = Throttle::new(limits, 0);
        // 9 % steadily, seen in whole ticks, for a minute.
        for now in (100..=60_000).step_by(100) {
            let cpu_ms = now * 9 / 100 / TICK_MS * TICK_MS;
            let usage = GroupUsage {
                rss_bytes: MIB,
                cpu_ms,
                processes: 2,
            };
            assert_eq!(throttle.sample(now, usage), Verdict::Ok, "at {now} ms");
        }
        // A burst within what it saved is allowed too; savings are capped at 1 s.
        let mut idle = Throttle::new(limits, 0);
        assert_eq!(idle.sample(3_600_000, GroupUsage::default()), Verdict::Ok);
        let burst = GroupUsage {
            cpu_ms: 100,
            ..GroupUsage::default()
        };
        assert_eq!(idle.sample(3_600_100, burst), Verdict::Ok);
        let more = GroupUsage {
            cpu_ms: 300,
            ..GroupUsage::default()
        };
        assert!(matches!(idle.sample(3_600_200, more), Verdict::Stop { .. }));
    }

    #[test]
    fn throttle_survives_a_falling_cpu_sum_and_caps_a_stop() {
        let limits = ResourceLimits {
            cpu_pct: Some(1),
            memory_bytes: None,
        };
        let mut throttle = Throttle::new(limits, 0);
        // 8 CPUs spinning for a 10 s gap would owe 800 s; a stop lasts 30 s at most.
        let usage = GroupUsage {
            cpu_ms: 80_000,
            ..GroupUsage::default()
        };
        assert_eq!(
            throttle.sample(10_000, usage),
            Verdict::Stop { resume_at: 40_000 }
        );
        // A member reaped elsewhere: the sum falls; that is no use, and no panic.
        let fell = GroupUsage {
            cpu_ms: 5_000,
            ..GroupUsage::default()
        };
        assert_eq!(throttle.sample(40_000, fell), Verdict::Ok);
    }

    #[test]
    fn throttle_kills_once_over_memory() {
        let limits = ResourceLimits {
            cpu_pct: None,
            memory_bytes: Some(20 * MIB),
        };
        let mut throttle = Throttle::new(limits, 0);
        assert_eq!(throttle.interval_ms(), MEMORY_SAMPLE_INTERVAL_MS);
        let under = GroupUsage {
            rss_bytes: 20 * MIB,
            cpu_ms: 50_000,
            processes: 3,
        };
        assert_eq!(throttle.sample(1_000, under), Verdict::Ok);
        let over = GroupUsage {
            rss_bytes: 20 * MIB + 1,
            ..under
        };
        let kill = Verdict::KillMemory {
            rss_bytes: 20 * MIB + 1,
            limit_bytes: 20 * MIB,
        };
        assert_eq!(throttle.sample(2_000, over), kill);
        assert_eq!(throttle.sample(3_000, over), Verdict::Ok);
    }

    // ----- Real processes -----

    /// A shell in its own process group, SIGKILLed with its group and reaped on drop.
    struct Group(Child);

    impl Group {
        fn spawn(script: &str, cgroup: Option<&Cgroup>) -> Group {
            let mut command = Command::new("/bin/sh");
            command.args(["-c", script]).process_group(0);
            command
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Some(cgroup) = cgroup {
                let fds = cgroup.procs_fds();
                // SAFETY: the hook only calls join_in_child, which makes write(2) calls
                // and allocates nothing.
                unsafe {
                    command.pre_exec(move || join_in_child(&fds));
                }
            }
            Group(command.spawn().expect("spawn /bin/sh"))
        }

        fn pgid(&self) -> i32 {
            i32::try_from(self.0.id()).expect("pid fits i32")
        }

        fn signal(&self, signal: libc::c_int) {
            // SAFETY: kill(2) on our own child's process group; no memory effects.
            unsafe { libc::kill(-self.pgid(), signal) };
        }

        /// Waits up to `timeout_ms` for the shell to exit.
        fn wait_exit(&mut self, timeout_ms: u64) -> Option<std::process::ExitStatus> {
            let mut status = None;
            wait_until(timeout_ms, || {
                status = self.0.try_wait().expect("try_wait");
                status.is_some()
            });
            status
        }
    }

    impl Drop for Group {
        fn drop(&mut self) {
            self.signal(libc::SIGKILL);
            let _ = self.0.wait();
        }
    }

    /// Polls `condition` every 10 ms until it holds or `timeout_ms` passes.
    fn wait_until(timeout_ms: u64, mut condition: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_millis(timeout_ms);
        loop {
            if condition() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn group_usage_sums_a_real_process_group() {
        let group = Group::spawn("sleep 30 & while :; do :; done", None);
        let mut usage = GroupUsage::default();
        let seen = wait_until(5_000, || {
            usage = group_usage(group.pgid()).expect("scan /proc");
            usage.processes >= 2 && usage.cpu_ms > 0
        });
        assert!(seen, "{usage:?}");
        assert!(usage.rss_bytes > 0, "{usage:?}");
        drop(group);
        assert!(group_usage(-1).is_err());
    }

    #[test]
    fn proc_fallback_sees_a_group_over_its_memory_limit() {
        let group = Group::spawn(ALLOCATE_50M, None);
        let limits = ResourceLimits {
            cpu_pct: None,
            memory_bytes: Some(20 * MIB),
        };
        let mut throttle = Throttle::new(limits, 0);
        let mut verdict = Verdict::Ok;
        let killed = wait_until(20_000, || {
            let usage = group_usage(group.pgid()).expect("scan /proc");
            verdict = throttle.sample(0, usage);
            verdict != Verdict::Ok
        });
        assert!(killed, "never over 20M");
        let Verdict::KillMemory {
            rss_bytes,
            limit_bytes,
        } = verdict
        else {
            panic!("{verdict:?}");
        };
        assert!(rss_bytes > limit_bytes);
        println!("/proc fallback: {} MiB over a 20M limit", rss_bytes / MIB);
    }

    #[test]
    fn proc_fallback_throttles_a_real_spinning_group() {
        const RUN_MS: u64 = 5_000;
        let start = Instant::now();
        let clock = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let group = Group::spawn("while :; do :; done", None);
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: None,
        };
        let mut throttle = Throttle::new(limits, clock());
        let mut stopped_until: Option<Millis> = None;
        let mut next_sample = clock() + throttle.interval_ms();
        let (mut stops, mut max_stop_ms) = (0, 0);
        while clock() < RUN_MS {
            let now = clock();
            if stopped_until.is_some_and(|until| now >= until) {
                group.signal(libc::SIGCONT);
                stopped_until = None;
            }
            if now >= next_sample {
                let usage = group_usage(group.pgid()).expect("scan /proc");
                match throttle.sample(now, usage) {
                    Verdict::Ok => next_sample = now + throttle.interval_ms(),
                    Verdict::Stop { resume_at } => {
                        if stopped_until.is_none() {
                            group.signal(libc::SIGSTOP);
                            stops += 1;
                            max_stop_ms = max_stop_ms.max(resume_at - now);
                        }
                        stopped_until = Some(resume_at);
                        next_sample = resume_at + throttle.interval_ms();
                    }
                    other => panic!("{other:?}"),
                }
            }
            let wake = stopped_until.map_or(next_sample, |until| until.min(next_sample));
            std::thread::sleep(Duration::from_millis(wake.saturating_sub(clock()).max(1)));
        }
        group.signal(libc::SIGCONT);
        let elapsed_ms = clock();
        let used_ms = group_usage(group.pgid()).expect("scan /proc").cpu_ms;
        let pct = used_ms * 100 / elapsed_ms;
        println!("/proc fallback at 10%: {used_ms} ms of CPU in {elapsed_ms} ms ({pct}%), {stops} stops, longest {max_stop_ms} ms");
        assert!(stops >= 2, "{stops} stops");
        assert!(pct <= 15, "{pct}% of a CPU under a 10% limit");
        assert!(used_ms > 0);
    }

    /// A shell that holds 50 MB (a command substitution keeps it all), then waits.
    const ALLOCATE_50M: &str = "x=$(head -c 52428800 /dev/zero | tr '\\0' a); sleep 30";

    // ----- cgroup v1, on a host like this one (root, v1 memory and cpu mounted) -----

    /// The cgroup tests share BootAgent's parent cgroups, and `release` them at the end.
    static CGROUP_TESTS: Mutex<()> = Mutex::new(());

    /// The v1 mechanism, or `None` (with the reason printed) on a host that is not
    /// root or has no writable v1 hierarchy. Any other failure fails the test.
    fn v1_host() -> Option<Mechanism> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            println!("skipped: not root, so no cgroup can be created");
            return None;
        }
        let facts = Facts::read().expect("/proc/self is readable");
        let usable = facts.mounts.iter().any(|m| {
            m.fstype == "cgroup"
                && m.super_options
                    .split(',')
                    .any(|c| c == "memory" || c == "cpu")
                && writable(&m.point)
        });
        if !usable {
            println!("skipped: no writable cgroup v1 memory or cpu hierarchy");
            return None;
        }
        let mechanism = detect(Choice::CgroupV1);
        assert!(
            matches!(mechanism, Mechanism::CgroupV1 { .. }),
            "{mechanism}"
        );
        Some(mechanism)
    }

    /// Removes the cgroup (and the parents, when the last test is done) even when the
    /// test fails.
    struct Cleanup<'a>(&'a Mechanism, Option<Cgroup>);

    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            if let Some(cgroup) = self.1.take() {
                cgroup.remove();
            }
            release(self.0);
        }
    }

    fn unique_name(test: &str) -> String {
        format!("test-{}-{test}", std::process::id())
    }

    fn read_trimmed(path: &Path) -> String {
        read_text(path).expect("readable").trim().to_owned()
    }

    #[test]
    fn cgroup_v1_create_writes_limits_and_the_child_joins() {
        let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mechanism) = v1_host() else { return };
        let Mechanism::CgroupV1 {
            memory: Some(memory),
            cpu: Some(cpu),
        } = &mechanism
        else {
            panic!("both hierarchies are writable here: {mechanism}");
        };
        println!("detect(cgroup1): {mechanism}");
        let name = unique_name("create");
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: Some(20 * MIB),
        };
        let mut cleanup = Cleanup(&mechanism, None);
        let cgroup = cleanup
            .1
            .insert(Cgroup::create(&mechanism, &name, &limits).expect("create"));
        let (memory_dir, cpu_dir) = (memory.join(&name), cpu.join(&name));
        assert_eq!(cgroup.dirs(), [memory_dir.clone(), cpu_dir.clone()]);
        assert_eq!(
            read_trimmed(&memory_dir.join("memory.limit_in_bytes")),
            "20971520"
        );
        if memory_dir.join("memory.memsw.limit_in_bytes").exists() {
            assert_eq!(
                read_trimmed(&memory_dir.join("memory.memsw.limit_in_bytes")),
                "20971520"
            );
        }
        assert_eq!(read_trimmed(&cpu_dir.join("cpu.cfs_period_us")), "100000");
        assert_eq!(read_trimmed(&cpu_dir.join("cpu.cfs_quota_us")), "10000");
        assert_eq!(cgroup.oom_kills(), 0);
        assert_eq!(cgroup.procs_fds().len(), 2);

        let mut group = Group::spawn("sleep 30", Some(cgroup));
        let pid = group.0.id().to_string();
        for dir in [&memory_dir, &cpu_dir] {
            let procs = read_text(&dir.join(PROCS_FILE)).expect("cgroup.procs");
            assert!(
                procs.split_whitespace().any(|p| p == pid),
                "{pid} not in {}",
                dir.display()
            );
        }
        // remove kills what is left in the cgroup, then removes the directories.
        cleanup.1.take().expect("created").remove();
        let status = group.wait_exit(5_000).expect("killed by remove");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(!memory_dir.exists() && !cpu_dir.exists());
    }

    #[test]
    fn cgroup_v1_leftover_is_cleared_and_made_anew() {
        let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mechanism) = v1_host() else { return };
        let name = unique_name("leftover");
        let limits = ResourceLimits {
            cpu_pct: Some(50),
            memory_bytes: None,
        };
        let mut cleanup = Cleanup(&mechanism, None);
        let first = Cgroup::create(&mechanism, &name, &limits).expect("create");
        let mut group = Group::spawn("sleep 30", Some(&first));
        drop(first); // as after a crash: the directories stay, with a process in them
        let again = cleanup
            .1
            .insert(Cgroup::create(&mechanism, &name, &limits).expect("recreate"));
        let status = group.wait_exit(5_000).expect("leftover process killed");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        for dir in again.dirs() {
            assert_eq!(read_trimmed(&dir.join(PROCS_FILE)), "", "{}", dir.display());
        }
    }

    #[test]
    fn cgroup_v1_memory_limit_kills_a_process_that_takes_50m() {
        let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mechanism) = v1_host() else { return };
        let Mechanism::CgroupV1 {
            memory: Some(_), ..
        } = &mechanism
        else {
            println!("skipped: no memory hierarchy ({mechanism})");
            return;
        };
        let name = unique_name("oom");
        let limits = ResourceLimits {
            cpu_pct: None,
            memory_bytes: Some(20 * MIB),
        };
        let mut cleanup = Cleanup(&mechanism, None);
        let cgroup = cleanup
            .1
            .insert(Cgroup::create(&mechanism, &name, &limits).expect("create"));
        let mut group = Group::spawn(ALLOCATE_50M, Some(cgroup));
        let status = group
            .wait_exit(20_000)
            .expect("the shell was not killed within 20 s");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        assert!(cgroup.oom_kills() >= 1);
        let peak = read_trimmed(&cgroup.dirs()[0].join("memory.max_usage_in_bytes"));
        println!(
            "cgroup v1 20M: killed by SIGKILL, oom_kill {}, peak usage {peak} bytes",
            cgroup.oom_kills()
        );
        assert!(peak.parse::<u64>().is_ok_and(|p| p <= 20 * MIB));
    }

    #[test]
    fn cgroup_v1_cpu_quota_throttles_a_spinning_process() {
        const MEASURE_MS: u64 = 2_000;
        let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
        let Some(mechanism) = v1_host() else { return };
        let Mechanism::CgroupV1 { cpu: Some(_), .. } = &mechanism else {
            println!("skipped: no cpu hierarchy ({mechanism})");
            return;
        };
        let name = unique_name("cpu");
        let limits = ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: None,
        };
        let mut cleanup = Cleanup(&mechanism, None);
        let cgroup = cleanup
            .1
            .insert(Cgroup::create(&mechanism, &name, &limits).expect("create"));
        let group = Group::spawn("while :; do :; done", Some(cgroup));
        let started = wait_until(5_000, || {
            group_usage(group.pgid()).is_ok_and(|u| u.cpu_ms > 0)
        });
        assert!(started, "the spinner never ran");
        let begin = (
            Instant::now(),
            group_usage(group.pgid()).expect("scan").cpu_ms,
        );
        std::thread::sleep(Duration::from_millis(MEASURE_MS)); // time passing is the point
        let used_ms = group_usage(group.pgid()).expect("scan").cpu_ms - begin.1;
        let elapsed_ms = u64::try_from(begin.0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let pct = used_ms * 100 / elapsed_ms;
        let cpu_dir = cgroup.dirs().last().expect("a cpu directory");
        let stat = read_text(&cpu_dir.join("cpu.stat")).expect("cpu.stat");
        let throttled = keyed_value(&stat, "nr_throttled").unwrap_or(0);
        println!("cgroup v1 10%: {used_ms} ms of CPU in {elapsed_ms} ms ({pct}%), throttled {throttled} times");
        assert!(pct <= 15, "{pct}% of a CPU under a 10% quota");
        assert!(throttled > 0);
    }
}
