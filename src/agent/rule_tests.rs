//! Properties of the one rule, over the whole core: random steps, answers and
//! prompt reports (fixed seeds), checked the way a server sees the requests; and
//! the log of a long outage.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;

/// One request of a simulated run, with how it ended.
#[derive(Debug)]
struct Req {
    at: Millis,
    wall_ms: i64,
    path: &'static str,
    step_ms: u64,
    answer: Answer,
    /// A prompt report was asked for between the previous request and this one.
    prompt_before: Option<Millis>,
    /// The wall clock jumped between the previous request and this one.
    jumped_before: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Answer {
    Ok,
    OkNewStep(u64),
    Http(u16),
    Refused,
    Garbage,
    RetryAfter(u16, u64),
}

impl Answer {
    fn answered(self) -> bool {
        self != Answer::Refused
    }

    fn outcome(self) -> Outcome {
        let body = |v: Value| v.to_string().into_bytes();
        match self {
            Answer::Ok => ok(json!({"status": 0})),
            Answer::OkNewStep(step) => ok(json!({"status": 0, "jobs": [
                {"id": format!("c{step}-{}", step * 7), "action": "config", "step": step}]})),
            Answer::Http(status) => http(status),
            Answer::Refused => fail(),
            Answer::Garbage => Outcome::Answer {
                status: 200,
                body: b"<html>".to_vec(),
                retry_after_s: None,
            },
            Answer::RetryAfter(status, secs) => Outcome::Answer {
                status,
                body: body(json!({})),
                retry_after_s: Some(secs),
            },
        }
    }
}

fn pick_answer(rng: &mut Rng, path: &str) -> Answer {
    if path == REGISTER_PATH {
        return match rng.below_incl(9) {
            0 => Answer::Refused,
            1 => Answer::Http(500),
            _ => Answer::Ok,
        };
    }
    match rng.below_incl(99) {
        0..=59 => Answer::Ok,
        60..=62 => Answer::OkNewStep([1, 2, 7, 60, 600][rng.below_incl(4) as usize]),
        63..=70 => Answer::Http(500),
        71..=80 => Answer::Refused,
        81..=83 => Answer::Garbage,
        84..=91 => Answer::RetryAfter(
            if rng.below_incl(1) == 0 { 429 } else { 503 },
            [0, 1, 5, 30, 86_400][rng.below_incl(4) as usize],
        ),
        92..=94 => Answer::Http(503),
        _ => Answer::Http(401),
    }
}

/// Runs one agent for `requests` requests against random answers, prompt reports
/// and (when `jumps`) wall-clock jumps.
fn run(seed: u64, requests: usize, jumps: bool) -> (Vec<Req>, usize) {
    let mut rng = Rng::from_seed(seed);
    let step_s =
        [1, 2, 5, 30, 60, 600, 3_600, 1 + rng.below_incl(7_199)][rng.below_incl(7) as usize];
    let servers = ["a:1", "a:1,b:2", "a:1,b:2,c:3"][rng.below_incl(2) as usize];
    let registered = rng.below_incl(1) == 0;
    let mut sim = Sim::with(registered, servers, step_s, Start::Boot, seed);
    let mut log = Vec::new();
    for _ in 0..requests {
        let mut prompt_before = None;
        let mut jumped_before = false;
        let deadline = sim.core.next_deadline().expect("a timer is always pending");
        if rng.below_incl(3) == 0 && deadline > sim.now {
            sim.now += rng.below_incl(deadline - sim.now);
            sim.core.request_report(sim.now);
            prompt_before = Some(sim.now);
        }
        if jumps && rng.below_incl(19) == 0 {
            sim.wall_offset_ms += rng.below_incl(7_200_000) as i64 - 3_600_000;
            jumped_before = true;
        }
        let step_ms = sim.core.meta().step_s * 1000;
        let sent = sim.next_request();
        let answer = pick_answer(&mut rng, sent.path);
        log.push(Req {
            at: sent.at,
            wall_ms: sim.wall_ms(),
            path: sent.path,
            step_ms,
            answer,
            prompt_before,
            jumped_before,
        });
        sim.answer(answer.outcome());
    }
    (log, servers.split(',').count())
}

#[test]
fn no_two_answered_reports_less_than_a_second_apart_but_the_exempt() {
    for seed in 0..300 {
        let (reqs, _) = run(seed, 300, seed % 3 == 0);
        let mut last_answered: Option<Millis> = None;
        for (i, req) in reqs.iter().enumerate() {
            if req.path != STATUS_PATH {
                continue;
            }
            let prev = i.checked_sub(1).map(|p| &reqs[p]);
            let exempt = prev.is_some_and(|p| {
                (p.path == REGISTER_PATH && p.answer == Answer::Ok) || p.answer == Answer::Refused
            });
            if let (Some(last), false) = (last_answered, exempt) {
                assert!(
                    req.at - last >= 1_000,
                    "seed {seed}, request {i}: {} ms after the last answered report: {:#?}",
                    req.at - last,
                    &reqs[i.saturating_sub(3)..=i]
                );
            }
            if req.answer.answered() {
                last_answered = Some(req.at);
            }
        }
    }
}

#[test]
fn no_wait_over_its_cap_and_prompt_reports_within_a_second() {
    for seed in 1_000..1_300 {
        let (reqs, _) = run(seed, 300, false);
        for (i, pair) in reqs.windows(2).enumerate() {
            let (prev, next) = (&pair[0], &pair[1]);
            let wait = next.at - prev.at;
            let step = prev.step_ms;
            let cap = match prev.answer {
                Answer::Ok if prev.path == REGISTER_PATH => 0,
                Answer::Ok | Answer::OkNewStep(_) => step * 3 / 2 + 1_000,
                Answer::RetryAfter(_, secs) => {
                    let base = (secs * 1000).min(step).max(1_000);
                    assert!(wait >= base, "seed {seed} request {i}: {wait} < {base}");
                    base * 3 / 2
                }
                _ => step.clamp(1_000, 300_000),
            };
            assert!(
                wait <= cap,
                "seed {seed} request {i}: waited {wait} ms after {:?} (cap {cap})",
                prev.answer
            );
            // A prompt report of a healthy agent goes within a second.
            if let (Some(asked), Answer::Ok) = (next.prompt_before, prev.answer) {
                if prev.path == STATUS_PATH {
                    assert!(
                        next.at <= asked.max(prev.at + 1_000),
                        "seed {seed} request {i}: prompt asked at {asked}, sent at {}",
                        next.at
                    );
                }
            }
        }
    }
}

#[test]
fn scheduled_reports_keep_the_phase() {
    let mut checked = 0;
    for seed in 2_000..2_300 {
        let (reqs, _) = run(seed, 300, seed % 2 == 0);
        for (i, pair) in reqs.windows(2).enumerate() {
            let (prev, next) = (&pair[0], &pair[1]);
            // A slot set before a wall-clock jump goes off the phase once: skip
            // the reports just after a jump.
            let jumped = reqs[i.saturating_sub(3)..=i + 1]
                .iter()
                .any(|r| r.jumped_before);
            if prev.path != STATUS_PATH
                || prev.answer != Answer::Ok
                || next.prompt_before.is_some()
                || jumped
            {
                continue;
            }
            let step = prev.step_ms;
            let phase = pacing::phase_ms(SN, step) as i64;
            let off = (next.wall_ms - phase).rem_euclid(step as i64);
            // On its slot, or held by the gap just after a prompt report.
            assert!(
                off == 0 || (next.at - prev.at == 1_000 && off < 1_000),
                "seed {seed}: {} ms off the phase (step {step} ms): {prev:?} → {next:?}",
                off
            );
            checked += 1;
        }
    }
    assert!(
        checked > 10_000,
        "enough scheduled reports checked: {checked}"
    );
}

/// Log lines at `info` and above, of this thread only.
mod capture {
    use std::cell::RefCell;
    use std::sync::Once;

    thread_local! {
        static LINES: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Info
        }

        fn log(&self, record: &log::Record<'_>) {
            if self.enabled(record.metadata()) {
                LINES.with(|lines| {
                    if let Some(lines) = lines.borrow_mut().as_mut() {
                        lines.push(format!("{} {}", record.level(), record.args()));
                    }
                });
            }
        }

        fn flush(&self) {}
    }

    /// Runs `f` and returns the lines it logged.
    pub fn lines(f: impl FnOnce()) -> Vec<String> {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            if log::set_boxed_logger(Box::new(Capture)).is_ok() {
                log::set_max_level(log::LevelFilter::Info);
            }
        });
        LINES.with(|lines| *lines.borrow_mut() = Some(Vec::new()));
        f();
        LINES.with(|lines| lines.borrow_mut().take().unwrap_or_default())
    }
}

#[test]
fn a_thirty_minute_outage_takes_at_most_five_log_lines() {
    for (what, answer) in [
        ("refused", fail as fn() -> Outcome),
        ("HTTP 500", || http(500)),
        ("503 with Retry-After", || Outcome::Answer {
            status: 503,
            body: Vec::new(),
            retry_after_s: Some(30),
        }),
        ("429 without Retry-After", || http(429)),
    ] {
        let mut sim = Sim::with(true, "a:1,b:2", 60, Start::AfterExec, 9);
        sim.settle();
        let mut attempts = 0;
        let lines = capture::lines(|| {
            let start = sim.now;
            while sim.now - start < 30 * 60_000 {
                sim.next_request();
                sim.answer(answer());
                attempts += 1;
            }
            sim.next_request();
            sim.answer(ok(json!({})));
        });
        assert!(attempts > 30, "{what}: {attempts} attempts");
        assert!(lines.len() <= 5, "{what}: {lines:#?}");
        assert!(
            lines
                .last()
                .is_some_and(|l| l.contains("answered again after 2") && l.contains(" min ")),
            "{what}: the recovery and how long it lasted: {lines:#?}"
        );
        assert!(lines[0].starts_with("WARN"), "{what}: {lines:#?}");
    }
}
