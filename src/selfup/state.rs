//! `bin/state.json`: what is installed, confirmed, pending and failed, and its atomic
//! store; where the received binaries are kept. Every other file of `selfup/` reads
//! or writes the state through this one, which imports none of them.

use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Where received BootAgent binaries are kept: `bin/VERSION/bootagent`.
pub const BIN_DIR: &str = "bin";
/// The self-upgrade state, in `BIN_DIR`.
pub const STATE_FILE: &str = "state.json";
/// The binary's name inside its version directory.
pub const BINARY_NAME: &str = "bootagent";
/// Beside `BINARY_NAME`, when its `-V` said it takes the children's notify sockets
/// over (`check::NOTIFY_SOCKETS_LINE`): an empty file.
pub const NOTIFY_SOCKETS_MARK: &str = "takes-notify-sockets";
/// Largest `state.json` read.
const STATE_BYTES_MAX: u64 = 64 * 1024;

/// Size, modification time and SHA256 of the installed binary: when any changes
/// (the host's package manager installed another), the installed one wins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub sha256: String,
}

impl Identity {
    /// Reads the identity of the binary at `path`.
    pub fn of(path: &Path) -> io::Result<Identity> {
        use sha2::{Digest, Sha256};
        use std::os::unix::fs::MetadataExt;
        let meta = fs::metadata(path)?;
        let mut file = File::open(path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0; 64 * 1024];
        loop {
            let n = file.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(Identity {
            path: path.to_string_lossy().into_owned(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            sha256: crate::download::hex(&hasher.finalize()),
        })
    }
}

/// Where a self-upgrade in progress is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Downloading and checking; nothing has changed yet.
    Preparing,
    /// The exec to the new version happened (or was about to): on probation.
    Switched,
    /// Probation passed: the new version is confirmed; its result (errcode 0) is being
    /// written to the journal.
    Confirming,
}

/// A self-upgrade in progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The job id, whose result settles the upgrade.
    pub job: String,
    pub phase: Phase,
    /// The new version (known once prepared).
    #[serde(default)]
    pub version: String,
    /// The version that ran before it, and where it came from (`None`: installed).
    pub from_version: String,
    pub from_bin: Option<String>,
    pub probation_s: u64,
    /// Wall-clock Unix seconds of the switch, for the status view.
    #[serde(default)]
    pub since: i64,
    /// Why the new version failed, when the installed binary found it so at start.
    #[serde(default)]
    pub failure: Option<String>,
}

/// The last self-upgrade that failed, for the status view.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub version: String,
    pub reason: String,
    pub at: i64,
}

/// `bin/state.json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The installed binary (what init runs), recorded before the first exec.
    #[serde(default)]
    pub installed: Option<Identity>,
    /// The version in `bin/` that starts hand over to; `None`: the installed one runs.
    #[serde(default)]
    pub confirmed: Option<String>,
    #[serde(default)]
    pub pending: Option<Pending>,
    #[serde(default)]
    pub failed: Option<Failed>,
    /// Wall-clock starts of the confirmed version not yet followed by an answered
    /// report (a version that cannot start piles them up).
    #[serde(default)]
    pub start_attempts: Vec<i64>,
    /// Something to report as an event once a loop runs (the abandonment of a
    /// confirmed version that would not start).
    #[serde(default)]
    pub notice: Option<String>,
}

/// Reads and writes `bin/state.json` of one data directory.
#[derive(Clone, Debug)]
pub struct Store {
    data_dir: PathBuf,
}

impl Store {
    pub fn new(data_dir: &Path) -> Store {
        Store {
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.data_dir.join(BIN_DIR)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `bin/VERSION/bootagent`.
    pub fn binary(&self, version: &str) -> PathBuf {
        self.bin_dir().join(version).join(BINARY_NAME)
    }

    /// Whether `bin/VERSION/bootagent` takes the notify sockets over in an exec
    /// hand-over (its check said so; a version kept from before says no).
    pub fn takes_notify_sockets(&self, version: &str) -> bool {
        self.bin_dir()
            .join(version)
            .join(NOTIFY_SOCKETS_MARK)
            .exists()
    }

    /// The state; a missing file is the default (nothing upgraded). A damaged one is
    /// an error: the caller runs the binary it is, which is always safe.
    pub fn load(&self) -> Result<State, String> {
        let path = self.bin_dir().join(STATE_FILE);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(State::default()),
            Err(err) => return Err(format!("{}: {err}", path.display())),
        };
        let mut bytes = Vec::new();
        file.take(STATE_BYTES_MAX + 1)
            .read_to_end(&mut bytes)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        if bytes.len() as u64 > STATE_BYTES_MAX {
            return Err(format!(
                "{}: larger than {STATE_BYTES_MAX} bytes",
                path.display()
            ));
        }
        serde_json::from_slice(&bytes).map_err(|err| {
            format!(
                "{}: {}",
                path.display(),
                crate::wire::one_line(&err.to_string())
            )
        })
    }

    /// Writes the state atomically and durably (temporary file, fsync, rename, fsync
    /// of the directory), mode 0600 in a 0700 directory.
    pub fn save(&self, state: &State) -> io::Result<()> {
        let dir = self.bin_dir();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let mut bytes = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        bytes.push(b'\n');
        write_atomically(&dir.join(STATE_FILE), &bytes)
    }

    /// Removes every `bin/VERSION` except those in `keep` (the running and the
    /// previous version). Errors are logged, never fatal.
    pub fn remove_versions_except(&self, keep: &[&str]) {
        let Ok(entries) = fs::read_dir(self.bin_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == STATE_FILE || keep.contains(&name.as_str()) {
                continue;
            }
            if entry.path().is_dir() {
                if let Err(err) = fs::remove_dir_all(entry.path()) {
                    log::warn!("cannot remove {}: {err}", entry.path().display());
                }
            }
        }
    }
}

/// Temporary file, fsync, rename over `path`, fsync of the directory (mode 0600).
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    crate::atomic_file::replace(path, bytes, 0o600)
}

/// The path of the running binary (`/proc/self/exe`).
pub fn current_exe() -> Option<PathBuf> {
    fs::read_link("/proc/self/exe").ok()
}

/// True when `exe` is one of the binaries kept under `bin/` of `data_dir`.
pub fn is_upgraded_binary(data_dir: &Path, exe: &Path) -> bool {
    let bin = data_dir.join(BIN_DIR);
    let bin = bin.canonicalize().unwrap_or(bin);
    exe.starts_with(&bin)
}
