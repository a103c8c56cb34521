//! Every bound and default BootAgent works with, in one place.
//!
//! Names carry their unit last (`_ms`, `_s`, `_bytes`, `_max`). The values are the
//! ones of PROTOCOL.md where it names them; the others are documented beside them.

/// Bounds and defaults. `Limits::default()` is what the agent runs with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// TCP connect timeout of one exchange (PROTOCOL.md section 1).
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
    /// Each report interval is jittered by ± this percentage (section 3).
    pub step_jitter_pct: u64,
    /// Never two status reports closer than this (section 3).
    pub report_gap_min_ms: u64,
    /// First backoff delay after a round in which every server failed (section 4).
    pub backoff_initial_ms: u64,
    /// Backoff ceiling; the effective ceiling is min(step, this) (section 4).
    pub backoff_cap_s: u64,
    /// Backoff delays are jittered by ± this percentage (section 4).
    pub backoff_jitter_pct: u64,
    /// Job results kept for delivery; past this the oldest undelivered is dropped.
    pub pending_results_max: usize,
    /// Executed job ids remembered, with their results, across restarts (section 7).
    pub job_ids_remembered: usize,
    /// Jobs taken from one status answer; the excess are failed with errcode 9.
    pub jobs_per_answer_max: usize,
    /// Events kept for delivery (section 3).
    pub pending_events_max: usize,
    /// Largest metafile read at start; a bigger one counts as corrupt.
    pub meta_bytes_max: u64,
    /// Size at which the log file (`-L`) is rotated.
    pub log_file_bytes_max: u64,
    /// Log files kept: `FILE` plus `FILE.1` … `FILE.(n-1)`.
    pub log_files_max: u32,
    /// Capacity of the channel into the event loop.
    pub loop_channel_max: usize,
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
            step_jitter_pct: 10,
            report_gap_min_ms: 1_000,
            backoff_initial_ms: 1_000,
            backoff_cap_s: 300,
            backoff_jitter_pct: 50,
            pending_results_max: 1024,
            job_ids_remembered: 1024,
            jobs_per_answer_max: 256,
            pending_events_max: 256,
            meta_bytes_max: 8 * 1024 * 1024,
            log_file_bytes_max: 1024 * 1024,
            log_files_max: 3,
            loop_channel_max: 64,
        }
    }
}
