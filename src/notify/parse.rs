//! An sd_notify datagram into the notices it carries (pure): newline-separated
//! `KEY=VALUE` assignments, as sd_notify(3) defines them.

/// Longest datagram taken, in bytes: what systemd takes (its buffer is 4096 bytes). A
/// longer one is ignored whole, as systemd ignores it.
pub const DATAGRAM_BYTES_MAX: usize = 4096;
/// Longest `STATUS=` text kept, in bytes; a longer one is cut at a character boundary.
pub const STATUS_BYTES_MAX: usize = 512;
/// Most lines of one datagram looked at; the ones after are ignored.
pub const ASSIGNMENTS_MAX: usize = 64;
/// Most decimal digits of a pid (`i32::MAX` has 10).
const PID_DIGITS_MAX: usize = 10;

/// One sd_notify assignment of a datagram, as systemd's sd_notify(3) defines them.
/// Assignments of other keys (`ERRNO=`, `FDSTORE=1`, `EXTEND_TIMEOUT_USEC=` …) are
/// ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`: start-up is finished.
    Ready,
    /// `RELOADING=1`: reloading its configuration; `READY=1` follows when done.
    Reloading,
    /// `STOPPING=1`: shutting down.
    Stopping,
    /// `STATUS=…`: a one-line status. Bytes that are not UTF-8 become U+FFFD, control
    /// characters (tab, escape …) spaces; at most [`STATUS_BYTES_MAX`] bytes.
    Status(String),
    /// `WATCHDOG=1`: alive (the watchdog keep-alive).
    Watchdog,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    WatchdogTrigger,
    /// `MAINPID=N` (N > 0): its main process is now N.
    MainPid(i32),
    /// `BARRIER=1`: the sender waits until the descriptors it sent along are closed
    /// (`systemd-notify` does, after its message). The notifier closes them after every
    /// datagram; a datagram with nothing else is not delivered.
    Barrier,
}

impl Notice {
    /// Two notices of the same kind (any text, any pid): the later one replaces the
    /// earlier when messages are coalesced.
    pub fn same_kind(&self, other: &Notice) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }
}

/// The notices of `datagram`, in order. Pure and bounded: a datagram longer than
/// [`DATAGRAM_BYTES_MAX`] gives nothing; anything after a NUL byte is ignored (the
/// text ends there for a C reader such as systemd); at most [`ASSIGNMENTS_MAX`] lines are
/// looked at; lines without `=`, unknown keys and bad values are skipped.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    if datagram.len() > DATAGRAM_BYTES_MAX {
        return Vec::new();
    }
    let text = datagram.split(|&b| b == 0).next().unwrap_or_default();
    text.split(|&b| b == b'\n')
        .take(ASSIGNMENTS_MAX)
        .filter_map(assignment)
        .collect()
}

/// One `KEY=VALUE` line.
fn assignment(line: &[u8]) -> Option<Notice> {
    let eq = line.iter().position(|&b| b == b'=')?;
    let (key, value) = (line.get(..eq)?, line.get(eq + 1..)?);
    match (key, value) {
        (b"READY", b"1") => Some(Notice::Ready),
        (b"RELOADING", b"1") => Some(Notice::Reloading),
        (b"STOPPING", b"1") => Some(Notice::Stopping),
        (b"STATUS", text) => Some(Notice::Status(status_text(text))),
        (b"WATCHDOG", b"1") => Some(Notice::Watchdog),
        (b"WATCHDOG", b"trigger") => Some(Notice::WatchdogTrigger),
        (b"MAINPID", digits) => pid(digits).map(Notice::MainPid),
        (b"BARRIER", b"1") => Some(Notice::Barrier),
        _ => None,
    }
}

/// A positive decimal pid, digits only.
fn pid(digits: &[u8]) -> Option<i32> {
    if digits.is_empty() || digits.len() > PID_DIGITS_MAX || !digits.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    std::str::from_utf8(digits)
        .ok()?
        .parse::<i32>()
        .ok()
        .filter(|&pid| pid > 0)
}

/// The text of `STATUS=`: lossy UTF-8, control characters as spaces, at most
/// `STATUS_BYTES_MAX` bytes cut at a character boundary.
fn status_text(raw: &[u8]) -> String {
    let mut text = String::new();
    for c in String::from_utf8_lossy(raw).chars() {
        let c = if c.is_control() { ' ' } else { c };
        if text.len() + c.len_utf8() > STATUS_BYTES_MAX {
            break;
        }
        text.push(c);
    }
    text
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
