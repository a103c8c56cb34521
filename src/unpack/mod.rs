//! Package unpacking (docs/protocol.md section 9): a downloaded file becomes a version
//! directory `agents/NAME/VERSION/` with an executable `run` at its root.
//!
//! # Formats, by content, never by name
//!
//! - A tar, compressed with gzip (`1f 8b`), xz (`fd 37 7a 58 5a 00`, feature `xz`) or
//!   zstd (`28 b5 2f fd`, feature `zstd`), or not at all (`ustar` at offset 257). It
//!   is read entry by entry with the `tar` crate in *raw* mode: GNU long names and
//!   links (`L`, `K`) and pax headers (`x`) are read here, bounded, so that no header
//!   can make the reader allocate more than `path_bytes_max` or
//!   [`PAX_HEADER_BYTES_MAX`]. Pax global headers (`g`) are skipped. The compressed
//!   stream is read to its end, so its checksum is checked (`compress.rs`).
//! - An rpm (`ed ab ee db`, `rpm.rs`): its cpio payload (`cpio.rs`), and a deb
//!   (`!<arch>`, `deb.rs`): its `data.tar.*`. Both are relocated under `dest` (an
//!   absolute symlink target is taken as relative to `dest`), their maintainer
//!   scripts are listed in [`Unpacked::scripts`], never run, and `run` becomes a
//!   relative symlink to the program chosen (`program.rs`). Their own version is in
//!   [`Unpacked::package_version`].
//! - Anything else is a single executable, installed as `run` with mode 0755. An
//!   empty file is refused.
//!
//! # Root detection
//!
//! `run` must be at the archive root, or inside one single top-level directory,
//! which is then taken as the root: its contents are moved up into `dest` (through
//! a free temporary name when a child bears the directory's own name). A `VERSION`
//! file at the root is read (at most [`VERSION_FILE_BYTES_MAX`] bytes, trimmed) and
//! returned when [`valid_version`] accepts it; an unusable one is logged and ignored.
//!
//! # Safety rules (each violation is errcode 4)
//!
//! - Entry paths are relative: only plain names; a root (`/abs`), a prefix or a `..`
//!   component anywhere is refused, `.` components are skipped. No NUL bytes, at
//!   most `path_bytes_max` bytes, at most [`NAME_BYTES_MAX`] bytes per name.
//! - Nothing is written through a symlink: every parent of an entry must be a real
//!   directory (checked with `symlink_metadata`, created 0755 when missing), and
//!   files are created with `O_CREAT | O_EXCL | O_NOFOLLOW`. An entry whose name
//!   exists already (a duplicate) is refused, except a directory over a directory.
//! - Symlink targets are relative and of the form `../../name/name`: all `..` come
//!   first, no more of them than the link's depth, then plain names only. A `..`
//!   after a name is refused, because it could climb out through another symlink
//!   (`a/up -> ..`, then `b -> a/up/..`); with this form every link resolves inside
//!   the package whatever the other links are. When a single top-level directory
//!   becomes the root, every link is checked again one level shallower.
//! - Hard links name a regular file this archive created earlier (reached through
//!   real directories only); anything else is refused.
//! - Device files, FIFOs, GNU sparse files and unknown entry types are refused.
//! - Regular files keep their permission bits `& 0o755`: no setuid, setgid or
//!   sticky bit, no write permission for group or others. Directories get the same
//!   plus `u+rwx`, and 0755 when the archive does not list them. `run` must end up a file executable by its
//!   owner (a symlink to one is fine).
//!
//! # Bounds ([`UnpackLimits`], errcode 4 when exceeded)
//!
//! All bounds are kept by `budget.rs`, which every format goes through (tar, the
//! cpio payload of an rpm, the data.tar of a deb). The data
//! of all entries together (file contents, and the data of every other entry) is
//! at most `bytes_max`, lowered to the free space of the file system less
//! `reserve_bytes` (measured once, before unpacking); one file at most
//! [`FILE_BYTES_MAX`]; at most `entries_max` entries. Sizes are checked from the
//! headers before any byte is read, and the decompressed stream itself is capped at
//! what those bounds allow plus header overhead (the byte bound + 4 KiB per entry +
//! 1 MiB for the end of the archive), so a gzip, xz or zstd bomb stops there, whatever its
//! headers say. Memory stays bounded: a 64 KiB copy buffer, one entry's extension headers,
//! the decoder's window ([`DECODER_WINDOW_BYTES_MAX`]), the names of hard links
//! waiting for their data ([`HARD_LINKS_PENDING_MAX`]),
//! and, for the final steps, the list of directories of the tree.
//!
//! # Errors and durability
//!
//! Errcode 4 ([`ErrCode::BadPackage`]) is the package's fault; errcode 5
//! ([`ErrCode::InstallFailed`]) is the host's (disk full, permissions, an existing
//! `dest`). On any failure after `dest` was created, `dest` is removed entirely:
//! nothing is left behind, and nothing is ever created outside `dest`. Before `Ok`,
//! every file is fsync'd as it is written, then every directory of the tree and
//! the parent of `dest`, so a power cut after `Ok` never leaves a half-written
//! version.

mod archive;
mod budget;
mod compress;
mod cpio;
mod deb;
mod entry;
mod format;
mod program;
mod rpm;
mod tree;

use crate::job_fields::ErrCode;
pub use crate::job_fields::{valid_version, VERSION_BYTES_MAX};
pub use budget::{dir_mode, file_mode, Budget, CappedReader, StreamBound};
pub use compress::DECODER_WINDOW_BYTES_MAX;
pub use cpio::HARD_LINKS_PENDING_MAX;
pub use deb::{CONTROL_FILE_BYTES_MAX, CONTROL_TAR_BYTES_MAX};
use format::{unpack_archive, Format, HEAD_BYTES};
pub use rpm::{HEADER_DATA_BYTES_MAX, HEADER_TAGS_MAX};
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use tree::sync_tree;

/// Default bound on the unpacked data, all entries together.
pub const UNPACKED_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Default bound on the number of entries of an archive.
pub const ENTRIES_MAX_DEFAULT: u64 = 100_000;
/// Default free space left over after unpacking (and after a download), so that
/// the metafile and the logs can still be written: 1 MiB, well above a metafile
/// holding the 1024 remembered job results.
pub const RESERVE_BYTES_DEFAULT: u64 = 1024 * 1024;
/// Default bound on the length of an entry's path or link target.
pub const PATH_BYTES_MAX_DEFAULT: usize = crate::job_fields::PATH_BYTES_MAX;
/// Largest single file, whatever `bytes_max` allows.
pub const FILE_BYTES_MAX: u64 = 1 << 30;
/// Longest name in a path (Linux `NAME_MAX`).
pub const NAME_BYTES_MAX: usize = 255;
/// Largest pax header (`x` or `g`) read or skipped.
pub const PAX_HEADER_BYTES_MAX: u64 = 64 * 1024;
/// Largest `VERSION` file read.
pub const VERSION_FILE_BYTES_MAX: u64 = 256;

const RUN_FILE: &str = "run";
/// Mode of a single executable's `run`, and of directories the archive implies.
const RUN_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;
/// Permission bits shown in messages.
const PERMISSION_BITS: u32 = 0o777;
/// A file's mode while its content is being written.
const WRITING_MODE: u32 = 0o600;
/// Size of the buffer that copies file contents.
const COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Characters of an untrusted name shown in a message.
const SHOWN_CHARS_MAX: usize = 128;
/// Characters of a bad-package message.
const MESSAGE_CHARS_MAX: usize = 512;

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

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            bytes_max: UNPACKED_BYTES_MAX_DEFAULT,
            entries_max: ENTRIES_MAX_DEFAULT,
            path_bytes_max: PATH_BYTES_MAX_DEFAULT,
            reserve_bytes: RESERVE_BYTES_DEFAULT,
        }
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
fn bad(message: String) -> UnpackError {
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

fn failed(message: String) -> UnpackError {
    UnpackError {
        errcode: ErrCode::InstallFailed,
        message,
    }
}

/// An error looking at a path inside `dest`: a path the package made too long for
/// the file system is the package's fault (4); anything else the host's (5).
fn checking(path: &Path, e: io::Error) -> UnpackError {
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

/// Unpacks the downloaded file `package` into `dest`, which must not exist: it is
/// created with mode 0755, and on success `dest/run` exists and is executable.
/// See the module documentation for the formats, the rules and the bounds. On
/// failure nothing is left behind: `dest` is removed if this call created it.
pub fn unpack(package: &Path, dest: &Path, limits: &UnpackLimits) -> Result<Unpacked, UnpackError> {
    unpack_package(package, dest, limits, &Program::default())
}

/// [`unpack`], with the job's name and `exec` to find the program of an rpm or a
/// deb (or of any archive given an `exec`).
pub fn unpack_package(
    package: &Path,
    dest: &Path,
    limits: &UnpackLimits,
    program: &Program<'_>,
) -> Result<Unpacked, UnpackError> {
    let mut file = File::open(package)
        .map_err(|e| failed(format!("opening package {}: {e}", package.display())))?;
    let mut head = [0u8; HEAD_BYTES];
    let head_len = read_full(&mut file, &mut head)
        .map_err(|e| failed(format!("reading package {}: {e}", package.display())))?;
    if head_len == 0 {
        return Err(bad("package is empty".to_string()));
    }
    let format = Format::sniff(head.get(..head_len).unwrap_or_default());
    file.rewind()
        .map_err(|e| failed(format!("reading package {}: {e}", package.display())))?;
    let mut budget = Budget::new(limits, dest)?;
    fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(dest)
        .map_err(|e| failed(format!("creating {}: {e}", dest.display())))?;
    let unpacked = fs::set_permissions(dest, Permissions::from_mode(DIR_MODE))
        .map_err(|e| failed(format!("setting the mode of {}: {e}", dest.display())))
        .and_then(|()| match format {
            Format::Executable => install_executable(file, dest, &mut budget),
            _ => unpack_archive(file, format, dest, limits, &mut budget, program),
        });
    let result = unpacked.and_then(|unpacked| sync_tree(dest).map(|()| unpacked));
    if result.is_err() {
        if let Err(e) = fs::remove_dir_all(dest) {
            log::warn!(
                "could not remove {} after a failed unpack: {e}",
                dest.display()
            );
        }
    }
    result
}

/// Version from a URL file name `NAME-VERSION` + `.tar.gz`, `.tgz`, `.tar.xz`,
/// `.txz`, `.tar.zst` or `.tar` (query and fragment ignored), if `valid_version`
/// accepts it.
pub fn version_from_url(url: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let file_name = url.get(..path_end)?.rsplit('/').next()?;
    let stem = URL_SUFFIXES
        .iter()
        .find_map(|suffix| file_name.strip_suffix(suffix))?;
    let version = stem.strip_prefix(name)?.strip_prefix('-')?;
    valid_version(version).then(|| version.to_string())
}

/// File name endings a version is read from, after `NAME-VERSION`.
const URL_SUFFIXES: &[&str] = &[".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.zst", ".tar"];

/// The single-executable format: the whole file becomes `dest/run`, mode 0755.
fn install_executable(
    file: File,
    dest: &Path,
    budget: &mut Budget,
) -> Result<Unpacked, UnpackError> {
    budget.entry()?;
    let bytes_max = FILE_BYTES_MAX;
    let run = dest.join(RUN_FILE);
    let mut out =
        create_file(&run).map_err(|e| failed(format!("creating {}: {e}", run.display())))?;
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut reader = file.take(bytes_max.saturating_add(1));
    let mut written: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failed(format!("reading the package: {e}"))),
        };
        written = written.saturating_add(n as u64);
        if written > bytes_max {
            return Err(bad(format!("executable is over {bytes_max} bytes")));
        }
        budget.data(n as u64)?;
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(|e| failed(format!("writing {}: {e}", run.display())))?;
    }
    out.set_permissions(Permissions::from_mode(RUN_MODE))
        .and_then(|()| out.sync_all())
        .map_err(|e| failed(format!("writing {}: {e}", run.display())))?;
    Ok(Unpacked {
        version_file: None,
        package_version: None,
        scripts: Vec::new(),
        bytes: written,
        entries: 1,
    })
}

/// Creates a new file for writing, never through or over an existing name.
fn create_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(WRITING_MODE)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Fills `buf` as far as the reader allows; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
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
fn quote(bytes: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(bytes)
        .chars()
        .take(SHOWN_CHARS_MAX)
        .collect();
    format!("{text:?}")
}

fn quote_path(path: &Path) -> String {
    quote(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests;

#[cfg(test)]
#[cfg(all(feature = "xz", feature = "zstd"))]
#[path = "formats_tests.rs"]
mod formats_tests;
