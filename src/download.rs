//! Package downloads (PROTOCOL.md section 9): one URL streamed into a temporary file.
//!
//! Schemes: `http://` and `https://` (ureq; https only in a build with the `tls`
//! feature; up to `REDIRECTS_MAX` redirects), `file://` (a local absolute path,
//! `file:///abs/path` or `file://localhost/abs/path`) and `ftp://` (hand-rolled over
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
//! per-read timeout, socket read timeouts for FTP; a local file cannot stall); free
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
//! PROTOCOL.md section 7: 1 invalid URL, 2 download failed, 5 local disk.
//!
//! Not done: proxies for FTP (HTTP follows ureq's `*_PROXY` environment handling),
//! FTPS, active-mode FTP, HTTP resume.

use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;
/// Default largest download (PROTOCOL.md section 9: 1 GiB).
pub const BYTES_MAX_DEFAULT: u64 = 1024 * MIB;
/// Default time without a byte after which a download is aborted.
pub const STALL_MS_DEFAULT: u64 = 60_000;
/// Default TCP connect timeout.
pub const CONNECT_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Default free space left over after a download, so the metafile can still be written.
pub const FREE_BYTES_MIN_DEFAULT: u64 = 16 * MIB;
/// Temporary files are named `TEMP_PREFIX<pid>-<n>TEMP_SUFFIX`, so that leftovers of a
/// crash can be recognised and swept.
pub const TEMP_PREFIX: &str = ".download-";
pub const TEMP_SUFFIX: &str = ".part";

/// The one copy buffer of a download.
const BUFFER_BYTES: usize = 64 * 1024;
/// HTTP redirects followed (package URLs often redirect to a mirror).
const REDIRECTS_MAX: u32 = 5;
/// Largest HTTP answer head; ureq refuses a longer one.
const HTTP_HEAD_BYTES_MAX: usize = 64 * 1024;
/// Free space is checked again after every this many bytes written.
const SPACE_CHECK_EVERY_BYTES: u64 = 4 * MIB;
/// Mid-way, the margin may shrink to `free_bytes_min / MARGIN_MIDWAY_DIVISOR` (the
/// file system's own overhead for the file) before the download is aborted.
const MARGIN_MIDWAY_DIVISOR: u64 = 2;
/// Socket reads wake at least this often to look at `cancel`.
const POLL_MS: u64 = 200;
/// Shortest timeout given to a socket (a zero timeout is refused by std).
const TIMEOUT_MS_MIN: u64 = 1;
const TEMP_MODE: u32 = 0o600;
/// Names tried for the temporary file before giving up.
const TEMP_NAME_TRIES_MAX: u32 = 64;
const HTTP_PORT: u16 = 80;
const HTTPS_PORT: u16 = 443;
const FTP_PORT: u16 = 21;
const FTP_ANONYMOUS_USER: &[u8] = b"anonymous";
const FTP_ANONYMOUS_PASSWORD: &[u8] = b"bootagent@";
/// Longest FTP reply line read (RFC 959 lines are far shorter).
const FTP_LINE_BYTES_MAX: usize = 2048;
/// Most lines in one multi-line FTP reply (welcome banners).
const FTP_REPLY_LINES_MAX: usize = 200;
/// Most preliminary (1xx) replies accepted before the one awaited.
const FTP_PRELIMINARY_MAX: usize = 8;
/// FTP reply classes (the code's first digit) and the codes awaited by number.
const FTP_CLASS_DIVISOR: u16 = 100;
const FTP_PRELIMINARY: u16 = 1;
const FTP_COMPLETION: u16 = 2;
const FTP_INTERMEDIATE: u16 = 3;
const FTP_SIZE_OK: u16 = 213;
const FTP_PASV_OK: u16 = 227;
const FTP_EPSV_OK: u16 = 229;
/// Numbers in a `PASV` reply: four of the address, two of the port.
const PASV_NUMBERS: usize = 6;
/// How std's resolver failures begin (their kind is not public).
const LOOKUP_FAILED: &str = "failed to lookup address information";
/// Longest URL or server reply quoted in a message.
const SHOWN_CHARS_MAX: usize = 256;

/// Bounds of one download, and the TLS trust of `https://` URLs.
#[derive(Clone, Debug)]
pub struct DownloadLimits {
    /// A larger download is refused or aborted.
    pub bytes_max: u64,
    /// Aborted after this long without a byte.
    pub stall_ms: u64,
    /// TCP connect timeout.
    pub connect_timeout_ms: u64,
    /// Free space that must remain in the directory after the download.
    pub free_bytes_min: u64,
    /// Trust and identity for `https://` (the same as the server exchanges').
    pub tls: crate::tls::Loaded,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            bytes_max: BYTES_MAX_DEFAULT,
            stall_ms: STALL_MS_DEFAULT,
            connect_timeout_ms: CONNECT_TIMEOUT_MS_DEFAULT,
            free_bytes_min: FREE_BYTES_MIN_DEFAULT,
            tls: crate::tls::Loaded::default(),
        }
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
    /// The job errcode of PROTOCOL.md section 7.
    pub fn errcode(&self) -> u32 {
        match self {
            DownloadError::InvalidUrl { .. } => 1,
            DownloadError::NoSpace { .. }
            | DownloadError::DiskFilled { .. }
            | DownloadError::Disk { .. } => 5,
            DownloadError::Network(_)
            | DownloadError::Status { .. }
            | DownloadError::Ftp { .. }
            | DownloadError::Stalled { .. }
            | DownloadError::TooLarge { .. }
            | DownloadError::LengthMismatch { .. }
            | DownloadError::Source { .. }
            | DownloadError::Cancelled { .. } => 2,
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

/// Parses `SHA256:` followed by 64 hex digits (either case; the prefix too).
pub fn parse_checksum(text: &str) -> Result<[u8; 32], String> {
    const PREFIX: &str = "SHA256:";
    const HEX_DIGITS: usize = 64;
    let digits = match text.get(..PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &text[PREFIX.len()..],
        _ => return Err(format!("checksum must start with {PREFIX}: {}", clip(text))),
    };
    if digits.len() != HEX_DIGITS {
        return Err(format!(
            "checksum needs {HEX_DIGITS} hex digits after {PREFIX}, got {} characters",
            digits.chars().count()
        ));
    }
    let mut sum = [0u8; 32];
    for (i, pair) in digits.as_bytes().chunks(2).enumerate() {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(high), Some(low)) => sum[i] = high << 4 | low,
            _ => return Err(format!("checksum has a non-hex digit: {}", clip(text))),
        }
    }
    Ok(sum)
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
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

/// The temporary file being written; removed when dropped unless finished.
struct Sink {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    bytes: u64,
    size: Option<u64>,
    margin_bytes: u64,
    space_checked_at: u64,
    finished: bool,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Sink {
    fn create(dir: &Path, size: Option<u64>, margin_bytes: u64) -> Result<Sink, DownloadError> {
        let mut tries = 0;
        loop {
            let seq = TEMP_SEQ.fetch_add(1, Ordering::Relaxed);
            let name = format!("{TEMP_PREFIX}{}-{seq}{TEMP_SUFFIX}", std::process::id());
            let path = dir.join(name);
            let opened = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(TEMP_MODE)
                .open(&path);
            match opened {
                Ok(file) => {
                    return Ok(Sink {
                        file,
                        path,
                        dir: dir.to_path_buf(),
                        hasher: Sha256::new(),
                        bytes: 0,
                        size,
                        margin_bytes,
                        space_checked_at: 0,
                        finished: false,
                    })
                }
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    tries += 1;
                    if tries >= TEMP_NAME_TRIES_MAX {
                        return Err(DownloadError::Disk {
                            path,
                            problem: "no free temporary file name".to_string(),
                        });
                    }
                }
                Err(err) => {
                    return Err(DownloadError::Disk {
                        path,
                        problem: io_problem(&err),
                    })
                }
            }
        }
    }

    fn write(&mut self, chunk: &[u8]) -> Result<(), DownloadError> {
        if let Err(err) = self.file.write_all(chunk) {
            return Err(self.write_error(&err));
        }
        self.hasher.update(chunk);
        self.bytes += chunk.len() as u64;
        if self.bytes - self.space_checked_at >= SPACE_CHECK_EVERY_BYTES {
            self.space_checked_at = self.bytes;
            let free_bytes = free_space(&self.dir)?;
            let remaining = self.size.map_or(0, |size| size.saturating_sub(self.bytes));
            let margin = self.margin_bytes / MARGIN_MIDWAY_DIVISOR;
            if free_bytes < remaining.saturating_add(margin) {
                return Err(self.filled(free_bytes));
            }
        }
        Ok(())
    }

    fn write_error(&self, err: &io::Error) -> DownloadError {
        let full = matches!(err.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT));
        if full {
            self.filled(free_space(&self.dir).unwrap_or(0))
        } else {
            DownloadError::Disk {
                path: self.path.clone(),
                problem: io_problem(err),
            }
        }
    }

    fn filled(&self, free_bytes: u64) -> DownloadError {
        DownloadError::DiskFilled {
            dir: self.dir.clone(),
            written_bytes: self.bytes,
            free_bytes,
        }
    }

    fn finish(mut self) -> Result<Downloaded, DownloadError> {
        if let Err(err) = self.file.sync_all() {
            return Err(self.write_error(&err));
        }
        self.finished = true;
        Ok(Downloaded {
            path: self.path.clone(),
            bytes: self.bytes,
            sha256: std::mem::take(&mut self.hasher).finalize().into(),
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Bytes available to this process in the file system holding `dir`.
fn free_space(dir: &Path) -> Result<u64, DownloadError> {
    let disk = |problem: String| DownloadError::Disk {
        path: dir.to_path_buf(),
        problem,
    };
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| disk("path contains a NUL byte".to_string()))?;
    // SAFETY: statvfs is plain old data; all-zero bytes are a valid value.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is NUL-terminated and `stat` writable for the call's duration.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        let err = io::Error::last_os_error();
        return Err(disk(format!(
            "cannot check free space: {}",
            io_problem(&err)
        )));
    }
    // The field types are narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    Ok(free)
}

// ---------------------------------------------------------------- http

struct HttpSource {
    reader: ureq::BodyReader<'static>,
    size: Option<u64>,
    got: u64,
}

fn open_http(url: &str, ctx: &Ctx<'_>) -> Result<HttpSource, DownloadError> {
    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(ctx.connect_timeout()))
        .timeout_per_read(Some(ctx.stall()))
        .timeout_per_write(Some(ctx.stall()))
        .max_redirects(REDIRECTS_MAX)
        .max_response_header_size(HTTP_HEAD_BYTES_MAX)
        .max_idle_connections(0)
        .max_idle_connections_per_host(0)
        .user_agent(format!("bootagent/{}", env!("CARGO_PKG_VERSION")));
    #[cfg(feature = "tls")]
    let config = config.tls_config(crate::tls::ureq_config(&ctx.limits.tls));
    let config = config.build();
    let agent = ureq::Agent::new_with_config(config);
    let response = agent
        .get(url)
        .header("Connection", "close")
        .call()
        .map_err(|err| http_error(err, url, ctx))?;
    let code = response.status().as_u16();
    if !response.status().is_success() {
        return Err(DownloadError::Status {
            url: ctx.shown.clone(),
            code,
        });
    }
    let size = response.body().content_length();
    Ok(HttpSource {
        reader: response.into_body().into_reader(),
        size,
        got: 0,
    })
}

impl Source for HttpSource {
    fn size(&self) -> Option<u64> {
        self.size
    }

    fn read(&mut self, buf: &mut [u8], ctx: &Ctx<'_>) -> Result<usize, DownloadError> {
        loop {
            match self.reader.read(buf) {
                Ok(n) => {
                    self.got += n as u64;
                    return Ok(n);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(self.body_error(ureq::Error::from(err), ctx)),
            }
        }
    }
}

impl HttpSource {
    fn body_error(&self, err: ureq::Error, ctx: &Ctx<'_>) -> DownloadError {
        if ctx.is_cancelled() {
            return ctx.cancelled();
        }
        let url = &ctx.shown;
        match err {
            ureq::Error::Timeout(_) => ctx.stalled(),
            ureq::Error::Io(io) => match io.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ctx.stalled(),
                io::ErrorKind::UnexpectedEof => match self.size {
                    Some(expected) => DownloadError::LengthMismatch {
                        url: url.clone(),
                        got: self.got,
                        expected,
                    },
                    None => DownloadError::Network(format!(
                        "connection closed early after {} bytes from {url}",
                        self.got
                    )),
                },
                _ => DownloadError::Network(format!("{} downloading {url}", io_problem(&io))),
            },
            ureq::Error::Protocol(proto) => {
                DownloadError::Network(format!("bad HTTP body from {url}: {proto}"))
            }
            other => DownloadError::Network(format!("{other} downloading {url}")),
        }
    }
}

fn http_error(err: ureq::Error, url: &str, ctx: &Ctx<'_>) -> DownloadError {
    let shown = &ctx.shown;
    let target = || {
        split_url(url)
            .map(|parts| {
                let default = if parts.scheme.eq_ignore_ascii_case("https") {
                    HTTPS_PORT
                } else {
                    HTTP_PORT
                };
                host_port(parts.host, parts.port.unwrap_or(default))
            })
            .unwrap_or_else(|| shown.clone())
    };
    let network = DownloadError::Network;
    match err {
        ureq::Error::Timeout(ureq::Timeout::Connect | ureq::Timeout::Resolve) => {
            network(format!("timed out connecting to {}", target()))
        }
        ureq::Error::Timeout(_) => ctx.stalled(),
        ureq::Error::HostNotFound => network(format!("host not found: {}", target())),
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => {
                network(format!("connection refused to {}", target()))
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ctx.stalled(),
            io::ErrorKind::UnexpectedEof => network(format!(
                "connection closed without an answer by {}",
                target()
            )),
            // rustls reports a bad handshake as invalid data.
            io::ErrorKind::InvalidData => {
                network(format!("TLS failed with {}: {}", target(), io_problem(&io)))
            }
            _ if io.to_string().starts_with(LOOKUP_FAILED) => {
                network(format!("host not found: {}", target()))
            }
            _ => network(format!("{} with {}", io_problem(&io), target())),
        },
        // ureq's own text may quote the URL with its password: not shown.
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => ctx.invalid("invalid HTTP URL"),
        ureq::Error::TooManyRedirects => {
            network(format!("more than {REDIRECTS_MAX} redirects from {shown}"))
        }
        ureq::Error::RedirectFailed => network(format!("bad redirect from {shown}")),
        ureq::Error::LargeResponseHeader(_, _) => network(format!(
            "answer head over {HTTP_HEAD_BYTES_MAX} bytes from {shown}"
        )),
        ureq::Error::Protocol(proto) => network(format!("bad HTTP answer from {shown}: {proto}")),
        other => network(format!("{other} with {}", target())),
    }
}

// ---------------------------------------------------------------- file

struct FileSource {
    file: File,
    path: String,
    size: u64,
}

fn open_file(url: &str, ctx: &Ctx<'_>) -> Result<FileSource, DownloadError> {
    let parts = split_url(url).ok_or_else(|| ctx.invalid("bad file URL"))?;
    let local = parts.host.is_empty() || parts.host.eq_ignore_ascii_case("localhost");
    if !local || parts.userinfo.is_some() || parts.port.is_some() {
        return Err(ctx.invalid("a file URL names a local path: file:///path"));
    }
    let bytes = percent_decode(parts.path).map_err(|problem| ctx.invalid(&problem))?;
    if !bytes.starts_with(b"/") || bytes.contains(&0) {
        return Err(ctx.invalid("a file URL needs an absolute path: file:///path"));
    }
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
    let shown = clip(&path.display().to_string());
    let source_error = |err: io::Error| DownloadError::Source {
        path: shown.clone(),
        problem: io_problem(&err),
    };
    let file = File::open(&path).map_err(source_error)?;
    let meta = file.metadata().map_err(source_error)?;
    if !meta.is_file() {
        return Err(DownloadError::Source {
            path: shown,
            problem: "not a regular file".to_string(),
        });
    }
    Ok(FileSource {
        file,
        path: shown,
        size: meta.len(),
    })
}

impl Source for FileSource {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read(&mut self, buf: &mut [u8], _ctx: &Ctx<'_>) -> Result<usize, DownloadError> {
        loop {
            match self.file.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    return other.map_err(|err| DownloadError::Source {
                        path: self.path.clone(),
                        problem: io_problem(&err),
                    })
                }
            }
        }
    }
}

// ---------------------------------------------------------------- ftp

/// A socket whose reads wake every `POLL_MS` to look at the cancel flag, and fail
/// with `TimedOut` only after `stall` without a byte.
struct Polled<'a> {
    stream: TcpStream,
    stall: Duration,
    cancel: &'a AtomicBool,
}

impl<'a> Polled<'a> {
    fn new(stream: TcpStream, ctx: &Ctx<'a>) -> io::Result<Polled<'a>> {
        let stall = ctx.stall();
        stream.set_read_timeout(Some(stall.min(Duration::from_millis(POLL_MS))))?;
        stream.set_write_timeout(Some(stall))?;
        Ok(Polled {
            stream,
            stall,
            cancel: ctx.cancel,
        })
    }
}

impl Read for Polled<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let start = Instant::now();
        loop {
            if self.cancel.load(Ordering::Relaxed) {
                return Err(io::Error::other("cancelled"));
            }
            match self.stream.read(buf) {
                Err(err)
                    if matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if start.elapsed() >= self.stall {
                        return Err(io::Error::new(io::ErrorKind::TimedOut, "stalled"));
                    }
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }
}

/// One FTP reply: its code and its first line's text.
struct Reply {
    code: u16,
    text: String,
}

impl Reply {
    fn class(&self) -> u16 {
        self.code / FTP_CLASS_DIVISOR
    }
    fn shown(&self) -> String {
        format!("{} {}", self.code, self.text)
    }
}

/// The control connection.
struct Control<'a> {
    reader: BufReader<Polled<'a>>,
    /// `host:port` as the URL gave it, for messages.
    server: String,
}

impl<'a> Control<'a> {
    fn io_error(&self, err: &io::Error, ctx: &Ctx<'_>) -> DownloadError {
        if ctx.is_cancelled() {
            return ctx.cancelled();
        }
        match err.kind() {
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => ctx.stalled(),
            io::ErrorKind::UnexpectedEof => {
                DownloadError::Network(format!("ftp {}: connection closed", self.server))
            }
            _ => DownloadError::Network(format!("ftp {}: {}", self.server, io_problem(err))),
        }
    }

    fn refused(&self, reply: &Reply) -> DownloadError {
        DownloadError::Ftp {
            server: self.server.clone(),
            reply: reply.shown(),
        }
    }

    fn garbage(&self, problem: &str) -> DownloadError {
        DownloadError::Network(format!("ftp {}: {problem}", self.server))
    }

    /// One line without its CR LF, at most `FTP_LINE_BYTES_MAX` long.
    fn read_line(&mut self, ctx: &Ctx<'_>) -> Result<Vec<u8>, DownloadError> {
        let mut line = Vec::new();
        let mut bounded = (&mut self.reader).take(FTP_LINE_BYTES_MAX as u64 + 1);
        if let Err(err) = bounded.read_until(b'\n', &mut line) {
            return Err(self.io_error(&err, ctx));
        }
        if line.last() != Some(&b'\n') {
            if line.len() > FTP_LINE_BYTES_MAX {
                return Err(self.garbage(&format!("reply line over {FTP_LINE_BYTES_MAX} bytes")));
            }
            let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
            return Err(self.io_error(&eof, ctx));
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        Ok(line)
    }

    /// One reply, multi-line ones (`123-` … `123 `) included.
    fn read_reply(&mut self, ctx: &Ctx<'_>) -> Result<Reply, DownloadError> {
        let first = self.read_line(ctx)?;
        let code = reply_code(&first).ok_or_else(|| {
            let text = String::from_utf8_lossy(&first);
            self.garbage(&format!("not an FTP reply: {}", clip(&text)))
        })?;
        let text = clip(String::from_utf8_lossy(first.get(4..).unwrap_or_default()).trim());
        if first.get(3) == Some(&b'-') {
            let mut lines = 1;
            loop {
                if lines >= FTP_REPLY_LINES_MAX {
                    return Err(self.garbage(&format!("reply over {FTP_REPLY_LINES_MAX} lines")));
                }
                let line = self.read_line(ctx)?;
                lines += 1;
                let last =
                    line.get(..3) == first.get(..3) && matches!(line.get(3), None | Some(b' '));
                if last {
                    break;
                }
            }
        }
        Ok(Reply { code, text })
    }

    /// The next reply that is not preliminary (1xx).
    fn read_final(&mut self, ctx: &Ctx<'_>) -> Result<Reply, DownloadError> {
        for _ in 0..FTP_PRELIMINARY_MAX {
            let reply = self.read_reply(ctx)?;
            if reply.class() != FTP_PRELIMINARY {
                return Ok(reply);
            }
        }
        Err(self.garbage(&format!("over {FTP_PRELIMINARY_MAX} preliminary replies")))
    }

    fn send(&mut self, verb: &str, arg: &[u8], ctx: &Ctx<'_>) -> Result<(), DownloadError> {
        let mut line = Vec::with_capacity(verb.len() + arg.len() + 3);
        line.extend_from_slice(verb.as_bytes());
        if !arg.is_empty() {
            line.push(b' ');
            line.extend_from_slice(arg);
        }
        line.extend_from_slice(b"\r\n");
        let mut stream = &self.reader.get_ref().stream;
        stream
            .write_all(&line)
            .map_err(|err| self.io_error(&err, ctx))
    }

    /// Sends one command and returns its first reply (which may be preliminary).
    fn command(&mut self, verb: &str, arg: &[u8], ctx: &Ctx<'_>) -> Result<Reply, DownloadError> {
        self.send(verb, arg, ctx)?;
        self.read_reply(ctx)
    }

    /// Sends one command and returns its final reply.
    fn command_final(
        &mut self,
        verb: &str,
        arg: &[u8],
        ctx: &Ctx<'_>,
    ) -> Result<Reply, DownloadError> {
        self.send(verb, arg, ctx)?;
        self.read_final(ctx)
    }
}

/// `123 text`, `123-text` or `123`: the code, 1xx to 5xx.
fn reply_code(line: &[u8]) -> Option<u16> {
    let digits = line.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(b'1'..=b'5').contains(&digits[0]) {
        return None;
    }
    if !matches!(line.get(3), None | Some(b' ' | b'-')) {
        return None;
    }
    Some(
        digits
            .iter()
            .fold(0u16, |code, d| code * 10 + u16::from(d - b'0')),
    )
}

struct FtpSource<'a> {
    control: Control<'a>,
    data: Polled<'a>,
    size: Option<u64>,
}

fn open_ftp<'a>(url: &str, ctx: &Ctx<'a>) -> Result<FtpSource<'a>, DownloadError> {
    let parts = split_url(url).ok_or_else(|| ctx.invalid("bad ftp URL"))?;
    if parts.host.is_empty() {
        return Err(ctx.invalid("no host in ftp URL"));
    }
    let decode = |text: &str| -> Result<Vec<u8>, DownloadError> {
        let bytes = percent_decode(text).map_err(|problem| ctx.invalid(&problem))?;
        if bytes.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(ctx.invalid("control characters in ftp URL"));
        }
        Ok(bytes)
    };
    let (user, password) = match parts.userinfo {
        None => (FTP_ANONYMOUS_USER.to_vec(), FTP_ANONYMOUS_PASSWORD.to_vec()),
        Some(info) => match info.split_once(':') {
            Some((user, password)) => (decode(user)?, decode(password)?),
            None => (decode(info)?, Vec::new()),
        },
    };
    let path = decode(parts.path.strip_prefix('/').unwrap_or(parts.path))?;
    if path.is_empty() {
        return Err(ctx.invalid("no file path in ftp URL"));
    }
    let server = host_port(parts.host, parts.port.unwrap_or(FTP_PORT));
    let stream = connect(parts.host, parts.port.unwrap_or(FTP_PORT), &server, ctx)?;
    let peer = stream
        .peer_addr()
        .map_err(|err| DownloadError::Network(format!("ftp {server}: {}", io_problem(&err))))?;
    let polled = Polled::new(stream, ctx)
        .map_err(|err| DownloadError::Network(format!("ftp {server}: {}", io_problem(&err))))?;
    let mut control = Control {
        reader: BufReader::new(polled),
        server,
    };

    let greeting = control.read_final(ctx)?;
    if greeting.class() != FTP_COMPLETION {
        return Err(control.refused(&greeting));
    }
    let mut reply = control.command_final("USER", &user, ctx)?;
    if reply.class() == FTP_INTERMEDIATE {
        reply = control.command_final("PASS", &password, ctx)?;
    }
    if reply.class() != FTP_COMPLETION {
        return Err(control.refused(&reply));
    }
    let reply = control.command_final("TYPE", b"I", ctx)?;
    if reply.class() != FTP_COMPLETION {
        return Err(control.refused(&reply));
    }
    let reply = control.command_final("SIZE", &path, ctx)?;
    let size = if reply.code == FTP_SIZE_OK {
        reply.text.trim().parse::<u64>().ok()
    } else {
        None
    };

    let data_port = passive_port(&mut control, peer.ip(), ctx)?;
    let data_addr = SocketAddr::new(peer.ip(), data_port);
    let data = TcpStream::connect_timeout(&data_addr, ctx.connect_timeout())
        .and_then(|stream| Polled::new(stream, ctx))
        .map_err(|err| connect_error(&err, &data_addr.to_string(), ctx))?;

    let reply = control.command("RETR", &path, ctx)?;
    if reply.class() != FTP_PRELIMINARY {
        return Err(control.refused(&reply));
    }
    Ok(FtpSource {
        control,
        data,
        size,
    })
}

/// The data port of a passive transfer: `EPSV`, else `PASV` on IPv4. The address of a
/// `PASV` reply is ignored for the control connection's (as behind NAT it is wrong).
fn passive_port(
    control: &mut Control<'_>,
    peer: IpAddr,
    ctx: &Ctx<'_>,
) -> Result<u16, DownloadError> {
    let reply = control.command_final("EPSV", b"", ctx)?;
    if reply.code == FTP_EPSV_OK {
        return epsv_port(&reply.text)
            .ok_or_else(|| control.garbage(&format!("bad EPSV reply: {}", reply.shown())));
    }
    if peer.is_ipv6() {
        return Err(control.refused(&reply));
    }
    let reply = control.command_final("PASV", b"", ctx)?;
    if reply.code != FTP_PASV_OK {
        return Err(control.refused(&reply));
    }
    pasv_port(&reply.text)
        .ok_or_else(|| control.garbage(&format!("bad PASV reply: {}", reply.shown())))
}

/// `Entering Extended Passive Mode (|||6446|)`: the port.
fn epsv_port(text: &str) -> Option<u16> {
    let inside = text.split_once('(')?.1.split_once(')')?.0;
    let delimiter = inside.chars().next()?;
    let fields: Vec<&str> = inside.split(delimiter).collect();
    match fields.as_slice() {
        ["", "", "", port, ""] => port.parse::<u16>().ok().filter(|&port| port != 0),
        _ => None,
    }
}

/// `Entering Passive Mode (h1,h2,h3,h4,p1,p2)`: the port.
fn pasv_port(text: &str) -> Option<u16> {
    let start = text.find(|c: char| c.is_ascii_digit())?;
    let numbers: Vec<u8> = text[start..]
        .split(',')
        .take(PASV_NUMBERS)
        .map(|field| {
            let digits: String = field.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u8>().ok()
        })
        .collect::<Option<Vec<u8>>>()?;
    if numbers.len() != PASV_NUMBERS {
        return None;
    }
    let port = u16::from(numbers[4]) << 8 | u16::from(numbers[5]);
    (port != 0).then_some(port)
}

impl Source for FtpSource<'_> {
    fn size(&self) -> Option<u64> {
        self.size
    }

    fn read(&mut self, buf: &mut [u8], ctx: &Ctx<'_>) -> Result<usize, DownloadError> {
        self.data
            .read(buf)
            .map_err(|err| self.control.io_error(&err, ctx))
    }

    fn finish(&mut self, ctx: &Ctx<'_>) -> Result<(), DownloadError> {
        let _ = self.data.stream.shutdown(std::net::Shutdown::Both);
        let reply = self.control.read_final(ctx)?;
        if reply.class() != FTP_COMPLETION {
            return Err(self.control.refused(&reply));
        }
        // Courtesy only: the connection is closed right after either way.
        let _ = self.control.send("QUIT", b"", ctx);
        Ok(())
    }
}

fn connect(host: &str, port: u16, server: &str, ctx: &Ctx<'_>) -> Result<TcpStream, DownloadError> {
    let addrs = (host, port)
        .to_socket_addrs()
        .map_err(|_| DownloadError::Network(format!("host not found: {server}")))?;
    let mut last = None;
    for addr in addrs {
        if ctx.is_cancelled() {
            return Err(ctx.cancelled());
        }
        match TcpStream::connect_timeout(&addr, ctx.connect_timeout()) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(match last {
        Some(err) => connect_error(&err, server, ctx),
        None => DownloadError::Network(format!("host not found: {server}")),
    })
}

fn connect_error(err: &io::Error, target: &str, ctx: &Ctx<'_>) -> DownloadError {
    if ctx.is_cancelled() {
        return ctx.cancelled();
    }
    DownloadError::Network(match err.kind() {
        io::ErrorKind::ConnectionRefused => format!("connection refused to {target}"),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
            format!("timed out connecting to {target}")
        }
        _ => format!("{} connecting to {target}", io_problem(err)),
    })
}

// ---------------------------------------------------------------- URLs and text

/// The parts of `scheme://[userinfo@]host[:port][/path][#fragment]` used here.
struct UrlParts<'a> {
    scheme: &'a str,
    userinfo: Option<&'a str>,
    /// Without the brackets of an IPv6 literal.
    host: &'a str,
    port: Option<u16>,
    /// From the first `/` on (empty when none), without a fragment.
    path: &'a str,
}

fn split_url(url: &str) -> Option<UrlParts<'_>> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let path = path.split('#').next().unwrap_or_default();
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((info, host_port)) => (Some(info), host_port),
        None => (None, authority),
    };
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    let port = match port {
        None | Some("") => None,
        Some(text) => Some(text.parse::<u16>().ok().filter(|&port| port != 0)?),
    };
    Some(UrlParts {
        scheme,
        userinfo,
        host,
        port,
        path,
    })
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        clip(&format!("[{host}]:{port}"))
    } else {
        clip(&format!("{host}:{port}"))
    }
}

fn percent_decode(text: &str) -> Result<Vec<u8>, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let high = bytes.get(i + 1).copied().and_then(hex_value);
            let low = bytes.get(i + 2).copied().and_then(hex_value);
            match (high, low) {
                (Some(high), Some(low)) => out.push(high << 4 | low),
                _ => return Err("bad percent-encoding".to_string()),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// The URL as it may be shown: password masked, one line, bounded.
fn shown_url(url: &str) -> String {
    let masked = (|| {
        let scheme_end = url.find("://")? + 3;
        let rest = &url[scheme_end..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let at = authority.rfind('@')?;
        let user_end = authority[..at].find(':')?;
        Some(format!(
            "{}{}:***{}",
            &url[..scheme_end],
            &authority[..user_end],
            &rest[at..]
        ))
    })();
    clip(masked.as_deref().unwrap_or(url))
}

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
#[path = "download_tests.rs"]
mod tests;
