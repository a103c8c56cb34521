//! The tar format: the decompressed stream, capped at what the bounds allow; the walk over
//! the entries in raw mode, with GNU long names and links and pax headers read here,
//! bounded; each entry counted against the bounds and dispatched by its type (the
//! creation itself is in `entry.rs`); then the checks of the whole tree.

use super::budget::{Budget, CappedReader, StreamBound};
use super::shared::{
    bad, failed, quote, UnpackError, UnpackLimits, COPY_BUFFER_BYTES, PAX_HEADER_BYTES_MAX,
};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Keys of the pax records this reader honours.
const PAX_PATH: &[u8] = b"path";
const PAX_LINKPATH: &[u8] = b"linkpath";
const PAX_SIZE: &[u8] = b"size";

/// Walks a tar stream (already decompressed and capped) into the extractor, then
/// reads the rest of the stream (end blocks, padding, a compressed stream's
/// trailer) so that its checksum is checked.
pub(super) fn extract_tar(
    stream: Box<dyn Read + '_>,
    extractor: &mut Extractor<'_>,
) -> Result<(), UnpackError> {
    let mut archive = tar::Archive::new(stream);
    for entry in archive.entries().map_err(read_error)?.raw(true) {
        extractor.entry(entry.map_err(read_error)?)?;
    }
    if extractor.pending.any() {
        return Err(bad(
            "archive ends with an extension header and no entry".to_string()
        ));
    }
    let mut rest = archive.into_inner();
    loop {
        match rest.read(&mut extractor.buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
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
    /// Entries (extension headers excluded) and declared data of all so far.
    budget: &'a mut Budget,
    pending: Pending,
    /// File content written so far.
    pub(super) file_bytes: u64,
    /// rpm and deb payloads: an absolute symlink target is taken relative to the
    /// version root (`/usr/lib/x` from `usr/bin/l` becomes `../lib/x`).
    pub(super) relocate_links: bool,
    /// The last parent directory found to be a real directory (relative to dest).
    pub(super) checked_dir: PathBuf,
    pub(super) buf: Vec<u8>,
}

impl<'a> Extractor<'a> {
    pub(super) fn new(dest: &'a Path, limits: &'a UnpackLimits, budget: &'a mut Budget) -> Self {
        Extractor {
            dest,
            limits,
            budget,
            pending: Pending::default(),
            file_bytes: 0,
            relocate_links: false,
            checked_dir: PathBuf::new(),
            buf: vec![0u8; COPY_BUFFER_BYTES],
        }
    }

    /// Entries extracted, extension headers excluded.
    pub(super) fn entries(&self) -> u64 {
        self.budget.entries()
    }

    /// The decompressed stream of an archive, capped by the budget.
    pub(super) fn capped<R: Read>(&self, inner: R) -> CappedReader<R> {
        self.budget.capped(inner)
    }

    /// Counts one entry of another format (cpio) and its declared data.
    pub(super) fn count_entry(&mut self, size: u64) -> Result<(), UnpackError> {
        self.budget.data(size)?;
        self.budget.entry()
    }

    fn entry<R: Read>(&mut self, mut entry: tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        let size = entry.size();
        self.budget.data(size)?;
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
        self.budget.entry()?;
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
        None => bad(format!("not a valid package: {e}")),
    }
}
