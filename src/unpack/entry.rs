//! One archive entry into `dest`, under the module's safety rules: a path of plain
//! names, parents that are real directories, files created without following or
//! replacing anything, permission bits masked, symlink targets that stay inside the
//! package, hard links to files extracted earlier.

use super::archive::{read_error, Extractor};
use super::budget::{dir_mode, file_mode};
use super::shared::{
    bad, checking, create_file, failed, quote, quote_path, UnpackError, DIR_MODE, FILE_BYTES_MAX,
    NAME_BYTES_MAX,
};
use std::ffi::OsStr;
use std::fs::{self, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

impl Extractor<'_> {
    /// An entry's path, relative to dest: plain names only, `.` skipped.
    pub(super) fn entry_path(&self, raw: &[u8], shown: &str) -> Result<PathBuf, UnpackError> {
        if raw.len() > self.limits.path_bytes_max {
            return Err(bad(format!(
                "entry {shown} has a path over {} bytes",
                self.limits.path_bytes_max
            )));
        }
        if raw.contains(&0) {
            return Err(bad(format!("entry {shown} has a NUL byte in its path")));
        }
        let mut rel = PathBuf::new();
        for component in Path::new(OsStr::from_bytes(raw)).components() {
            match component {
                Component::Normal(name) if name.len() <= NAME_BYTES_MAX => rel.push(name),
                Component::Normal(_) => {
                    return Err(bad(format!(
                        "entry {shown} has a name over {NAME_BYTES_MAX} bytes"
                    )))
                }
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(bad(format!("entry {shown} has a `..` component")))
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(bad(format!("entry {shown} has an absolute path")))
                }
            }
        }
        Ok(rel)
    }

    /// Makes sure every parent of `rel` is a real directory under dest, creating
    /// missing ones; refuses to go through a symlink or a file.
    fn ensure_parent(&mut self, rel: &Path, shown: &str) -> Result<(), UnpackError> {
        let parent = rel.parent().unwrap_or(Path::new(""));
        let known = if parent.starts_with(&self.checked_dir) {
            self.checked_dir.components().count()
        } else {
            0
        };
        let mut prefix = PathBuf::new();
        for (index, component) in parent.components().enumerate() {
            prefix.push(component);
            if index < known {
                continue;
            }
            let full = self.dest.join(&prefix);
            match fs::symlink_metadata(&full) {
                Ok(meta) if meta.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(bad(format!(
                        "entry {shown} goes through {}, which is not a directory",
                        quote_path(&prefix)
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&full, DIR_MODE)?,
                // A path the package made too long for the file system is its fault.
                Err(e) if e.raw_os_error() == Some(libc::ENAMETOOLONG) => {
                    return Err(bad(format!(
                        "entry {shown} makes a path too long for the file system"
                    )))
                }
                Err(e) => return Err(checking(&full, e)),
            }
        }
        self.checked_dir = parent.to_path_buf();
        Ok(())
    }

    pub(super) fn write_file(
        &mut self,
        entry: &mut dyn Read,
        rel: &Path,
        mode: u32,
        size: u64,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if size > FILE_BYTES_MAX {
            return Err(bad(format!("entry {shown} is over {FILE_BYTES_MAX} bytes")));
        }
        if rel.as_os_str().is_empty() {
            return Err(bad(format!("file entry {shown} has no name")));
        }
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        let mut file = create_file(&full).map_err(|e| create_error(shown, &full, e))?;
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(read_error(e)),
            };
            file.write_all(self.buf.get(..n).unwrap_or_default())
                .map_err(|e| failed(format!("writing {}: {e}", full.display())))?;
            written = written.saturating_add(n as u64);
        }
        if written != size {
            return Err(bad(format!("entry {shown} is truncated")));
        }
        file.set_permissions(Permissions::from_mode(file_mode(mode)))
            .and_then(|()| file.sync_all())
            .map_err(|e| failed(format!("writing {}: {e}", full.display())))?;
        self.file_bytes = self.file_bytes.saturating_add(written);
        Ok(())
    }

    pub(super) fn make_dir(
        &mut self,
        rel: &Path,
        mode: u32,
        shown: &str,
    ) -> Result<(), UnpackError> {
        if rel.as_os_str().is_empty() {
            return Ok(()); // `./`: the root itself
        }
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        match fs::symlink_metadata(&full) {
            Ok(meta) if meta.file_type().is_dir() => {}
            Ok(_) => {
                return Err(bad(format!(
                    "entry {shown} exists already, not as a directory"
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_dir(&full, DIR_MODE)?,
            Err(e) => return Err(checking(&full, e)),
        }
        fs::set_permissions(&full, Permissions::from_mode(dir_mode(mode)))
            .map_err(|e| failed(format!("setting the mode of {}: {e}", full.display())))
    }

    pub(super) fn make_symlink(
        &mut self,
        rel: &Path,
        target: Option<&[u8]>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target = target.unwrap_or_default();
        if rel.as_os_str().is_empty() || target.is_empty() {
            return Err(bad(format!(
                "symlink entry {shown} has no name or no target"
            )));
        }
        if target.len() > self.limits.path_bytes_max || target.contains(&0) {
            return Err(bad(format!("symlink {shown} has a bad or too long target")));
        }
        let relocated;
        let target = match target.strip_prefix(b"/") {
            Some(inside) if self.relocate_links => {
                relocated = relocate(inside, link_depth(rel));
                relocated.as_path()
            }
            _ => Path::new(OsStr::from_bytes(target)),
        };
        check_link_target(target, link_depth(rel))
            .map_err(|why| bad(format!("symlink {shown} {why}")))?;
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        std::os::unix::fs::symlink(target, &full).map_err(|e| create_error(shown, &full, e))
    }

    pub(super) fn make_hard_link(
        &mut self,
        rel: &Path,
        target: Option<&[u8]>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let target = target.unwrap_or_default();
        let shown_target = quote(target);
        let target_rel = self.entry_path(target, &shown_target)?;
        if rel.as_os_str().is_empty() || target_rel.as_os_str().is_empty() {
            return Err(bad(format!(
                "hard link entry {shown} has no name or no target"
            )));
        }
        if !is_extracted_file(self.dest, &target_rel)? {
            return Err(bad(format!(
                "hard link {shown} points to {shown_target}, not a file extracted before it"
            )));
        }
        self.ensure_parent(rel, shown)?;
        let full = self.dest.join(rel);
        fs::hard_link(self.dest.join(&target_rel), &full).map_err(|e| create_error(shown, &full, e))
    }
}

/// An absolute link target, `inside` the version root, seen from a link `depth`
/// directories down: `../` that many times, then the path.
fn relocate(inside: &[u8], depth: usize) -> PathBuf {
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push(OsStr::from_bytes(inside.trim_ascii_start()));
    target
}

/// Number of directories above a link, relative to the root (`a/b/l` → 2).
pub(super) fn link_depth(rel: &Path) -> usize {
    rel.components().count().saturating_sub(1)
}

/// Checks that a symlink at `depth` with this target stays inside the package:
/// relative, all `..` first and at most `depth` of them, then plain names.
pub(super) fn check_link_target(target: &Path, depth: usize) -> Result<(), &'static str> {
    let mut ups: usize = 0;
    let mut descended = false;
    for component in target.components() {
        if component.as_os_str().len() > NAME_BYTES_MAX {
            return Err("has a name longer than the file system allows in its target");
        }
        match component {
            Component::RootDir | Component::Prefix(_) => return Err("points to an absolute path"),
            Component::CurDir => {}
            Component::ParentDir if descended => {
                return Err("has a `..` after a name in its target")
            }
            Component::ParentDir => ups = ups.saturating_add(1),
            Component::Normal(_) => descended = true,
        }
    }
    if ups > depth {
        return Err("points outside the package");
    }
    Ok(())
}

/// Whether `rel` is a regular file under `dest`, reached through real directories.
fn is_extracted_file(dest: &Path, rel: &Path) -> Result<bool, UnpackError> {
    let mut full = dest.to_path_buf();
    let count = rel.components().count();
    for (index, component) in rel.components().enumerate() {
        full.push(component);
        let meta = match fs::symlink_metadata(&full) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(checking(&full, e)),
        };
        let wanted = if index + 1 == count {
            meta.file_type().is_file()
        } else {
            meta.file_type().is_dir()
        };
        if !wanted {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Creates one directory with exactly `mode` (whatever the umask).
fn create_dir(path: &Path, mode: u32) -> Result<(), UnpackError> {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .and_then(|()| fs::set_permissions(path, Permissions::from_mode(mode)))
        .map_err(|e| failed(format!("creating {}: {e}", path.display())))
}

/// An error creating an entry: the package's fault when the name exists already
/// or cannot be a name, the host's otherwise.
pub(super) fn create_error(shown: &str, full: &Path, e: io::Error) -> UnpackError {
    match e.raw_os_error() {
        Some(libc::EEXIST) => bad(format!("entry {shown} appears twice in the archive")),
        Some(libc::ELOOP | libc::ENOTDIR | libc::EISDIR | libc::ENAMETOOLONG | libc::EMLINK) => {
            bad(format!("entry {shown}: {e}"))
        }
        _ => failed(format!("creating {}: {e}", full.display())),
    }
}
