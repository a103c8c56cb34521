//! Package downloads (docs/protocol.md section 9): one URL streamed into a temporary file.
//!
//! Schemes: `http://` and `https://` (ureq; https only in a build with the `tls`
//! feature; up to `REDIRECTS_MAX` redirects), `file://` (a local absolute path,
//! `file:///abs/path` or `file://localhost/abs/path`, under one of `file_url_roots`
//! once symlinks are resolved, else refused with errcode 2 before it is opened) and `ftp://` (hand-rolled over
//! `TcpStream`: passive mode, `EPSV` first and `PASV` as the fallback on IPv4, binary
//! type, `SIZE` when the server has it; anonymous unless the URL carries
//! `user:password@`; user, password and path are percent-decoded, and the path is
//! retrieved relative to the login directory as RFC 1738 says, so `%2F` makes it
//! absolute). Any other scheme is an invalid URL (errcode 1).
//!
//! Streaming: the content goes through one fixed buffer of `BUFFER_BYTES` into a new
//! temporary file in the target directory (named `TEMP_PREFIX…TEMP_SUFFIX`, mode 0600)
//! while its SHA256 is computed; it is never held whole in memory. On success the file
//! is fsync'd and handed over; on any error it is removed.
//!
//! Bounds (`DownloadLimits`): a size over `bytes_max` is refused as soon as it is
//! announced (Content-Length, file size, FTP `SIZE`) and aborted as soon as it is
//! exceeded otherwise; a transfer with no byte for `stall_ms` is aborted (ureq's
//! per-read timeout, socket read timeouts for FTP; a local file cannot stall), and so
//! is one that trickles: below `speed_min_bytes_per_s` in every one-second sample for
//! `stall_ms` (curl's `--speed-limit`/`--speed-time`), so that a server sending a byte
//! now and then cannot hold the one job slot for ever; free
//! space (`statvfs` on the directory) must be the announced size plus
//! `free_bytes_min`, or `free_bytes_min` when the size is unknown, and is checked
//! again every `SPACE_CHECK_EVERY_BYTES` written. `cancel` is checked between reads:
//! within `POLL_MS` for FTP and file, within `stall_ms` at worst for HTTP (ureq's read
//! cannot be interrupted). A body shorter than announced is an error. FTP replies are
//! read with bounded line lengths and line counts, so a hostile server cannot make
//! the agent buffer without end; ureq bounds HTTP headers the same way.
//!
//! Errors (`DownloadError`) are one line naming the URL or server and the problem,
//! with the password of a URL masked (`user:***@`); `errcode()` maps them onto
//! docs/protocol.md section 7: 1 invalid URL, 2 download failed, 5 local disk.
//!
//! Not done: proxies for FTP (HTTP follows ureq's `*_PROXY` environment handling),
//! FTPS, active-mode FTP, HTTP resume.

mod file;
mod ftp;
mod http;
mod sink;
mod url;

use crate::job_fields::ErrCode;
pub use crate::job_fields::{hex, parse_checksum};
use crate::limits::Limits;
use file::open_file;
use ftp::open_ftp;
use http::open_http;
use sink::{free_space, Sink};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use url::shown_url;

/// A mebibyte, for messages.
const MIB: u64 = 1024 * 1024;
/// Temporary files are named `TEMP_PREFIX<pid>-<n>TEMP_SUFFIX`, so that leftovers of a
/// crash can be recognised and swept.
pub const TEMP_PREFIX: &str = ".download-";
pub const TEMP_SUFFIX: &str = ".part";

/// The one copy buffer of a download.
const BUFFER_BYTES: usize = 64 * 1024;
/// Shortest timeout given to a socket (a zero timeout is refused by std).
const TIMEOUT_MS_MIN: u64 = 1;
/// Longest URL or server reply quoted in a message.
const SHOWN_CHARS_MAX: usize = 256;

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

/// Streams `url` into a new temporary file in `dir` while computing its SHA256, within
/// `limits`; see the module documentation. The temporary file is removed on any error.
pub fn download(
    url: &str,
    dir: &Path,
    limits: &DownloadLimits,
    cancel: &AtomicBool,
) -> Result<Downloaded, DownloadError> {
    let ctx = Ctx {
        shown: shown_url(url),
        limits,
        cancel,
    };
    let scheme = url.find("://").map(|end| url[..end].to_ascii_lowercase());
    let result = match scheme.as_deref() {
        Some("http") => open_http(url, &ctx).and_then(|mut s| transfer(&mut s, dir, &ctx)),
        Some("https") if cfg!(feature = "tls") => {
            open_http(url, &ctx).and_then(|mut s| transfer(&mut s, dir, &ctx))
        }
        Some("https") => Err(ctx.invalid("https:// needs a bootagent built with the tls feature")),
        Some("file") => open_file(url, &ctx).and_then(|mut s| transfer(&mut s, dir, &ctx)),
        Some("ftp") => open_ftp(url, &ctx).and_then(|mut s| transfer(&mut s, dir, &ctx)),
        Some(other) => Err(ctx.invalid(&format!(
            "unsupported URL scheme {} (http, https, file and ftp are)",
            clip(other)
        ))),
        None => Err(ctx.invalid("not a URL")),
    };
    match &result {
        Ok(done) => log::debug!("downloaded {} ({} bytes)", ctx.shown, done.bytes),
        Err(err) => log::debug!("download failed: {err}"),
    }
    result
}

// ---------------------------------------------------------------- the copy

/// What one download needs everywhere: the URL as it may be shown, the bounds and
/// the cancel flag.
struct Ctx<'a> {
    shown: String,
    limits: &'a DownloadLimits,
    cancel: &'a AtomicBool,
}

impl Ctx<'_> {
    fn invalid(&self, problem: &str) -> DownloadError {
        DownloadError::InvalidUrl {
            url: self.shown.clone(),
            problem: problem.to_string(),
        }
    }
    fn stalled(&self) -> DownloadError {
        DownloadError::Stalled {
            url: self.shown.clone(),
            stall_ms: self.limits.stall_ms,
        }
    }
    fn cancelled(&self) -> DownloadError {
        DownloadError::Cancelled {
            url: self.shown.clone(),
        }
    }
    fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
    fn stall(&self) -> Duration {
        Duration::from_millis(self.limits.stall_ms.max(TIMEOUT_MS_MIN))
    }
    fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.limits.connect_timeout_ms.max(TIMEOUT_MS_MIN))
    }
}

/// An opened download: its announced size, then its bytes.
trait Source {
    fn size(&self) -> Option<u64>;
    /// Reads some bytes; 0 at the end.
    fn read(&mut self, buf: &mut [u8], ctx: &Ctx<'_>) -> Result<usize, DownloadError>;
    /// After the end: whatever the protocol says once the bytes are in.
    fn finish(&mut self, _ctx: &Ctx<'_>) -> Result<(), DownloadError> {
        Ok(())
    }
}

fn transfer(
    source: &mut impl Source,
    dir: &Path,
    ctx: &Ctx<'_>,
) -> Result<Downloaded, DownloadError> {
    let limits = ctx.limits;
    let size = source.size();
    if size.is_some_and(|size| size > limits.bytes_max) {
        return Err(DownloadError::TooLarge {
            url: ctx.shown.clone(),
            bytes_max: limits.bytes_max,
        });
    }
    let need_bytes = size.unwrap_or(0).saturating_add(limits.free_bytes_min);
    let free_bytes = free_space(dir)?;
    if free_bytes < need_bytes {
        return Err(DownloadError::NoSpace {
            dir: dir.to_path_buf(),
            need_bytes,
            free_bytes,
        });
    }
    let mut sink = Sink::create(dir, size, limits.free_bytes_min)?;
    let mut buf = vec![0u8; BUFFER_BYTES];
    let mut pace = Pace::new(limits, Instant::now());
    loop {
        if ctx.is_cancelled() {
            return Err(ctx.cancelled());
        }
        let n = source.read(&mut buf, ctx)?;
        if n == 0 {
            break;
        }
        if sink.bytes.saturating_add(n as u64) > limits.bytes_max {
            return Err(DownloadError::TooLarge {
                url: ctx.shown.clone(),
                bytes_max: limits.bytes_max,
            });
        }
        sink.write(&buf[..n])?;
        pace.add(n as u64, Instant::now())
            .map_err(|slow| DownloadError::TooSlow {
                url: ctx.shown.clone(),
                bytes: slow.bytes,
                elapsed_ms: slow.elapsed_ms,
                speed_min_bytes_per_s: limits.speed_min_bytes_per_s,
            })?;
    }
    source.finish(ctx)?;
    if let Some(expected) = size.filter(|&expected| expected != sink.bytes) {
        return Err(DownloadError::LengthMismatch {
            url: ctx.shown.clone(),
            got: sink.bytes,
            expected,
        });
    }
    sink.finish()
}

/// The speed check, as curl's `--speed-limit`/`--speed-time`: the speed is measured
/// over samples of `PACE_SAMPLE_MS` (or the window, if shorter), and a transfer fails
/// once every sample for `window_ms` has been below the floor; one sample at or above
/// it starts the count again, so a slow start followed by a fast link passes. Pure
/// (`now` is passed in).
struct Pace {
    floor_bytes_per_s: u64,
    window_ms: u64,
    sample_ms: u64,
    sample_start: Instant,
    sample_bytes: u64,
    /// Since when every sample was slow, and the bytes received since.
    slow_since: Option<Instant>,
    slow_bytes: u64,
}

/// Length of one speed sample.
const PACE_SAMPLE_MS: u64 = 1000;

/// A transfer below the floor: the bytes it received over `elapsed_ms`.
#[derive(Debug, PartialEq, Eq)]
struct Slow {
    bytes: u64,
    elapsed_ms: u64,
}

impl Pace {
    fn new(limits: &DownloadLimits, now: Instant) -> Pace {
        let window_ms = limits.stall_ms.max(TIMEOUT_MS_MIN);
        Pace {
            floor_bytes_per_s: limits.speed_min_bytes_per_s,
            window_ms,
            sample_ms: window_ms.min(PACE_SAMPLE_MS),
            sample_start: now,
            sample_bytes: 0,
            slow_since: None,
            slow_bytes: 0,
        }
    }

    /// Counts `n` bytes received at `now`.
    fn add(&mut self, n: u64, now: Instant) -> Result<(), Slow> {
        if self.floor_bytes_per_s == 0 {
            return Ok(());
        }
        self.sample_bytes = self.sample_bytes.saturating_add(n);
        let sample_ms = millis(now.saturating_duration_since(self.sample_start));
        if sample_ms < self.sample_ms {
            return Ok(());
        }
        let slow = self.sample_bytes.saturating_mul(1000)
            < self.floor_bytes_per_s.saturating_mul(sample_ms);
        let result = if slow {
            let since = *self.slow_since.get_or_insert(self.sample_start);
            self.slow_bytes = self.slow_bytes.saturating_add(self.sample_bytes);
            let elapsed_ms = millis(now.saturating_duration_since(since));
            if elapsed_ms >= self.window_ms {
                Err(Slow {
                    bytes: self.slow_bytes,
                    elapsed_ms,
                })
            } else {
                Ok(())
            }
        } else {
            self.slow_since = None;
            self.slow_bytes = 0;
            Ok(())
        };
        self.sample_start = now;
        self.sample_bytes = 0;
        result
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

// ---------------------------------------------------------------- text

/// One line of at most `SHOWN_CHARS_MAX` characters.
fn clip(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(SHOWN_CHARS_MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().nth(SHOWN_CHARS_MAX).is_some() {
        out.push('…');
    }
    out
}

/// An `io::Error` in lowercase, without std's ` (os error N)`.
fn io_problem(err: &io::Error) -> String {
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

#[cfg(test)]
mod tests;
