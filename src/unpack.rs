//! Package unpacking (PROTOCOL.md section 9): a downloaded file becomes a version
//! directory `agents/NAME/VERSION/` with an executable `run` at its root.
//!
//! # Formats, by content, never by name
//!
//! - A file starting with the gzip magic (`1f 8b`) is a gzip-compressed tar. It is
//!   read entry by entry with the `tar` crate in *raw* mode: GNU long names and links
//!   (`L`, `K`) and pax headers (`x`) are read here, bounded, so that no header can
//!   make the reader allocate more than `path_bytes_max` or [`PAX_HEADER_BYTES_MAX`].
//!   Pax global headers (`g`) are skipped. The gzip stream is read to its end, so
//!   its CRC and length are checked.
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
//! - Regular files keep their permission bits `& 0o777`: no setuid, setgid or
//!   sticky bit. Directories get the archive's bits plus `u+rwx`, and 0755 when
//!   the archive does not list them. `run` must end up a file executable by its
//!   owner (a symlink to one is fine).
//!
//! # Bounds ([`UnpackLimits`], errcode 4 when exceeded)
//!
//! The data of all entries together (file contents, and the data of every other
//! entry) is at most `bytes_max`; one file at most [`FILE_BYTES_MAX`] (and
//! `bytes_max`); at most `entries_max` entries. Sizes are checked from the headers
//! before any byte is read, and the decompressed stream itself is capped at what
//! those bounds allow plus header overhead (`bytes_max` + 4 KiB per entry + 1 MiB
//! for the end of the archive), so a gzip bomb stops there, whatever its headers
//! say. Memory stays bounded: a 64 KiB copy buffer, one entry's extension headers,
//! and, for the final steps, the list of directories of the tree.
//!
//! # Errors and durability
//!
//! Errcode 4 ([`ERRCODE_BAD_PACKAGE`]) is the package's fault; errcode 5
//! ([`ERRCODE_INSTALL_FAILED`]) is the host's (disk full, permissions, an existing
//! `dest`). On any failure after `dest` was created, `dest` is removed entirely:
//! nothing is left behind, and nothing is ever created outside `dest`. Before `Ok`,
//! every file is fsync'd as it is written, then every directory of the tree and
//! the parent of `dest`, so a power cut after `Ok` never leaves a half-written
//! version.

use flate2::read::GzDecoder;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Errcode of section 7 for a package that cannot be installed as it is.
pub const ERRCODE_BAD_PACKAGE: u32 = 4;
/// Errcode of section 7 for a host that cannot take the package (disk, permissions).
pub const ERRCODE_INSTALL_FAILED: u32 = 5;

/// Default bound on the unpacked data, all entries together.
pub const UNPACKED_BYTES_MAX_DEFAULT: u64 = 1 << 30;
/// Default bound on the number of entries of an archive.
pub const ENTRIES_MAX_DEFAULT: u64 = 100_000;
/// Default bound on the length of an entry's path or link target.
pub const PATH_BYTES_MAX_DEFAULT: usize = 4096;
/// Largest single file, whatever `bytes_max` allows.
pub const FILE_BYTES_MAX: u64 = 1 << 30;
/// Longest name in a path (Linux `NAME_MAX`).
pub const NAME_BYTES_MAX: usize = 255;
/// Largest pax header (`x` or `g`) read or skipped.
pub const PAX_HEADER_BYTES_MAX: u64 = 64 * 1024;
/// Largest `VERSION` file read.
pub const VERSION_FILE_BYTES_MAX: u64 = 256;
/// Longest version string (section 7).
pub const VERSION_BYTES_MAX: usize = 64;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
const RUN_FILE: &str = "run";
const VERSION_FILE: &str = "VERSION";
/// A version that would collide with the `current` symlink.
const RESERVED_VERSION: &str = "current";
/// Mode of a single executable's `run`, and of directories the archive implies.
const RUN_MODE: u32 = 0o755;
const DIR_MODE: u32 = 0o755;
/// Bits always set on a directory, so that it can be filled and removed.
const DIR_OWNER_BITS: u32 = 0o700;
/// Permission bits kept from the archive (no setuid, setgid, sticky).
const PERMISSION_BITS: u32 = 0o777;
/// A file's mode while its content is being written.
const WRITING_MODE: u32 = 0o600;
/// The owner's execute bit, required on `run`.
const OWNER_EXEC_BIT: u32 = 0o100;
/// One tar block; every header and every entry's padded data are multiples of it.
const TAR_BLOCK_BYTES: u64 = 512;
/// Decompressed bytes one entry may take besides its data: its header and those
/// of a long name, a long link and a pax header, each with up to a block of padding.
const ENTRY_OVERHEAD_BYTES: u64 = 8 * TAR_BLOCK_BYTES;
/// Decompressed bytes after the last entry: end-of-archive blocks and record
/// padding (GNU tar's largest blocking factor is 2048 blocks).
const ARCHIVE_END_BYTES_MAX: u64 = 2048 * TAR_BLOCK_BYTES;
/// Size of the buffer that copies file contents.
const COPY_BUFFER_BYTES: usize = 64 * 1024;
/// Characters of an untrusted name shown in a message.
const SHOWN_CHARS_MAX: usize = 128;
/// Characters of a bad-package message.
const MESSAGE_CHARS_MAX: usize = 512;
/// Keys of the pax records this reader honours.
const PAX_PATH: &[u8] = b"path";
const PAX_LINKPATH: &[u8] = b"linkpath";
const PAX_SIZE: &[u8] = b"size";

/// Bounds of one unpacking (defaults: 1 GiB unpacked in total, 100 000 entries,
/// paths of 4096 bytes; one file is also bounded by [`FILE_BYTES_MAX`], 1 GiB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Data of all entries together, in bytes (a single executable's size).
    pub bytes_max: u64,
    /// Entries of an archive (files, directories, links, pax global headers).
    pub entries_max: u64,
    /// Length of an entry's path or link target, in bytes.
    pub path_bytes_max: usize,
}

impl Default for UnpackLimits {
    fn default() -> Self {
        UnpackLimits {
            bytes_max: UNPACKED_BYTES_MAX_DEFAULT,
            entries_max: ENTRIES_MAX_DEFAULT,
            path_bytes_max: PATH_BYTES_MAX_DEFAULT,
        }
    }
}

/// Why a package was not unpacked: errcode 4 (bad package) or 5 (install failed).
#[derive(Debug)]
pub struct UnpackError {
    pub errcode: u32,
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
        errcode: ERRCODE_BAD_PACKAGE,
        message: line,
    }
}

fn failed(message: String) -> UnpackError {
    UnpackError {
        errcode: ERRCODE_INSTALL_FAILED,
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
    /// Bytes of file content written.
    pub bytes: u64,
    /// Entries of the archive (1 for a single executable).
    pub entries: u64,
}

/// Unpacks the downloaded file `package` into `dest`, which must not exist: it is
/// created with mode 0755, and on success `dest/run` exists and is executable.
/// See the module documentation for the formats, the rules and the bounds. On
/// failure nothing is left behind: `dest` is removed if this call created it.
pub fn unpack(package: &Path, dest: &Path, limits: &UnpackLimits) -> Result<Unpacked, UnpackError> {
    let mut file = File::open(package)
        .map_err(|e| failed(format!("opening package {}: {e}", package.display())))?;
    let mut magic = [0u8; GZIP_MAGIC.len()];
    let magic_len = read_full(&mut file, &mut magic)
        .map_err(|e| failed(format!("reading package {}: {e}", package.display())))?;
    if magic_len == 0 {
        return Err(bad("package is empty".to_string()));
    }
    file.rewind()
        .map_err(|e| failed(format!("reading package {}: {e}", package.display())))?;
    fs::DirBuilder::new()
        .mode(DIR_MODE)
        .create(dest)
        .map_err(|e| failed(format!("creating {}: {e}", dest.display())))?;
    let is_gzip = magic.get(..magic_len) == Some(&GZIP_MAGIC[..]);
    let unpacked = fs::set_permissions(dest, Permissions::from_mode(DIR_MODE))
        .map_err(|e| failed(format!("setting the mode of {}: {e}", dest.display())))
        .and_then(|()| {
            if is_gzip {
                unpack_tar_gz(file, dest, limits)
            } else {
                install_executable(file, dest, limits)
            }
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

/// Version from a URL file name `NAME-VERSION.tar.gz` or `NAME-VERSION.tgz`
/// (query and fragment ignored), if `valid_version` accepts it.
pub fn version_from_url(url: &str, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let path_end = url.find(['?', '#']).unwrap_or(url.len());
    let file_name = url.get(..path_end)?.rsplit('/').next()?;
    let stem = file_name
        .strip_suffix(".tar.gz")
        .or_else(|| file_name.strip_suffix(".tgz"))?;
    let version = stem.strip_prefix(name)?.strip_prefix('-')?;
    valid_version(version).then(|| version.to_string())
}

/// A version usable as a directory name: 1–64 of `A–Z a–z 0–9 . _ - +`, not
/// starting with `.`, not `current`, not ending in `.tmp`, `.json` or `.sha256` (names
/// BootAgent keeps beside the versions).
pub fn valid_version(version: &str) -> bool {
    (1..=VERSION_BYTES_MAX).contains(&version.len())
        && !version.starts_with('.')
        && version != RESERVED_VERSION
        && !version.ends_with(".tmp")
        && !version.ends_with(".json")
        && !version.ends_with(".sha256")
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
}

/// The single-executable format: the whole file becomes `dest/run`, mode 0755.
fn install_executable(
    file: File,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, UnpackError> {
    let bytes_max = limits.bytes_max.min(FILE_BYTES_MAX);
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
        out.write_all(buf.get(..n).unwrap_or_default())
            .map_err(|e| failed(format!("writing {}: {e}", run.display())))?;
    }
    out.set_permissions(Permissions::from_mode(RUN_MODE))
        .and_then(|()| out.sync_all())
        .map_err(|e| failed(format!("writing {}: {e}", run.display())))?;
    Ok(Unpacked {
        version_file: None,
        bytes: written,
        entries: 1,
    })
}

/// The tar.gz format: extract, drain the gzip stream, find the root, check `run`.
fn unpack_tar_gz(file: File, dest: &Path, limits: &UnpackLimits) -> Result<Unpacked, UnpackError> {
    let stream_max = limits
        .bytes_max
        .saturating_add(limits.entries_max.saturating_mul(ENTRY_OVERHEAD_BYTES))
        .saturating_add(ARCHIVE_END_BYTES_MAX);
    let mut archive = tar::Archive::new(CappedReader {
        inner: GzDecoder::new(file),
        left: stream_max,
        cap: stream_max,
    });
    let mut extractor = Extractor::new(dest, limits);
    for entry in archive.entries().map_err(read_error)?.raw(true) {
        extractor.entry(entry.map_err(read_error)?)?;
    }
    if extractor.pending.any() {
        return Err(bad(
            "archive ends with an extension header and no entry".to_string()
        ));
    }
    // Read the rest (end blocks, padding, gzip trailer) so that the CRC is checked.
    let mut rest = archive.into_inner();
    loop {
        match rest.read(&mut extractor.buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
    find_root(dest)?;
    check_run(dest)?;
    Ok(Unpacked {
        version_file: read_version_file(dest)?,
        bytes: extractor.file_bytes,
        entries: extractor.entries,
    })
}

/// Long names, long links and pax records waiting for the entry they describe.
#[derive(Default)]
struct Pending {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: Option<Vec<u8>>,
}

impl Pending {
    fn any(&self) -> bool {
        self.long_name.is_some() || self.long_link.is_some() || self.pax.is_some()
    }
}

/// The state of one extraction into `dest`.
struct Extractor<'a> {
    dest: &'a Path,
    limits: &'a UnpackLimits,
    pending: Pending,
    /// Entries seen, extension headers excluded.
    entries: u64,
    /// Declared data of all entries so far.
    data_bytes: u64,
    /// File content written so far.
    file_bytes: u64,
    /// The last parent directory found to be a real directory (relative to dest).
    checked_dir: PathBuf,
    buf: Vec<u8>,
}

impl<'a> Extractor<'a> {
    fn new(dest: &'a Path, limits: &'a UnpackLimits) -> Self {
        Extractor {
            dest,
            limits,
            pending: Pending::default(),
            entries: 0,
            data_bytes: 0,
            file_bytes: 0,
            checked_dir: PathBuf::new(),
            buf: vec![0u8; COPY_BUFFER_BYTES],
        }
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let size = entry.size();
        self.data_bytes = self
            .data_bytes
            .checked_add(size)
            .filter(|total| *total <= self.limits.bytes_max)
            .ok_or_else(|| {
                bad(format!(
                    "package unpacks to more than {} bytes",
                    self.limits.bytes_max
                ))
            })?;
        // A GNU long name or link is the path and its trailing NUL.
        let path_max = self.limits.path_bytes_max as u64;
        let name_max = path_max.saturating_add(1);
        match kind {
            tar::EntryType::GNULongName => {
                let data = read_extension(
                    &mut entry,
                    &self.pending.long_name,
                    name_max,
                    "long name",
                    path_max,
                )?;
                self.pending.long_name = Some(data);
                return Ok(());
            }
            tar::EntryType::GNULongLink => {
                let data = read_extension(
                    &mut entry,
                    &self.pending.long_link,
                    name_max,
                    "long link",
                    path_max,
                )?;
                self.pending.long_link = Some(data);
                return Ok(());
            }
            tar::EntryType::XHeader => {
                let data = read_extension(
                    &mut entry,
                    &self.pending.pax,
                    PAX_HEADER_BYTES_MAX,
                    "pax header",
                    PAX_HEADER_BYTES_MAX,
                )?;
                self.pending.pax = Some(data);
                return Ok(());
            }
            _ => {}
        }
        self.entries = self.entries.saturating_add(1);
        if self.entries > self.limits.entries_max {
            return Err(bad(format!(
                "package has more than {} entries",
                self.limits.entries_max
            )));
        }
        let pending = std::mem::take(&mut self.pending);
        if kind == tar::EntryType::XGlobalHeader {
            // Skipped whole (its name is often absolute, e.g. `/tmp/GlobalHead.1.1`).
            if size > PAX_HEADER_BYTES_MAX {
                return Err(bad(format!(
                    "pax global header is over {PAX_HEADER_BYTES_MAX} bytes"
                )));
            }
            return Ok(());
        }
        let pax = PaxFields::parse(pending.pax.as_deref())?;
        if pax.size.is_some_and(|pax_size| pax_size != size) {
            return Err(bad(
                "pax header gives another size than the tar header".to_string()
            ));
        }
        let raw_path = pax
            .path
            .or(pending.long_name.map(trim_nul))
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let raw_link = pax
            .linkpath
            .or(pending.long_link.map(trim_nul))
            .or_else(|| entry.link_name_bytes().map(|link| link.into_owned()));
        let shown = quote(&raw_path);
        let rel = self.entry_path(&raw_path, &shown)?;
        let mode = entry
            .header()
            .mode()
            .map_err(|e| bad(format!("entry {shown} has a bad mode: {e}")))?;
        match kind {
            // Old archives mark directories with a trailing slash only.
            tar::EntryType::Regular if raw_path.ends_with(b"/") && size == 0 => {
                self.make_dir(&rel, mode, &shown)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.write_file(&mut entry, &rel, mode, size, &shown)
            }
            tar::EntryType::Directory => self.make_dir(&rel, mode, &shown),
            tar::EntryType::Symlink => self.make_symlink(&rel, raw_link.as_deref(), &shown),
            tar::EntryType::Link => self.make_hard_link(&rel, raw_link.as_deref(), &shown),
            tar::EntryType::Char | tar::EntryType::Block => {
                Err(bad(format!("entry {shown} is a device file")))
            }
            tar::EntryType::Fifo => Err(bad(format!("entry {shown} is a FIFO"))),
            tar::EntryType::GNUSparse => {
                Err(bad(format!("entry {shown} is a sparse file (unsupported)")))
            }
            other => Err(bad(format!(
                "entry {shown} has the unsupported type {:?}",
                char::from(other.as_byte())
            ))),
        }
    }

    /// An entry's path, relative to dest: plain names only, `.` skipped.
    fn entry_path(&self, raw: &[u8], shown: &str) -> Result<PathBuf, UnpackError> {
        if raw.len() > self.limits.path_bytes_max {
            return Err(bad(format!(
                "entry {shown} has a path over {} bytes",
                self.limits.path_bytes_max
            )));
        }
        if raw.contains(&0) {
            return Err(bad(format!("entry {shown} has a NUL byte in its path")));
        }
        let mut rel = PathBuf::new();
        for component in Path::new(OsStr::from_bytes(raw)).components() {
            match component {
                Component::Normal(name) if name.len() <= NAME_BYTES_MAX => rel.push(name),
                Component::Normal(_) => {
                    return Err(bad(format!(
                        "entry {shown} has a name over {NAME_BYTES_MAX} bytes"
                    )))
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(bad(format!("entry {shown} has a `..` component")))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(format!("entry {shown} has an absolute path")))
                }
            }
        }
        Ok(rel)
    }

    /// Makes sure every parent of `rel` is a real directory under dest, creating
    /// missing ones; refuses to go through a symlink or a file.
    fn ensure_parent(&mut self, rel: &Path, shown: &str) -> Result<(), UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let known = if parent.starts_with(&self.checked_dir) {
            self.checked_dir.components().count()
        } else {
            0
        };
        let mut prefix = PathBuf::new();
        for (index, component) in parent.components().enumerate() {
            prefix.push(component);
            if index < known {
                continue;
            }
            let full = self.dest.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(bad(format!(
                        "entry {shown} goes through {}, which is not a directory",
                        quote_path(&prefix)
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&full, DIR_MODE)?,
                // A path the package made too long for the file system is its fault.
                Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                    return Err(bad(format!(
                        "entry {shown} makes a path too long for the file system"
                    )))
                }
                Err(e) => return Err(checking(&full, e)),
            }
        }
        self.checked_dir = parent.to_path_buf();
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        mode: u32,
        size: u64,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if size > FILE_BYTES_MAX {
            return Err(bad(format!("entry {shown} is over {FILE_BYTES_MAX} bytes")));
        }
        if rel.as_os_str().is_empty() {
            return Err(bad(format!("file entry {shown} has no name")));
        }
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        let mut file = create_file(&full).map_err(|e| create_error(shown, &full, e))?;
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            file.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|e| failed(format!("writing {}: {e}", full.display())))?;
            written = written.saturating_add(n as u64);
        }
        if written != size {
            return Err(bad(format!("entry {shown} is truncated")));
        }
        file.set_permissions(Permissions::from_mode(mode & PERMISSION_BITS))
            .and_then(|()| file.sync_all())
            .map_err(|e| failed(format!("writing {}: {e}", full.display())))?;
        self.file_bytes = self.file_bytes.saturating_add(written);
        Ok(())
    }

    fn make_dir(&mut self, rel: &Path, mode: u32, shown: &str) -> Result<(), UnpackError> {
        if rel.as_os_str().is_empty() {
            return Ok(()); // `./`: the root itself
        }
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(bad(format!(
                    "entry {shown} exists already, not as a directory"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&full, DIR_MODE)?,
            Err(e) => return Err(checking(&full, e)),
        }
        fs::set_permissions(
            &full,
            Permissions::from_mode((mode & PERMISSION_BITS) | DIR_OWNER_BITS),
        )
        .map_err(|e| failed(format!("setting the mode of {}: {e}", full.display())))
    }

    fn make_symlink(
        &mut self,
        rel: &Path,
        target: Option<&[u8]>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target = target.unwrap_or_default();
        if rel.as_os_str().is_empty() || target.is_empty() {
            return Err(bad(format!(
                "symlink entry {shown} has no name or no target"
            )));
        }
        if target.len() > self.limits.path_bytes_max || target.contains(&0) {
            return Err(bad(format!("symlink {shown} has a bad or too long target")));
        }
        let target = Path::new(OsStr::from_bytes(target));
        check_link_target(target, link_depth(rel))
            .map_err(|why| bad(format!("symlink {shown} {why}")))?;
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        std::os::unix::fs::symlink(target, &full).map_err(|e| create_error(shown, &full, e))
    }

    fn make_hard_link(
        &mut self,
        rel: &Path,
        target: Option<&[u8]>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target = target.unwrap_or_default();
        let shown_target = quote(target);
        let target_rel = self.entry_path(target, &shown_target)?;
        if rel.as_os_str().is_empty() || target_rel.as_os_str().is_empty() {
            return Err(bad(format!(
                "hard link entry {shown} has no name or no target"
            )));
        }
        if !is_extracted_file(self.dest, &target_rel)? {
            return Err(bad(format!(
                "hard link {shown} points to {shown_target}, not a file extracted before it"
            )));
        }
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        fs::hard_link(self.dest.join(&target_rel), &full).map_err(|e| create_error(shown, &full, e))
    }
}

/// The pax records this reader honours.
#[derive(Default)]
struct PaxFields {
    path: Option<Vec<u8>>,
    linkpath: Option<Vec<u8>>,
    size: Option<u64>,
}

impl PaxFields {
    fn parse(data: Option<&[u8]>) -> Result<Self, UnpackError> {
        let mut fields = PaxFields::default();
        for record in tar::PaxExtensions::new(data.unwrap_or_default()) {
            let record = record.map_err(|e| bad(format!("bad pax header: {e}")))?;
            match record.key_bytes() {
                PAX_PATH => fields.path = Some(record.value_bytes().to_vec()),
                PAX_LINKPATH => fields.linkpath = Some(record.value_bytes().to_vec()),
                PAX_SIZE => {
                    let size = std::str::from_utf8(record.value_bytes())
                        .ok()
                        .and_then(|text| text.parse().ok())
                        .ok_or_else(|| bad("bad size in a pax header".to_string()))?;
                    fields.size = Some(size);
                }
                _ => {}
            }
        }
        Ok(fields)
    }
}

/// Reads an extension header's data (a long name or link, pax records), at most
/// `bytes_max`; `bound` is the limit as the message names it.
fn read_extension<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    already: &Option<Vec<u8>>,
    bytes_max: u64,
    what: &str,
    bound: u64,
) -> Result<Vec<u8>, UnpackError> {
    if already.is_some() {
        return Err(bad(format!("two {what} headers for one entry")));
    }
    let size = entry.size();
    if size > bytes_max {
        return Err(bad(format!("{what} is over {bound} bytes")));
    }
    let mut data = Vec::new();
    entry
        .take(bytes_max)
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if data.len() as u64 != size {
        return Err(bad(format!("{what} header is truncated")));
    }
    Ok(data)
}

/// A GNU long name or link without its trailing NULs.
fn trim_nul(mut bytes: Vec<u8>) -> Vec<u8> {
    while bytes.last() == Some(&0) {
        bytes.pop();
    }
    bytes
}

/// Number of directories above a link, relative to the root (`a/b/l` → 2).
fn link_depth(rel: &Path) -> usize {
    rel.components().count().saturating_sub(1)
}

/// Checks that a symlink at `depth` with this target stays inside the package:
/// relative, all `..` first and at most `depth` of them, then plain names.
fn check_link_target(target: &Path, depth: usize) -> Result<(), &'static str> {
    let mut ups: usize = 0;
    let mut descended = false;
    for component in target.components() {
        if component.as_os_str().len() > NAME_BYTES_MAX {
            return Err("has a name longer than the file system allows in its target");
        }
        match component {
            Component::RootDir | Component::Prefix(_) => return Err("points to an absolute path"),
            Component::CurDir => {}
            Component::ParentDir if descended => {
                return Err("has a `..` after a name in its target")
            }
            Component::ParentDir => ups = ups.saturating_add(1),
            Component::Normal(_) => descended = true,
        }
    }
    if ups > depth {
        return Err("points outside the package");
    }
    Ok(())
}

/// Whether `rel` is a regular file under `dest`, reached through real directories.
fn is_extracted_file(dest: &Path, rel: &Path) -> Result<bool, UnpackError> {
    let mut full = dest.to_path_buf();
    let count = rel.components().count();
    for (index, component) in rel.components().enumerate() {
        full.push(component);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(checking(&full, e)),
        };
        let wanted = if index + 1 == count {
            meta.file_type().is_file()
        } else {
            meta.file_type().is_dir()
        };
        if !wanted {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Takes the root as it is when `dest/run` exists, or the single top-level
/// directory holding a `run`, whose contents are then moved up into `dest`.
fn find_root(dest: &Path) -> Result<(), UnpackError> {
    if exists(&dest.join(RUN_FILE))? {
        return Ok(());
    }
    let no_run = || {
        bad("package has no run at its root, nor inside one single top-level directory".to_string())
    };
    let mut names = Vec::new();
    for item in
        fs::read_dir(dest).map_err(|e| failed(format!("listing {}: {e}", dest.display())))?
    {
        let item = item.map_err(|e| failed(format!("listing {}: {e}", dest.display())))?;
        names.push(item.file_name());
        if names.len() > 1 {
            return Err(no_run());
        }
    }
    let Some(top) = names.pop() else {
        return Err(no_run());
    };
    let top_dir = dest.join(&top);
    let is_dir = fs::symlink_metadata(&top_dir)
        .map(|meta| meta.file_type().is_dir())
        .map_err(|e| checking(&top_dir, e))?;
    if !is_dir || !exists(&top_dir.join(RUN_FILE))? {
        return Err(no_run());
    }
    // Links are checked one level shallower, as they will be once moved up.
    walk(&top_dir, &mut |path, file_type| {
        if !file_type.is_symlink() {
            return Ok(());
        }
        let target =
            fs::read_link(path).map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
        let rel = path.strip_prefix(&top_dir).unwrap_or(path);
        check_link_target(&target, link_depth(rel)).map_err(|why| {
            bad(format!(
                "symlink {} {why} once {} is taken as the root",
                quote_path(path.strip_prefix(dest).unwrap_or(path)),
                quote(top.as_bytes())
            ))
        })
    })?;
    let children = list_names(&top_dir)?;
    let staging = if children.contains(&top) {
        // A child would land on the top directory itself: rename it first.
        let free = (0..=children.len())
            .map(|index| OsString::from(format!(".unpack-root-{index}")))
            .find(|name| *name != top && !children.contains(name))
            .ok_or_else(|| failed(format!("no free temporary name in {}", dest.display())))?;
        let staging = dest.join(free);
        fs::rename(&top_dir, &staging)
            .map_err(|e| failed(format!("renaming {}: {e}", top_dir.display())))?;
        staging
    } else {
        top_dir
    };
    for child in &children {
        let from = staging.join(child);
        fs::rename(&from, dest.join(child))
            .map_err(|e| failed(format!("moving {} up: {e}", from.display())))?;
    }
    fs::remove_dir(&staging).map_err(|e| failed(format!("removing {}: {e}", staging.display())))
}

/// Requires `dest/run` to be a file its owner may execute (through a symlink or not).
fn check_run(dest: &Path) -> Result<(), UnpackError> {
    let run = dest.join(RUN_FILE);
    match fs::metadata(&run) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & OWNER_EXEC_BIT != 0 => Ok(()),
        Ok(meta) if meta.is_file() => Err(bad(format!(
            "run is not executable (mode {:o})",
            meta.permissions().mode() & PERMISSION_BITS
        ))),
        Ok(_) => Err(bad("run is not a file".to_string())),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::ENAMETOOLONG)
            ) =>
        {
            Err(bad("run is a symlink to nothing".to_string()))
        }
        Err(e) => Err(checking(&run, e)),
    }
}

/// The trimmed content of `dest/VERSION` if it is a usable version; an unusable
/// one is logged and ignored.
fn read_version_file(dest: &Path) -> Result<Option<String>, UnpackError> {
    let path = dest.join(VERSION_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => {
            log::warn!("ignoring {}: not a regular file", path.display());
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            log::warn!("ignoring {}: {e}", path.display());
            return Ok(None);
        }
    }
    let mut data = Vec::new();
    let read = File::open(&path).and_then(|file| {
        file.take(VERSION_FILE_BYTES_MAX.saturating_add(1))
            .read_to_end(&mut data)
    });
    if let Err(e) = read {
        log::warn!("ignoring {}: {e}", path.display());
        return Ok(None);
    }
    let version = std::str::from_utf8(&data)
        .map(str::trim)
        .unwrap_or_default();
    if data.len() as u64 > VERSION_FILE_BYTES_MAX || !valid_version(version) {
        log::warn!("ignoring {}: not a usable version", path.display());
        return Ok(None);
    }
    Ok(Some(version.to_string()))
}

/// fsyncs every directory of the tree, deepest first, then the parent of `dest`.
/// Files were fsync'd as they were written.
fn sync_tree(dest: &Path) -> Result<(), UnpackError> {
    let mut dirs = walk(dest, &mut |_, _| Ok(()))?;
    if let Some(parent) = dest.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        dirs.insert(0, parent.to_path_buf());
    }
    for dir in dirs.iter().rev() {
        File::open(dir)
            .and_then(|handle| handle.sync_all())
            .map_err(|e| failed(format!("syncing {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Visits every entry under `root` without following symlinks; returns the
/// directories, `root` first, each before the ones it holds.
fn walk(
    root: &Path,
    visit: &mut dyn FnMut(&Path, fs::FileType) -> Result<(), UnpackError>,
) -> Result<Vec<PathBuf>, UnpackError> {
    let mut dirs = vec![root.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = dirs.get(next).cloned() {
        next += 1;
        let list_error = |e: io::Error| failed(format!("listing {}: {e}", dir.display()));
        for item in fs::read_dir(&dir).map_err(list_error)? {
            let item = item.map_err(list_error)?;
            let file_type = item.file_type().map_err(list_error)?;
            let path = item.path();
            visit(&path, file_type)?;
            if file_type.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok(dirs)
}

fn list_names(dir: &Path) -> Result<Vec<OsString>, UnpackError> {
    let list_error = |e: io::Error| failed(format!("listing {}: {e}", dir.display()));
    fs::read_dir(dir)
        .map_err(list_error)?
        .map(|item| item.map(|item| item.file_name()).map_err(list_error))
        .collect()
}

/// Whether something (a symlink included) is at `path`.
fn exists(path: &Path) -> Result<bool, UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(checking(path, e)),
    }
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

/// Creates one directory with exactly `mode` (whatever the umask).
fn create_dir(path: &Path, mode: u32) -> Result<(), UnpackError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .and_then(|()| fs::set_permissions(path, Permissions::from_mode(mode)))
        .map_err(|e| failed(format!("creating {}: {e}", path.display())))
}

/// An error creating an entry: the package's fault when the name exists already
/// or cannot be a name, the host's otherwise.
fn create_error(shown: &str, full: &Path, e: io::Error) -> UnpackError {
    match e.raw_os_error() {
        Some(libc::EEXIST) => bad(format!("entry {shown} appears twice in the archive")),
        Some(libc::ELOOP | libc::ENOTDIR | libc::EISDIR | libc::ENAMETOOLONG | libc::EMLINK) => {
            bad(format!("entry {shown}: {e}"))
        }
        _ => failed(format!("creating {}: {e}", full.display())),
    }
}

/// An error reading the archive: the host's when the system said so (reading the
/// downloaded file), the package's otherwise (gzip, tar, the stream bound).
fn read_error(e: io::Error) -> UnpackError {
    if e.raw_os_error().is_some() {
        return failed(format!("reading the package: {e}"));
    }
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<StreamBound>())
    {
        Some(bound) => bad(bound.to_string()),
        None => bad(format!("not a valid tar.gz: {e}")),
    }
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

/// The decompressed stream went past its bound.
#[derive(Debug)]
struct StreamBound(u64);

impl fmt::Display for StreamBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "package decompresses to more than {} bytes", self.0)
    }
}

impl std::error::Error for StreamBound {}

/// A reader that fails once more than `cap` bytes came through.
struct CappedReader<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Ask for one byte past the bound, to tell "exactly at" from "past".
        let wanted = usize::try_from(self.left.saturating_add(1))
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(buf.get_mut(..wanted).unwrap_or_default())?;
        match self.left.checked_sub(n as u64) {
            Some(left) => {
                self.left = left;
                Ok(n)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                StreamBound(self.cap),
            )),
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
