//! The file side of the child logs: one `LogFile` per path, opened at the first write
//! (creating the logs directory), rotated by size with the cut at a line end where the
//! chunk has one, and the failure streaks: one warning when writes start failing, one
//! line when they succeed again.

use super::{LogConfig, Shared};
use log::{info, warn};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

/// Mode of a log file, and of the logs directory when it has to be created (section 8).
const FILE_MODE: u32 = 0o640;
const DIR_MODE: u32 = 0o750;

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
            if rest.len() as u64 <= room {
                (&file).write_all(rest)?;
                self.size_bytes = self.size_bytes.saturating_add(rest.len() as u64);
                *rest = &[];
                self.file = Some(file);
                return Ok(());
            }
            // `room` is less than `rest.len()`, a usize.
            let (now, later) = rest.split_at(cut_len(rest, room as usize));
            (&file).write_all(now)?;
            *rest = later;
            drop(file);
            file = self.rotate(config)?;
        }
    }

    /// Opens (creating) the file for appending, and reads its size and kind.
    fn open(&mut self) -> io::Result<File> {
        let open = || {
            OpenOptions::new()
                .create(true)
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
