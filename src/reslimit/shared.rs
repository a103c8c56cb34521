//! What the files of `reslimit/` share: cgroupfs and procfs text files read within a
//! bound, a value written in one `write(2)`, errors with what failed in front, and bad
//! values quoted for an error message.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::Path;

/// Longest piece of a bad value quoted in an error message.
const QUOTED_CHARS_MAX: usize = 32;
/// The file of a cgroup that lists (and takes) its processes.
pub(super) const PROCS_FILE: &str = "cgroup.procs";
/// Largest cgroupfs or procfs text file read (`mountinfo` of a busy host, `cgroup.procs`).
const TEXT_BYTES_MAX: u64 = 1024 * 1024;

/// A value from the wire, quoted and escaped onto one line, and cut short.
pub(super) fn quoted(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

pub(super) fn read_text(path: &Path) -> io::Result<String> {
    let mut text = String::new();
    File::open(path)
        .and_then(|file| file.take(TEXT_BYTES_MAX).read_to_string(&mut text))
        .map_err(|e| with_path(e, path))?;
    Ok(text)
}

/// [`read_text`], with the error as a reason.
pub(super) fn text(path: &Path) -> Result<String, String> {
    read_text(path).map_err(|e| e.to_string())
}

/// `e` with what failed in front: `what: e`.
pub(super) fn context(e: io::Error, what: fmt::Arguments<'_>) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

pub(super) fn with_path(e: io::Error, path: &Path) -> io::Error {
    context(e, format_args!("{}", path.display()))
}

/// One `write(2)` of `value` into `dir/file`, as cgroupfs wants it.
pub(super) fn write_file(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    let path = dir.join(file);
    (OpenOptions::new().write(true).open(&path))
        .and_then(|mut file| file.write_all(value.as_bytes()))
        .map_err(|e| context(e, format_args!("writing {value:?} to {}", path.display())))
}
