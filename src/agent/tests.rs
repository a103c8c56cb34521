//! The core driven by a manual clock and a scripted server: every schedule of
//! docs/protocol.md sections 2–5 checked in milliseconds of test time.
//!
//! This file: the scripted server, registration, reports, failover, backoff and
//! `Retry-After`; the jobs of the answers in `job_queue_tests.rs`.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::addr::parse_list;
use serde_json::{json, Value};

#[path = "job_queue_tests.rs"]
mod job_queue_tests;
#[path = "rule_tests.rs"]
mod rule_tests;

const SN: &str = "bfdcc18c-b6b9-4725-9c47-37fd93dba5b6";

/// The wall clock at the start of every simulation (Unix milliseconds).
const WALL0_MS: i64 = 1_763_700_000_000;

/// A core, the time, and what it sent.
struct Sim {
    core: Core,
    now: Millis,
    /// How far the wall clock was moved apart from the monotonic one (jumps).
    wall_offset_ms: i64,
}

/// One request the core asked to send.
#[derive(Debug)]
struct Sent {
    at: Millis,
    host: String,
    path: &'static str,
    body: Value,
    /// The body as sent, byte for byte.
    raw: Vec<u8>,
}

fn facts() -> Facts {
    Facts {
        hostname: "edge-17".into(),
        version: "bootagent-1.0.0-x86_64".into(),
        host: HostInfo {
            os: "linux".into(),
            arch: "x86_64".into(),
            kernel: "6.1.0".into(),
            cpus: 4,
            mem_kb: 1_015_808,
            boot_id: "b".into(),
        },
    }
}

fn ok(body: Value) -> Outcome {
    Outcome::Answer {
        status: 200,
        body: body.to_string().into_bytes(),
        retry_after_s: None,
    }
}

fn http(status: u16) -> Outcome {
    Outcome::Answer {
        status,
        body: b"{}".to_vec(),
        retry_after_s: None,
    }
}

fn fail() -> Outcome {
    Outcome::Failed("connection refused".into())
}

impl Sim {
    fn new(registered: bool, servers: &str) -> Sim {
        Sim::with(registered, servers, 600, Start::AfterExec, 1)
    }

    fn with(registered: bool, servers: &str, step_s: u64, start: Start, seed: u64) -> Sim {
        let mut meta = Meta::new(SN.into(), String::new(), step_s);
        meta.registered = registered;
        let servers = Servers::new(parse_list(servers).expect("valid"), vec![], vec![]);
        Sim {
            core: Core::new(
                Limits::default(),
                facts(),
                meta,
                servers,
                Rng::from_seed(seed),
                0,
                start,
            ),
            now: 0,
            wall_offset_ms: 0,
        }
    }

    fn wall_ms(&self) -> i64 {
        WALL0_MS + self.now as i64 + self.wall_offset_ms
    }

    /// Advances the clock to each deadline in turn until the core sends something.
    fn next_request(&mut self) -> Sent {
        for _ in 0..1000 {
            let mut effects = Vec::new();
            self.core.on_time(self.now, self.wall_ms(), &mut effects);
            for effect in effects {
                if let Effect::Send {
                    server, path, body, ..
                } = effect
                {
                    let raw = body;
                    let body = serde_json::from_slice(&raw).expect("the core sends JSON");
                    return Sent {
                        at: self.now,
                        host: server.host,
                        path,
                        body,
                        raw,
                    };
                }
            }
            let deadline = self
                .core
                .next_deadline()
                .expect("a timer is always pending");
            assert!(deadline >= self.now, "deadline in the past");
            self.now = deadline;
        }
        panic!("nothing sent in 1000 deadlines");
    }

    /// The server's answer; a metafile write asked for succeeds at once.
    fn answer(&mut self, outcome: Outcome) -> Vec<Effect> {
        let mut effects = Vec::new();
        self.core.on_outcome(self.now, outcome, &mut effects);
        self.saved(&effects);
        effects
    }

    /// The edge wrote the metafile when asked to.
    fn saved(&mut self, effects: &[Effect]) {
        if effects.contains(&Effect::SaveMeta) {
            self.core.saved();
        }
    }

    /// Registers and answers the first report, leaving the agent healthy.
    fn settle(&mut self) {
        let sent = self.next_request();
        if sent.path == REGISTER_PATH {
            self.answer(ok(json!({"status": 0})));
            self.next_request();
        }
        self.answer(ok(json!({"status": 0})));
    }
}

#[test]
fn first_start_registers_then_reports_every_step_at_its_phase() {
    let mut sim = Sim::new(false, "a:1");
    let reg = sim.next_request();
    assert_eq!((reg.at, reg.path), (0, REGISTER_PATH));
    assert_eq!(reg.body["agentsn"], SN);
    assert_eq!(reg.body["host"]["cpus"], 4);
    let effects = sim.answer(ok(json!({"status": 0, "tags": "svc=ecs", "step": 60})));
    assert!(effects.contains(&Effect::SaveMeta));
    assert_eq!(sim.core.meta().tags, "svc=ecs");

    let first = sim.next_request();
    assert_eq!(
        (first.at, first.path),
        (0, STATUS_PATH),
        "report at once after registering"
    );
    for field in [
        "hostname",
        "agentsn",
        "uptime",
        "timestamp",
        "step",
        "agents",
        "jobs",
    ] {
        assert!(
            first.body.get(field).is_some(),
            "{field} missing: {}",
            first.body
        );
    }
    assert_eq!(first.body["step"], 60);
    sim.answer(ok(json!({"status": 0})));
    assert!(
        sim.core.meta().registered,
        "a report answered confirms the SN"
    );

    // Then every step at the agent's own phase of it, on the wall clock.
    let phase = pacing::phase_ms(SN, 60_000) as i64;
    let mut last = first.at;
    for i in 0..200 {
        let sent = sim.next_request();
        assert_eq!(sent.path, STATUS_PATH);
        assert_eq!(
            (sim.wall_ms() - phase).rem_euclid(60_000),
            0,
            "report {i} at the phase"
        );
        if i == 0 {
            assert!(sent.at - last > 30_000 && sent.at - last <= 90_000);
        } else {
            assert_eq!(sent.at - last, 60_000, "report {i}");
        }
        last = sent.at;
        sim.answer(ok(json!({"status": 0})));
    }
}

#[test]
fn registered_agent_reports_without_registering() {
    let mut sim = Sim::new(true, "a:1");
    assert_eq!(sim.next_request().path, STATUS_PATH);
}

#[test]
fn sn_conflict_is_adopted_and_confirmed_only_by_an_answered_report() {
    let mut sim = Sim::new(false, "a:1");
    sim.next_request();
    let other = "dcb886e9-04ed-41bb-9c12-4d2de12cd59b";
    sim.answer(ok(json!({"status": 0, "agentsn": other})));
    assert_eq!(sim.core.meta().agentsn, other);
    assert!(
        !sim.core.meta().registered,
        "not valid until a report is answered"
    );
    let report = sim.next_request();
    assert_eq!(report.body["agentsn"], other);
    sim.answer(http(500));
    assert!(!sim.core.meta().registered);
    let report = sim.next_request();
    assert_eq!(report.body["agentsn"], other);
    sim.answer(ok(json!({})));
    assert!(sim.core.meta().registered);
}

#[test]
fn rejected_registration_is_retried_with_backoff() {
    let mut sim = Sim::new(false, "a:1");
    let mut at = Vec::new();
    for _ in 0..4 {
        let sent = sim.next_request();
        assert_eq!(sent.path, REGISTER_PATH);
        at.push(sent.at);
        sim.answer(ok(json!({"status": 5})));
    }
    assert!(at[1] >= 500 && at[1] <= 1_500, "{at:?}");
    assert!(at[3] - at[2] >= 2_000 && at[3] - at[2] <= 6_000, "{at:?}");
}

#[test]
fn failover_tries_the_next_server_at_once_and_sticks_to_the_one_that_answers() {
    let mut sim = Sim::new(true, "a:1,b:2,c:3");
    let first = sim.next_request();
    assert_eq!(first.host, "a");
    sim.answer(fail());
    let second = sim.next_request();
    assert_eq!((second.host.as_str(), second.at), ("b", first.at));
    sim.answer(ok(json!({})));
    for _ in 0..5 {
        assert_eq!(sim.next_request().host, "b", "sticks to b");
        sim.answer(ok(json!({})));
    }
}

#[test]
fn backoff_doubles_from_one_second_with_jitter_up_to_min_of_step_and_300_s() {
    let mut sim = Sim::new(true, "a:1,b:2");
    let mut round_starts = Vec::new();
    for _ in 0..24 {
        let sent = sim.next_request();
        if sent.host == "a" {
            round_starts.push(sent.at);
        }
        sim.answer(fail());
    }
    let gaps: Vec<u64> = round_starts.windows(2).map(|w| w[1] - w[0]).collect();
    for (round, gap) in gaps.iter().enumerate() {
        // Capped first, then 50–100 % of the capped value.
        let capped = (1_000u64 << round.min(20)).min(300_000);
        assert!(
            *gap >= capped / 2 && *gap <= capped,
            "round {round}: {gap} ms, {gaps:?}"
        );
    }
    assert!(
        gaps.iter().filter(|g| **g == 300_000).count() <= 1,
        "waits do not pile up on the cap: {gaps:?}"
    );
    assert!(
        gaps.iter().rev().take(3).all(|g| *g >= 150_000),
        "capped near 300 s: {gaps:?}"
    );

    // Recovery resets the backoff.
    sim.next_request();
    sim.answer(ok(json!({})));
    let next = sim.next_request();
    sim.answer(fail());
    sim.answer_after_failover_ok();
    assert!(sim.now - next.at < 600_000 * 11 / 10);
}

impl Sim {
    fn answer_after_failover_ok(&mut self) {
        let sent = self.next_request();
        assert_eq!(
            sent.host, "b",
            "a failure after recovery goes to the next server at once"
        );
        self.answer(ok(json!({})));
    }
}

#[test]
fn backoff_cap_follows_a_short_step() {
    let mut sim = Sim::new(true, "a:1");
    sim.settle();
    let mut effects = Vec::new();
    sim.core.meta.step_s = 5;
    let wall = sim.wall_ms();
    sim.core.on_time(sim.now, wall, &mut effects);
    let mut at = Vec::new();
    for _ in 0..10 {
        at.push(sim.next_request().at);
        sim.answer(fail());
    }
    let gaps: Vec<u64> = at.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g <= 5_000), "{gaps:?}");
}

#[test]
fn retry_after_is_honoured_and_capped_at_step() {
    let mut sim = Sim::new(true, "a:1,b:2");
    let sent = sim.next_request();
    sim.answer(Outcome::Answer {
        status: 503,
        body: Vec::new(),
        retry_after_s: Some(42),
    });
    let again = sim.next_request();
    assert_eq!(again.host, "a");
    assert!(
        (42_000..=63_000).contains(&(again.at - sent.at)),
        "42 s plus up to 50 %: {}",
        again.at - sent.at
    );
    sim.answer(Outcome::Answer {
        status: 429,
        body: Vec::new(),
        retry_after_s: Some(86_400),
    });
    let capped = sim.next_request();
    assert!(
        (600_000..=900_000).contains(&(capped.at - again.at)),
        "capped at step, plus up to 50 %: {}",
        capped.at - again.at
    );
    sim.answer(Outcome::Answer {
        status: 503,
        body: Vec::new(),
        retry_after_s: Some(0),
    });
    let zero = sim.next_request();
    assert!(
        (1_000..=1_500).contains(&(zero.at - capped.at)),
        "Retry-After: 0 waits at least 1 s: {}",
        zero.at - capped.at
    );
}

#[test]
fn retry_after_holds_even_when_an_event_asks_for_a_prompt_report() {
    let mut sim = Sim::new(true, "a:1");
    let sent = sim.next_request();
    sim.answer(Outcome::Answer {
        status: 503,
        body: Vec::new(),
        retry_after_s: Some(50),
    });
    sim.now += 2_000;
    let mut effects = Vec::new();
    sim.core.push_event(
        sim.now,
        crate::report_event::ChildEvent::new(
            1,
            "svc",
            crate::child::EventKind::Exited,
            String::new(),
        ),
        &mut effects,
    );
    let next = sim.next_request();
    assert!(
        (50_000..=75_000).contains(&(next.at - sent.at)),
        "no report before the server's Retry-After: {}",
        next.at - sent.at
    );
}

#[test]
fn rejected_identity_registers_again_with_the_same_sn_and_a_storm_backs_off() {
    let mut sim = Sim::new(true, "a:1");
    for status in [401, 403, 404, 410] {
        let report = sim.next_request();
        assert_eq!(report.path, STATUS_PATH);
        sim.answer(http(status));
        let reg = sim.next_request();
        assert_eq!(reg.path, REGISTER_PATH, "after {status}");
        assert_eq!(reg.body["agentsn"], SN);
        sim.answer(ok(json!({"status": 0})));
    }
    // Every re-registration after the first without a good report waits longer.
    let mut regs = Vec::new();
    for _ in 0..8 {
        let sent = sim.next_request();
        if sent.path == REGISTER_PATH {
            regs.push(sent.at);
            sim.answer(ok(json!({"status": 0})));
        } else {
            sim.answer(http(401));
        }
    }
    let gaps: Vec<u64> = regs.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= 500),
        "a 401 storm must not spin: {gaps:?}"
    );
    assert_eq!(sim.core.meta().agentsn, SN);
}

#[test]
fn garbage_answers_count_as_failures() {
    let mut sim = Sim::new(true, "a:1,b:2");
    sim.next_request();
    sim.answer(Outcome::Answer {
        status: 200,
        body: b"<html>".to_vec(),
        retry_after_s: None,
    });
    assert_eq!(sim.next_request().host, "b");
}

#[test]
fn reports_are_never_closer_than_a_second() {
    let mut sim = Sim::new(true, "a:1");
    let mut last = None;
    for i in 0..50 {
        let sent = sim.next_request();
        if let Some(prev) = last {
            assert!(
                sent.at - prev >= 1_000,
                "report {i} {} ms after the previous",
                sent.at - prev
            );
        }
        last = Some(sent.at);
        sim.answer(ok(
            json!({"jobs": [{"id": format!("j{i}"), "action": "config", "step": 1}]}),
        ));
        sim.core.request_report(sim.now);
    }
}

fn child(status: &'static str, uptime: u64, pid: u32) -> AgentStatus {
    AgentStatus {
        name: "web".into(),
        version: "1.0".into(),
        status,
        uptime,
        pid,
        restarts: 0,
        ready: None,
        health: None,
        status_text: None,
    }
}

#[test]
fn lazy_reports_leave_agents_out_until_a_child_changes() {
    let mut sim = Sim::new(true, "a:1");
    sim.core.set_agents(vec![child("running", 10, 42)]);
    let first = sim.next_request();
    assert_eq!(first.body["agents"][0]["name"], "web");
    sim.answer(ok(json!({"status": 0, "report": "lazy"})));
    assert!(
        sim.core.meta().report_lazy,
        "the mode is kept in the metafile"
    );

    // The mode came with the answer to a full report: the next one may be lazy.
    sim.core.set_agents(vec![child("running", 620, 42)]);
    let lazy = sim.next_request();
    assert!(lazy.body.get("agents").is_none(), "{}", lazy.body);
    assert!(lazy.body.get("jobs").is_some() && lazy.body.get("events").is_some());
    sim.answer(ok(json!({"status": 0})));

    // A change (a new pid) goes out in full, and is sent until a 200 answers it.
    sim.core.set_agents(vec![child("running", 1, 43)]);
    let changed = sim.next_request();
    assert_eq!(changed.body["agents"][0]["pid"], 43);
    sim.answer(http(500));
    let again = sim.next_request();
    assert_eq!(again.body["agents"][0]["pid"], 43, "{}", again.body);
    sim.answer(ok(json!({"status": 0})));
    let quiet = sim.next_request();
    assert!(quiet.body.get("agents").is_none(), "{}", quiet.body);

    // "full" goes back to the original behaviour; garbage changes nothing.
    sim.answer(ok(json!({"status": 0, "report": 7})));
    assert!(sim.core.meta().report_lazy);
    sim.next_request();
    sim.answer(ok(json!({"status": 0, "report": "full"})));
    assert!(!sim.core.meta().report_lazy);
    let full = sim.next_request();
    assert_eq!(full.body["agents"][0]["pid"], 43);
}

#[test]
fn the_first_report_after_a_start_is_full_in_lazy_mode() {
    let mut sim = Sim::new(true, "a:1");
    let mut meta = sim.core.meta().clone();
    meta.report_lazy = true;
    let servers = Servers::new(parse_list("a:1").expect("valid"), vec![], vec![]);
    sim.core = Core::new(
        Limits::default(),
        facts(),
        meta,
        servers,
        Rng::from_seed(1),
        0,
        Start::AfterExec,
    );
    sim.core.set_agents(vec![child("running", 10, 42)]);
    let first = sim.next_request();
    assert_eq!(first.body["agents"][0]["pid"], 42, "{}", first.body);
}
