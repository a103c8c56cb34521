//! The exec hand-over: the running image replaces itself with another binary
//! (`execve`, same pid) and the next image takes over what it was doing.
//!
//! Invariants:
//! - The exec happens on the main thread, the one that spawned every child: a
//!   child's `PR_SET_PDEATHSIG` fires when the thread that spawned it ends, and an
//!   `execve` ends every *other* thread. The children never see a death signal.
//! - The children's log pipes (read ends) and their sd_notify sockets are the only
//!   descriptors handed over; everything else stays close-on-exec. Their numbers are
//!   in `handover.json`. A notify datagram that waits in a socket at the exec is read
//!   by the next image: the socket is the same one.
//! - `handover.json` (in the data directory, 0600) holds the children's states,
//!   counters and pids on the monotonic scale the next image continues, and a token.
//!   The environment variable `BOOT_EXEC_HANDOVER=<token>` marks a start as the
//!   other side of an exec: only such a start adopts the children it finds; any
//!   other start (init, after a crash) ends a predecessor's leftovers. A file whose
//!   token does not match the variable is ignored.
//! - Before an exec to a new version, `alarm(probation + HANG_MARGIN_S)` is armed: the
//!   timer survives the exec. The new image takes `SIGALRM` over with a handler that
//!   execs the previous binary (`BOOT_EXEC_ROLLBACK=hang`); a new image that hangs
//!   before that dies of the default action, and init's restart settles it as failed.

use super::state::write_atomically;
use crate::child::Carried;
use crate::sys::{self, ExecImage};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::RawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// The marker of a start that is the other side of an exec hand-over.
pub const HANDOVER_ENV: &str = "BOOT_EXEC_HANDOVER";
/// Set (to the reason) when the exec is a rollback forced by the alarm.
pub const ROLLBACK_ENV: &str = "BOOT_EXEC_ROLLBACK";
/// What the exec leaves for the next image, in the data directory.
pub const HANDOVER_FILE: &str = "handover.json";
/// Largest `handover.json` read (256 children with their state fit many times).
const HANDOVER_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// The alarm armed before the exec fires this long after the probation should have
/// ended: a new image that neither confirmed nor rolled back by then is hung.
pub const HANG_MARGIN_S: u64 = 15;

static AFTER_EXEC: AtomicBool = AtomicBool::new(false);

/// True in an image started by an exec hand-over (set by `take_handover`): it adopts
/// the children, and its first report goes out at once (docs/protocol.md section 3).
pub fn after_exec() -> bool {
    AFTER_EXEC.load(Ordering::SeqCst)
}

/// The marker's value, if this process was started by an exec hand-over.
pub fn exec_marker() -> Option<OsString> {
    std::env::var_os(HANDOVER_ENV).filter(|v| !v.is_empty())
}

/// One child as it crosses the exec.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedSlot {
    pub name: String,
    pub child: Carried,
    pub started_wall: Option<i64>,
    /// The child's cgroup (with its limits), kept as it is.
    #[serde(default)]
    pub cgroup: Option<crate::reslimit::CgroupParts>,
    #[serde(default)]
    pub oom_kills_seen: u64,
    /// Its sd_notify readiness and status (docs/protocol.md section 6, "Health"): a
    /// daemon says `READY=1` once, so the next image must know it was said.
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub status_text: Option<String>,
    /// Its sd_notify socket, kept open across the exec (the same socket, so nothing
    /// sent to it is lost); `None` when it had none.
    #[serde(default)]
    pub notify_fd: Option<RawFd>,
}

/// Which way an exec goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the new version, on probation.
    Forward,
    /// Back to the previous version; the job already has its result.
    Rollback,
}

/// `handover.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Handover {
    pub token: String,
    pub direction: Direction,
    /// Zero of the monotonic scale (`CLOCK_MONOTONIC` ms) the next image continues.
    pub origin_ms: u64,
    pub children: Vec<CarriedSlot>,
    /// Read ends of the children's log pipes: (log file, descriptor).
    pub logs: Vec<(PathBuf, RawFd)>,
    /// Forward: the self-upgrade job, the end of probation on the monotonic scale,
    /// and the binary to go back to.
    pub job: Option<String>,
    pub probation_until_ms: Option<u64>,
    pub previous: Option<PathBuf>,
    /// The previous binary (the one that wrote this file) takes the notify sockets
    /// over: a rollback to it hands them back. False from a BootAgent that did not.
    #[serde(default)]
    pub previous_notify_sockets: bool,
    /// Rollback: why (an exec to the new version that failed).
    #[serde(default)]
    pub reason: Option<String>,
    /// Set by the next image when the exec is a rollback forced by the alarm.
    #[serde(skip)]
    pub forced_rollback: Option<String>,
}

/// What the loop asks `app` to exec.
#[derive(Clone, Debug)]
pub struct ExecPlan {
    pub program: PathBuf,
    pub direction: Direction,
    pub job: Option<String>,
    pub probation_s: u64,
    pub previous: Option<PathBuf>,
    /// `program` takes the children's notify sockets over (`CarriedSlot::notify_fd`);
    /// if not, none is handed over and it binds the names again.
    pub notify_sockets: bool,
}

/// Reads the hand-over of this start, if the marker says there is one and the
/// file's token matches it.
pub fn take_handover(data_dir: &Path) -> Option<Handover> {
    let token = exec_marker()?;
    let path = data_dir.join(HANDOVER_FILE);
    let read = (|| {
        let mut bytes = Vec::new();
        File::open(&path)?
            .take(HANDOVER_BYTES_MAX + 1)
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > HANDOVER_BYTES_MAX {
            return Err(io::Error::other(format!(
                "larger than {HANDOVER_BYTES_MAX} bytes"
            )));
        }
        serde_json::from_slice::<Handover>(&bytes).map_err(io::Error::other)
    })();
    let mut handover = match read {
        Ok(handover) if token.to_str() == Some(handover.token.as_str()) => handover,
        Ok(_) => {
            log::warn!(
                "{}: token does not match {HANDOVER_ENV}; starting afresh",
                path.display()
            );
            return None;
        }
        Err(err) => {
            log::warn!("{}: {err}; starting afresh", path.display());
            return None;
        }
    };
    handover.forced_rollback = std::env::var(ROLLBACK_ENV).ok().filter(|r| !r.is_empty());
    // A descriptor that is not a pipe any more is not a log pipe to adopt.
    handover.logs.retain(|(_, fd)| sys::is_pipe(*fd));
    AFTER_EXEC.store(true, Ordering::SeqCst);
    Some(handover)
}

/// The environment for the next image: this one's, without old markers, with ours.
fn next_env(token: &str, rollback: Option<&str>) -> Vec<OsString> {
    let mut env: Vec<OsString> = std::env::vars_os()
        .filter(|(key, _)| key != HANDOVER_ENV && key != ROLLBACK_ENV)
        .map(|(key, value)| {
            let mut pair = key;
            pair.push("=");
            pair.push(value);
            pair
        })
        .collect();
    env.push(format!("{HANDOVER_ENV}={token}").into());
    if let Some(reason) = rollback {
        env.push(format!("{ROLLBACK_ENV}={reason}").into());
    }
    env
}

/// This process's arguments with `program` as `argv[0]`.
fn next_argv(program: &Path) -> Vec<OsString> {
    let mut argv = vec![program.as_os_str().to_os_string()];
    argv.extend(std::env::args_os().skip(1));
    argv
}

/// Writes `handover.json`, arms the alarm of a forward exec, and execs. Returns
/// only when the exec failed (the file is then stale and harmless: no marker).
pub fn exec(data_dir: &Path, handover: &Handover, plan: &ExecPlan) -> io::Error {
    let bytes = match serde_json::to_vec(handover) {
        Ok(bytes) => bytes,
        Err(err) => return io::Error::other(err),
    };
    if let Err(err) = write_atomically(&data_dir.join(HANDOVER_FILE), &bytes) {
        return err;
    }
    let logs = handover.logs.iter().map(|(_, fd)| *fd);
    let sockets = handover.children.iter().filter_map(|c| c.notify_fd);
    let keep: Vec<RawFd> = logs.chain(sockets).collect();
    let Some(image) = ExecImage::new(
        &plan.program,
        &next_argv(&plan.program),
        &next_env(&handover.token, None),
        keep,
    ) else {
        return io::Error::other("an argument or variable holds a NUL byte");
    };
    sys::default_sigalrm();
    match plan.direction {
        Direction::Forward => {
            let secs = plan.probation_s.saturating_add(HANG_MARGIN_S);
            sys::alarm(u32::try_from(secs).unwrap_or(u32::MAX));
        }
        Direction::Rollback => sys::alarm(0),
    }
    let err = image.exec();
    sys::alarm(0);
    err
}

/// In a new image on probation: on `SIGALRM` (armed before the exec), the main
/// thread execs the previous binary, which takes the children over again.
pub fn arm_rollback_on_alarm(handover: &Handover) -> io::Result<()> {
    let Some(previous) = &handover.previous else {
        return Ok(());
    };
    let logs = handover.logs.iter().map(|(_, fd)| *fd);
    let sockets = handover.children.iter().filter_map(|c| c.notify_fd);
    let keep: Vec<RawFd> = logs.chain(sockets).collect();
    let image = ExecImage::new(
        previous,
        &next_argv(previous),
        &next_env(&handover.token, Some("hang")),
        keep,
    )
    .ok_or_else(|| io::Error::other("an argument or variable holds a NUL byte"))?;
    sys::exec_on_sigalrm(image)
}

/// Cancels the alarm (confirmed, or rolling back by itself), ignores `SIGALRM` again
/// (as BootAgent always does, docs/protocol.md section 6), and forgets the file.
pub fn settle(data_dir: &Path) {
    sys::alarm(0);
    if let Err(err) = sys::ignore_signals(&[libc::SIGALRM]) {
        log::warn!("cannot ignore SIGALRM again: {err}");
    }
    let _ = fs::remove_file(data_dir.join(HANDOVER_FILE));
}
