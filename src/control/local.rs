//! The loop's side of local control: commands from the console wait here for the
//! job runner, which carries them out exactly as the jobs of the same names (the same
//! code path, the same persisted desired state). Local commands go before queued
//! server jobs: a person is waiting. They are not journaled (no server asked for
//! them); each is reported by an event of its kind with `"origin": "local"`.

use crate::console::{sv_line, Reply, Request, Verb, EXIT_DONE, EXIT_FAILED, EXIT_NO_SUCH_CHILD};
use crate::jobs::{ErrCode, Job, Settings};
use crate::report_event::{ChildEvent, Origin};
use std::collections::VecDeque;

/// The id the job runner knows a local command by (never journaled or reported).
pub const JOB_ID: &str = "local";

/// The commands waiting for the job runner, and the one it carries out.
pub struct LocalCommands {
    waiting: VecDeque<Request>,
    running: Option<Request>,
    /// Most commands waiting; the listener's client bound keeps it lower.
    waiting_max: usize,
}

impl LocalCommands {
    pub fn new(waiting_max: usize) -> LocalCommands {
        LocalCommands {
            waiting: VecDeque::new(),
            running: None,
            waiting_max: waiting_max.max(1),
        }
    }

    /// Queues a command; when too many wait, it is answered "busy" at once.
    pub fn push(&mut self, request: Request) {
        if self.waiting.len() >= self.waiting_max {
            answer(
                &request,
                Reply::new(EXIT_FAILED, "busy: other commands in progress, try again"),
            );
            return;
        }
        self.waiting.push_back(request);
    }

    /// The next command as a job for the runner; it is then the running one.
    pub fn next_job(&mut self) -> Option<Job> {
        let request = self.waiting.pop_front()?;
        let name = request.name.clone();
        let job = match request.verb {
            Verb::Restart => Job::Restart {
                name,
                settings: Settings::default(),
            },
            Verb::Stop => Job::Stop { name },
            Verb::Start => Job::Start { name },
        };
        self.running = Some(request);
        Some(job)
    }

    /// Whether the job runner carries out a local command (rather than a server job).
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    /// The child of the running command.
    pub fn running_name(&self) -> Option<&str> {
        self.running.as_ref().map(|r| r.name.as_str())
    }

    /// How many commands wait.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The running command is done: answers its client, and returns the event that
    /// reports it to the server. `sv` is the child's line after it.
    pub fn finish(
        &mut self,
        code: ErrCode,
        message: &str,
        sv: &str,
        wall_s: i64,
    ) -> Option<ChildEvent> {
        let request = self.running.take()?;
        let exit = match code {
            ErrCode::Success => EXIT_DONE,
            ErrCode::NoSuchAgent => EXIT_NO_SUCH_CHILD,
            _ => EXIT_FAILED,
        };
        let text = match exit {
            EXIT_DONE => sv.to_string(),
            EXIT_NO_SUCH_CHILD => format!("no such child: {}", request.name),
            _ => format!("failed: {message}; now {sv}"),
        };
        answer(&request, Reply::new(exit, text));
        let outcome = if exit == EXIT_DONE {
            message.to_string()
        } else {
            format!("failed: {message}")
        };
        let message = format!(
            "{} from the console (uid {}): {outcome}",
            request.verb.as_str(),
            request.uid
        );
        let mut event = ChildEvent::new(wall_s, &request.name, request.verb.event_kind(), message);
        event.origin = Origin::Local;
        Some(event)
    }

    /// Answers every command still waiting (BootAgent is stopping).
    pub fn refuse_all(&mut self, why: &str) {
        for request in self.waiting.drain(..).chain(self.running.take()) {
            answer(&request, Reply::new(EXIT_FAILED, why));
        }
    }
}

/// The answer for a command whose child the supervisor does not know.
pub fn no_such_child(request: &Request) {
    answer(
        request,
        Reply::new(
            EXIT_NO_SUCH_CHILD,
            format!("no such child: {}", request.name),
        ),
    );
}

/// The answer while the job runner carries out a job from the server.
pub fn server_job_busy(request: &Request) {
    answer(
        request,
        Reply::new(
            EXIT_FAILED,
            "busy: a job from the server is in progress, try again when it is done",
        ),
    );
}

/// Answers without waiting: the channel holds one answer and is used once; a
/// client that went away has dropped its end, which is fine.
pub fn answer(request: &Request, reply: Reply) {
    let _ = request.reply.try_send(reply);
}

/// The child's `sv` line from a report's view of it.
pub fn sv_of(name: &str, agents: &[crate::wire::AgentStatus]) -> String {
    match agents.iter().find(|a| a.name == name) {
        Some(a) => sv_line(name, a.status, a.pid, a.uptime),
        None => format!("gone: {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::EventKind;
    use std::sync::mpsc;

    fn request(verb: Verb, name: &str) -> (Request, mpsc::Receiver<Reply>) {
        let (tx, rx) = mpsc::sync_channel(1);
        let request = Request {
            verb,
            name: name.into(),
            uid: 0,
            reply: tx,
        };
        (request, rx)
    }

    #[test]
    fn commands_become_the_jobs_of_the_same_name_and_are_answered_once() {
        let mut local = LocalCommands::new(2);
        let (stop, stop_rx) = request(Verb::Stop, "a");
        let (start, _start_rx) = request(Verb::Start, "b");
        let (restart, restart_rx) = request(Verb::Restart, "c");
        local.push(stop);
        local.push(start);
        local.push(restart);
        assert_eq!(
            restart_rx.try_recv().map(|r| r.code),
            Ok(EXIT_FAILED),
            "a third waiting command is answered busy"
        );
        assert_eq!(local.next_job(), Some(Job::Stop { name: "a".into() }));
        assert!(local.running());
        let event = local
            .finish(ErrCode::Success, "a stopped", "stoped: a", 7)
            .expect("an event");
        assert_eq!(event.kind, EventKind::Stopped);
        assert_eq!(event.origin, Origin::Local);
        assert_eq!(event.name, "a");
        assert_eq!(event.time, 7);
        assert_eq!(stop_rx.try_recv(), Ok(Reply::new(0, "stoped: a")));
        assert!(!local.running());
        assert_eq!(local.next_job(), Some(Job::Start { name: "b".into() }));
        let event = local
            .finish(
                ErrCode::StartFailed,
                "b did not start: fatal",
                "fatal: b",
                8,
            )
            .expect("an event");
        assert_eq!(event.kind, EventKind::Started);
        assert!(event.message.contains("failed"));
        assert_eq!(local.next_job(), None);
    }

    #[test]
    fn errcodes_map_to_exit_codes() {
        for (code, exit) in [
            (ErrCode::Success, 0),
            (ErrCode::NoSuchAgent, 3),
            (ErrCode::StartFailed, 1),
            (ErrCode::InstallFailed, 1),
            (ErrCode::Internal, 1),
        ] {
            let mut local = LocalCommands::new(1);
            let (r, rx) = request(Verb::Restart, "a");
            local.push(r);
            local.next_job();
            local.finish(code, "m", "running: a", 0);
            assert_eq!(rx.try_recv().map(|r| r.code), Ok(exit), "{code:?}");
        }
    }
}
