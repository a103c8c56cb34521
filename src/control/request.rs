//! What the console asks and answers (docs/protocol.md section 6): the verbs, a
//! request line read into a typed value, the answer line, and the `Request` the
//! socket's thread hands to the event loop. A leaf: the loop's `Event` carries a
//! `Request` without importing the socket's code.

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
