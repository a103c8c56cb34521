//! The bounds of the child logs (`LogConfig`), from `Limits`, and the floors and
//! ceilings each is brought within.

use crate::limits::Limits;

/// Smallest `file_bytes_max` taken: a smaller limit would make rotation all renames.
const FILE_BYTES_MAX_FLOOR: u64 = 1024;
/// Largest `files_max` taken: each rotation renames every file.
const FILES_MAX_CEILING: u32 = 100;
/// Bounds of `read_chunk_bytes`: a few lines at least, bounded memory at most.
const READ_CHUNK_BYTES_FLOOR: usize = 512;
const READ_CHUNK_BYTES_CEILING: usize = 1024 * 1024;
/// Largest pipe buffer asked for: each one is kernel memory.
const PIPE_BYTES_CEILING: usize = 1024 * 1024;

/// Bounds of the child logs, from `Limits` (`LogConfig::new`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// Size at which a child's log file is rotated. A file exceeds it by less than
    /// `read_chunk_bytes`, to end on a line. At least `FILE_BYTES_MAX_FLOOR`.
    pub file_bytes_max: u64,
    /// Files per child: `NAME.log` plus `NAME.log.1` … `NAME.log.(files_max-1)`.
    /// 1 to `FILES_MAX_CEILING`.
    pub files_max: u32,
    /// Largest read from one pipe in one round; also the thread's buffer.
    pub read_chunk_bytes: usize,
    /// Most bytes of a child's output written per second (per log file); the rest is
    /// dropped without being copied, and a line in the file says how much. 0: no limit.
    /// A child that writes faster than this gains nothing from a log that keeps
    /// `files_max × file_bytes_max`, and would cost BootAgent more than itself.
    pub bytes_per_s_max: u64,
    /// Buffer asked for each child's pipe (`F_SETPIPE_SZ`; the kernel's default is
    /// 64 KiB, and an unprivileged BootAgent gets at most `/proc/sys/fs/pipe-max-size`).
    pub pipe_bytes: usize,
}

impl Default for LogConfig {
    /// The bounds of `Limits::default()`.
    fn default() -> Self {
        LogConfig::new(&Limits::default())
    }
}

impl LogConfig {
    /// The bounds of `limits` (`child_log_*`).
    pub fn new(limits: &Limits) -> Self {
        LogConfig {
            file_bytes_max: limits.child_log_bytes_max,
            files_max: limits.child_log_files_max,
            read_chunk_bytes: limits.child_log_read_chunk_bytes,
            bytes_per_s_max: limits.child_log_bytes_per_s_max,
            pipe_bytes: limits.child_log_pipe_bytes,
        }
    }

    /// The same configuration, each bound brought within its floor and ceiling.
    pub(super) fn sane(self) -> LogConfig {
        LogConfig {
            file_bytes_max: self.file_bytes_max.max(FILE_BYTES_MAX_FLOOR),
            files_max: self.files_max.clamp(1, FILES_MAX_CEILING),
            read_chunk_bytes: self
                .read_chunk_bytes
                .clamp(READ_CHUNK_BYTES_FLOOR, READ_CHUNK_BYTES_CEILING),
            bytes_per_s_max: self.bytes_per_s_max,
            pipe_bytes: self.pipe_bytes.min(PIPE_BYTES_CEILING),
        }
    }
}
