//! Every bound and default BootAgent works with, in one place.
//!
//! Names carry their unit last (`_ms`, `_s`, `_bytes`, `_max`). The values are the
//! ones of docs/protocol.md where it names them; the others are documented beside them.
//! An operator changes one with `-o NAME=VALUE` (for example a longer
//! `exchange_timeout_ms` on a satellite link); `-T` shows the values in force.

use std::fmt;
use std::str::FromStr;

/// Most children one BootAgent supervises, whatever `children_max` says: the
/// notify sockets (`notify::SOCKETS_MAX`) are sized by it at compile time.
pub const CHILDREN_MAX: usize = 256;

/// Bounds and defaults. `Limits::default()` is what the agent runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect timeout of one exchange (docs/protocol.md section 1).
    pub connect_timeout_ms: u64,
    /// Whole-exchange timeout: connect, send, answer (section 1).
    pub exchange_timeout_ms: u64,
    /// A response body over this is an error, never read into memory whole.
    pub response_body_bytes_max: u64,
    /// Report interval before any server says otherwise (section 3).
    pub step_default_s: u64,
    /// Smallest and largest report interval a server may set (section 7, `config`).
    pub step_min_s: u64,
    pub step_max_s: u64,
    /// After a start of an agent already registered, the first report waits a
    /// random delay of 0…min(step, this), so that a site that powers up at once
    /// does not report in the same millisecond (section 3).
    pub first_report_delay_max_ms: u64,
    /// Never two status reports that got an HTTP answer closer than this, whatever
    /// asks for them (section 3).
    pub report_gap_min_ms: u64,
    /// First backoff delay after a round in which every server failed (section 4).
    pub backoff_initial_ms: u64,
    /// Backoff ceiling; the effective ceiling is min(step, this) (section 4).
    pub backoff_cap_s: u64,
    /// A backoff wait is drawn uniformly from (100 − this) % to 100 % of the capped
    /// delay (section 4).
    pub backoff_jitter_pct: u64,
    /// Shortest wait a server's `Retry-After` can ask for (section 4).
    pub retry_after_min_ms: u64,
    /// A `Retry-After` wait gets a random extra of up to this percentage of it (section 4).
    pub retry_after_extra_pct: u64,
    /// A failure that repeats is logged once, then at most once per this, with a
    /// count, then once on recovery (section 4).
    pub failure_log_interval_ms: u64,
    /// Job results kept for delivery, jobs still to run included; past this a new
    /// job is not run and its result is counted in a `dropped` event (section 7).
    pub pending_results_max: usize,
    /// Executed job ids remembered, with their results, across restarts (section 7);
    /// the oldest delivered are forgotten first, an undelivered one never.
    pub job_ids_remembered: usize,
    /// Jobs taken from one status answer; the excess are refused with errcode 9
    /// "queue full" (not remembered: sent again, they run).
    pub jobs_per_answer_max: usize,
    /// Jobs waiting to run, one at a time; past this, errcode 9 "queue full".
    pub jobs_queue_max: usize,
    /// Events kept for delivery (section 3).
    pub pending_events_max: usize,
    /// Largest metafile read at start; a bigger one counts as corrupt.
    pub meta_bytes_max: u64,
    /// After a failed write of the metafile (a full disk), the next try comes
    /// this much later even if nothing changes, until one succeeds.
    pub meta_save_retry_ms: u64,
    /// Size at which the log file (`-L`) is rotated.
    pub log_file_bytes_max: u64,
    /// Log files kept: `FILE` plus `FILE.1` … `FILE.(n-1)`.
    pub log_files_max: u32,
    /// Capacity of the channel into the event loop.
    pub loop_channel_max: usize,
    /// Largest package download (section 9).
    pub download_bytes_max: u64,
    /// A download that receives nothing for this long is aborted (section 9).
    pub download_stall_ms: u64,
    /// A download slower than this on average over `download_stall_ms` is aborted,
    /// so that a trickling server cannot hold the job slot; 0 turns the check off.
    pub download_speed_min_bytes_per_s: u64,
    /// Total bytes one package may unpack to (section 9); never more than the free
    /// space less `disk_reserve_bytes`.
    pub unpack_bytes_max: u64,
    /// Entries (files, directories, links) one package may hold (section 9).
    pub unpack_entries_max: u64,
    /// Longest path or link target of an entry of a package (and of a job's `exec`
    /// inside it), in bytes (section 9).
    pub unpack_path_bytes_max: usize,
    /// Free space kept after a download or an unpacking, so that the metafile and
    /// the logs can still be written: 1 MiB by default, well above a metafile holding
    /// the 1024 remembered job results.
    pub disk_reserve_bytes: u64,
    /// Size at which a child's log file is rotated (section 6).
    pub child_log_bytes_max: u64,
    /// Log files kept per child: `NAME.log` plus `NAME.log.1` … (section 6).
    pub child_log_files_max: u32,
    /// Most bytes of a child's output written to its log per second; the rest is
    /// dropped (a line says how much), so that relaying costs BootAgent less than the
    /// child spends writing. 0: no limit.
    pub child_log_bytes_per_s_max: u64,
    /// Largest read from one child's pipe in one round; also the log thread's buffer.
    pub child_log_read_chunk_bytes: usize,
    /// Buffer asked for each child's pipe (`F_SETPIPE_SZ`; the kernel's default is
    /// 64 KiB, and an unprivileged BootAgent gets at most `/proc/sys/fs/pipe-max-size`).
    pub child_log_pipe_bytes: usize,
    /// Children supervised at most (agents installed under `agents/`); an `install`
    /// of one more fails with errcode 5. At most `CHILDREN_MAX`.
    pub children_max: usize,
    /// Restart policy of a child (section 5), unless its `restart` settings say
    /// otherwise: after failure n the restart waits 0 (n = 1), then
    /// `restart_delay_ms`, doubling, capped at `restart_delay_max_ms`.
    pub restart_delay_ms: u64,
    pub restart_delay_max_ms: u64,
    /// A crash sooner than this after the start is a failure; a later one resets
    /// the count.
    pub restart_window_ms: u64,
    /// More consecutive failures than this is `fatal` (no more restarts).
    pub restart_failures_max: u32,
    /// Between `SIGTERM` and `SIGKILL` when a child is stopped (its grace period).
    pub restart_grace_ms: u64,
    /// Never two starts of the same child closer than this.
    pub restart_start_gap_min_ms: u64,
    /// How resource limits are enforced: `auto` (cgroup v2, else v1, else /proc),
    /// or one mechanism forced (`-o limit_mechanism=proc`). Except with `proc`, a child
    /// whose mechanism makes no cgroup still gets one without controllers, to track its
    /// processes; `proc` makes no cgroup at all (subreaper and environment marker).
    pub limit_mechanism: Choice,
    /// Local control (`bootagent restart|stop|start`, docs/protocol.md section 6): how long
    /// the command waits for the agent's answer. The agent answers once the matching job
    /// is done, which a job bounds by the child's grace period plus 30 s.
    pub control_timeout_ms: u64,
    /// How long the agent gives a client of `control.sock` to send its request (and to
    /// take the answer); a client that sends nothing is dropped after this.
    pub control_client_timeout_ms: u64,
    /// Connections `control.sock` takes per second (a bucket of as many); past this,
    /// each is answered "busy" and closed at once, without reaching the loop.
    pub control_accepts_per_s: u64,
    /// Clients served at once; past this, "busy".
    pub control_clients_max: usize,
    /// Longest request line (`VERB NAME`); a longer one is refused as bad usage.
    pub control_request_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect_timeout_ms: 10_000,
            exchange_timeout_ms: 30_000,
            response_body_bytes_max: 1024 * 1024,
            step_default_s: 600,
            step_min_s: 1,
            step_max_s: 86_400,
            first_report_delay_max_ms: 10_000,
            report_gap_min_ms: 1_000,
            backoff_initial_ms: 1_000,
            backoff_cap_s: 300,
            backoff_jitter_pct: 50,
            retry_after_min_ms: 1_000,
            retry_after_extra_pct: 50,
            failure_log_interval_ms: 600_000,
            pending_results_max: 1024,
            job_ids_remembered: 1024,
            jobs_per_answer_max: 256,
            jobs_queue_max: 64,
            pending_events_max: 256,
            meta_bytes_max: 8 * 1024 * 1024,
            meta_save_retry_ms: 5_000,
            log_file_bytes_max: 1024 * 1024,
            log_files_max: 3,
            loop_channel_max: 64,
            download_bytes_max: 1 << 30,
            download_stall_ms: 60_000,
            download_speed_min_bytes_per_s: 512,
            unpack_bytes_max: 1 << 30,
            unpack_entries_max: 100_000,
            unpack_path_bytes_max: 4096,
            disk_reserve_bytes: 1024 * 1024,
            child_log_bytes_max: 1024 * 1024,
            child_log_files_max: 2,
            child_log_bytes_per_s_max: 1024 * 1024,
            child_log_read_chunk_bytes: 64 * 1024,
            child_log_pipe_bytes: 1024 * 1024,
            children_max: CHILDREN_MAX,
            restart_delay_ms: 10_000,
            restart_delay_max_ms: 180_000,
            restart_window_ms: 900_000,
            restart_failures_max: 3,
            restart_grace_ms: 10_000,
            restart_start_gap_min_ms: 1_000,
            limit_mechanism: Choice::Auto,
            control_timeout_ms: 120_000,
            control_client_timeout_ms: 2_000,
            control_accepts_per_s: 20,
            control_clients_max: 4,
            control_request_bytes_max: 256,
        }
    }
}

impl Limits {
    /// The names and values, in declaration order, for `-T` and for `set`.
    pub fn entries(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("exchange_timeout_ms", self.exchange_timeout_ms),
            ("response_body_bytes_max", self.response_body_bytes_max),
            ("step_default_s", self.step_default_s),
            ("step_min_s", self.step_min_s),
            ("step_max_s", self.step_max_s),
            ("first_report_delay_max_ms", self.first_report_delay_max_ms),
            ("report_gap_min_ms", self.report_gap_min_ms),
            ("backoff_initial_ms", self.backoff_initial_ms),
            ("backoff_cap_s", self.backoff_cap_s),
            ("backoff_jitter_pct", self.backoff_jitter_pct),
            ("retry_after_min_ms", self.retry_after_min_ms),
            ("retry_after_extra_pct", self.retry_after_extra_pct),
            ("failure_log_interval_ms", self.failure_log_interval_ms),
            ("pending_results_max", self.pending_results_max as u64),
            ("job_ids_remembered", self.job_ids_remembered as u64),
            ("jobs_per_answer_max", self.jobs_per_answer_max as u64),
            ("jobs_queue_max", self.jobs_queue_max as u64),
            ("pending_events_max", self.pending_events_max as u64),
            ("meta_bytes_max", self.meta_bytes_max),
            ("meta_save_retry_ms", self.meta_save_retry_ms),
            ("log_file_bytes_max", self.log_file_bytes_max),
            ("log_files_max", u64::from(self.log_files_max)),
            ("loop_channel_max", self.loop_channel_max as u64),
            ("download_bytes_max", self.download_bytes_max),
            ("download_stall_ms", self.download_stall_ms),
            (
                "download_speed_min_bytes_per_s",
                self.download_speed_min_bytes_per_s,
            ),
            ("unpack_bytes_max", self.unpack_bytes_max),
            ("unpack_entries_max", self.unpack_entries_max),
            ("unpack_path_bytes_max", self.unpack_path_bytes_max as u64),
            ("disk_reserve_bytes", self.disk_reserve_bytes),
            ("child_log_bytes_max", self.child_log_bytes_max),
            ("child_log_files_max", u64::from(self.child_log_files_max)),
            ("control_timeout_ms", self.control_timeout_ms),
            ("control_client_timeout_ms", self.control_client_timeout_ms),
            ("control_accepts_per_s", self.control_accepts_per_s),
            ("control_clients_max", self.control_clients_max as u64),
            (
                "control_request_bytes_max",
                self.control_request_bytes_max as u64,
            ),
            ("child_log_bytes_per_s_max", self.child_log_bytes_per_s_max),
            (
                "child_log_read_chunk_bytes",
                self.child_log_read_chunk_bytes as u64,
            ),
            ("child_log_pipe_bytes", self.child_log_pipe_bytes as u64),
            ("children_max", self.children_max as u64),
            ("restart_delay_ms", self.restart_delay_ms),
            ("restart_delay_max_ms", self.restart_delay_max_ms),
            ("restart_window_ms", self.restart_window_ms),
            ("restart_failures_max", u64::from(self.restart_failures_max)),
            ("restart_grace_ms", self.restart_grace_ms),
            ("restart_start_gap_min_ms", self.restart_start_gap_min_ms),
        ]
    }

    /// Sets one limit from `NAME=VALUE`. Values must be whole numbers within the
    /// range that keeps the agent sound (timeouts and sizes above zero,
    /// percentages up to 100).
    pub fn set(&mut self, assignment: &str) -> Result<(), String> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| format!("{assignment:?} is not NAME=VALUE"))?;
        let (name, value) = (name.trim(), value.trim());
        if name == "limit_mechanism" {
            self.limit_mechanism = value.parse()?;
            return Ok(());
        }
        let number: u64 = value
            .parse()
            .map_err(|_| format!("{name}: {value:?} is not a whole number"))?;
        let range = |lo: u64, hi: u64| {
            if (lo..=hi).contains(&number) {
                Ok(number)
            } else {
                Err(format!("{name}: {number} is outside {lo}..={hi}"))
            }
        };
        let small = |hi: u64| range(1, hi).map(|n| n as usize);
        match name {
            "connect_timeout_ms" => self.connect_timeout_ms = range(1, 3_600_000)?,
            "exchange_timeout_ms" => self.exchange_timeout_ms = range(1, 3_600_000)?,
            "response_body_bytes_max" => self.response_body_bytes_max = range(1024, 1 << 30)?,
            "step_default_s" => self.step_default_s = range(1, 86_400)?,
            "step_min_s" => self.step_min_s = range(1, 86_400)?,
            "step_max_s" => self.step_max_s = range(1, 86_400)?,
            "first_report_delay_max_ms" => self.first_report_delay_max_ms = range(0, 3_600_000)?,
            "report_gap_min_ms" => self.report_gap_min_ms = range(0, 3_600_000)?,
            "backoff_initial_ms" => self.backoff_initial_ms = range(1, 3_600_000)?,
            "backoff_cap_s" => self.backoff_cap_s = range(1, 86_400)?,
            "backoff_jitter_pct" => self.backoff_jitter_pct = range(0, 100)?,
            "retry_after_min_ms" => self.retry_after_min_ms = range(1, 3_600_000)?,
            "retry_after_extra_pct" => self.retry_after_extra_pct = range(0, 100)?,
            "failure_log_interval_ms" => self.failure_log_interval_ms = range(1_000, 86_400_000)?,
            "pending_results_max" => self.pending_results_max = small(1 << 20)?,
            "job_ids_remembered" => self.job_ids_remembered = small(1 << 20)?,
            "jobs_per_answer_max" => self.jobs_per_answer_max = small(1 << 20)?,
            "jobs_queue_max" => self.jobs_queue_max = small(1 << 16)?,
            "pending_events_max" => self.pending_events_max = small(1 << 20)?,
            "meta_bytes_max" => self.meta_bytes_max = range(4096, 1 << 30)?,
            "meta_save_retry_ms" => self.meta_save_retry_ms = range(100, 3_600_000)?,
            "log_file_bytes_max" => self.log_file_bytes_max = range(1024, 1 << 40)?,
            "log_files_max" => self.log_files_max = range(1, 100)? as u32,
            "loop_channel_max" => self.loop_channel_max = small(1 << 16)?,
            "download_bytes_max" => self.download_bytes_max = range(1024, 1 << 40)?,
            "download_stall_ms" => self.download_stall_ms = range(100, 3_600_000)?,
            "download_speed_min_bytes_per_s" => {
                self.download_speed_min_bytes_per_s = range(0, 1 << 30)?
            }
            "unpack_bytes_max" => self.unpack_bytes_max = range(1024, 1 << 40)?,
            "unpack_entries_max" => self.unpack_entries_max = range(1, 1 << 24)?,
            "unpack_path_bytes_max" => self.unpack_path_bytes_max = range(256, 65_536)? as usize,
            "disk_reserve_bytes" => self.disk_reserve_bytes = range(0, 1 << 40)?,
            "child_log_bytes_max" => self.child_log_bytes_max = range(1024, 1 << 40)?,
            "child_log_files_max" => self.child_log_files_max = range(1, 100)? as u32,
            "control_timeout_ms" => self.control_timeout_ms = range(100, 3_600_000)?,
            "control_client_timeout_ms" => self.control_client_timeout_ms = range(10, 60_000)?,
            "control_accepts_per_s" => self.control_accepts_per_s = range(1, 10_000)?,
            "control_clients_max" => self.control_clients_max = small(256)?,
            "control_request_bytes_max" => {
                self.control_request_bytes_max = range(80, 4096)? as usize
            }
            "child_log_bytes_per_s_max" => self.child_log_bytes_per_s_max = range(0, 1 << 40)?,
            "child_log_read_chunk_bytes" => {
                self.child_log_read_chunk_bytes = range(512, 1 << 20)? as usize
            }
            "child_log_pipe_bytes" => self.child_log_pipe_bytes = range(4096, 1 << 20)? as usize,
            "children_max" => self.children_max = small(CHILDREN_MAX as u64)?,
            "restart_delay_ms" => self.restart_delay_ms = range(0, 86_400_000)?,
            "restart_delay_max_ms" => self.restart_delay_max_ms = range(0, 86_400_000)?,
            "restart_window_ms" => self.restart_window_ms = range(0, 86_400_000)?,
            "restart_failures_max" => self.restart_failures_max = range(0, 1_000)? as u32,
            "restart_grace_ms" => self.restart_grace_ms = range(0, 86_400_000)?,
            "restart_start_gap_min_ms" => self.restart_start_gap_min_ms = range(0, 3_600_000)?,
            _ => return Err(format!("unknown limit {name:?} (bootagent -T lists them)")),
        }
        if self.step_min_s > self.step_max_s {
            return Err("step_min_s is above step_max_s".to_string());
        }
        Ok(())
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

impl Choice {
    const ALL: [Choice; 4] = [
        Choice::Auto,
        Choice::CgroupV2,
        Choice::CgroupV1,
        Choice::Proc,
    ];

    fn name(self) -> &'static str {
        match self {
            Choice::Auto => "auto",
            Choice::CgroupV2 => "cgroup2",
            Choice::CgroupV1 => "cgroup1",
            Choice::Proc => "proc",
        }
    }
}

impl FromStr for Choice {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        (Choice::ALL.into_iter().find(|choice| choice.name() == text)).ok_or_else(|| {
            format!(
                "limit_mechanism must be auto, cgroup2, cgroup1 or proc, not {}",
                quoted(text)
            )
        })
    }
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Characters of a bad value shown in a message.
const QUOTED_CHARS_MAX: usize = 32;

/// `text` quoted for a message, cut after `QUOTED_CHARS_MAX` characters.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_checks_names_numbers_and_ranges() {
        let mut limits = Limits::default();
        assert_eq!(limits.set("exchange_timeout_ms=1500"), Ok(()));
        assert_eq!(limits.exchange_timeout_ms, 1500);
        let err = |a: &str| Limits::default().set(a).expect_err(a);
        assert!(err("nope=1").contains("unknown limit"));
        assert!(err("backoff_jitter_pct=101").contains("outside 0..=100"));
        assert!(err("connect_timeout_ms=0").contains("outside"));
        assert!(err("connect_timeout_ms=x").contains("not a whole number"));
        assert!(err("connect_timeout_ms").contains("NAME=VALUE"));
        assert!(err("step_min_s=90000").contains("outside"));
        assert!(Limits::default().set("limit_mechanism=proc").is_ok());
        assert!(err("limit_mechanism=magic").contains("magic"));
        assert!(err("children_max=257").contains("outside 1..=256"));
        assert!(err("restart_failures_max=1001").contains("outside"));
        let mut limits = Limits::default();
        assert_eq!(limits.set("restart_grace_ms=2000"), Ok(()));
        assert_eq!(crate::child::RestartPolicy::new(&limits).grace_ms, 2000);
        assert_eq!(crate::child::RestartPolicy::default().grace_ms, 10_000);
        let names: Vec<&str> = Limits::default().entries().iter().map(|e| e.0).collect();
        for name in names {
            let mut limits = Limits::default();
            let value = Limits::default()
                .entries()
                .into_iter()
                .find(|e| e.0 == name)
                .map(|e| e.1)
                .unwrap_or(0);
            assert_eq!(limits.set(&format!("{name}={value}")), Ok(()), "{name}");
            assert_eq!(limits, Limits::default(), "{name} round-trips");
        }
    }
}
