//! The agent's side of `control.sock`: the socket (0600, close-on-exec), the acceptor
//! thread and one short-lived thread per client. The loop sees a request only once
//! it is whole, well-formed and from an allowed user, and never waits on a client.
//!
//! Bounds, each a field of `Limits`:
//! - `control_accepts_per_s`: a token bucket of as many connections; past it a
//!   connection gets "busy" and is closed by the acceptor itself, which then pauses
//!   `SHED_PAUSE_MS`; the kernel queues at most `BACKLOG_MAX` connections meanwhile,
//!   so a flood blocks in its own `connect` and costs the agent little CPU.
//! - `control_clients_max`: clients being served at once; past it, "busy".
//! - `control_request_bytes_max` and `control_client_timeout_ms`: one request line,
//!   read within that time in all (a client that sends nothing, or one byte at a
//!   time, is dropped); the answer is written under the same timeout.
//! - the loop's channel is bounded: a request that finds it full gets "busy".
//!
//! Peer credentials (`SO_PEERCRED`): root, or the agent's own user; others are
//! refused even when the socket's mode was changed.

use crate::console::{parse_request, Reply, Request, EXIT_FAILED, EXIT_USAGE, SOCKET_FILE};
use crate::events::Event;
use crate::sys;
use log::{debug, info, warn};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Mode of the socket: owner only (section 8).
const SOCKET_MODE: u32 = 0o600;
/// Pause after a failed `accept(2)` (out of descriptors), so it cannot spin.
const ACCEPT_ERROR_PAUSE_MS: u64 = 100;
/// Pause after answering a connection "busy" for the rate: a flood then waits in the
/// kernel's backlog (its `connect` blocks) instead of costing this thread a core, and
/// a command behind it is still taken within a few hundred milliseconds.
const SHED_PAUSE_MS: u64 = 2;
/// Connections the kernel holds for the acceptor (std asks for the system's maximum,
/// thousands, which a flood would fill and a command would then wait behind).
const BACKLOG_MAX: u32 = 16;

/// The bounds of the socket, from `Limits`.
#[derive(Clone, Debug)]
pub struct ListenLimits {
    pub accepts_per_s: u64,
    pub clients_max: usize,
    pub request_bytes_max: usize,
    pub client_timeout_ms: u64,
    /// How long a client thread waits for the loop's answer.
    pub answer_timeout_ms: u64,
}

impl ListenLimits {
    pub fn from(limits: &crate::limits::Limits) -> ListenLimits {
        ListenLimits {
            accepts_per_s: limits.control_accepts_per_s.max(1),
            clients_max: limits.control_clients_max.max(1),
            request_bytes_max: limits.control_request_bytes_max,
            client_timeout_ms: limits.control_client_timeout_ms,
            answer_timeout_ms: limits.control_timeout_ms,
        }
    }
}

/// Binds `DATA/control.sock` (replacing a socket left by a predecessor: the caller
/// holds the data directory's lock) and starts the acceptor thread. The descriptor
/// is close-on-exec (std opens sockets with `SOCK_CLOEXEC`): an image started by
/// `execve` binds its own.
pub fn listen(
    data_dir: &Path,
    limits: ListenLimits,
    events: SyncSender<Event>,
) -> io::Result<PathBuf> {
    let path = data_dir.join(SOCKET_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(&path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ))
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    let listener = UnixListener::bind(&path)?;
    sys::set_backlog(&listener, BACKLOG_MAX)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(SOCKET_MODE))?;
    let owner = sys::euid();
    thread::Builder::new()
        .name("control".to_string())
        .spawn(move || accept_loop(listener, limits, owner, events))?;
    Ok(path)
}

/// A token bucket: `per_s` tokens a second, holding at most `per_s`.
pub(super) struct Bucket {
    per_s: u64,
    tokens_milli: u64,
    last: Instant,
}

impl Bucket {
    pub(super) fn new(per_s: u64, now: Instant) -> Bucket {
        Bucket {
            per_s,
            tokens_milli: per_s.saturating_mul(1000),
            last: now,
        }
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed_ms = now.saturating_duration_since(self.last).as_millis() as u64;
        self.last = now;
        let cap = self.per_s.saturating_mul(1000);
        self.tokens_milli = self
            .tokens_milli
            .saturating_add(elapsed_ms.saturating_mul(self.per_s))
            .min(cap);
        if self.tokens_milli >= 1000 {
            self.tokens_milli -= 1000;
            true
        } else {
            false
        }
    }
}

fn accept_loop(
    listener: UnixListener,
    limits: ListenLimits,
    owner: u32,
    events: SyncSender<Event>,
) {
    let mut bucket = Bucket::new(limits.accepts_per_s, Instant::now());
    let active = Arc::new(AtomicUsize::new(0));
    let mut shed: u64 = 0;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(err) => {
                warn!("control socket: accept: {err}");
                thread::sleep(Duration::from_millis(ACCEPT_ERROR_PAUSE_MS));
                continue;
            }
        };
        // A few bytes into a fresh socket's empty buffer: this never waits long.
        let _ = stream.set_write_timeout(Some(Duration::from_millis(limits.client_timeout_ms)));
        if !bucket.take(Instant::now()) {
            shed += 1;
            if shed == 1 || shed.is_multiple_of(1000) {
                warn!("control socket: more than {} connections a second; {shed} answered busy so far", limits.accepts_per_s);
            }
            answer(
                &stream,
                &Reply::new(EXIT_FAILED, "busy: too many connections, try again"),
            );
            drop(stream);
            thread::sleep(Duration::from_millis(SHED_PAUSE_MS));
            continue;
        }
        match sys::peer_uid(&stream) {
            Ok(uid) if uid == 0 || uid == owner => {}
            Ok(uid) => {
                warn!("control socket: refused a connection from uid {uid}");
                let why = format!(
                    "refused: uid {uid} may not control this agent (root or uid {owner} only)"
                );
                answer(&stream, &Reply::new(EXIT_FAILED, why));
                continue;
            }
            Err(err) => {
                warn!("control socket: cannot read the peer's credentials: {err}");
                continue;
            }
        }
        if active.load(Ordering::SeqCst) >= limits.clients_max {
            debug!(
                "control socket: {} clients already; busy",
                limits.clients_max
            );
            answer(
                &stream,
                &Reply::new(EXIT_FAILED, "busy: other commands in progress, try again"),
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (limits, events, done) = (limits.clone(), events.clone(), Arc::clone(&active));
        let spawned = thread::Builder::new()
            .name("control-client".to_string())
            .spawn(move || {
                serve(stream, &limits, &events);
                done.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(err) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            warn!("control socket: cannot start a client thread: {err}");
        }
    }
}

/// One client: its request line within the deadline, the loop's answer, written back.
fn serve(mut stream: UnixStream, limits: &ListenLimits, events: &SyncSender<Event>) {
    let deadline = Instant::now() + Duration::from_millis(limits.client_timeout_ms);
    let line = match read_line(&mut stream, limits.request_bytes_max, deadline) {
        Ok(line) => line,
        Err(why) => {
            debug!("control socket: {why}");
            answer(&stream, &Reply::new(EXIT_USAGE, why));
            return;
        }
    };
    let (verb, name) = match parse_request(&line) {
        Ok(request) => request,
        Err(why) => {
            answer(
                &stream,
                &Reply::new(EXIT_USAGE, format!("bad request: {why}")),
            );
            return;
        }
    };
    let uid = sys::peer_uid(&stream).unwrap_or(u32::MAX);
    info!("control socket: {} {name} from uid {uid}", verb.as_str());
    let (reply_tx, reply_rx) = mpsc::sync_channel(1);
    let request = Request {
        verb,
        name,
        uid,
        reply: reply_tx,
    };
    let reply = match events.try_send(Event::Control(request)) {
        Err(TrySendError::Full(_)) => Reply::new(EXIT_FAILED, "busy: the agent is busy, try again"),
        Err(TrySendError::Disconnected(_)) => Reply::new(EXIT_FAILED, "bootagent is stopping"),
        Ok(()) => match reply_rx.recv_timeout(Duration::from_millis(limits.answer_timeout_ms)) {
            Ok(reply) => reply,
            Err(_) => Reply::new(EXIT_FAILED, "no answer from the agent's loop"),
        },
    };
    answer(&stream, &reply);
}

/// Reads one line (without its `\n`) of at most `max` bytes by `deadline`.
fn read_line(stream: &mut UnixStream, max: usize, deadline: Instant) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(64);
    let mut chunk = [0u8; 256];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err("no request line in time".to_string());
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        let room = (max + 1).saturating_sub(bytes.len()).min(chunk.len());
        let n = match stream.read(&mut chunk[..room]) {
            Ok(0) => return Err("the client closed the connection before a whole line".into()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no request line in time".to_string())
            }
            Err(err) => return Err(format!("reading the request: {err}")),
        };
        bytes.extend_from_slice(&chunk[..n]);
        if let Some(end) = bytes.iter().position(|&b| b == b'\n') {
            bytes.truncate(end);
            if bytes.len() > max {
                break;
            }
            return String::from_utf8(bytes).map_err(|_| "the request is not UTF-8".to_string());
        }
        if bytes.len() > max {
            break;
        }
    }
    Err(format!("the request is longer than {max} bytes"))
}

/// Writes the answer. What the client sent and nobody read is taken first (without
/// waiting), so that closing does not reset the connection under the answer.
fn answer(mut stream: &UnixStream, reply: &Reply) {
    if let Err(err) = stream.write_all(reply.line().as_bytes()) {
        debug!("control socket: cannot answer: {err}");
    }
    if stream.set_nonblocking(true).is_ok() {
        let mut unread = [0u8; 512];
        for _ in 0..8 {
            if !matches!(stream.read(&mut unread), Ok(n) if n > 0) {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut bucket = Bucket::new(5, start);
        let burst = (0..100).filter(|_| bucket.take(start)).count();
        assert_eq!(burst, 5);
        let later = start + Duration::from_millis(1000);
        let next = (0..100).filter(|_| bucket.take(later)).count();
        assert_eq!(next, 5);
        let much_later = later + Duration::from_secs(3600);
        let capped = (0..100).filter(|_| bucket.take(much_later)).count();
        assert_eq!(capped, 5, "never more than a second's worth at once");
    }

    #[test]
    fn request_lines_are_bounded_and_timed() {
        let (mut a, mut b) = UnixStream::pair().expect("pair");
        b.write_all(b"stop x\nrest").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        assert_eq!(read_line(&mut a, 64, deadline), Ok("stop x".to_string()));

        let (mut a, mut b) = UnixStream::pair().expect("pair");
        b.write_all(&[b'a'; 200]).expect("write");
        let err = read_line(&mut a, 100, deadline).expect_err("too long");
        assert!(err.contains("longer than 100"), "{err}");

        let (mut a, _b) = UnixStream::pair().expect("pair");
        let soon = Instant::now() + Duration::from_millis(50);
        let err = read_line(&mut a, 100, soon).expect_err("silent");
        assert!(err.contains("in time"), "{err}");
    }
}
