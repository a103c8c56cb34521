//! The cpio `newc` format (magic `070701`, or `070702` with checksums), as rpm
//! payloads carry it: read header by header from the decompressed stream, every
//! entry through the same checks and bounds as a tar entry (`entry.rs`).
//!
//! Hard links, the newc way: every name of a file with several links has the same
//! inode number, and only one of them (usually the last) carries the data. Names
//! seen before the data wait (at most [`HARD_LINKS_PENDING_MAX`]) and become hard
//! links to it; names whose data never came are an empty file and links to it.

use super::archive::{read_error, Extractor};
use super::shared::{bad, quote, read_full, UnpackError};
use std::io::{self, Read};
use std::path::PathBuf;

/// Header of a newc entry: the magic and 13 fields of 8 hex digits.
const HEADER_BYTES: usize = 110;
const MAGIC_NEWC: &[u8] = b"070701";
const MAGIC_CRC: &[u8] = b"070702";
/// The name of the entry that ends the archive.
const TRAILER: &[u8] = b"TRAILER!!!";
/// Headers, names and data are padded to multiples of this.
const ALIGN_BYTES: u64 = 4;
/// Multiply-linked files of one payload, and names of them waiting for the
/// entry that has their data (each bound on its own).
pub const HARD_LINKS_PENDING_MAX: usize = 4096;

const MODE_TYPE_MASK: u32 = 0o170000;
const MODE_REGULAR: u32 = 0o100000;
const MODE_DIRECTORY: u32 = 0o040000;
const MODE_SYMLINK: u32 = 0o120000;
const MODE_CHAR: u32 = 0o020000;
const MODE_BLOCK: u32 = 0o060000;
const MODE_FIFO: u32 = 0o010000;
const MODE_SOCKET: u32 = 0o140000;

/// One header's fields that matter here.
struct Header {
    ino: u32,
    mode: u32,
    nlink: u32,
    size: u64,
    dev: (u32, u32),
    name_size: u64,
}

impl Header {
    fn parse(raw: &[u8; HEADER_BYTES]) -> Result<Header, UnpackError> {
        let magic = raw.get(..6).unwrap_or_default();
        if magic != MAGIC_NEWC && magic != MAGIC_CRC {
            return Err(bad(format!(
                "cpio entry has the magic {} (only newc, 070701 or 070702, is read)",
                quote(magic)
            )));
        }
        let field = |index: usize| -> Result<u32, UnpackError> {
            let start = 6 + index * 8;
            let digits = raw.get(start..start + 8).unwrap_or_default();
            std::str::from_utf8(digits)
                .ok()
                .filter(|text| text.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|text| u32::from_str_radix(text, 16).ok())
                .ok_or_else(|| bad(format!("cpio header has a bad field {}", quote(digits))))
        };
        Ok(Header {
            ino: field(0)?,
            mode: field(1)?,
            nlink: field(4)?,
            size: field(6)?.into(),
            dev: (field(7)?, field(8)?),
            name_size: field(11)?.into(),
        })
    }
}

/// A multiply-linked file (device and inode): where its data went, or the names
/// waiting for it.
struct Linked {
    key: ((u32, u32), u32),
    written: Option<PathBuf>,
    waiting: Vec<(PathBuf, u32, String)>,
}

/// Extracts a newc stream up to its trailer, then reads the stream to its end
/// (so that a compressed payload's checksum is checked).
pub(super) fn extract_cpio(
    mut stream: Box<dyn Read + '_>,
    extractor: &mut Extractor<'_>,
) -> Result<(), UnpackError> {
    // At most HARD_LINKS_PENDING_MAX files: a list is small and quick enough.
    let mut linked: Vec<Linked> = Vec::new();
    let mut pending_names: usize = 0;
    loop {
        let mut raw = [0u8; HEADER_BYTES];
        let got = read_full(&mut stream, &mut raw).map_err(read_error)?;
        if got != HEADER_BYTES {
            return Err(bad("cpio payload ends without its trailer".to_string()));
        }
        let header = Header::parse(&raw)?;
        let path_max = extractor.limits.path_bytes_max as u64;
        if header.name_size == 0 || header.name_size > path_max.saturating_add(1) {
            return Err(bad(format!(
                "cpio entry has a name of {} bytes (at most {path_max})",
                header.name_size
            )));
        }
        let mut name = vec![0u8; header.name_size as usize];
        if read_full(&mut stream, &mut name).map_err(read_error)? != name.len() {
            return Err(bad("cpio entry name is truncated".to_string()));
        }
        if name.pop() != Some(0) {
            return Err(bad("cpio entry name does not end with NUL".to_string()));
        }
        skip(&mut stream, padding(HEADER_BYTES as u64 + header.name_size))?;
        if name == TRAILER {
            break;
        }
        let shown = quote(&name);
        extractor.count_entry(header.size)?;
        let rel = extractor.entry_path(&name, &shown)?;
        let mode = header.mode & !MODE_TYPE_MASK;
        let mut data = (&mut stream).take(header.size);
        match header.mode & MODE_TYPE_MASK {
            MODE_REGULAR if header.nlink > 1 => {
                let key = (header.dev, header.ino);
                let index = match linked.iter().position(|file| file.key == key) {
                    Some(index) => index,
                    None if linked.len() >= HARD_LINKS_PENDING_MAX => {
                        return Err(bad(format!(
                            "cpio payload has more than {HARD_LINKS_PENDING_MAX} hard-linked files"
                        )))
                    }
                    None => {
                        linked.push(Linked {
                            key,
                            written: None,
                            waiting: Vec::new(),
                        });
                        linked.len() - 1
                    }
                };
                let Some(file) = linked.get_mut(index) else {
                    return Err(bad("cpio hard link table is inconsistent".to_string()));
                };
                match &file.written {
                    Some(first) if header.size == 0 => {
                        let first = first.clone();
                        extractor.make_hard_link(
                            &rel,
                            Some(first.as_os_str().as_encoded_bytes()),
                            &shown,
                        )?;
                    }
                    Some(_) => {
                        return Err(bad(format!(
                        "cpio entry {shown} carries the data of a hard-linked file a second time"
                    )))
                    }
                    None if header.size == 0 => {
                        pending_names += 1;
                        if pending_names > HARD_LINKS_PENDING_MAX {
                            return Err(bad(format!(
                                "cpio payload has more than {HARD_LINKS_PENDING_MAX} hard links waiting for their data"
                            )));
                        }
                        file.waiting.push((rel, mode, shown));
                    }
                    None => {
                        extractor.write_file(&mut data, &rel, mode, header.size, &shown)?;
                        let waiting = std::mem::take(&mut file.waiting);
                        pending_names = pending_names.saturating_sub(waiting.len());
                        file.written = Some(rel.clone());
                        link_all(extractor, &rel, waiting)?;
                    }
                }
            }
            MODE_REGULAR => extractor.write_file(&mut data, &rel, mode, header.size, &shown)?,
            MODE_DIRECTORY => {
                if header.size != 0 {
                    return Err(bad(format!("cpio directory {shown} has data")));
                }
                extractor.make_dir(&rel, mode, &shown)?
            }
            MODE_SYMLINK => {
                if header.size > path_max {
                    return Err(bad(format!(
                        "symlink {shown} has a target over {path_max} bytes"
                    )));
                }
                let mut target = Vec::new();
                data.read_to_end(&mut target).map_err(read_error)?;
                if target.len() as u64 != header.size {
                    return Err(bad(format!("cpio entry {shown} is truncated")));
                }
                extractor.make_symlink(&rel, Some(&target), &shown)?
            }
            MODE_CHAR | MODE_BLOCK => return Err(bad(format!("entry {shown} is a device file"))),
            MODE_FIFO => return Err(bad(format!("entry {shown} is a FIFO"))),
            MODE_SOCKET => return Err(bad(format!("entry {shown} is a socket"))),
            other => {
                return Err(bad(format!(
                    "entry {shown} has the unknown file type {other:o}"
                )))
            }
        }
        skip(&mut stream, padding(header.size))?;
    }
    // Names whose data never came: an empty file, the others linked to it.
    for file in linked {
        let mut waiting = file.waiting.into_iter();
        if let Some((rel, mode, shown)) = waiting.next() {
            extractor.write_file(&mut io::empty(), &rel, mode, 0, &shown)?;
            link_all(extractor, &rel, waiting.collect())?;
        }
    }
    let mut rest = stream;
    loop {
        match rest.read(&mut extractor.buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_error(e)),
        }
    }
}

fn link_all(
    extractor: &mut Extractor<'_>,
    first: &std::path::Path,
    names: Vec<(PathBuf, u32, String)>,
) -> Result<(), UnpackError> {
    let target = first.as_os_str().as_encoded_bytes().to_vec();
    for (rel, _, shown) in names {
        extractor.make_hard_link(&rel, Some(&target), &shown)?;
    }
    Ok(())
}

/// Bytes of padding after `len` bytes.
fn padding(len: u64) -> u64 {
    (ALIGN_BYTES - len % ALIGN_BYTES) % ALIGN_BYTES
}

fn skip<R: Read>(stream: &mut R, bytes: u64) -> Result<(), UnpackError> {
    let skipped = io::copy(&mut stream.take(bytes), &mut io::sink()).map_err(read_error)?;
    if skipped != bytes {
        return Err(bad("cpio payload is truncated".to_string()));
    }
    Ok(())
}
