//! `file://` downloads: a local absolute path (`file:///abs/path` or
//! `file://localhost/abs/path`), copied like any other source. A local file announces
//! its size and cannot stall.
//!
//! Confinement: the path, its symlinks resolved, must be under one of the
//! `file_url_roots` (themselves resolved); otherwise the download is refused with
//! errcode 2 before the file is opened, so nothing of it (its checksum included)
//! ever reaches a message. A path that cannot be resolved (missing, unreadable) is
//! said so only when it lies under a root as written; outside, it gets the same
//! refusal as an existing file, so that the server learns nothing of the host's
//! files. The file opened is the resolved path, with `O_NOFOLLOW`.

use super::shared::{clip, io_problem, Ctx, DownloadError, Source};
use super::url::{percent_decode, split_url};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

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
    let roots = &ctx.limits.file_url_roots;
    let refused = || DownloadError::NotAllowed {
        path: shown.clone(),
        roots: clip(
            &roots
                .iter()
                .map(|root| root.display().to_string())
                .collect::<Vec<_>>()
                .join(":"),
        ),
    };
    let real = match fs::canonicalize(&path) {
        Ok(real) if under_any(&real, roots, true) => real,
        Ok(_) => return Err(refused()),
        Err(err) if under_any(&path, roots, false) => return Err(source_error(err)),
        Err(_) => return Err(refused()),
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&real)
        .map_err(source_error)?;
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

/// Whether `path` is under one of `roots`: compared with the roots resolved (when
/// `path` was resolved) or as written (when it could not be; then a `..` anywhere
/// counts as outside).
fn under_any(path: &Path, roots: &[PathBuf], resolved: bool) -> bool {
    if !resolved
        && path
            .components()
            .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return false;
    }
    roots.iter().any(|root| {
        let root = if resolved {
            match fs::canonicalize(root) {
                Ok(real) => real,
                Err(_) => return false, // a root that does not exist holds nothing
            }
        } else {
            root.clone()
        };
        root.is_absolute() && path.starts_with(&root)
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
