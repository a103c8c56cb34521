//! The worker thread's part of a `self_upgrade`: download through the code that
//! installs use (every scheme, bounds, SHA256), check the file, and keep it as
//! `bin/VERSION/bootagent` (0755 in a 0700 directory). Nothing that runs changes here.

use super::check::check_binary;
use super::state::{current_exe, Identity, Store, BINARY_NAME, NOTIFY_SOCKETS_MARK};
use crate::download::{self, DownloadLimits};
use crate::job_fields::running_version;
use crate::jobs::{ErrCode, SelfUpgrade};
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::AtomicBool;

/// The staging directory of a binary being checked, under `bin/`.
const INCOMING_DIR: &str = ".incoming";

/// What a prepared self-upgrade gives the loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ready {
    /// `bin/VERSION/bootagent` is in place and checked.
    Switch { version: String },
    /// The very binary that runs: nothing to do.
    AlreadyRunning { version: String },
}

/// Downloads (into `tmp`, the staging directory), verifies and checks the new binary;
/// `Err` is the job's result.
pub fn prepare(
    data_dir: &Path,
    tmp: &Path,
    job: &SelfUpgrade,
    limits: &DownloadLimits,
    cancel: &AtomicBool,
) -> Result<Ready, (ErrCode, String)> {
    let file = download::download(&job.url, tmp, limits, cancel)
        .map_err(|err| (err.errcode(), err.to_string()))?;
    let store = Store::new(data_dir);
    let incoming = store.bin_dir().join(INCOMING_DIR);
    let result = (|| {
        if file.sha256 != job.checksum {
            return Err((
                ErrCode::ChecksumMismatch,
                format!(
                    "checksum mismatch: expected SHA256:{}, got SHA256:{}",
                    download::hex(&job.checksum),
                    download::hex(&file.sha256)
                ),
            ));
        }
        let install_failed = |err: io::Error| {
            (
                ErrCode::InstallFailed,
                format!(
                    "cannot keep the new binary under {}: {err}",
                    incoming.display()
                ),
            )
        };
        let _ = fs::remove_dir_all(&incoming);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&incoming)
            .map_err(install_failed)?;
        let staged = incoming.join(BINARY_NAME);
        fs::rename(&file.path, &staged).map_err(install_failed)?;
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o755)).map_err(install_failed)?;
        let checked = check_binary(&staged).map_err(|why| (ErrCode::BadPackage, why))?;
        if checked.notify_sockets {
            fs::File::create(incoming.join(NOTIFY_SOCKETS_MARK)).map_err(install_failed)?;
        }
        let version = checked.version;
        if let Some(wanted) = &job.version {
            if *wanted != version {
                return Err((
                    ErrCode::BadPackage,
                    format!("the new binary is version {version}, the job says {wanted}"),
                ));
            }
        }
        if version == running_version() {
            let same = current_exe()
                .and_then(|exe| Identity::of(&exe).ok())
                .is_some_and(|id| id.sha256 == download::hex(&file.sha256));
            let _ = fs::remove_dir_all(&incoming);
            if same {
                return Ok(Ready::AlreadyRunning { version });
            }
            return Err((
                ErrCode::BadPackage,
                format!("version {version} already runs, from another binary"),
            ));
        }
        let target = store.bin_dir().join(&version);
        match fs::remove_dir_all(&target) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(install_failed(err));
            }
            _ => {}
        }
        fs::File::open(&staged)
            .and_then(|f| f.sync_all())
            .and_then(|()| fs::rename(&incoming, &target))
            .and_then(|()| fs::File::open(store.bin_dir())?.sync_all())
            .map_err(install_failed)?;
        Ok(Ready::Switch { version })
    })();
    let _ = fs::remove_file(&file.path);
    if result.is_err() {
        let _ = fs::remove_dir_all(&incoming);
    }
    result
}
