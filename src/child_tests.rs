//! The child state machine and the restart policy, with a manual clock.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use serde_json::json;

/// Drives one child the way the supervisor does: spawns succeed at once with
/// increasing pids, and deadlines are fed when they come.
struct Sim {
    child: Child,
    now: Millis,
    next_pid: i32,
    spawns: Vec<Millis>,
    events: Vec<(Millis, EventKind, String)>,
    signals: Vec<(Millis, Action)>,
}

impl Sim {
    fn new(policy: RestartPolicy) -> Sim {
        Sim {
            child: Child::new(policy),
            now: 0,
            next_pid: 100,
            spawns: Vec::new(),
            events: Vec::new(),
            signals: Vec::new(),
        }
    }

    fn input(&mut self, input: Input) {
        let actions = self.child.step(self.now, input);
        for action in actions {
            match action {
                Action::Spawn => {
                    self.spawns.push(self.now);
                    self.next_pid += 1;
                    let pid = self.next_pid;
                    self.input(Input::Spawned { pid });
                }
                Action::Event { kind, message, .. } => self.events.push((self.now, kind, message)),
                other => self.signals.push((self.now, other)),
            }
        }
    }

    /// Advances to the child's deadline, if it has one before `limit`.
    fn run_deadline(&mut self, limit: Millis) -> bool {
        match self.child.deadline() {
            Some(at) if at <= limit => {
                self.now = self.now.max(at);
                self.input(Input::Deadline);
                true
            }
            _ => false,
        }
    }

    fn crash_after(&mut self, ms: u64) {
        self.now += ms;
        self.input(Input::Exited {
            exit: Exit::Code(1),
            limit: None,
        });
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events.iter().map(|e| e.1).collect()
    }
}

#[test]
fn delays_are_zero_then_ten_seconds_doubling_to_three_minutes() {
    let p = RestartPolicy::default();
    let delays: Vec<u64> = (1..=8).map(|n| p.delay_after(n)).collect();
    assert_eq!(
        delays,
        [0, 10_000, 20_000, 40_000, 80_000, 160_000, 180_000, 180_000]
    );
}

#[test]
fn a_child_that_exits_at_once_goes_fatal_after_four_failures() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    for _ in 0..10 {
        if sim.child.state == State::Fatal {
            break;
        }
        sim.crash_after(50);
        while sim.run_deadline(u64::MAX) && sim.child.pid().is_none() {}
    }
    assert_eq!(sim.child.state, State::Fatal);
    assert_eq!(sim.child.status(), "fatal");
    // Starts: first, then restart after failure 1 (0 s, but a second after the
    // start), failure 2 (10 s), failure 3 (20 s); failure 4 is fatal.
    let gaps: Vec<u64> = sim.spawns.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, [1_000, 10_050, 20_050]);
    let fatal = sim
        .kinds()
        .iter()
        .filter(|k| **k == EventKind::Fatal)
        .count();
    assert_eq!(fatal, 1, "one fatal event: {:?}", sim.events);
    assert_eq!(sim.child.failures, 4);
}

#[test]
fn a_crash_after_a_long_run_resets_the_failure_count() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.crash_after(2_000);
    sim.crash_after(2_000);
    assert_eq!(sim.child.failures, 2);
    while sim.run_deadline(u64::MAX) && sim.child.pid().is_none() {}
    sim.crash_after(16 * 60 * 1000);
    assert_eq!(sim.child.failures, 0);
    assert!(sim.child.pid().is_some(), "restarted at once");
}

#[test]
fn restarts_at_once_after_a_kill_when_it_ran_a_second() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.now += 5_000;
    let before = sim.spawns.len();
    sim.input(Input::Exited {
        exit: Exit::Signal(9),
        limit: None,
    });
    assert_eq!(sim.spawns.len(), before + 1);
    assert_eq!(
        *sim.spawns.last().unwrap_or(&0),
        sim.now,
        "same millisecond"
    );
    assert_eq!(sim.child.status(), "running");
    let (_, kind, message) = &sim.events[sim.events.len() - 2];
    assert_eq!(*kind, EventKind::Exited);
    assert_eq!(message, "killed by signal 9 after 5 s; restart 1 in 0 s");
    assert_eq!(sim.events.last().map(|e| e.1), Some(EventKind::Restarted));
}

#[test]
fn a_limit_kill_is_reported_killed_and_counts_as_a_failure() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.crash_after(3_000);
    sim.now += 3_000;
    sim.input(Input::Exited {
        exit: Exit::Signal(9),
        limit: Some("memory 20M".into()),
    });
    assert_eq!(sim.child.status(), "killed");
    assert_eq!(sim.child.failures, 2);
    let (_, kind, message) =
        sim.events
            .last()
            .cloned()
            .unwrap_or((0, EventKind::Started, String::new()));
    assert_eq!(kind, EventKind::Killed);
    assert!(message.contains("memory 20M limit"), "{message}");
    assert!(sim.run_deadline(u64::MAX));
    assert_eq!(sim.child.status(), "running");
}

#[test]
fn stop_sends_term_then_kill_after_the_grace_period() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.now = 60_000;
    sim.input(Input::Stop);
    assert_eq!(sim.signals, [(60_000, Action::Terminate)]);
    assert_eq!(sim.child.deadline(), Some(70_000));
    assert!(sim.run_deadline(u64::MAX));
    assert_eq!(sim.signals[1], (70_000, Action::Kill));
    assert_eq!(sim.child.deadline(), None, "killed once");
    sim.input(Input::Exited {
        exit: Exit::Signal(9),
        limit: None,
    });
    assert_eq!(sim.child.status(), "stoped");
    assert_eq!(sim.child.failures, 0, "a stop is not a failure");
    assert_eq!(sim.kinds().last(), Some(&EventKind::Stopped));
}

#[test]
fn restart_revives_a_fatal_child_and_stop_wins_over_waiting() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.child.state = State::Fatal;
    sim.input(Input::Restart);
    assert_eq!(sim.child.status(), "running");
    sim.crash_after(2_000);
    sim.crash_after(2_000);
    assert_eq!(sim.child.status(), "restarting");
    sim.input(Input::Stop);
    assert_eq!(sim.child.status(), "stoped");
    assert_eq!(sim.child.deadline(), None);
}

#[test]
fn restart_of_a_running_child_stops_it_first_then_starts_it() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.now = 5_000;
    sim.input(Input::Restart);
    assert_eq!(sim.signals, [(5_000, Action::Terminate)]);
    sim.now = 5_200;
    sim.input(Input::Exited {
        exit: Exit::Signal(15),
        limit: None,
    });
    assert_eq!(sim.spawns, [0, 5_200]);
    assert_eq!(sim.child.status(), "running");
}

#[test]
fn never_more_than_one_start_a_second() {
    let mut sim = Sim::new(RestartPolicy {
        delay_ms: 0,
        failures_max: 1_000,
        ..RestartPolicy::default()
    });
    sim.input(Input::Start);
    for _ in 0..200 {
        sim.crash_after(10);
        while sim.run_deadline(u64::MAX) && sim.child.pid().is_none() {}
    }
    assert!(
        sim.spawns.windows(2).all(|w| w[1] - w[0] >= 1_000),
        "{:?}",
        sim.spawns
    );
}

#[test]
fn a_simulated_month_of_flapping_follows_the_policy() {
    // A child that crashes after a pseudo-random run time, for 30 days; a
    // `restart` job revives it whenever it goes fatal, as an operator would.
    let month = 30 * 24 * 3600 * 1000;
    let mut sim = Sim::new(RestartPolicy::default());
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut random = move |bound: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % bound
    };
    sim.input(Input::Start);
    let mut fatals = 0;
    while sim.now < month {
        match sim.child.state {
            State::Running { .. } => {
                // Mostly short runs, sometimes long ones.
                let run = if random(4) == 0 {
                    20 * 60 * 1000
                } else {
                    random(30_000)
                };
                let failures_before = sim.child.failures;
                sim.crash_after(run);
                if run >= 15 * 60 * 1000 {
                    assert!(sim.child.failures <= 1, "a long run resets the count");
                } else if sim.child.state != State::Fatal {
                    assert_eq!(sim.child.failures, failures_before + 1);
                }
            }
            State::Waiting { until, .. } => {
                let failures = sim.child.failures;
                let crashed_at = sim.now;
                assert!(sim.run_deadline(u64::MAX));
                let waited = sim.now - crashed_at;
                let policy = sim.child.policy.delay_after(failures);
                assert!(
                    waited >= policy && waited <= policy.max(1_000),
                    "waited {waited} ms after failure {failures}"
                );
                assert_eq!(sim.now, until);
            }
            State::Fatal => {
                fatals += 1;
                assert!(sim.child.failures > 3);
                sim.now += 3_600_000;
                sim.input(Input::Restart);
            }
            ref other => panic!("unexpected state {other:?}"),
        }
    }
    assert!(fatals > 10, "the month saw crash loops: {fatals}");
    assert!(sim.spawns.windows(2).all(|w| w[1] - w[0] >= 1_000));
    let fatal_events = sim
        .kinds()
        .iter()
        .filter(|k| **k == EventKind::Fatal)
        .count();
    assert_eq!(
        fatal_events, fatals,
        "exactly one fatal event per crash loop"
    );
}

#[test]
fn spawn_failure_is_a_failure_not_a_crash_of_the_agent() {
    let mut sim = Sim::new(RestartPolicy::default());
    let actions = sim.child.step(0, Input::Start);
    assert_eq!(actions, [Action::Spawn]);
    let actions = sim.child.step(
        0,
        Input::SpawnFailed {
            error: "./run: No such file or directory".into(),
        },
    );
    assert_eq!(sim.child.failures, 1);
    assert!(
        matches!(&actions[0], Action::Event { kind: EventKind::Exited, message, .. } if message.contains("could not start"))
    );
    assert_eq!(sim.child.status(), "restarting");
}

#[test]
fn restart_settings_parse_with_bounds() {
    let p = RestartPolicy::from_json(
        &json!({"delay_s": 1, "delay_max_s": 4, "window_s": 60, "failures_max": 5, "grace_s": 2}),
    )
    .expect("valid");
    assert_eq!(
        (
            p.delay_ms,
            p.delay_max_ms,
            p.window_ms,
            p.failures_max,
            p.grace_ms
        ),
        (1_000, 4_000, 60_000, 5, 2_000)
    );
    assert_eq!(
        RestartPolicy::from_json(&json!({})),
        Ok(RestartPolicy::default())
    );
    for (bad, part) in [
        (json!({"delay_s": -1}), "whole number"),
        (json!({"delay_s": "1"}), "whole number"),
        (json!({"delay_s": 100_000}), "over 86400"),
        (json!({"failures_max": 5_000}), "over 1000"),
        (json!({"retries": 1}), "unknown restart setting"),
        (json!([1]), "not an object"),
    ] {
        let err = RestartPolicy::from_json(&bad).expect_err("invalid");
        assert!(err.contains(part), "{bad}: {err}");
    }
}

#[test]
fn an_unhealthy_child_is_stopped_then_restarted_as_a_failure() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.now += 60_000;
    sim.input(Input::Unhealthy {
        reason: "heartbeat unchanged for 60 s".into(),
    });
    assert_eq!(sim.signals, vec![(60_000, Action::Terminate)]);
    assert_eq!(sim.child.status(), "running");
    let (_, kind, message) = sim.events.last().unwrap().clone();
    assert_eq!(kind, EventKind::Unhealthy);
    assert!(
        message.contains("heartbeat unchanged for 60 s"),
        "{message}"
    );
    // It ignores SIGTERM: killed after the grace period, then restarted at once.
    assert!(sim.run_deadline(u64::MAX));
    assert_eq!(sim.signals.last(), Some(&(70_000, Action::Kill)));
    sim.input(Input::Exited {
        exit: Exit::Signal(9),
        limit: None,
    });
    assert_eq!(sim.child.failures, 1);
    assert_eq!(sim.spawns, vec![0, 70_000]);
    assert!(sim
        .events
        .iter()
        .any(|(_, kind, m)| *kind == EventKind::Exited && m.contains("stopped as unhealthy")));
}

#[test]
fn a_child_that_hangs_every_time_ends_fatal_even_after_long_runs() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    for _ in 0..4 {
        // Hangs after 20 min each time, longer than the 15 min window.
        while sim.child.pid().is_none() {
            assert!(sim.run_deadline(u64::MAX));
        }
        sim.now += 20 * 60_000;
        sim.input(Input::Unhealthy {
            reason: "not ready within 30 s".into(),
        });
        sim.input(Input::Exited {
            exit: Exit::Signal(15),
            limit: None,
        });
    }
    assert_eq!(sim.child.state, State::Fatal);
}

#[test]
fn a_stop_job_during_an_unhealthy_stop_keeps_it_stopped() {
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    sim.now += 5_000;
    sim.input(Input::Unhealthy {
        reason: "watchdog".into(),
    });
    sim.input(Input::Stop);
    sim.input(Input::Exited {
        exit: Exit::Signal(15),
        limit: None,
    });
    assert_eq!(sim.child.state, State::Stopped);
    assert_eq!(sim.child.failures, 0);
}

/// The event of each start: `started` for a start that was asked for (a job, a local
/// command, BootAgent's start), `restarted` for the policy's start after a crash,
/// however many crashes came before.
#[test]
fn a_start_reports_started_when_asked_and_restarted_after_a_crash() {
    let started = |sim: &Sim| sim.kinds().last().copied();
    let mut sim = Sim::new(RestartPolicy::default());
    sim.input(Input::Start);
    assert_eq!(started(&sim), Some(EventKind::Started), "first start");

    // A crash after a long run: restarted at once by the policy.
    sim.crash_after(5_000);
    assert_eq!(
        started(&sim),
        Some(EventKind::Restarted),
        "{:?}",
        sim.events
    );
    // Crashes in a row: each restart after its delay is still a restart.
    sim.crash_after(100);
    assert!(sim.run_deadline(u64::MAX));
    assert_eq!(
        started(&sim),
        Some(EventKind::Restarted),
        "{:?}",
        sim.events
    );
    sim.crash_after(100);
    assert!(sim.run_deadline(u64::MAX));
    assert_eq!(
        started(&sim),
        Some(EventKind::Restarted),
        "{:?}",
        sim.events
    );

    // A `restart` job of a running child: stopped, then started as asked.
    sim.now += 60_000;
    sim.input(Input::Restart);
    sim.input(Input::Exited {
        exit: Exit::Signal(15),
        limit: None,
    });
    assert_eq!(started(&sim), Some(EventKind::Started), "{:?}", sim.events);

    // A `stop` job, then a `start` job a minute later.
    sim.now += 60_000;
    sim.input(Input::Stop);
    sim.input(Input::Exited {
        exit: Exit::Signal(15),
        limit: None,
    });
    assert_eq!(started(&sim), Some(EventKind::Stopped));
    sim.now += 60_000;
    sim.input(Input::Start);
    assert_eq!(started(&sim), Some(EventKind::Started), "{:?}", sim.events);

    // Stopped and started again within a second: the start waits for the
    // one-start-a-second rule, and is still the start that was asked for.
    sim.now += 100;
    sim.input(Input::Stop);
    sim.input(Input::Exited {
        exit: Exit::Signal(15),
        limit: None,
    });
    sim.input(Input::Start);
    assert_eq!(sim.child.status(), "restarting", "held back a second");
    assert!(sim.run_deadline(u64::MAX));
    assert_eq!(started(&sim), Some(EventKind::Started), "{:?}", sim.events);

    // An unhealthy child's restart is the policy's.
    sim.now += 60_000;
    sim.input(Input::Unhealthy {
        reason: "watchdog".into(),
    });
    sim.input(Input::Exited {
        exit: Exit::Signal(15),
        limit: None,
    });
    assert_eq!(
        started(&sim),
        Some(EventKind::Restarted),
        "{:?}",
        sim.events
    );

    // Revived from fatal by a `restart` job: asked for.
    sim.child.state = State::Fatal;
    sim.now += 60_000;
    sim.input(Input::Restart);
    assert_eq!(started(&sim), Some(EventKind::Started), "{:?}", sim.events);
}

/// A hand-over written by an image whose waiting state had no start reason: the wait
/// is taken as the restart delay after a crash, and the rest reads as it did.
#[test]
fn a_carried_state_without_a_start_reason_reads_as_a_crash_restart() {
    let old = json!({"state": {"Waiting": {"until": 5000, "limit_killed": true}},
        "failures": 2, "restarts": 7, "last_start": 1000, "last_exit": "exited with code 1"});
    let carried: Carried = serde_json::from_value(old).expect("an old hand-over");
    assert_eq!(
        carried.state,
        State::Waiting {
            until: 5_000,
            limit_killed: true,
            reason: StartReason::Crash
        }
    );
    let stopping = json!({"Stopping": {"pid": 9, "since": 1, "kill_at": 2, "killed": false,
        "then": "Start"}});
    let state: State = serde_json::from_value(stopping.clone()).expect("stopping");
    assert_eq!(
        serde_json::to_value(&state).ok(),
        Some(stopping),
        "same shape"
    );
}
