//! What every part of the unpacker shares: its bounds ([`UnpackLimits`] and the
//! fixed ones), its error and how one is made (the package's fault or the host's),
//! what an unpacking returns, and the small helpers that read, create and quote.
//! The other files of `unpack/` import this one; it imports none of them.

use crate::job_fields::ErrCode;
use crate::limits::Limits;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Largest single file, whatever `bytes_max` allows.
pub const FILE_BYTES_MAX: u64 = 1 << 30;
/// Longest name in a path (Linux `NAME_MAX`).
pub const NAME_BYTES_MAX: usize = 255;
/// Largest pax header (`x` or `g`) read or skipped.
pub const PAX_HEADER_BYTES_MAX: u64 = 64 * 1024;
/// Largest `VERSION` file read.
pub const VERSION_FILE_BYTES_MAX: u64 = 256;

pub(super) const RUN_FILE: &str = "run";
/// Mode of a single executable's `run`, and of directories the archive implies.
pub(super) const RUN_MODE: u32 = 0o755;
pub(super) const DIR_MODE: u32 = 0o755;
/// Permission bits shown in messages.
pub(super) const PERMISSION_BITS: u32 = 0o777;
/// A file's mode while its content is being written.
pub(super) const WRITING_MODE: u32 = 0o600;
/// Size of the buffer that copies file contents.
pub(super) const COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Characters of an untrusted name shown in a message.
pub(super) const SHOWN_CHARS_MAX: usize = 128;
/// Characters of a bad-package message.
pub(super) const MESSAGE_CHARS_MAX: usize = 512;

/// Bounds of one unpacking (defaults: 1 GiB unpacked in total, 100 000 entries,
/// paths of 4096 bytes, 1 MiB of free space kept; one file is also bounded by
/// [`FILE_BYTES_MAX`], 1 GiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Data of all entries together, in bytes (a single executable's size).
    pub bytes_max: u64,
    /// Entries of an archive (files, directories, links, pax global headers).
    pub entries_max: u64,
    /// Length of an entry's path or link target, in bytes.
    pub path_bytes_max: usize,
    /// Free space that must remain on the file system after unpacking, in bytes.
    pub reserve_bytes: u64,
}

impl UnpackLimits {
    /// The bounds of `limits` (`unpack_*`, `disk_reserve_bytes`).
    pub fn new(limits: &Limits) -> Self {
        UnpackLimits {
            bytes_max: limits.unpack_bytes_max,
            entries_max: limits.unpack_entries_max,
            path_bytes_max: limits.unpack_path_bytes_max,
            reserve_bytes: limits.disk_reserve_bytes,
        }
    }
}

impl Default for UnpackLimits {
    /// The bounds of `Limits::default()`.
    fn default() -> Self {
        UnpackLimits::new(&Limits::default())
    }
}

/// Why a package was not unpacked: errcode 4 (bad package) or 5 (install failed).
#[derive(Debug)]
pub struct UnpackError {
    pub errcode: ErrCode,
    pub message: String,
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UnpackError {}

/// The package's fault. Messages may quote the tar crate, which shows names
/// raw: control characters are escaped and the length bounded, to keep one line.
pub(super) fn bad(message: String) -> UnpackError {
    let mut line = String::new();
    for c in message.chars().take(MESSAGE_CHARS_MAX) {
        if c.is_control() {
            line.extend(c.escape_default());
        } else {
            line.push(c);
        }
    }
    UnpackError {
        errcode: ErrCode::BadPackage,
        message: line,
    }
}

pub(super) fn failed(message: String) -> UnpackError {
    UnpackError {
        errcode: ErrCode::InstallFailed,
        message,
    }
}

/// An error looking at a path inside `dest`: a path the package made too long for
/// the file system is the package's fault (4); anything else the host's (5).
pub(super) fn checking(path: &Path, e: io::Error) -> UnpackError {
    if e.raw_os_error() == Some(libc::ENAMETOOLONG) {
        return bad("an entry makes a path too long for the file system".to_string());
    }
    failed(format!("checking {}: {e}", path.display()))
}

/// What was unpacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unpacked {
    /// Content of a `VERSION` file at the package root, trimmed, if `valid_version`.
    pub version_file: Option<String>,
    /// The package's own version (rpm `VERSION-RELEASE`, deb `Version` with an
    /// epoch's `:` as `_`), if `valid_version` accepts it.
    pub package_version: Option<String>,
    /// Maintainer scripts the package has, which were not run (rpm `%post`, deb
    /// `postinst`, ...).
    pub scripts: Vec<String>,
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries of the archive (1 for a single executable).
    pub entries: u64,
}

/// What the job says about the program to run (rpm, deb, or any archive with `exec`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Program<'a> {
    /// The agent's name: `usr/bin/NAME`, `usr/sbin/NAME`, `opt/NAME/bin/NAME`.
    pub name: &'a str,
    /// The job's `exec`: a path inside the package.
    pub exec: Option<&'a str>,
}

/// Creates a new file for writing, never through or over an existing name.
pub(super) fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(WRITING_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read.
pub(super) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An untrusted name for a message: lossy UTF-8, quoted and escaped, shortened.
pub(super) fn quote(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .take(SHOWN_CHARS_MAX)
        .collect();
    format!("{text:?}")
}

pub(super) fn quote_path(path: &Path) -> String {
    quote(path.as_os_str().as_bytes())
}
