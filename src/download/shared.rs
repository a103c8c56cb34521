//! What every part of the downloader shares: its bounds ([`DownloadLimits`] and the
//! fixed ones), its error ([`DownloadError`]) and what a download returns, what one
//! download carries everywhere (`Ctx`) and what an opened scheme gives (`Source`), and
//! the helpers that put text in a message. The other files of `download/` import this
//! one; it imports none of them.

use crate::job_fields::ErrCode;
use crate::limits::Limits;
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// A mebibyte, for messages.
pub(super) const MIB: u64 = 1024 * 1024;
/// Temporary files are named `TEMP_PREFIX<pid>-<n>TEMP_SUFFIX`, so that leftovers of a
/// crash can be recognised and swept.
pub const TEMP_PREFIX: &str = ".download-";
pub const TEMP_SUFFIX: &str = ".part";

/// Shortest timeout given to a socket (a zero timeout is refused by std).
pub(super) const TIMEOUT_MS_MIN: u64 = 1;
/// Longest URL or server reply quoted in a message.
pub(super) const SHOWN_CHARS_MAX: usize = 256;

/// Bounds of one download, and the TLS trust of `https://` URLs.
#[derive(Clone, Debug)]
pub struct DownloadLimits {
    /// A larger download is refused or aborted.
    pub bytes_max: u64,
    /// Aborted after this long without a byte.
    pub stall_ms: u64,
    /// Aborted when slower than this on average over a window of `stall_ms` (0: never).
    pub speed_min_bytes_per_s: u64,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Free space that must remain in the directory after the download.
    pub free_bytes_min: u64,
    /// The directories `file://` URLs may name files under (symlinks resolved);
    /// none: every `file://` URL is refused.
    pub file_url_roots: Vec<PathBuf>,
    /// Trust and identity for `https://` (the same as the server exchanges').
    pub tls: crate::tls::Loaded,
}

impl DownloadLimits {
    /// The bounds of `limits` (`download_*`, `connect_timeout_ms`,
    /// `disk_reserve_bytes`); no `file://` roots, the default TLS trust.
    pub fn new(limits: &Limits) -> Self {
        DownloadLimits {
            bytes_max: limits.download_bytes_max,
            stall_ms: limits.download_stall_ms,
            speed_min_bytes_per_s: limits.download_speed_min_bytes_per_s,
            connect_timeout_ms: limits.connect_timeout_ms,
            free_bytes_min: limits.disk_reserve_bytes,
            file_url_roots: Vec::new(),
            tls: crate::tls::Loaded::default(),
        }
    }
}

impl Default for DownloadLimits {
    /// The bounds of `Limits::default()`.
    fn default() -> Self {
        DownloadLimits::new(&Limits::default())
    }
}

/// A finished download: the temporary file (in the directory given, mode 0600,
/// fsync'd), its size and its SHA256. The caller owns the file from here on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    pub path: PathBuf,
    pub bytes: u64,
    pub sha256: [u8; 32],
}

/// Why a download failed. URLs in it have their password masked.
#[derive(Debug)]
pub enum DownloadError {
    /// Not a URL this agent can download (errcode 1).
    InvalidUrl { url: String, problem: String },
    /// Connecting, the HTTP exchange or the FTP dialogue failed (one line, ready).
    Network(String),
    /// The HTTP server answered with a status other than 2xx.
    Status { url: String, code: u16 },
    /// The FTP server refused a command: its reply.
    Ftp { server: String, reply: String },
    /// No byte for `stall_ms`.
    Stalled { url: String, stall_ms: u64 },
    /// Below `speed_min_bytes_per_s` for `elapsed_ms` (at least `stall_ms`), having
    /// received `bytes` meanwhile.
    TooSlow {
        url: String,
        bytes: u64,
        elapsed_ms: u64,
        speed_min_bytes_per_s: u64,
    },
    /// Over `bytes_max`, announced or received.
    TooLarge { url: String, bytes_max: u64 },
    /// Received a different length than announced (a connection closed early).
    LengthMismatch {
        url: String,
        got: u64,
        expected: u64,
    },
    /// A `file://` source that cannot be read.
    Source { path: String, problem: String },
    /// A `file://` path outside the `file_url_roots`, refused before it was opened.
    NotAllowed { path: String, roots: String },
    /// `cancel` was set.
    Cancelled { url: String },
    /// Not enough free space to start (errcode 5).
    NoSpace {
        dir: PathBuf,
        need_bytes: u64,
        free_bytes: u64,
    },
    /// The disk filled while downloading (errcode 5).
    DiskFilled {
        dir: PathBuf,
        written_bytes: u64,
        free_bytes: u64,
    },
    /// The temporary file cannot be created or written (errcode 5).
    Disk { path: PathBuf, problem: String },
}

impl DownloadError {
    /// The job errcode of docs/protocol.md section 7.
    pub fn errcode(&self) -> ErrCode {
        match self {
            DownloadError::InvalidUrl { .. } => ErrCode::Invalid,
            DownloadError::NoSpace { .. }
            | DownloadError::DiskFilled { .. }
            | DownloadError::Disk { .. } => ErrCode::InstallFailed,
            DownloadError::Network(_)
            | DownloadError::Status { .. }
            | DownloadError::Ftp { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::TooSlow { .. }
            | DownloadError::TooLarge { .. }
            | DownloadError::LengthMismatch { .. }
            | DownloadError::Source { .. }
            | DownloadError::NotAllowed { .. }
            | DownloadError::Cancelled { .. } => ErrCode::DownloadFailed,
        }
    }
}

impl fmt::Display for DownloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DownloadError::InvalidUrl { url, problem } => write!(f, "{problem}: {url}"),
            DownloadError::Network(line) => f.write_str(line),
            DownloadError::Status { url, code } => write!(f, "HTTP {code} for {url}"),
            DownloadError::Ftp { server, reply } => write!(f, "ftp {server}: {reply}"),
            DownloadError::Stalled { url, stall_ms } => {
                write!(
                    f,
                    "stalled for {} downloading {url}",
                    duration_text(*stall_ms)
                )
            }
            DownloadError::TooSlow {
                url,
                bytes,
                elapsed_ms,
                speed_min_bytes_per_s,
            } => write!(
                f,
                "too slow: {bytes} bytes in {} (less than {speed_min_bytes_per_s} bytes/s) downloading {url}",
                duration_text(*elapsed_ms)
            ),
            DownloadError::TooLarge { url, bytes_max } => {
                write!(f, "larger than {bytes_max} bytes: {url}")
            }
            DownloadError::LengthMismatch { url, got, expected } if got < expected => {
                write!(f, "truncated: got {got} of {expected} bytes from {url}")
            }
            DownloadError::LengthMismatch { url, got, expected } => {
                write!(
                    f,
                    "longer than announced: got {got} of {expected} bytes from {url}"
                )
            }
            DownloadError::Source { path, problem } => write!(f, "cannot read {path}: {problem}"),
            DownloadError::NotAllowed { path, roots } => write!(
                f,
                "file URL refused: {path} is not under the file_url_roots ({roots})"
            ),
            DownloadError::Cancelled { url } => write!(f, "download cancelled: {url}"),
            DownloadError::NoSpace {
                dir,
                need_bytes,
                free_bytes,
            } => write!(
                f,
                "no space left: need {} MB in {}, {} MB free",
                need_bytes.div_ceil(MIB),
                dir.display(),
                free_bytes / MIB
            ),
            DownloadError::DiskFilled {
                dir,
                written_bytes,
                free_bytes,
            } => write!(
                f,
                "no space left in {} after writing {} MB, {} MB free",
                dir.display(),
                written_bytes / MIB,
                free_bytes / MIB
            ),
            DownloadError::Disk { path, problem } => {
                write!(f, "cannot write {}: {problem}", path.display())
            }
        }
    }
}

impl std::error::Error for DownloadError {}

/// What one download needs everywhere: the URL as it may be shown, the bounds and
/// the cancel flag.
pub(super) struct Ctx<'a> {
    pub(super) shown: String,
    pub(super) limits: &'a DownloadLimits,
    pub(super) cancel: &'a AtomicBool,
}

impl Ctx<'_> {
    pub(super) fn invalid(&self, problem: &str) -> DownloadError {
        DownloadError::InvalidUrl {
            url: self.shown.clone(),
            problem: problem.to_string(),
        }
    }
    pub(super) fn stalled(&self) -> DownloadError {
        DownloadError::Stalled {
            url: self.shown.clone(),
            stall_ms: self.limits.stall_ms,
        }
    }
    pub(super) fn cancelled(&self) -> DownloadError {
        DownloadError::Cancelled {
            url: self.shown.clone(),
        }
    }
    pub(super) fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    pub(super) fn stall(&self) -> Duration {
        Duration::from_millis(self.limits.stall_ms.max(TIMEOUT_MS_MIN))
    }
    pub(super) fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.connect_timeout_ms.max(TIMEOUT_MS_MIN))
    }
}

/// An opened download: its announced size, then its bytes.
pub(super) trait Source {
    fn size(&self) -> Option<u64>;
    /// Reads some bytes; 0 at the end.
    fn read(&mut self, buf: &mut [u8], ctx: &Ctx<'_>) -> Result<usize, DownloadError>;
    /// After the end: whatever the protocol says once the bytes are in.
    fn finish(&mut self, _ctx: &Ctx<'_>) -> Result<(), DownloadError> {
        Ok(())
    }
}

/// One line of at most `SHOWN_CHARS_MAX` characters.
pub(super) fn clip(text: &str) -> String {
    crate::message::clip(text, SHOWN_CHARS_MAX)
}

/// An `io::Error` in lowercase, without std's ` (os error N)`.
pub(super) fn io_problem(err: &io::Error) -> String {
    let text = err.to_string();
    let text = match text.find(" (os error") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn duration_text(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{} s", ms / 1000)
    } else {
        format!("{ms} ms")
    }
}
