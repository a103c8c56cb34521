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
mod shared;
mod sink;
mod url;

pub use crate::job_fields::{hex, parse_checksum};
use file::open_file;
use ftp::open_ftp;
use http::open_http;
use shared::{clip, Ctx, Source, TIMEOUT_MS_MIN};
pub use shared::{DownloadError, DownloadLimits, Downloaded, TEMP_PREFIX, TEMP_SUFFIX};
use sink::{free_space, Sink};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use url::shown_url;

/// The one copy buffer of a download.
const BUFFER_BYTES: usize = 64 * 1024;
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

#[cfg(test)]
mod tests;
