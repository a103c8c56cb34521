//! The tar.gz format: the gzip stream, capped at what the bounds allow; the walk over
//! the entries in raw mode, with GNU long names and links and pax headers read here,
//! bounded; each entry counted against the bounds and dispatched by its type (the
//! creation itself is in `entry.rs`); then the checks of the whole tree.

use super::tree::{check_run, find_root, read_version_file};
use super::{
    bad, failed, quote, UnpackError, UnpackLimits, Unpacked, COPY_BUFFER_BYTES,
    PAX_HEADER_BYTES_MAX,
};
use flate2::read::GzDecoder;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// One tar block; every header and every entry's padded data are multiples of it.
const TAR_BLOCK_BYTES: u64 = 512;
/// Decompressed bytes one entry may take besides its data: its header and those
/// of a long name, a long link and a pax header, each with up to a block of padding.
const ENTRY_OVERHEAD_BYTES: u64 = 8 * TAR_BLOCK_BYTES;
/// Decompressed bytes after the last entry: end-of-archive blocks and record
/// padding (GNU tar's largest blocking factor is 2048 blocks).
const ARCHIVE_END_BYTES_MAX: u64 = 2048 * TAR_BLOCK_BYTES;
/// Keys of the pax records this reader honours.
const PAX_PATH: &[u8] = b"path";
const PAX_LINKPATH: &[u8] = b"linkpath";
const PAX_SIZE: &[u8] = b"size";

/// The tar.gz format: extract, drain the gzip stream, find the root, check `run`.
pub(super) fn unpack_tar_gz(
    file: File,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<Unpacked, UnpackError> {
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
pub(super) struct Extractor<'a> {
    pub(super) dest: &'a Path,
    pub(super) limits: &'a UnpackLimits,
    pending: Pending,
    /// Entries seen, extension headers excluded.
    entries: u64,
    /// Declared data of all entries so far.
    data_bytes: u64,
    /// File content written so far.
    pub(super) file_bytes: u64,
    /// The last parent directory found to be a real directory (relative to dest).
    pub(super) checked_dir: PathBuf,
    pub(super) buf: Vec<u8>,
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

/// An error reading the archive: the host's when the system said so (reading the
/// downloaded file), the package's otherwise (gzip, tar, the stream bound).
pub(super) fn read_error(e: io::Error) -> UnpackError {
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

/// The decompressed stream went past its bound.
#[derive(Debug)]
pub(super) struct StreamBound(pub(super) u64);

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
