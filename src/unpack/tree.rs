//! The unpacked tree as a whole: root detection (`run` at the root, or one single
//! top-level directory moved up, its links checked again one level shallower), the
//! `run` and `VERSION` checks, and the fsync of every directory.

use super::entry::{check_link_target, link_depth};
use super::shared::{
    bad, checking, failed, quote, quote_path, UnpackError, PERMISSION_BITS, RUN_FILE,
    VERSION_FILE_BYTES_MAX,
};
use crate::job_fields::valid_version;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

const VERSION_FILE: &str = "VERSION";
/// The owner's execute bit, required on `run`.
const OWNER_EXEC_BIT: u32 = 0o100;

/// Takes the root as it is when `dest/run` exists, or the single top-level
/// directory holding a `run`, whose contents are then moved up into `dest`.
pub(super) fn find_root(dest: &Path) -> Result<(), UnpackError> {
    if exists(&dest.join(RUN_FILE))? {
        return Ok(());
    }
    let no_run = || {
        bad("package has no run at its root, nor inside one single top-level directory".to_string())
    };
    let mut names = Vec::new();
    for item in
        fs::read_dir(dest).map_err(|e| failed(format!("listing {}: {e}", dest.display())))?
    {
        let item = item.map_err(|e| failed(format!("listing {}: {e}", dest.display())))?;
        names.push(item.file_name());
        if names.len() > 1 {
            return Err(no_run());
        }
    }
    let Some(top) = names.pop() else {
        return Err(no_run());
    };
    let top_dir = dest.join(&top);
    let is_dir = fs::symlink_metadata(&top_dir)
        .map(|meta| meta.file_type().is_dir())
        .map_err(|e| checking(&top_dir, e))?;
    if !is_dir || !exists(&top_dir.join(RUN_FILE))? {
        return Err(no_run());
    }
    // Links are checked one level shallower, as they will be once moved up.
    walk(&top_dir, &mut |path, file_type| {
        if !file_type.is_symlink() {
            return Ok(());
        }
        let target =
            fs::read_link(path).map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
        let rel = path.strip_prefix(&top_dir).unwrap_or(path);
        check_link_target(&target, link_depth(rel)).map_err(|why| {
            bad(format!(
                "symlink {} {why} once {} is taken as the root",
                quote_path(path.strip_prefix(dest).unwrap_or(path)),
                quote(top.as_bytes())
            ))
        })
    })?;
    let children = list_names(&top_dir)?;
    let staging = if children.contains(&top) {
        // A child would land on the top directory itself: rename it first.
        let free = (0..=children.len())
            .map(|index| OsString::from(format!(".unpack-root-{index}")))
            .find(|name| *name != top && !children.contains(name))
            .ok_or_else(|| failed(format!("no free temporary name in {}", dest.display())))?;
        let staging = dest.join(free);
        fs::rename(&top_dir, &staging)
            .map_err(|e| failed(format!("renaming {}: {e}", top_dir.display())))?;
        staging
    } else {
        top_dir
    };
    for child in &children {
        let from = staging.join(child);
        fs::rename(&from, dest.join(child))
            .map_err(|e| failed(format!("moving {} up: {e}", from.display())))?;
    }
    fs::remove_dir(&staging).map_err(|e| failed(format!("removing {}: {e}", staging.display())))
}

/// Requires `dest/run` to be a file its owner may execute (through a symlink or not).
pub(super) fn check_run(dest: &Path) -> Result<(), UnpackError> {
    let run = dest.join(RUN_FILE);
    match fs::metadata(&run) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & OWNER_EXEC_BIT != 0 => Ok(()),
        Ok(meta) if meta.is_file() => Err(bad(format!(
            "run is not executable (mode {:o})",
            meta.permissions().mode() & PERMISSION_BITS
        ))),
        Ok(_) => Err(bad("run is not a file".to_string())),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR | libc::ENAMETOOLONG)
            ) =>
        {
            Err(bad("run is a symlink to nothing".to_string()))
        }
        Err(e) => Err(checking(&run, e)),
    }
}

/// The trimmed content of `dest/VERSION` if it is a usable version; an unusable
/// one is logged and ignored.
pub(super) fn read_version_file(dest: &Path) -> Result<Option<String>, UnpackError> {
    let path = dest.join(VERSION_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_file() => {}
        Ok(_) => {
            log::warn!("ignoring {}: not a regular file", path.display());
            return Ok(None);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            log::warn!("ignoring {}: {e}", path.display());
            return Ok(None);
        }
    }
    let mut data = Vec::new();
    let read = File::open(&path).and_then(|file| {
        file.take(VERSION_FILE_BYTES_MAX.saturating_add(1))
            .read_to_end(&mut data)
    });
    if let Err(e) = read {
        log::warn!("ignoring {}: {e}", path.display());
        return Ok(None);
    }
    let version = std::str::from_utf8(&data)
        .map(str::trim)
        .unwrap_or_default();
    if data.len() as u64 > VERSION_FILE_BYTES_MAX || !valid_version(version) {
        log::warn!("ignoring {}: not a usable version", path.display());
        return Ok(None);
    }
    Ok(Some(version.to_string()))
}

/// fsyncs every directory of the tree, deepest first, then the parent of `dest`.
/// Files were fsync'd as they were written.
pub(super) fn sync_tree(dest: &Path) -> Result<(), UnpackError> {
    let mut dirs = walk(dest, &mut |_, _| Ok(()))?;
    if let Some(parent) = dest.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        dirs.insert(0, parent.to_path_buf());
    }
    for dir in dirs.iter().rev() {
        File::open(dir)
            .and_then(|handle| handle.sync_all())
            .map_err(|e| failed(format!("syncing {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Visits every entry under `root` without following symlinks; returns the
/// directories, `root` first, each before the ones it holds.
fn walk(
    root: &Path,
    visit: &mut dyn FnMut(&Path, fs::FileType) -> Result<(), UnpackError>,
) -> Result<Vec<PathBuf>, UnpackError> {
    let mut dirs = vec![root.to_path_buf()];
    let mut next = 0;
    while let Some(dir) = dirs.get(next).cloned() {
        next += 1;
        let list_error = |e: io::Error| failed(format!("listing {}: {e}", dir.display()));
        for item in fs::read_dir(&dir).map_err(list_error)? {
            let item = item.map_err(list_error)?;
            let file_type = item.file_type().map_err(list_error)?;
            let path = item.path();
            visit(&path, file_type)?;
            if file_type.is_dir() {
                dirs.push(path);
            }
        }
    }
    Ok(dirs)
}

fn list_names(dir: &Path) -> Result<Vec<OsString>, UnpackError> {
    let list_error = |e: io::Error| failed(format!("listing {}: {e}", dir.display()));
    fs::read_dir(dir)
        .map_err(list_error)?
        .map(|item| item.map(|item| item.file_name()).map_err(list_error))
        .collect()
}

/// Whether something (a symlink included) is at `path`.
fn exists(path: &Path) -> Result<bool, UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(checking(path, e)),
    }
}
