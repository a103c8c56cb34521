//! Local control (docs/protocol.md section 6): `bootagent restart|stop|start NAME` asks the
//! running agent, over the Unix socket `control.sock` in the data directory, to do
//! what the job of the same name does; `bootagent logs NAME` reads the child's log
//! files and needs no agent.
//!
//! ```text
//!  bootagent stop NAME ──connect──► control.sock ─► acceptor thread
//!                                                   │ rate, peer uid, clients bound
//!                                                   ▼
//!                                       client thread: one request line, deadline
//!                                                   │ Event::Control (try_send)
//!                                                   ▼
//!                           event loop: the `stop` job's code path, event `origin: local`
//!                                                   │ Reply (channel of 1, never waits)
//!  exit code, one line ◄────────────────────────────┘
//! ```
//!
//! The line protocol, one request and one answer per connection:
//! - request: `VERB NAME\n`, `VERB` one of `restart`, `stop`, `start`; at most
//!   `control_request_bytes_max` bytes.
//! - answer: `CODE TEXT\n`, `CODE` the command's exit code (0 done, 1 failed,
//!   2 bad request, 3 no such child), `TEXT` one line: on success, the child as `sv`
//!   shows it (`running: NAME: (pid 4242) 0s`).
//!
//! Files: `mod.rs` (the protocol, pure), `listener.rs` (the agent's side: the socket,
//! its threads and bounds), `local.rs` (the loop's side: the commands as jobs, their
//! answers and events), `client.rs` (the command), `logs.rs` (`bootagent logs`).

pub mod client;
mod listener;
pub mod local;
pub mod logs;
pub mod request;

pub use listener::{listen, ListenLimits};
pub use request::{
    parse_request, Reply, Request, Verb, EXIT_DONE, EXIT_FAILED, EXIT_NO_SUCH_CHILD, EXIT_USAGE,
};

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
