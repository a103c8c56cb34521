//! The metafile, `meta.json` in the data directory (docs/protocol.md section 8): the
//! agent's identity, credentials, server lists, step, job journal and undelivered
//! results. `Meta` is the model; `MetaStore` reads and writes it.
//!
//! Writes are atomic and durable: the new content goes to `meta.json.tmp`, is
//! fsync'd, the current file is hard-linked to `meta.json.prev` (the previous good
//! copy), the temporary file is renamed over `meta.json`, and the directory is
//! fsync'd. At no moment after the first write is there no `meta.json`, so a power
//! cut can never make a registered agent look like a first start.
//!
//! Loading: no `meta.json` and no `meta.json.prev` is a first start. A metafile
//! that does not parse is never a first start: the previous copy is used if it is
//! good, else loading fails and the agent refuses to start.

use crate::atomic_file;
use crate::event_queue::EventQueue;
use crate::journal::Journal;
pub use crate::journal::{JobRecord, JobState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The metafile format this build writes and reads.
pub const META_SCHEMA: u32 = 1;
pub use crate::wire::SN_BYTES_MAX;

pub const META_FILE: &str = "meta.json";
const PREV_FILE: &str = "meta.json.prev";
const PREV_TMP_FILE: &str = "meta.json.prev.tmp";

/// What the agent keeps across restarts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Format version (`META_SCHEMA`); a newer one is refused, never guessed at.
    pub schema: u32,
    /// The agent's serial number: generated once, or adopted from the server.
    pub agentsn: String,
    /// True once a status report carrying `agentsn` has been answered (section 2).
    /// Until then every start registers again.
    #[serde(default)]
    pub registered: bool,
    /// Tags the server gave at registration, shown by `-T`.
    #[serde(default)]
    pub tags: String,
    /// Credentials from the register answer (section 4). Never logged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The `-S` list of the first start, normalised.
    #[serde(default)]
    pub servers_cli: String,
    /// TLS files of the first start (`-C`, `--client-cert`, `--client-key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<String>,
    /// The `--file-url-root` directories of the first start (section 9).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub file_url_roots: Vec<String>,
    /// The list from the last `config` job, normalised.
    #[serde(default)]
    pub servers_server: String,
    /// The report interval in seconds.
    pub step_s: u64,
    /// A server asked for lazy reports (section 3, `report`): `agents` is left out
    /// while nothing in it changed since the last report answered 200.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_lazy: bool,
    /// The job journal (section 7): the jobs received, the idempotency record and
    /// the results still to deliver: `jobs` of the file.
    #[serde(flatten)]
    pub journal: Journal,
    /// Child events not yet acknowledged by a server, and what was dropped past
    /// the bound (section 3): `events`, `event_seq` and `dropped` of the file.
    #[serde(flatten)]
    pub events: EventQueue,
    /// Children that must stay stopped (a `stop` job); every other child runs.
    #[serde(default)]
    pub stopped: BTreeSet<String>,
    /// The install or upgrade of a child in progress: what to restore when
    /// BootAgent stops before its result is on disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child_upgrade: Option<ChildUpgrade>,
    /// The host's boot id when `fatal` was last written (section 6).
    #[serde(default)]
    pub boot_id: String,
    /// Children that went `fatal` by the restart policy: kept fatal when BootAgent
    /// starts again in the same boot (`boot_id`), started afresh after a reboot.
    #[serde(default)]
    pub fatal: BTreeSet<String>,
}

/// An install or upgrade of a child between the moment it touches
/// `agents/NAME` and its result (docs/protocol.md section 7: an interrupted upgrade
/// ends confirmed or rolled back, never in between). Written to the metafile
/// before the job starts and removed in the same write as the job's result, so
/// a start that finds one knows the job was interrupted, and restores the
/// version and settings it names before any child starts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildUpgrade {
    /// The job.
    pub id: String,
    /// The child.
    pub name: String,
    /// The version `current` pointed to; `None` for a first install.
    pub old_version: Option<String>,
    /// `agent.json` as it was; `None` when there was none.
    pub old_settings: Option<String>,
}

impl Meta {
    /// The state of a first start: a new identity, nothing else.
    pub fn new(agentsn: String, servers_cli: String, step_s: u64) -> Self {
        Meta {
            schema: META_SCHEMA,
            agentsn,
            registered: false,
            tags: String::new(),
            key: None,
            secret: None,
            servers_cli,
            ca_file: None,
            client_cert: None,
            client_key: None,
            file_url_roots: Vec::new(),
            servers_server: String::new(),
            step_s,
            report_lazy: false,
            journal: Journal::default(),
            events: EventQueue::default(),
            stopped: BTreeSet::new(),
            child_upgrade: None,
            boot_id: String::new(),
            fatal: BTreeSet::new(),
        }
    }

    /// At start, in boot `boot_id`: the children to keep `fatal` (those of the same
    /// boot; none after a reboot, or when the boot id is unknown). The metafile then
    /// records this boot.
    pub fn fatal_this_boot(&mut self, boot_id: &str) -> BTreeSet<String> {
        if boot_id.is_empty() || self.boot_id != boot_id {
            self.fatal.clear();
        }
        self.boot_id = boot_id.to_string();
        self.fatal.clone()
    }

    /// Checks what serde cannot: the schema and the identity.
    fn validate(&self) -> Result<(), String> {
        if self.schema > META_SCHEMA {
            return Err(format!(
                "schema {} is newer than this BootAgent's {META_SCHEMA}",
                self.schema
            ));
        }
        if self.agentsn.is_empty() || self.agentsn.len() > SN_BYTES_MAX {
            return Err("agentsn is empty or too long".to_string());
        }
        Ok(())
    }
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No metafile at all: the first start.
    FirstStart,
    /// The metafile, or the previous copy when the metafile was damaged (`recovered`
    /// then says what was wrong with it).
    Found {
        meta: Box<Meta>,
        recovered: Option<String>,
    },
}

#[derive(Debug)]
pub enum MetaError {
    Io { path: PathBuf, err: io::Error },
    Corrupt { path: PathBuf, reason: String },
}

impl fmt::Display for MetaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaError::Io { path, err } => write!(f, "metafile {}: {err}", path.display()),
            MetaError::Corrupt { path, reason } => write!(
                f,
                "metafile {} is damaged ({reason}) and has no good previous copy; \
                 refusing to start rather than register a second identity \
                 (move it away to start as a new agent)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for MetaError {}

/// Reads and writes `meta.json` in one data directory.
pub struct MetaStore {
    dir: PathBuf,
    bytes_max: u64,
}

impl MetaStore {
    pub fn new(dir: &Path, bytes_max: u64) -> Self {
        MetaStore {
            dir: dir.to_path_buf(),
            bytes_max,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(META_FILE)
    }

    /// Loads the metafile without writing anything.
    pub fn load(&self) -> Result<Loaded, MetaError> {
        let main = self.dir.join(META_FILE);
        let prev = self.dir.join(PREV_FILE);
        let main_result = self.read(&main)?;
        let damage = match main_result {
            Some(Ok(meta)) => {
                return Ok(Loaded::Found {
                    meta: Box::new(meta),
                    recovered: None,
                })
            }
            Some(Err(reason)) => reason,
            None => "missing".to_string(),
        };
        match self.read(&prev)? {
            Some(Ok(meta)) => Ok(Loaded::Found {
                meta: Box::new(meta),
                recovered: Some(damage),
            }),
            None if damage == "missing" => Ok(Loaded::FirstStart),
            Some(Err(_)) | None => Err(MetaError::Corrupt {
                path: main,
                reason: damage,
            }),
        }
    }

    /// `None` when the file does not exist; `Some(Err(reason))` when it does not parse.
    fn read(&self, path: &Path) -> Result<Option<Result<Meta, String>>, MetaError> {
        let io_err = |err| MetaError::Io {
            path: path.to_path_buf(),
            err,
        };
        let file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_err(err)),
        };
        let mut bytes = Vec::new();
        file.take(self.bytes_max + 1)
            .read_to_end(&mut bytes)
            .map_err(io_err)?;
        if bytes.len() as u64 > self.bytes_max {
            return Ok(Some(Err(format!("larger than {} bytes", self.bytes_max))));
        }
        let parsed = serde_json::from_slice::<Meta>(&bytes)
            .map_err(|e| crate::wire::one_line(&e.to_string()))
            .and_then(|meta| meta.validate().map(|()| meta));
        Ok(Some(parsed))
    }

    /// Creates the data directory (mode 0700) if it does not exist.
    pub fn create_dir(&self) -> Result<(), MetaError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|err| MetaError::Io {
                path: self.dir.clone(),
                err,
            })
    }

    /// Writes `meta` atomically and durably (see the module documentation).
    pub fn save(&self, meta: &Meta) -> Result<(), MetaError> {
        let mut bytes = serde_json::to_vec_pretty(meta).map_err(|e| MetaError::Io {
            path: self.path(),
            err: io::Error::other(e),
        })?;
        bytes.push(b'\n');
        self.write_atomically(&bytes)
    }

    fn write_atomically(&self, bytes: &[u8]) -> Result<(), MetaError> {
        let main = self.dir.join(META_FILE);
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |err| MetaError::Io { path, err }
        };
        let staged = atomic_file::stage(&main, bytes, 0o600).map_err(io_at(&main))?;
        self.keep_previous_copy()?;
        staged.commit().map_err(io_at(&main))
    }

    /// Replaces `meta.json.prev` with a hard link to the current `meta.json`, itself
    /// through a rename, so that a good previous copy exists at every moment.
    fn keep_previous_copy(&self) -> Result<(), MetaError> {
        let main = self.dir.join(META_FILE);
        let prev = self.dir.join(PREV_FILE);
        let prev_tmp = self.dir.join(PREV_TMP_FILE);
        let io_at = |path: &Path| {
            let path = path.to_path_buf();
            move |err| MetaError::Io { path, err }
        };
        // Only a metafile that parses becomes the previous copy.
        if !matches!(self.read(&main)?, Some(Ok(_))) {
            return Ok(());
        }
        remove_if_exists(&prev_tmp).map_err(io_at(&prev_tmp))?;
        fs::hard_link(&main, &prev_tmp).map_err(io_at(&prev_tmp))?;
        fs::rename(&prev_tmp, &prev).map_err(io_at(&prev))
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "meta_tests.rs"]
mod tests;
