//! The data directory: the checks that it is usable and safe, and the lock that keeps
//! two agents off it.

use super::error::AppError;
use crate::sys;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The lock file that keeps two agents off one data directory.
pub(super) const LOCK_FILE: &str = "lock";

/// A data directory that others may write to could be made to run anything: refused.
pub(super) fn check_data_dir_mode(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    match fs::metadata(dir) {
        Ok(meta) if meta.permissions().mode() & 0o022 != 0 => Err(format!(
            "data directory {} is writable by its group or others (mode {:o}): refusing; chmod 700 it",
            dir.display(),
            meta.permissions().mode() & 0o777
        )),
        _ => Ok(()),
    }
}

/// The data directory must be a writable directory, or creatable.
pub(super) fn check_data_dir(dir: &Path) -> Result<(), String> {
    let mut probe = dir;
    loop {
        match probe.metadata() {
            Ok(meta) if meta.is_dir() => {
                return if sys::writable(probe) {
                    Ok(())
                } else if probe == dir {
                    Err(format!("data directory {} is not writable", dir.display()))
                } else {
                    Err(format!(
                        "cannot create {}: {} is not writable",
                        dir.display(),
                        probe.display()
                    ))
                };
            }
            Ok(_) => return Err(format!("{} is not a directory", probe.display())),
            Err(_) => match probe.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => probe = parent,
                _ => return Ok(()), // relative path: the current directory
            },
        }
    }
}

pub(super) fn lock_data_dir(dir: &Path) -> Result<File, AppError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|err| AppError::Io {
            what: format!("cannot open {}", path.display()),
            err,
        })?;
    match sys::try_lock_exclusive(&file) {
        Ok(true) => Ok(file),
        Ok(false) => Err(AppError::Locked(dir.to_path_buf())),
        Err(err) => Err(AppError::Io {
            what: format!("cannot lock {}", path.display()),
            err,
        }),
    }
}
