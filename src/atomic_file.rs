//! Replacing a file of the data directory so that a crash or a power cut leaves
//! either the old content or the new, never a mix, an empty file or no file
//! (docs/protocol.md section 8): the new content goes to a temporary file in the same
//! directory, is fsync'd, renamed over the file, and the directory is fsync'd so
//! that the rename itself is on disk.
//!
//! `stage` and `Staged::commit` are the two halves, for a caller that must do
//! something in between (the metafile keeps its previous copy there); `replace`
//! does both. Every file of the data directory that is replaced goes through here:
//! `meta.json`, `agents/NAME/agent.json`, `state.json`, and the self-upgrade's
//! `bin/state.json` and hand-over file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Suffix of the temporary file beside the file being replaced.
const TMP_SUFFIX: &str = ".tmp";

/// New content written and fsync'd beside its file, not yet in place. Dropped
/// without `commit`, the temporary file is removed.
#[derive(Debug)]
pub struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    committed: bool,
}

/// Writes `bytes` to `PATH.tmp` (created with `mode`) and fsyncs it. A failure
/// (a full disk) removes the partial file, so that it does not hold the space.
pub fn stage(path: &Path, bytes: &[u8], mode: u32) -> io::Result<Staged> {
    let mut name = path.as_os_str().to_os_string();
    name.push(TMP_SUFFIX);
    let staged = Staged {
        tmp: PathBuf::from(name),
        path: path.to_path_buf(),
        committed: false,
    };
    match fs::remove_file(&staged.tmp) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&staged.tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(staged)
}

impl Staged {
    /// Renames the temporary file over the file and fsyncs the directory.
    pub fn commit(mut self) -> io::Result<()> {
        fs::rename(&self.tmp, &self.path)?;
        self.committed = true;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Replaces `path` with `bytes` atomically and durably.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    stage(path, bytes, mode)?.commit()
}

/// fsyncs a directory, so that the renames and links in it are on disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bootagent-atomic-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch");
        dir
    }

    #[test]
    fn replace_leaves_the_new_content_with_its_mode_and_no_temporary_file() {
        let dir = scratch("replace");
        let path = dir.join("agent.json");
        fs::write(&path, b"old").expect("old");
        replace(&path, b"{\"new\":1}", 0o600).expect("replace");
        assert_eq!(fs::read(&path).expect("read"), b"{\"new\":1}");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!dir.join("agent.json.tmp").exists());
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_staged_file_not_committed_leaves_the_old_content() {
        let dir = scratch("staged");
        let path = dir.join("meta.json");
        fs::write(&path, b"old").expect("old");
        fs::write(dir.join("meta.json.tmp"), b"stale partial").expect("stale");
        let staged = stage(&path, b"new", 0o600).expect("stage");
        assert_eq!(fs::read(dir.join("meta.json.tmp")).expect("tmp"), b"new");
        drop(staged);
        assert_eq!(fs::read(&path).expect("read"), b"old");
        assert!(!dir.join("meta.json.tmp").exists(), "removed when dropped");
        fs::remove_dir_all(&dir).ok();
    }
}
