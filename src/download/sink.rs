//! The temporary file a download streams into: created with a free name and mode
//! 0600 in the target directory, hashed as it is written, fsync'd when finished and
//! removed otherwise; and the free-space check, before and during the copy.

use super::shared::{io_problem, DownloadError, Downloaded, MIB, TEMP_PREFIX, TEMP_SUFFIX};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Free space is checked again after every this many bytes written.
const SPACE_CHECK_EVERY_BYTES: u64 = 4 * MIB;
/// Mid-way, the margin may shrink to `free_bytes_min / MARGIN_MIDWAY_DIVISOR` (the
/// file system's own overhead for the file) before the download is aborted.
const MARGIN_MIDWAY_DIVISOR: u64 = 2;
const TEMP_MODE: u32 = 0o600;
/// Names tried for the temporary file before giving up.
const TEMP_NAME_TRIES_MAX: u32 = 64;

/// The temporary file being written; removed when dropped unless finished.
pub(super) struct Sink {
    file: File,
    path: PathBuf,
    dir: PathBuf,
    hasher: Sha256,
    pub(super) bytes: u64,
    size: Option<u64>,
    margin_bytes: u64,
    space_checked_at: u64,
    finished: bool,
}

static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Sink {
    pub(super) fn create(
        dir: &Path,
        size: Option<u64>,
        margin_bytes: u64,
    ) -> Result<Sink, DownloadError> {
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

    pub(super) fn write(&mut self, chunk: &[u8]) -> Result<(), DownloadError> {
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

    pub(super) fn finish(mut self) -> Result<Downloaded, DownloadError> {
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
pub(super) fn free_space(dir: &Path) -> Result<u64, DownloadError> {
    let disk = |problem: String| DownloadError::Disk {
        path: dir.to_path_buf(),
        problem,
    };
    crate::sys::free_bytes(dir)
        .map_err(|err| disk(format!("cannot check free space: {}", io_problem(&err))))
}
