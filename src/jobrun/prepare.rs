//! The worker thread's side of an install or upgrade: download, checksum, unpack,
//! and the move into `agents/NAME/VERSION`, with the package's SHA256 beside it.

use super::files::current_version;
use super::state::{Prepare, Work, SHA256_SUFFIX, TMP_DIR};
use crate::download::{self, DownloadLimits};
use crate::events::{Event, JobResult, Prepared};
use crate::jobs::{ErrCode, Install};
use crate::unpack::{self, UnpackLimits};
use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{Receiver, SyncSender};

/// The worker thread: download, verify, unpack, move into place.
pub(super) fn work(
    data_dir: &Path,
    requests: Receiver<Prepare>,
    events: SyncSender<Event>,
    download: &DownloadLimits,
    unpack: &UnpackLimits,
    cancel: &AtomicBool,
) {
    for request in requests {
        let mut note = None;
        let result = match &request.work {
            Work::Install(install) => {
                prepare(data_dir, install, download, unpack, cancel, &mut note)
            }
            Work::SelfUpgrade(job) => match crate::selfup::prepare(
                data_dir,
                &data_dir.join(TMP_DIR),
                job,
                download,
                cancel,
            ) {
                Ok(crate::selfup::Ready::Switch { version }) => Ok(version),
                Ok(crate::selfup::Ready::AlreadyRunning { version }) => Err((
                    ErrCode::Success,
                    format!("bootagent {version} already runs this very binary"),
                )),
                Err(result) => Err(result),
            },
        };
        let prepared = Prepared {
            id: request.id,
            result,
            note,
        };
        if events.send(Event::JobPrepared(prepared)).is_err() {
            return;
        }
    }
}

fn prepare(
    data_dir: &Path,
    install: &Install,
    download_limits: &DownloadLimits,
    unpack_limits: &UnpackLimits,
    cancel: &AtomicBool,
    note: &mut Option<String>,
) -> Result<String, JobResult> {
    let tmp = data_dir.join(TMP_DIR);
    let file = download::download(&install.url, &tmp, download_limits, cancel)
        .map_err(|err| (err.errcode(), err.to_string()))?;
    let result = (|| {
        if file.sha256 != install.checksum {
            return Err((
                ErrCode::ChecksumMismatch,
                format!(
                    "checksum mismatch: expected SHA256:{}, got SHA256:{}",
                    download::hex(&install.checksum),
                    download::hex(&file.sha256)
                ),
            ));
        }
        let staging = tmp.join(format!("unpack-{}", install.name));
        let _ = fs::remove_dir_all(&staging);
        let program = unpack::Program {
            name: &install.name,
            exec: install.exec.as_deref(),
        };
        let unpacked = unpack::unpack_package(&file.path, &staging, unpack_limits, &program)
            .map_err(|err| (err.errcode, err.message))?;
        if !unpacked.scripts.is_empty() {
            *note = Some(format!(
                "maintainer scripts not run: {}",
                unpacked.scripts.join(", ")
            ));
        }
        let mut version = install
            .version
            .clone()
            .or(unpacked.version_file)
            .or(unpacked.package_version)
            .or_else(|| unpack::version_from_url(&install.url, &install.name))
            .unwrap_or_else(|| "0".to_string());
        let agent_dir = data_dir.join("agents").join(&install.name);
        let sha = download::hex(&file.sha256);
        if current_version(&agent_dir).as_deref() == Some(version.as_str()) {
            if recorded_sha256(&agent_dir, &version).as_deref() == Some(sha.as_str()) {
                // The very package that runs: keep it, do not pull it away.
                let _ = fs::remove_dir_all(&staging);
                return Ok(version);
            }
            // Same version name, other content: installed beside it, never over
            // the running one, and never silently skipped.
            version = format!("{version}+{}", &sha[..8]);
        }
        let target = agent_dir.join(&version);
        fs::DirBuilder::new()
            .recursive(true)
            .create(&agent_dir)
            .and_then(|()| match fs::remove_dir_all(&target) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            })
            .and_then(|()| fs::rename(&staging, &target))
            .and_then(|()| {
                let sha_file = agent_dir.join(format!("{version}{SHA256_SUFFIX}"));
                crate::atomic_file::replace(&sha_file, sha.as_bytes(), 0o644)
            })
            .map_err(|err| {
                let _ = fs::remove_dir_all(&staging);
                (
                    ErrCode::InstallFailed,
                    format!("cannot install into {}: {err}", target.display()),
                )
            })?;
        Ok(version)
    })();
    let _ = fs::remove_file(&file.path);
    result
}

/// The SHA256 (hex) of the package a version was installed from, if recorded.
fn recorded_sha256(agent_dir: &Path, version: &str) -> Option<String> {
    let text = fs::read_to_string(agent_dir.join(format!("{version}{SHA256_SUFFIX}"))).ok()?;
    Some(text.trim().to_string())
}
