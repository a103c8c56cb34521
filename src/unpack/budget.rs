//! The bounds of one unpacking, in one place that every format goes through: the
//! bytes and entries an archive may unpack to (`unpack_bytes_max`, never more than
//! the free space less a reserve; `unpack_entries_max`), the cap on a decompressed
//! stream, and the permission bits an unpacked file or directory may keep.
//!
//! A format reader calls [`Budget::data`] with the declared size of every header
//! and entry before it reads the data, [`Budget::entry`] once per entry (extension
//! headers excluded), reads compressed input through [`Budget::capped`], and masks
//! modes with [`file_mode`] and [`dir_mode`]. Exceeding any bound is errcode 4.

use super::shared::{bad, failed, UnpackError, UnpackLimits};
use std::fmt;
use std::io::{self, Read};
use std::path::Path;

/// One tar block; every header and every entry's padded data are multiples of it.
const TAR_BLOCK_BYTES: u64 = 512;
/// Decompressed bytes one entry may take besides its data: its header and those
/// of a long name, a long link and a pax header, each with up to a block of padding.
const ENTRY_OVERHEAD_BYTES: u64 = 8 * TAR_BLOCK_BYTES;
/// Decompressed bytes after the last entry: end-of-archive blocks and record
/// padding (GNU tar's largest blocking factor is 2048 blocks).
const ARCHIVE_END_BYTES_MAX: u64 = 2048 * TAR_BLOCK_BYTES;
/// Permission bits an unpacked file keeps: no setuid, setgid or sticky bit, and no
/// write permission for group or others.
const KEPT_MODE_BITS: u32 = 0o755;
/// Bits always set on a directory, so that it can be filled and removed.
const DIR_OWNER_BITS: u32 = 0o700;

/// A file's permission bits as unpacked (`0o4777` → `0o755`).
pub fn file_mode(archive_mode: u32) -> u32 {
    archive_mode & KEPT_MODE_BITS
}

/// A directory's permission bits as unpacked: the file rule plus `u+rwx`.
pub fn dir_mode(archive_mode: u32) -> u32 {
    file_mode(archive_mode) | DIR_OWNER_BITS
}

/// Where the byte bound of an unpacking comes from, for its message.
#[derive(Clone, Debug, PartialEq, Eq)]
enum BytesBound {
    /// `unpack_bytes_max` itself.
    Limit,
    /// The free space of the file system less the reserve.
    FreeSpace { free_bytes: u64, reserve_bytes: u64 },
}

/// The counters of one unpacking against its bounds.
#[derive(Debug)]
pub struct Budget {
    bytes_max: u64,
    entries_max: u64,
    bound: BytesBound,
    bytes: u64,
    entries: u64,
}

impl Budget {
    /// The bounds for unpacking into `dest` (not yet created): `limits.bytes_max`,
    /// lowered to the free space of `dest`'s file system less `reserve_bytes`.
    pub fn new(limits: &UnpackLimits, dest: &Path) -> Result<Budget, UnpackError> {
        let parent = match dest.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let free_bytes = crate::sys::free_bytes(parent).map_err(|e| {
            failed(format!(
                "cannot check the free space of {}: {e}",
                parent.display()
            ))
        })?;
        Ok(Budget::with_free_space(limits, free_bytes))
    }

    /// The bounds given the free space: pure, for the tests.
    pub fn with_free_space(limits: &UnpackLimits, free_bytes: u64) -> Budget {
        let room = free_bytes.saturating_sub(limits.reserve_bytes);
        let (bytes_max, bound) = if room < limits.bytes_max {
            let bound = BytesBound::FreeSpace {
                free_bytes,
                reserve_bytes: limits.reserve_bytes,
            };
            (room, bound)
        } else {
            (limits.bytes_max, BytesBound::Limit)
        };
        Budget {
            bytes_max,
            entries_max: limits.entries_max,
            bound,
            bytes: 0,
            entries: 0,
        }
    }

    /// The most bytes this unpacking may write.
    pub fn bytes_max(&self) -> u64 {
        self.bytes_max
    }

    /// Entries counted so far.
    pub fn entries(&self) -> u64 {
        self.entries
    }

    /// Counts `size` bytes of data (declared by a header, before they are read).
    pub fn data(&mut self, size: u64) -> Result<(), UnpackError> {
        match self.bytes.checked_add(size) {
            Some(total) if total <= self.bytes_max => {
                self.bytes = total;
                Ok(())
            }
            _ => Err(bad(self.over_bytes())),
        }
    }

    /// Counts one entry (a file, directory or link; not an extension header).
    pub fn entry(&mut self) -> Result<(), UnpackError> {
        self.entries = self.entries.saturating_add(1);
        if self.entries > self.entries_max {
            return Err(bad(format!(
                "package has more than {} entries (unpack_entries_max)",
                self.entries_max
            )));
        }
        Ok(())
    }

    /// The decompressed stream of an archive, failing once it carries more than
    /// the bounds allow plus header overhead, whatever the headers say.
    pub fn capped<R: Read>(&self, inner: R) -> CappedReader<R> {
        let cap = self
            .bytes_max
            .saturating_add(self.entries_max.saturating_mul(ENTRY_OVERHEAD_BYTES))
            .saturating_add(ARCHIVE_END_BYTES_MAX);
        CappedReader {
            inner,
            left: cap,
            cap,
        }
    }

    fn over_bytes(&self) -> String {
        match self.bound {
            BytesBound::Limit => format!(
                "package unpacks to more than {} bytes (unpack_bytes_max)",
                self.bytes_max
            ),
            BytesBound::FreeSpace {
                free_bytes,
                reserve_bytes,
            } => format!(
                "package unpacks to more than {} bytes: {free_bytes} bytes free, {reserve_bytes} kept in reserve",
                self.bytes_max
            ),
        }
    }
}

/// The decompressed stream went past its bound.
#[derive(Debug)]
pub struct StreamBound(pub u64);

impl fmt::Display for StreamBound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "package decompresses to more than {} bytes", self.0)
    }
}

impl std::error::Error for StreamBound {}

/// A reader that fails (with a [`StreamBound`] inside an `InvalidData` error) once
/// more than `cap` bytes came through.
pub struct CappedReader<R> {
    inner: R,
    left: u64,
    cap: u64,
}

impl<R> CappedReader<R> {
    pub fn into_inner(self) -> R {
        self.inner
    }
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
mod tests {
    use super::*;

    fn limits(bytes_max: u64, entries_max: u64, reserve_bytes: u64) -> UnpackLimits {
        UnpackLimits {
            bytes_max,
            entries_max,
            reserve_bytes,
            ..UnpackLimits::default()
        }
    }

    #[test]
    fn modes_lose_setuid_setgid_sticky_and_group_other_write() {
        assert_eq!(file_mode(0o7777), 0o755);
        assert_eq!(file_mode(0o4755), 0o755);
        assert_eq!(file_mode(0o666), 0o644);
        assert_eq!(file_mode(0o600), 0o600);
        assert_eq!(dir_mode(0o2777), 0o755);
        assert_eq!(dir_mode(0o000), 0o700);
    }

    #[test]
    fn bytes_are_bounded_by_the_limit_or_the_free_space_less_the_reserve() {
        let mut budget = Budget::with_free_space(&limits(100, 10, 5), 1_000);
        assert_eq!(budget.bytes_max(), 100);
        assert!(budget.data(60).is_ok());
        assert!(budget.data(40).is_ok());
        let err = budget.data(1).unwrap_err();
        assert_eq!(err.errcode, crate::job_fields::ErrCode::BadPackage);
        assert!(err.message.contains("unpack_bytes_max"), "{}", err.message);

        let mut budget = Budget::with_free_space(&limits(100, 10, 5), 50);
        assert_eq!(budget.bytes_max(), 45);
        let err = budget.data(46).unwrap_err();
        assert!(err.message.contains("50 bytes free"), "{}", err.message);
        assert!(budget.data(u64::MAX).is_err());

        assert_eq!(
            Budget::with_free_space(&limits(100, 10, 5), 3).bytes_max(),
            0
        );
    }

    #[test]
    fn entries_are_bounded() {
        let mut budget = Budget::with_free_space(&limits(100, 2, 0), 1_000);
        assert!(budget.entry().is_ok());
        assert!(budget.entry().is_ok());
        let err = budget.entry().unwrap_err();
        assert!(
            err.message.contains("more than 2 entries"),
            "{}",
            err.message
        );
    }

    #[test]
    fn a_capped_stream_fails_past_its_cap() {
        let budget = Budget::with_free_space(&limits(0, 0, 0), 0);
        let data = vec![0u8; ARCHIVE_END_BYTES_MAX as usize + 1];
        let mut out = Vec::new();
        let err = budget.capped(&data[..]).read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("decompresses to more than"));
        let exact = vec![0u8; ARCHIVE_END_BYTES_MAX as usize];
        out.clear();
        assert!(budget.capped(&exact[..]).read_to_end(&mut out).is_ok());
    }
}
