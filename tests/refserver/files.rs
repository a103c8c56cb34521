//! File serving: `GET /files/REL/PATH` from the files directory, and the
//! percent-decoding of URL paths that the admin query strings use too.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use super::reply::{error, Reply};
use super::state::Shared;

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set); `None` if the result
/// is not UTF-8.
pub(super) fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let hex = |c: u8| (c as char).to_digit(16);
        if b == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(if plus && b == b'+' { b' ' } else { b });
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Maps `/files/REL/PATH` to a path under `root`; `None` for anything that could leave
/// it (`..`, NUL or backslashes in a component) or names no file.
pub(super) fn file_path(root: &Path, url_path: &str) -> Option<PathBuf> {
    let rel = percent_decode(url_path.strip_prefix("/files/")?, false)?;
    let mut path = root.to_path_buf();
    let mut any = false;
    for part in rel.split('/') {
        match part {
            "" | "." => continue,
            ".." => return None,
            p if p.contains('\0') || p.contains('\\') => return None,
            p => {
                path.push(p);
                any = true;
            }
        }
    }
    any.then_some(path)
}

/// `GET /files/REL/PATH`: a file from the files directory, streamed.
pub(super) fn serve_file(shared: &Shared, url_path: &str) -> Reply {
    let Some(root) = shared.state().files_dir.clone() else {
        return error(404, "no files directory configured (--files DIR)");
    };
    let Some(path) = file_path(&root, url_path) else {
        return error(400, "bad file path");
    };
    let opened = File::open(&path).and_then(|f| {
        let meta = f.metadata()?;
        Ok((f, meta))
    });
    match opened {
        Ok((f, meta)) if meta.is_file() => match usize::try_from(meta.len()) {
            Ok(len) => Reply::File(f, len),
            Err(_) => error(500, "file too large"),
        },
        Ok(_) => error(404, format!("not a file: {url_path}")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            error(404, format!("no such file: {url_path}"))
        }
        Err(e) => error(403, format!("cannot open {url_path}: {e}")),
    }
}
