//! What the console asks and answers (docs/protocol.md section 6): the socket's name,
//! the verbs, a request line read into a typed value, the answer line (a child as `sv`
//! shows it), and the `Request` the socket's thread hands to the event loop. Pure, and
//! a leaf: the loop's `Event` carries a `Request` without importing the socket's code
//! (`control/`, which imports this).

use crate::child::EventKind;
use std::fmt;
use std::sync::mpsc::SyncSender;

/// Exit codes of the commands (docs/protocol.md section 6).
pub const EXIT_DONE: u8 = 0;
pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NO_SUCH_CHILD: u8 = 3;

/// What the socket can ask: exactly the jobs of the same names, nothing more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Restart,
    Stop,
    Start,
}

impl Verb {
    pub fn parse(word: &str) -> Option<Verb> {
        match word {
            "restart" => Some(Verb::Restart),
            "stop" => Some(Verb::Stop),
            "start" => Some(Verb::Start),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Restart => "restart",
            Verb::Stop => "stop",
            Verb::Start => "start",
        }
    }

    /// The kind of the event that reports it (section 3).
    pub fn event_kind(self) -> EventKind {
        match self {
            Verb::Restart => EventKind::Restarted,
            Verb::Stop => EventKind::Stopped,
            Verb::Start => EventKind::Started,
        }
    }
}

/// A request line, read into a typed value: `VERB NAME`.
pub fn parse_request(line: &str) -> Result<(Verb, String), String> {
    let mut words = line.split(' ');
    let (Some(verb), Some(name), None) = (words.next(), words.next(), words.next()) else {
        return Err("a request is one line: VERB NAME".to_string());
    };
    let verb = Verb::parse(verb).ok_or_else(|| {
        format!(
            "unknown command {:?}: restart, stop or start",
            verb.escape_debug().to_string()
        )
    })?;
    if !crate::job_fields::valid_name(name) {
        return Err("bad agent name: 1-64 of A-Z a-z 0-9 . _ -, not starting with .".into());
    }
    Ok((verb, name.to_string()))
}

/// An answer: the exit code for the command, and one line for the person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub code: u8,
    pub text: String,
}

impl Reply {
    pub fn new(code: u8, text: impl Into<String>) -> Reply {
        Reply {
            code,
            text: text.into(),
        }
    }

    /// The answer line, newline included; the text kept on one line.
    pub fn line(&self) -> String {
        let text: String = self
            .text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        format!("{} {text}\n", self.code)
    }

    /// Reads an answer line (without its newline).
    pub fn parse(line: &str) -> Option<Reply> {
        let (code, text) = line.split_once(' ').unwrap_or((line, ""));
        let code: u8 = code.parse().ok()?;
        (code <= EXIT_NO_SUCH_CHILD).then(|| Reply::new(code, text))
    }
}

/// A request that passed the socket's checks, for the event loop. The loop answers
/// on `reply` (capacity 1, so the loop's `try_send` never waits).
pub struct Request {
    pub verb: Verb,
    pub name: String,
    /// The peer's user id, for the log and the event.
    pub uid: u32,
    pub reply: SyncSender<Reply>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} (uid {})", self.verb.as_str(), self.name, self.uid)
    }
}

/// The socket, in the data directory.
pub const SOCKET_FILE: &str = "control.sock";
/// Longest answer line a client reads.
pub const REPLY_BYTES_MAX: usize = 4096;

/// `2m05s`, as the status table writes an uptime.
pub fn uptime(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        3600..=86_399 => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d{:02}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// One child as `sv` shows it: `running: NAME: (pid 4242) 5s`, `stoped: NAME`.
pub fn sv_line(name: &str, status: &str, pid: u32, uptime_s: u64) -> String {
    if pid == 0 {
        format!("{status}: {name}")
    } else {
        format!("{status}: {name}: (pid {pid}) {}", uptime(uptime_s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_one_verb_and_one_valid_name() {
        assert_eq!(
            parse_request("restart BasicAgent"),
            Ok((Verb::Restart, "BasicAgent".to_string()))
        );
        assert_eq!(
            parse_request("stop a.b-c_d"),
            Ok((Verb::Stop, "a.b-c_d".into()))
        );
        for bad in [
            "",
            "restart",
            "restart  a",
            "restart a b",
            "uninstall a",
            "install a",
            "RESTART a",
            "stop ../etc",
            "stop .hidden",
            "stop a\u{0}",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?} was taken");
        }
        let err = parse_request("frob\u{1b}[2J a").expect_err("unknown verb");
        assert!(!err.contains('\u{1b}'), "{err}");
    }

    #[test]
    fn replies_round_trip_and_stay_one_line() {
        let reply = Reply::new(1, "failed: a\nb");
        assert_eq!(reply.line(), "1 failed: a b\n");
        assert_eq!(
            Reply::parse("1 failed: a b"),
            Some(Reply::new(1, "failed: a b"))
        );
        assert_eq!(Reply::parse("0"), Some(Reply::new(0, "")));
        assert_eq!(Reply::parse("7 what"), None);
        assert_eq!(Reply::parse("x y"), None);
    }

    #[test]
    fn sv_lines() {
        assert_eq!(
            sv_line("A", "running", 42, 125),
            "running: A: (pid 42) 2m05s"
        );
        assert_eq!(sv_line("A", "stoped", 0, 0), "stoped: A");
    }
}
