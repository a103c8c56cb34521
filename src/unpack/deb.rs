//! The deb format: an `ar` archive of `debian-binary` (version 2.x), then
//! `control.tar[.gz|.xz|.zst]`, then `data.tar[.gz|.xz|.zst]`, members read one
//! after the other from the file (a member may not run past the end of the file,
//! so none can overlap another). Of the control archive only `control` (its
//! `Version`, at most [`CONTROL_FILE_BYTES_MAX`]) and the names of maintainer
//! scripts are read; the data archive is extracted like any tar.

use super::archive::{extract_tar, read_error, Extractor};
use super::compress::{decoder, Compression};
use super::shared::{bad, failed, quote, read_full, UnpackError};
use std::fs::File;
use std::io::{self, BufReader, Read};

pub(super) const AR_MAGIC: &[u8] = b"!<arch>\n";
const MEMBER_HEADER_BYTES: usize = 60;
const MEMBER_END: &[u8] = b"`\n";
const DEBIAN_BINARY: &str = "debian-binary";
/// Largest `debian-binary` member.
const DEBIAN_BINARY_BYTES_MAX: u64 = 64;
/// Largest `control` file read.
pub const CONTROL_FILE_BYTES_MAX: u64 = 64 * 1024;
/// Decompressed bytes of the control archive read at most (it holds md5sums of
/// every file, so it grows with the package).
pub const CONTROL_TAR_BYTES_MAX: u64 = 64 << 20;
/// Maintainer scripts dpkg would run.
const SCRIPTS: &[&str] = &[
    "preinst", "postinst", "prerm", "postrm", "config", "triggers",
];

/// What the control archive says.
#[derive(Debug, Default)]
pub(super) struct DebInfo {
    pub(super) version: Option<String>,
    pub(super) scripts: Vec<String>,
}

/// Reads the members in order; extracts `data.tar.*` into the extractor's `dest`.
pub(super) fn unpack_deb(
    file: File,
    extractor: &mut Extractor<'_>,
) -> Result<DebInfo, UnpackError> {
    let file_bytes = file
        .metadata()
        .map_err(|e| failed(format!("reading the package: {e}")))?
        .len();
    let mut reader = BufReader::new(file);
    let mut magic = [0u8; AR_MAGIC.len()];
    read_full(&mut reader, &mut magic).map_err(read_error)?;
    let mut at = AR_MAGIC.len() as u64;
    let mut control: Option<DebInfo> = None;
    let mut data_done = false;
    let mut index = 0;
    loop {
        let mut header = [0u8; MEMBER_HEADER_BYTES];
        let got = read_full(&mut reader, &mut header).map_err(read_error)?;
        if got == 0 {
            break;
        }
        if got != MEMBER_HEADER_BYTES || header.get(58..60) != Some(MEMBER_END) {
            return Err(bad("deb has a bad ar member header".to_string()));
        }
        let raw_name = header.get(..16).unwrap_or_default();
        let name = std::str::from_utf8(raw_name)
            .map(|name| name.trim_end().trim_end_matches('/').to_string())
            .map_err(|_| bad(format!("deb member name {} is not text", quote(raw_name))))?;
        let size = std::str::from_utf8(header.get(48..58).unwrap_or_default())
            .ok()
            .and_then(|text| text.trim_end().parse::<u64>().ok())
            .ok_or_else(|| bad(format!("deb member {} has a bad size", quote(raw_name))))?;
        at += MEMBER_HEADER_BYTES as u64;
        if size > file_bytes.saturating_sub(at) {
            return Err(bad(format!(
                "deb member {} runs past the end of the file",
                quote(name.as_bytes())
            )));
        }
        let mut member = (&mut reader).take(size);
        if index == 0 {
            if name != DEBIAN_BINARY || size > DEBIAN_BINARY_BYTES_MAX {
                return Err(bad("deb does not start with debian-binary".to_string()));
            }
            let mut text = Vec::new();
            member.read_to_end(&mut text).map_err(read_error)?;
            if !text.starts_with(b"2.") {
                return Err(bad(format!(
                    "deb format {} is not 2.x",
                    quote(text.trim_ascii())
                )));
            }
        } else if name.starts_with("control.tar") {
            if control.is_some() || data_done {
                return Err(bad("deb has a misplaced or second control.tar".to_string()));
            }
            control = Some(read_control(&mut member)?);
        } else if name.starts_with("data.tar") {
            if control.is_none() || data_done {
                return Err(bad(
                    "deb has data.tar before control.tar, or twice".to_string()
                ));
            }
            let stream = decompressed(Box::new(&mut member), &name)?;
            extract_tar(Box::new(extractor.capped(stream)), extractor)?;
            data_done = true;
        }
        // Anything else (`_`-prefixed members, signatures) is skipped.
        io::copy(&mut member, &mut io::sink()).map_err(read_error)?;
        let padding = size % 2;
        io::copy(&mut (&mut reader).take(padding), &mut io::sink()).map_err(read_error)?;
        at += size + padding;
        index += 1;
    }
    if !data_done {
        return Err(bad("deb has no data.tar member".to_string()));
    }
    Ok(control.unwrap_or_default())
}

/// The member's decompressed stream, told by its magic bytes.
fn decompressed<'a>(
    member: Box<dyn Read + 'a>,
    name: &str,
) -> Result<Box<dyn Read + 'a>, UnpackError> {
    let mut member = BufReader::new(member);
    let mut head = [0u8; 6];
    let len = read_full(&mut member, &mut head).map_err(read_error)?;
    let head = head.get(..len).unwrap_or_default().to_vec();
    let compression = Compression::sniff(&head).unwrap_or(Compression::None);
    if compression == Compression::None && name.contains(".tar.") {
        return Err(bad(format!(
            "deb member {} is compressed with something else than gzip, xz or zstd",
            quote(name.as_bytes())
        )));
    }
    decoder(compression, Box::new(io::Cursor::new(head).chain(member)))
}

/// The `Version` of `control` and the maintainer scripts present.
fn read_control(member: &mut dyn Read) -> Result<DebInfo, UnpackError> {
    let stream = decompressed(Box::new(member), "control.tar")?;
    let mut capped = stream.take(CONTROL_TAR_BYTES_MAX.saturating_add(1));
    // Boxed: the same tar reader as the data archive's, compiled once.
    let mut archive = tar::Archive::new(Box::new(&mut capped) as Box<dyn Read + '_>);
    let mut info = DebInfo::default();
    let mut control = None;
    for entry in archive.entries().map_err(read_error)?.raw(true) {
        let mut entry = entry.map_err(read_error)?;
        let path = entry.path_bytes().into_owned();
        let name = path.strip_prefix(b"./").unwrap_or(&path);
        let regular = entry.header().entry_type().is_file();
        if name == b"control" && regular {
            if entry.size() > CONTROL_FILE_BYTES_MAX {
                return Err(bad(format!(
                    "deb control file is over {CONTROL_FILE_BYTES_MAX} bytes"
                )));
            }
            let mut text = Vec::new();
            (&mut entry)
                .take(CONTROL_FILE_BYTES_MAX)
                .read_to_end(&mut text)
                .map_err(read_error)?;
            control = Some(text);
        } else if let Some(script) = SCRIPTS.iter().find(|s| s.as_bytes() == name) {
            info.scripts.push((*script).to_string());
        }
    }
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink()).map_err(read_error)?;
    drop(rest);
    if capped.limit() == 0 {
        return Err(bad(format!(
            "deb control.tar decompresses to more than {CONTROL_TAR_BYTES_MAX} bytes"
        )));
    }
    let control = control.ok_or_else(|| bad("deb control.tar has no control file".to_string()))?;
    info.version = control_version(&control);
    Ok(info)
}

/// The `Version` field of a control file, if it has one.
pub(super) fn control_version(control: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(control);
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("Version")
            .then(|| value.trim().to_string())
    })
}
