//! The `/proc` fallback: a process group's usage summed from `/proc/PID/stat`, and the
//! pure [`Throttle`] that turns samples into verdicts (see the module doc of
//! `reslimit` for the duty cycle).

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::parse::{ResourceLimits, CPU_PCT_PER_CPU};
use super::shared::with_path;
use crate::sys;
use crate::wheel::Millis;

/// Sampling interval of the `/proc` fallback while it enforces a CPU limit.
const CPU_SAMPLE_INTERVAL_MS: u64 = 100;
/// Sampling interval when it enforces a memory limit only (docs/protocol.md: at least 1/s).
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
    let page_bytes = sys::sysconf(libc::_SC_PAGESIZE).unwrap_or(PAGE_BYTES_DEFAULT);
    let ticks_per_s = sys::sysconf(libc::_SC_CLK_TCK).unwrap_or(CLOCK_TICKS_PER_S_DEFAULT);
    let mut usage = GroupUsage::default();
    let mut ticks: u64 = 0;
    let mut text = String::new();
    let proc_dir = Path::new("/proc");
    for entry in fs::read_dir(proc_dir)
        .map_err(|e| with_path(e, proc_dir))?
        .flatten()
    {
        if !entry.file_name().as_bytes().iter().all(u8::is_ascii_digit) {
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

#[cfg(test)]
#[path = "proc_tests.rs"]
mod tests;
