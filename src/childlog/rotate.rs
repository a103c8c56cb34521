//! The file side of the child logs: one `LogFile` per path, opened at the first write
//! (creating the logs directory), rotated by size with the cut at a line end where the
//! chunk has one, and the failure streaks: one warning when writes start failing, one
//! line when they succeed again.

use super::config::LogConfig;
use super::shared::Shared;
use log::{info, warn};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Mode of a log file, and of the logs directory when it has to be created (section 8).
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;
/// Most bytes one `splice(2)` moves (a pipe holds less; this only bounds the request).
pub(super) const SPLICE_BYTES_MAX: usize = 1024 * 1024;

/// One log file and its rotation, shared by every pipe attached to its path.
pub(super) struct LogFile {
    path: PathBuf,
    /// Open from the first write on; closed after a failure, reopened at the next write.
    file: Option<File>,
    /// Size of the open file: its length at open plus what was written since.
    size_bytes: u64,
    /// False for a device or a FIFO (`/dev/null`, `/dev/full`): never rotated.
    rotates: bool,
    /// Pipes writing here; the entry goes with the last one.
    pub(super) users: usize,
    /// Bytes dropped in the current failure streak; `None` while writes succeed.
    pub(super) failing: Option<u64>,
    /// False once `splice(2)` was refused for this file (a file system without it).
    splices: bool,
    /// The file again, without `O_APPEND`, for `splice(2)` (see `open`).
    splice_out: Option<File>,
    /// Start of the current one-second window of `bytes_per_s_max`.
    window_start: Option<Instant>,
    /// Bytes that may still be written in the current window.
    allowance_bytes: u64,
    /// Bytes dropped in the current window for being over `bytes_per_s_max`.
    shed_bytes: u64,
    /// Output was dropped and may have ended mid-line (a drop through `splice(2)` is
    /// never looked at): what comes next, up to its first line end, is dropped too, so
    /// that the file holds whole lines.
    skip_to_line: bool,
    /// The allowance ran out mid-line: the next chunk writes through its first line end.
    finish_line: bool,
}

impl LogFile {
    pub(super) fn new(path: PathBuf) -> LogFile {
        LogFile {
            path,
            file: None,
            size_bytes: 0,
            rotates: true,
            users: 0,
            failing: None,
            splices: true,
            splice_out: None,
            window_start: None,
            allowance_bytes: 0,
            shed_bytes: 0,
            skip_to_line: false,
            finish_line: false,
        }
    }

    /// Takes a chunk read from a pipe under the allowance `allowed_bytes`: drops the end
    /// of a line whose start was dropped, writes through the first line end at or past
    /// the allowance (a line in progress when it runs out is finished, within one more
    /// chunk), and drops the rest. Returns the bytes written.
    pub(super) fn take(
        &mut self,
        data: &[u8],
        allowed_bytes: u64,
        config: &LogConfig,
        shared: &Shared,
    ) -> u64 {
        let mut data = data;
        if self.skip_to_line {
            let Some(end) = data.iter().position(|&b| b == b'\n') else {
                self.shed(data.len() as u64, shared);
                return 0;
            };
            let (partial, rest) = data.split_at(end + 1);
            self.shed(partial.len() as u64, shared);
            self.skip_to_line = false;
            data = rest;
        }
        let allowed = match usize::try_from(allowed_bytes) {
            Ok(0) if self.finish_line => 1, // through the end of the line in progress
            Ok(allowed) => allowed,
            Err(_) => usize::MAX,
        };
        let keep = match data.get(allowed.saturating_sub(1)..) {
            Some(past) if data.len() >= allowed => (past.iter().position(|&b| b == b'\n'))
                .map_or(data.len(), |i| allowed.saturating_sub(1) + i + 1),
            _ => data.len(),
        };
        let (kept, dropped) = data.split_at(keep);
        self.append(kept, config, shared);
        let was_finishing = std::mem::take(&mut self.finish_line);
        self.spend(kept.len() as u64);
        if !dropped.is_empty() {
            self.shed(dropped.len() as u64, shared);
            self.skip_to_line = dropped.last() != Some(&b'\n');
        } else if self.allowance_bytes == 0 && kept.last().is_some_and(|&b| b != b'\n') {
            // Out of allowance mid-line: the next chunk finishes it, once.
            self.finish_line = !was_finishing;
        }
        kept.len() as u64
    }

    /// Whether a line cut by the end of the allowance is to be finished before
    /// dropping (see `take`).
    pub(super) fn finishing_line(&self) -> bool {
        self.finish_line
    }

    /// Bytes that may be written now under `bytes_per_s_max` (`u64::MAX` without it).
    /// Each second starts a new window; one that dropped output leaves a line in the
    /// file saying how much, before the next output.
    pub(super) fn allowance(&mut self, now: Instant, config: &LogConfig, shared: &Shared) -> u64 {
        if config.bytes_per_s_max == 0 {
            return u64::MAX;
        }
        let due = self
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if due {
            if self.shed_bytes > 0 {
                // On a line of its own, after output that the limit cut mid-line.
                let newline = if self.ends_line() { "" } else { "\n" };
                let note = format!(
                    "{newline}[bootagent: {} bytes of output dropped, over {} bytes/s]\n",
                    self.shed_bytes, config.bytes_per_s_max
                );
                self.append(note.as_bytes(), config, shared);
            }
            self.window_start = Some(now);
            self.allowance_bytes = config.bytes_per_s_max;
            self.shed_bytes = 0;
        }
        self.allowance_bytes
    }

    /// Whether the file is empty or ends with a line end (one `pread(2)` of its last
    /// byte; true when that cannot be read).
    fn ends_line(&self) -> bool {
        let (Some(file), Some(last)) = (&self.file, self.size_bytes.checked_sub(1)) else {
            return true;
        };
        let mut byte = [b'\n'];
        let _ = file.read_at(&mut byte, last);
        byte[0] == b'\n'
    }

    /// Counts `bytes` written against the current window.
    pub(super) fn spend(&mut self, bytes: u64) {
        self.allowance_bytes = self.allowance_bytes.saturating_sub(bytes);
    }

    /// Counts `bytes` dropped for being over `bytes_per_s_max`.
    pub(super) fn shed(&mut self, bytes: u64, shared: &Shared) {
        self.skip_to_line = true;
        self.shed_bytes = self.shed_bytes.saturating_add(bytes);
        shared.shed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Moves what `pipe` holds straight into the file with `splice(2)` (no copy through
    /// BootAgent), as long as the file is more than a chunk away from its limit; the
    /// chunk that crosses the limit goes through [`LogFile::append`], which cuts it at a
    /// line end. `None`: use `append` this time (near the limit, not a regular file,
    /// no splice here, a failure streak, or an error for `append` to meet and report).
    /// `Some(Ok((moved, full)))`: `full` when it moved all it asked for (the pipe may
    /// hold more); `moved` 0 is end of file. `Some(Err(WouldBlock))`: nothing to read.
    pub(super) fn splice_from(
        &mut self,
        pipe: &File,
        config: &LogConfig,
        allowed_bytes: u64,
    ) -> Option<io::Result<(usize, bool)>> {
        let chunk = config.read_chunk_bytes as u64;
        // Near the end of the allowance, or after a drop, lines are cut by `take`.
        if self.failing.is_some() || !self.splices || self.skip_to_line || allowed_bytes <= chunk {
            return None;
        }
        let file = match self.file.take() {
            Some(file) => file,
            None => self.open().ok()?,
        };
        // At the file's end as it is now (someone may have truncated it).
        let end = file.metadata().map(|meta| meta.len());
        let (Some(out), Ok(end)) = (self.splice_out.as_ref(), end) else {
            self.file = Some(file);
            return None;
        };
        self.size_bytes = end;
        let room = config.file_bytes_max.saturating_sub(self.size_bytes);
        if !self.rotates || room <= chunk {
            self.file = Some(file);
            return None;
        }
        let len = usize::try_from((room - chunk).min(allowed_bytes - chunk))
            .unwrap_or(usize::MAX)
            .min(SPLICE_BYTES_MAX);
        match splice_into(pipe, out, Some(end), len) {
            Ok(moved) => {
                self.size_bytes = self.size_bytes.saturating_add(moved as u64);
                self.file = Some(file);
                Some(Ok((moved, moved == len)))
            }
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                self.file = Some(file);
                Some(Err(err))
            }
            Err(err) if err.raw_os_error() == Some(libc::EINVAL) => {
                self.splices = false;
                self.file = Some(file);
                None
            }
            // Closed: `append` reopens it (reading its size again) and meets the error.
            Err(_) => None,
        }
    }

    /// Appends `data`, rotating as needed. A failure drops what is left of it.
    pub(super) fn append(&mut self, data: &[u8], config: &LogConfig, shared: &Shared) {
        let mut rest = data;
        match self.write_rotating(&mut rest, config) {
            Ok(()) => {
                if let Some(dropped) = self.failing.take() {
                    info!(
                        "child log {}: writing again, {dropped} bytes were dropped",
                        self.path.display()
                    );
                }
            }
            Err(err) => {
                // Counted whole: part of it may have reached the file.
                let dropped = rest.len() as u64;
                shared.dropped_bytes.fetch_add(dropped, Ordering::Relaxed);
                match &mut self.failing {
                    Some(streak) => *streak = streak.saturating_add(dropped),
                    None => {
                        warn!(
                            "child log {}: {err}; dropping the child's output until a write succeeds",
                            self.path.display()
                        );
                        shared.failure_streaks.fetch_add(1, Ordering::Relaxed);
                        self.failing = Some(dropped);
                    }
                }
            }
        }
    }

    /// Writes `rest` out, advancing it past what was written. On error the file is
    /// left closed, to be reopened (and its size read again) at the next write.
    fn write_rotating(&mut self, rest: &mut &[u8], config: &LogConfig) -> io::Result<()> {
        let mut file = match self.file.take() {
            Some(file) => file,
            None => self.open()?,
        };
        if self.rotates && self.size_bytes >= config.file_bytes_max {
            drop(file);
            file = self.rotate(config)?;
        }
        // Each turn writes at least one byte: after a rotation the room is not zero.
        loop {
            let room = if self.rotates {
                config.file_bytes_max.saturating_sub(self.size_bytes)
            } else {
                u64::MAX
            };
            // A chunk that fills the file to its limit exactly goes in whole only if it
            // ends a line; else it is cut at its last line end, like one that overflows.
            let len = rest.len() as u64;
            if len < room || (len == room && rest.last() == Some(&b'\n')) {
                self.put(&file, rest)?;
                self.size_bytes = self.size_bytes.saturating_add(rest.len() as u64);
                *rest = &[];
                self.file = Some(file);
                return Ok(());
            }
            // `room` is less than `rest.len()`, a usize.
            let (now, later) = rest.split_at(cut_len(rest, room as usize));
            self.put(&file, now)?;
            *rest = later;
            drop(file);
            file = self.rotate(config)?;
        }
    }

    /// Appends `data` (`O_APPEND`: at the end even after someone truncated the file).
    fn put(&self, file: &File, data: &[u8]) -> io::Result<()> {
        (&*file).write_all(data)
    }

    /// Opens (creating) the file for appending, and reads its size and kind; for a
    /// regular file, also a second descriptor without `O_APPEND` (which `splice(2)`
    /// refuses) for `splice_from`.
    fn open(&mut self) -> io::Result<File> {
        self.splice_out = None;
        let open = || {
            OpenOptions::new()
                .create(true)
                .read(true)
                .append(true)
                .mode(FILE_MODE)
                .open(&self.path)
        };
        let file = match open() {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    match DirBuilder::new().mode(DIR_MODE).create(dir) {
                        Err(err) if err.kind() != io::ErrorKind::AlreadyExists => return Err(err),
                        _ => {}
                    }
                }
                open()?
            }
            opened => opened?,
        };
        let meta = file.metadata()?;
        self.rotates = meta.file_type().is_file();
        self.size_bytes = meta.len();
        if self.rotates {
            self.splice_out = OpenOptions::new().write(true).open(&self.path).ok();
        }
        Ok(file)
    }

    /// `NAME.log` → `NAME.log.1` → … → `NAME.log.(files_max-1)`, the last one
    /// replaced, then a new, empty `NAME.log`. With one file, that file starts over.
    fn rotate(&mut self, config: &LogConfig) -> io::Result<File> {
        let gone_is_fine = |result: io::Result<()>| match result {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        };
        if config.files_max <= 1 {
            gone_is_fine(fs::remove_file(&self.path))?;
        } else {
            for n in (1..config.files_max - 1).rev() {
                // An older file that cannot move is replaced instead: the bound holds.
                let _ = fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1));
            }
            gone_is_fine(fs::rename(&self.path, numbered(&self.path, 1)))?;
        }
        let file = self.open()?;
        if self.size_bytes >= config.file_bytes_max {
            return Err(io::Error::other("still full after rotation"));
        }
        Ok(file)
    }
}

/// How much of `chunk` goes into a file with `room` bytes left, before it rotates:
/// through the last line end that fits; else through the first line end past the room
/// (the file then exceeds its limit by less than one chunk); else exactly the room.
/// Always at least 1 (the room counts as 1 at least) and at most `chunk.len()`.
pub(super) fn cut_len(chunk: &[u8], room: usize) -> usize {
    let (fits, past) = chunk.split_at(room.max(1).min(chunk.len()));
    if let Some(i) = fits.iter().rposition(|&b| b == b'\n') {
        return i + 1;
    }
    match past.iter().position(|&b| b == b'\n') {
        Some(i) => fits.len() + i + 1,
        None => fits.len(),
    }
}

/// `PATH.n`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// `splice(2)` of up to `len` bytes from the non-blocking `pipe` into `file` at
/// `offset`: the bytes moved (0 at end of file), or the error (`WouldBlock` when the
/// pipe is empty).
pub(super) fn splice_into(
    pipe: &File,
    file: &File,
    offset: Option<u64>,
    len: usize,
) -> io::Result<usize> {
    let mut off_out = match offset {
        Some(offset) => {
            libc::loff_t::try_from(offset).map_err(|_| io::Error::other("file too large"))?
        }
        None => 0,
    };
    let off_out_ptr: *mut libc::loff_t = match offset {
        Some(_) => &mut off_out,
        None => std::ptr::null_mut(),
    };
    // SAFETY: both descriptors are open while borrowed; `off_out_ptr` is null or points
    // to `off_out`, a valid loff_t the call may update; no other memory is touched.
    let moved = unsafe {
        libc::splice(
            pipe.as_raw_fd(),
            std::ptr::null_mut(),
            file.as_raw_fd(),
            off_out_ptr,
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    usize::try_from(moved).map_err(|_| io::Error::last_os_error())
}
