//! `bootagent restart|stop|start NAME`: one request to the running agent over
//! `control.sock`, its answer printed, its code the exit code.

use crate::console::{Reply, Verb, EXIT_FAILED, REPLY_BYTES_MAX, SOCKET_FILE};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// How long connecting may take (the agent accepts at once, or is not there).
const CONNECT_TIMEOUT_MS: u64 = 5_000;

/// Sends `VERB NAME`, prints the answer (stdout when done, else stderr) and returns
/// the exit code.
pub fn command(
    data_dir: &Path,
    verb: Verb,
    name: &str,
    timeout_ms: u64,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let reply = match ask(data_dir, verb, name, timeout_ms) {
        Ok(reply) => reply,
        Err(why) => Reply::new(EXIT_FAILED, why),
    };
    let _ = if reply.code == 0 {
        writeln!(out, "{}", reply.text)
    } else {
        writeln!(err, "{}", reply.text)
    };
    reply.code
}

fn ask(data_dir: &Path, verb: Verb, name: &str, timeout_ms: u64) -> Result<Reply, String> {
    let path = data_dir.join(SOCKET_FILE);
    let mut stream = connect(&path)?;
    let timeout = Some(Duration::from_millis(timeout_ms.max(1)));
    let _ = stream.set_write_timeout(timeout);
    let _ = stream.set_read_timeout(timeout);
    // An agent that refuses (busy, not allowed) answers without reading: its
    // answer counts, even when sending failed.
    let sent = stream.write_all(format!("{} {name}\n", verb.as_str()).as_bytes());
    let mut bytes = Vec::new();
    let read = (&mut stream)
        .take(REPLY_BYTES_MAX as u64)
        .read_to_end(&mut bytes);
    // A reset before any answer: the socket was still held open by a process that
    // died, e.g. a child of an agent killed with -9 that had not reached exec yet.
    let reset = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        )
    };
    if bytes.is_empty()
        && (read.as_ref().err().is_some_and(reset) || sent.as_ref().err().is_some_and(reset))
    {
        return Err(format!(
            "bootagent is not running (the connection to {} was reset before an answer)",
            path.display()
        ));
    }
    let read = read.map_err(|e| match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => format!(
            "no answer from bootagent within {timeout_ms} ms (it may still carry the command out)"
        ),
        _ => format!("reading bootagent's answer: {e}"),
    });
    if let (Err(e), true) = (&sent, bytes.is_empty()) {
        return Err(format!("cannot send the command to bootagent: {e}"));
    }
    if bytes.is_empty() {
        read?;
    }
    let text = String::from_utf8_lossy(&bytes);
    let line = text.lines().next().unwrap_or("");
    Reply::parse(line).ok_or_else(|| {
        if bytes.is_empty() {
            "bootagent closed the connection without an answer".to_string()
        } else {
            "bootagent's answer is malformed".to_string()
        }
    })
}

/// Connects, in a helper thread so that a socket whose backlog is full cannot hold
/// the command past `CONNECT_TIMEOUT_MS`.
fn connect(path: &Path) -> Result<UnixStream, String> {
    let (tx, rx) = mpsc::sync_channel(1);
    let target = path.to_path_buf();
    thread::Builder::new()
        .name("connect".to_string())
        .spawn(move || {
            let _ = tx.send(UnixStream::connect(&target));
        })
        .map_err(|e| format!("cannot start a thread: {e}"))?;
    let shown = path.display();
    match rx.recv_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS)) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => {
            Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    format!("bootagent is not running (nothing listens on {shown})")
                }
                io::ErrorKind::PermissionDenied => {
                    format!("cannot connect to {shown}: permission denied (root or the agent's user only)")
                }
                _ => format!("cannot connect to {shown}: {e}"),
            })
        }
        Err(_) => Err(format!(
            "bootagent does not accept on {shown} within {CONNECT_TIMEOUT_MS} ms"
        )),
    }
}
