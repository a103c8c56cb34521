//! The rpm format: a 96-byte lead, a signature header (skipped, padded to 8
//! bytes), the main header, then the payload: a cpio `newc` archive compressed
//! with gzip, xz or zstd (told by its magic bytes). Both headers are parsed with
//! bounds ([`HEADER_TAGS_MAX`], [`HEADER_DATA_BYTES_MAX`], never past the end of
//! the file); of the main header only a few tags are read, by seeking to them:
//! name, version, release, payload format, and which scriptlets the package has.
//! Signatures are not checked: the job's SHA256 vouches for the file.

use super::archive::Extractor;
use super::compress::{decoder, Compression};
use super::cpio::extract_cpio;
use super::shared::{bad, failed, quote, read_full, UnpackError};
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

pub(super) const RPM_MAGIC: &[u8] = &[0xed, 0xab, 0xee, 0xdb];
const LEAD_BYTES: u64 = 96;
const HEADER_MAGIC: &[u8] = &[0x8e, 0xad, 0xe8, 0x01];
/// A header's intro: magic, 4 reserved bytes, tag count, data size.
const INTRO_BYTES: u64 = 16;
const INDEX_ENTRY_BYTES: u64 = 16;
/// Most tags in one header (rpm's own bound).
pub const HEADER_TAGS_MAX: u32 = 0xffff;
/// Largest data store of one header (rpm's own bound).
pub const HEADER_DATA_BYTES_MAX: u32 = 256 << 20;
/// Longest string tag read (name, version, release, payload format).
const STRING_TAG_BYTES_MAX: usize = 256;
/// The signature header is padded to a multiple of this.
const SIGNATURE_ALIGN_BYTES: u64 = 8;

const TYPE_STRING: u32 = 6;
const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_PAYLOAD_FORMAT: u32 = 1124;
/// Scriptlet tags and the names rpm's spec files give them.
const SCRIPT_TAGS: &[(u32, &str)] = &[
    (1023, "%pre"),
    (1024, "%post"),
    (1025, "%preun"),
    (1026, "%postun"),
    (1065, "%trigger"),
    (1079, "%verifyscript"),
    (1151, "%pretrans"),
    (1152, "%posttrans"),
    (5066, "%filetrigger"),
    (5076, "%transfiletrigger"),
];

/// What the main header says.
#[derive(Debug, Default)]
pub(super) struct RpmInfo {
    pub(super) name: Option<String>,
    pub(super) version: Option<String>,
    pub(super) release: Option<String>,
    pub(super) scripts: Vec<&'static str>,
}

/// Reads the headers, then extracts the payload into the extractor's `dest`.
pub(super) fn unpack_rpm(
    mut file: File,
    extractor: &mut Extractor<'_>,
) -> Result<RpmInfo, UnpackError> {
    let file_bytes = file
        .metadata()
        .map_err(|e| failed(format!("reading the package: {e}")))?
        .len();
    let mut lead = [0u8; LEAD_BYTES as usize];
    if read_full(&mut file, &mut lead).map_err(io_failed)? != lead.len() {
        return Err(bad("rpm lead is truncated".to_string()));
    }
    let (_, signature_end) = read_header(&mut file, LEAD_BYTES, file_bytes, "signature", &[])?;
    let header_start = signature_end.next_multiple_of(SIGNATURE_ALIGN_BYTES);
    let (tags, payload_start) = read_header(
        &mut file,
        header_start,
        file_bytes,
        "main",
        &[TAG_NAME, TAG_VERSION, TAG_RELEASE, TAG_PAYLOAD_FORMAT],
    )?;
    let mut info = RpmInfo::default();
    let mut payload_format = None;
    for tag in &tags {
        if let Some((_, script)) = SCRIPT_TAGS.iter().find(|(t, _)| *t == tag.tag) {
            if !info.scripts.contains(script) {
                info.scripts.push(script);
            }
            continue;
        }
        let value = read_string(&mut file, tag)?;
        match tag.tag {
            TAG_NAME => info.name = Some(value),
            TAG_VERSION => info.version = Some(value),
            TAG_RELEASE => info.release = Some(value),
            _ => payload_format = Some(value),
        }
    }
    if let Some(format) = payload_format.filter(|format| format != "cpio") {
        return Err(bad(format!(
            "rpm payload format is {} (only cpio is read)",
            quote(format.as_bytes())
        )));
    }
    file.seek(SeekFrom::Start(payload_start))
        .map_err(io_failed)?;
    let mut payload = BufReader::new(file);
    let mut head = [0u8; 8];
    let head_len = read_full(&mut payload, &mut head).map_err(io_failed)?;
    let head = head.get(..head_len).unwrap_or_default();
    let compression = match Compression::sniff(head) {
        Some(compression) => compression,
        None if head.starts_with(b"0707") => Compression::None,
        None if head.is_empty() => return Err(bad("rpm has no payload".to_string())),
        None => {
            return Err(bad(
                "rpm payload is compressed with something else than gzip, xz or zstd".to_string(),
            ))
        }
    };
    let stream = decoder(
        compression,
        Box::new(std::io::Cursor::new(head.to_vec()).chain(payload)),
    )?;
    let capped = extractor.capped(stream);
    extract_cpio(Box::new(capped), extractor)?;
    Ok(info)
}

/// One index entry of the main header that is read.
#[derive(Debug)]
struct Tag {
    tag: u32,
    /// Where its data is in the file.
    at: u64,
}

/// Reads the header at `start`: its intro and index (keeping the entries of
/// `wanted` tags and of scriptlets), checked against the bounds and the file's
/// size. Returns them and where the header ends.
fn read_header(
    file: &mut File,
    start: u64,
    file_bytes: u64,
    what: &str,
    wanted: &[u32],
) -> Result<(Vec<Tag>, u64), UnpackError> {
    file.seek(SeekFrom::Start(start)).map_err(io_failed)?;
    let mut intro = [0u8; INTRO_BYTES as usize];
    if read_full(file, &mut intro).map_err(io_failed)? != intro.len() {
        return Err(bad(format!("rpm {what} header is truncated")));
    }
    if intro.get(..4) != Some(HEADER_MAGIC) {
        return Err(bad(format!("rpm {what} header has a bad magic")));
    }
    let count = be32(&intro, 8);
    let data_bytes = be32(&intro, 12);
    if count > HEADER_TAGS_MAX || data_bytes > HEADER_DATA_BYTES_MAX {
        return Err(bad(format!(
            "rpm {what} header has {count} tags and {data_bytes} bytes of data (at most {HEADER_TAGS_MAX} and {HEADER_DATA_BYTES_MAX})"
        )));
    }
    let data_start = start + INTRO_BYTES + u64::from(count) * INDEX_ENTRY_BYTES;
    let end = data_start + u64::from(data_bytes);
    if end > file_bytes {
        return Err(bad(format!(
            "rpm {what} header runs past the end of the file"
        )));
    }
    let mut tags = Vec::new();
    let mut index = BufReader::new(file.take(u64::from(count) * INDEX_ENTRY_BYTES));
    for _ in 0..count {
        let mut entry = [0u8; INDEX_ENTRY_BYTES as usize];
        if read_full(&mut index, &mut entry).map_err(io_failed)? != entry.len() {
            return Err(bad(format!("rpm {what} header index is truncated")));
        }
        let tag = be32(&entry, 0);
        let is_script = SCRIPT_TAGS.iter().any(|(t, _)| *t == tag);
        if !is_script && !wanted.contains(&tag) {
            continue;
        }
        let offset = be32(&entry, 8);
        if offset >= data_bytes {
            return Err(bad(format!(
                "rpm {what} header tag {tag} points past its data"
            )));
        }
        if !is_script && be32(&entry, 4) != TYPE_STRING {
            return Err(bad(format!("rpm {what} header tag {tag} is not a string")));
        }
        if tags.iter().any(|t: &Tag| t.tag == tag) {
            return Err(bad(format!("rpm {what} header has tag {tag} twice")));
        }
        tags.push(Tag {
            tag,
            at: data_start + u64::from(offset),
        });
    }
    Ok((tags, end))
}

/// A NUL-terminated string tag, at most [`STRING_TAG_BYTES_MAX`] bytes of UTF-8.
fn read_string(file: &mut File, tag: &Tag) -> Result<String, UnpackError> {
    file.seek(SeekFrom::Start(tag.at)).map_err(io_failed)?;
    let mut raw = [0u8; STRING_TAG_BYTES_MAX + 1];
    let len = read_full(file, &mut raw).map_err(io_failed)?;
    let raw = raw.get(..len).unwrap_or_default();
    let end = raw
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| bad(format!("rpm header tag {} is not a short string", tag.tag)))?;
    let text = raw.get(..end).unwrap_or_default();
    String::from_utf8(text.to_vec())
        .map_err(|_| bad(format!("rpm header tag {} is not UTF-8", tag.tag)))
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    if let Some(slice) = bytes.get(at..at + 4) {
        word.copy_from_slice(slice);
    }
    u32::from_be_bytes(word)
}

fn io_failed(e: std::io::Error) -> UnpackError {
    failed(format!("reading the package: {e}"))
}
