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
mod shared;
mod tree;

pub use crate::job_fields::{valid_version, VERSION_BYTES_MAX};
pub use budget::{dir_mode, file_mode, Budget, CappedReader, StreamBound};
pub use compress::DECODER_WINDOW_BYTES_MAX;
pub use cpio::HARD_LINKS_PENDING_MAX;
pub use deb::{CONTROL_FILE_BYTES_MAX, CONTROL_TAR_BYTES_MAX};
use format::{unpack_archive, Format, HEAD_BYTES};
pub use rpm::{HEADER_DATA_BYTES_MAX, HEADER_TAGS_MAX};
use shared::{
    bad, create_file, failed, read_full, COPY_BUFFER_BYTES, DIR_MODE, RUN_FILE, RUN_MODE,
};
pub use shared::{
    Program, UnpackError, UnpackLimits, Unpacked, FILE_BYTES_MAX, NAME_BYTES_MAX,
    PAX_HEADER_BYTES_MAX, VERSION_FILE_BYTES_MAX,
};
use std::fs::{self, File, Permissions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use tree::sync_tree;

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

#[cfg(test)]
mod tests;

#[cfg(test)]
#[cfg(all(feature = "xz", feature = "zstd"))]
#[path = "formats_tests.rs"]
mod formats_tests;
