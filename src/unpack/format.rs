//! The archive formats: which one a file is, by its magic bytes, and the
//! extraction of a tar (compressed or not), an rpm or a deb into the version
//! directory, then `run` made sure of.

use super::archive::{extract_tar, Extractor};
use super::budget::Budget;
use super::compress::{decoder, Compression};
use super::shared::{bad, quote, Program, UnpackError, UnpackLimits, Unpacked};
use super::tree::{check_run, find_root, read_version_file};
use super::{deb, program, rpm};
use crate::job_fields::valid_version;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

/// Bytes read to tell the format: a tar header, whose magic is at offset 257.
pub(super) const HEAD_BYTES: usize = 512;
const TAR_MAGIC_AT: usize = 257;
const TAR_MAGIC: &[u8] = b"ustar";

/// The formats, told by content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Tar(Compression),
    Rpm,
    Deb,
    Executable,
}

impl Format {
    pub(super) fn sniff(head: &[u8]) -> Format {
        if head.starts_with(rpm::RPM_MAGIC) {
            Format::Rpm
        } else if head.starts_with(deb::AR_MAGIC) {
            Format::Deb
        } else if let Some(compression) = Compression::sniff(head) {
            Format::Tar(compression)
        } else if head.get(TAR_MAGIC_AT..TAR_MAGIC_AT + TAR_MAGIC.len()) == Some(TAR_MAGIC) {
            Format::Tar(Compression::None)
        } else {
            Format::Executable
        }
    }
}

/// A tar (compressed or not), an rpm or a deb: extract, then make sure of `run`.
pub(super) fn unpack_archive(
    file: File,
    format: Format,
    dest: &Path,
    limits: &UnpackLimits,
    budget: &mut Budget,
    program: &Program<'_>,
) -> Result<Unpacked, UnpackError> {
    let mut extractor = Extractor::new(dest, limits, budget);
    let mut package_version = None;
    let mut scripts = Vec::new();
    match format {
        Format::Tar(compression) => {
            let stream = decoder(compression, Box::new(BufReader::new(file)))?;
            extract_tar(Box::new(extractor.capped(stream)), &mut extractor)?;
            if program.exec.is_some() {
                program::link_run(&extractor, program)?;
            } else {
                find_root(dest)?;
            }
        }
        Format::Rpm => {
            extractor.relocate_links = true;
            let info = rpm::unpack_rpm(file, &mut extractor)?;
            let version = match (&info.version, &info.release) {
                (Some(version), Some(release)) => Some(format!("{version}-{release}")),
                (version, _) => version.clone(),
            };
            package_version = version.and_then(usable_package_version);
            scripts = info.scripts.iter().map(|s| s.to_string()).collect();
            program::link_run(&extractor, program)?;
        }
        Format::Deb => {
            extractor.relocate_links = true;
            let info = deb::unpack_deb(file, &mut extractor)?;
            package_version = info
                .version
                .map(|version| version.replace(':', "_"))
                .and_then(usable_package_version);
            scripts = info.scripts;
            program::link_run(&extractor, program)?;
        }
        Format::Executable => return Err(bad("not an archive".to_string())),
    }
    check_run(dest)?;
    Ok(Unpacked {
        version_file: read_version_file(dest)?,
        package_version,
        scripts,
        bytes: extractor.file_bytes,
        entries: extractor.entries(),
    })
}

/// A package's own version if it is usable as a directory name; logged if not.
fn usable_package_version(version: String) -> Option<String> {
    if valid_version(&version) {
        return Some(version);
    }
    log::warn!(
        "ignoring the package's version {}: not a usable version",
        quote(version.as_bytes())
    );
    None
}
