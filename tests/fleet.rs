//! A fleet spreads itself (docs/protocol.md sections 3 and 4), seen from the server:
//! each agent reports at its own phase of the step, a restart waits a random delay
//! before the first report, and a `Retry-After` is honoured with a random extra,
//! `Retry-After: 0` included, with one log line for the whole throttled period.

mod common;

use bootagent::agent::pacing::phase_ms;
use common::*;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Wall-clock milliseconds of a request's arrival.
fn wall_ms(req: &server::Request) -> i64 {
    req.wall
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn statuses_of(server: &RefServer, sn: &str) -> Vec<server::Request> {
    server
        .requests_to("/agent/status")
        .into_iter()
        .filter(|r| r.json.as_ref().is_some_and(|j| j["agentsn"] == sn))
        .collect()
}

#[test]
fn two_agents_report_each_at_its_own_phase_of_the_step() {
    const STEP_MS: u64 = 3_000;
    let server = start_server(Some(STEP_MS / 1000));
    // Two SNs whose phases in a 3 s step are far apart, handed out by the server.
    let candidates: Vec<String> = (0..64).map(|_| server::new_uuid()).collect();
    let first = candidates[0].clone();
    let second = candidates
        .iter()
        .find(|sn| {
            let d = phase_ms(sn, STEP_MS).abs_diff(phase_ms(&first, STEP_MS));
            (1_000..=2_000).contains(&d)
        })
        .expect("one of 64 random SNs is a third of a step away")
        .clone();
    let mut agents = Vec::new();
    let scratches = [Scratch::new("fleet-phase-1"), Scratch::new("fleet-phase-2")];
    for (scratch, sn) in scratches.iter().zip([&first, &second]) {
        server.set_conflict_sn(Some(sn.clone()));
        agents.push(Agent::start(scratch, &["-S", &server.addr()]));
        assert!(
            server.wait_for(DEADLINE, |s| !statuses_of(s, sn).is_empty()),
            "agent {sn} reports"
        );
    }
    assert!(
        server.wait_for(Duration::from_secs(40), |s| {
            statuses_of(s, &first).len() >= 6 && statuses_of(s, &second).len() >= 6
        }),
        "six reports each"
    );
    for sn in [&first, &second] {
        let phase = phase_ms(sn, STEP_MS) as i64;
        let reports = statuses_of(&server, sn);
        // The first follows the registration at once; the others are on the phase.
        let offsets: Vec<i64> = reports[1..]
            .iter()
            .map(|r| (wall_ms(r) - phase).rem_euclid(STEP_MS as i64))
            .collect();
        assert!(
            offsets.iter().all(|o| *o < 400),
            "agent {sn}: reports arrive just after its slots (phase {phase} ms): offsets {offsets:?}"
        );
    }
}

#[test]
fn retry_after_is_honoured_with_a_random_extra_and_zero_is_no_tight_loop() {
    let server = start_server(Some(60));
    server.set_sticky_fault(Some(Fault::RetryAfter(503, 2)));
    let scratch = Scratch::new("fleet-retry-after");
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let registers = |s: &RefServer| s.requests_to("/agent/register");
    assert!(
        server.wait_for(Duration::from_secs(30), |s| registers(s).len() >= 7),
        "the agent keeps asking"
    );
    let times: Vec<Instant> = registers(&server).iter().map(|r| r.received).collect();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    assert!(
        gaps.iter().all(|g| (2_000..=3_300).contains(g)),
        "2 s plus up to 50 %: {gaps:?}"
    );
    let spread = gaps.iter().max().unwrap_or(&0) - gaps.iter().min().unwrap_or(&0);
    assert!(
        spread >= 100,
        "a random extra, not the same wait each time: {gaps:?}"
    );

    server.set_sticky_fault(Some(Fault::RetryAfter(429, 0)));
    let before = registers(&server).len();
    let start = Instant::now();
    assert!(
        server.wait_for(Duration::from_secs(20), |s| registers(s).len()
            >= before + 5),
        "Retry-After: 0 is retried"
    );
    let zero: Vec<Instant> = registers(&server)[before - 1..]
        .iter()
        .map(|r| r.received)
        .collect();
    let gaps: Vec<u128> = zero.windows(2).map(|w| (w[1] - w[0]).as_millis()).collect();
    assert!(
        gaps.iter().skip(1).all(|g| (1_000..=1_800).contains(g)),
        "Retry-After: 0 waits a second or a little more: {gaps:?}"
    );
    assert!(start.elapsed() >= Duration::from_secs(4), "no tight loop");

    server.set_sticky_fault(None);
    wait_registered(&scratch.data());
    let log = agent.log_text();
    let throttled_lines = log.lines().filter(|l| l.contains("throttling")).count();
    assert_eq!(
        throttled_lines, 1,
        "one line for the throttled period:\n{log}"
    );
    assert!(
        log.contains("answered again after"),
        "and one on recovery:\n{log}"
    );
}

#[test]
fn a_restarted_agent_waits_a_random_delay_before_its_first_report() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("fleet-first-delay");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_registered(&scratch.data());
    agent.stop();
    let mut delays = Vec::new();
    for _ in 0..3 {
        let before = server.requests_to("/agent/status").len();
        let started = Instant::now();
        let mut agent = Agent::start(&scratch, &["-o", "first_report_delay_max_ms=3000"]);
        assert!(
            server.wait_for(DEADLINE, |s| s.requests_to("/agent/status").len() > before),
            "the first report after a restart comes"
        );
        let first = &server.requests_to("/agent/status")[before];
        delays.push(first.received.saturating_duration_since(started));
        assert!(
            server.requests_to("/agent/register").len() == 1,
            "a restart does not register again"
        );
        agent.stop();
    }
    assert!(
        delays.iter().all(|d| *d <= Duration::from_millis(3_800)),
        "at most min(step, first_report_delay_max_ms): {delays:?}"
    );
    assert!(
        delays.iter().any(|d| *d >= Duration::from_millis(300)),
        "not at once: {delays:?}"
    );
}

/// A server that answers every request 503 with `Retry-After` as an HTTP date 3 s after
/// its own `Date`, its clock set an hour off the agent's; returns the arrival times
/// (at most `count`, within 30 s).
fn serve_dated_retry_after(
    listener: std::net::TcpListener,
    count: usize,
) -> std::thread::JoinHandle<Vec<Instant>> {
    use std::io::{Read, Write};
    std::thread::spawn(move || {
        let mut arrivals = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let _ = listener.set_nonblocking(true);
        while arrivals.len() < count && Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 65536];
            let _ = stream.read(&mut buf); // head and the small body, in one read on loopback
            arrivals.push(Instant::now());
            let server_now = std::time::SystemTime::now() + Duration::from_secs(3600);
            let date = httpdate::fmt_http_date(server_now);
            let retry = httpdate::fmt_http_date(server_now + Duration::from_secs(3));
            let reply = format!(
                "HTTP/1.1 503 Service Unavailable\r\nDate: {date}\r\nRetry-After: {retry}\r\n\
                 Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            );
            let _ = stream.write_all(reply.as_bytes());
        }
        arrivals
    })
}

#[test]
fn retry_after_as_an_http_date_counts_from_the_servers_own_date() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = serve_dated_retry_after(listener, 3);
    let scratch = Scratch::new("fleet-retry-date");
    let _agent = Agent::start(&scratch, &["-S", &addr]);
    let arrivals = server.join().expect("the dated server ran");
    assert_eq!(arrivals.len(), 3, "three tries within 30 s: {arrivals:?}");
    let gaps: Vec<u128> = arrivals
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // 3 s by the server's clock, plus up to 50 %: not 0 (a date in the agent's past)
    // nor an hour (a date in its future).
    assert!(
        gaps.iter().all(|g| (2_900..=4_800).contains(g)),
        "waits 3-4.5 s: {gaps:?}"
    );
}
