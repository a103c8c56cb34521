//! `file://` downloads: a local absolute path (`file:///abs/path` or
//! `file://localhost/abs/path`), copied like any other source. A local file announces
//! its size and cannot stall.

use super::url::{percent_decode, split_url};
use super::{clip, io_problem, Ctx, DownloadError, Source};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

pub(super) struct FileSource {
    file: File,
    path: String,
    size: u64,
}

pub(super) fn open_file(url: &str, ctx: &Ctx<'_>) -> Result<FileSource, DownloadError> {
    let parts = split_url(url).ok_or_else(|| ctx.invalid("bad file URL"))?;
    let local = parts.host.is_empty() || parts.host.eq_ignore_ascii_case("localhost");
    if !local || parts.userinfo.is_some() || parts.port.is_some() {
        return Err(ctx.invalid("a file URL names a local path: file:///path"));
    }
    let bytes = percent_decode(parts.path).map_err(|problem| ctx.invalid(&problem))?;
    if !bytes.starts_with(b"/") || bytes.contains(&0) {
        return Err(ctx.invalid("a file URL needs an absolute path: file:///path"));
    }
    let path = PathBuf::from(std::ffi::OsStr::from_bytes(&bytes));
    let shown = clip(&path.display().to_string());
    let source_error = |err: io::Error| DownloadError::Source {
        path: shown.clone(),
        problem: io_problem(&err),
    };
    let file = File::open(&path).map_err(source_error)?;
    let meta = file.metadata().map_err(source_error)?;
    if !meta.is_file() {
        return Err(DownloadError::Source {
            path: shown,
            problem: "not a regular file".to_string(),
        });
    }
    Ok(FileSource {
        file,
        path: shown,
        size: meta.len(),
    })
}

impl Source for FileSource {
    fn size(&self) -> Option<u64> {
        Some(self.size)
    }

    fn read(&mut self, buf: &mut [u8], _ctx: &Ctx<'_>) -> Result<usize, DownloadError> {
        loop {
            match self.file.read(buf) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => {
                    return other.map_err(|err| DownloadError::Source {
                        path: self.path.clone(),
                        problem: io_problem(&err),
                    })
                }
            }
        }
    }
}
