//! End to end: what a fleet throws at the agent. Servers down, misbehaving
//! answers, bad command lines, `kill -9` in the middle of writes.

mod common;

use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

const STATUS: &str = "/agent/status";

fn statuses_answered_200(server: &RefServer) -> usize {
    server
        .requests_to(STATUS)
        .iter()
        .filter(|r| r.status == 200)
        .count()
}

#[test]
fn server_down_then_up_the_agent_recovers_by_itself_with_backoff() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let scratch = Scratch::new("down-up");
    let mut agent = Agent::start(&scratch, &["-S", &addr]);
    assert!(
        wait_until(DEADLINE, || agent.log_text().contains("connection refused")),
        "the agent tries the server that is down:\n{}",
        agent.log_text()
    );
    assert!(agent.is_running());
    let server = RefServer::start(Options {
        listen: addr.clone(),
        step: Some(600),
        ..Options::default()
    })
    .expect("server comes up on the same port");
    assert!(
        wait_until(Duration::from_secs(20), || statuses_answered_200(&server)
            >= 1),
        "the agent registers and reports once the server is up"
    );
    let log = agent.log_text();
    assert!(log.contains("connection refused"), "{log}");
    assert!(log.contains("answered again after"), "{log}");
    agent.stop();
}

#[test]
fn backoff_is_visible_in_the_request_times() {
    let server = start_server(Some(600));
    server.set_sticky_fault(Some(Fault::Status(500)));
    let scratch = Scratch::new("backoff");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(Duration::from_secs(30), || server.requests().len() >= 5),
        "the agent keeps trying"
    );
    let times: Vec<Instant> = server.requests().iter().map(|r| r.received).collect();
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    // 1 s, 2 s, 4 s, 8 s, each ± 50 %.
    for (i, gap) in gaps.iter().take(4).enumerate() {
        let base = f64::from(1u32 << i);
        assert!(
            *gap >= base * 0.45 && *gap <= base * 1.6,
            "gap {i} is {gap:.2} s, expected {base} s ± 50 %: {gaps:?}"
        );
    }
    server.set_sticky_fault(None);
    assert!(
        wait_until(Duration::from_secs(30), || statuses_answered_200(&server)
            >= 1),
        "recovers once the server answers"
    );
    agent.stop();
}

/// Runs the agent against `fault` (sticky) with two addresses of the same server,
/// so that a round is two attempts, and checks it stays up, keeps trying, and
/// logs once per round.
fn survives(name: &str, fault: Fault, extra: &[&str], requests_min: usize) {
    let server = start_server(Some(600));
    server.set_sticky_fault(Some(fault));
    let scratch = Scratch::new(name);
    let port = server
        .addr()
        .rsplit(':')
        .next()
        .unwrap_or_default()
        .to_string();
    let list = format!("127.0.0.1:{port},localhost:{port}");
    let mut args = vec!["-S", list.as_str()];
    args.extend_from_slice(extra);
    let mut agent = Agent::start(&scratch, &args);
    assert!(
        wait_until(Duration::from_secs(40), || server.requests().len()
            >= requests_min),
        "{name}: the agent keeps trying ({} requests)",
        server.requests().len()
    );
    assert!(agent.is_running(), "{name}: the agent stays up");
    let log = agent.log_text();
    let rounds = log
        .lines()
        .filter(|l| l.contains("every server failed"))
        .count();
    let attempts = server.requests().len();
    assert!(rounds >= 1, "{name}: a failed round is logged:\n{log}");
    assert!(
        rounds * 2 <= attempts + 2,
        "{name}: one warning per round, not per attempt: {rounds} warnings, {attempts} attempts"
    );
    let warnings = log.lines().filter(|l| l.contains("[WARN]")).count();
    assert!(
        warnings <= rounds + 1,
        "{name}: no flood of warnings:\n{log}"
    );

    server.set_sticky_fault(None);
    assert!(
        wait_until(Duration::from_secs(40), || statuses_answered_200(&server)
            >= 1),
        "{name}: recovers when the server behaves"
    );
    agent.stop();
}

#[test]
fn survives_http_500() {
    survives("http-500", Fault::Status(500), &[], 6);
}

#[test]
fn survives_garbage_answers() {
    survives("garbage", Fault::Garbage, &[], 6);
}

#[test]
fn survives_over_long_answers() {
    survives("huge", Fault::HugeBody(3 * 1024 * 1024), &[], 6);
}

#[test]
fn survives_closed_connections() {
    survives("close", Fault::Close, &[], 6);
}

#[test]
fn survives_a_server_that_stalls_past_the_timeout() {
    survives(
        "stall",
        Fault::Stall(Duration::from_secs(30)),
        &["-o", "exchange_timeout_ms=800"],
        4,
    );
}

#[test]
fn test_flag_reports_a_good_configuration_and_writes_nothing() {
    let scratch = Scratch::new("t-good");
    let out = bootagent()
        .args(["-T", "-S", "10.1.2.3:8080,https://b.example:8443", "-D"])
        .arg(scratch.data())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("1. http://10.1.2.3:8080  [command line"),
        "{text}"
    );
    assert!(text.contains("2. https://b.example:8443"), "{text}");
    assert!(text.contains("first start"), "{text}");
    assert!(text.contains("step: 600 s"), "{text}");
    assert!(!scratch.data().exists(), "-T writes nothing");
}

#[test]
fn test_flag_reports_an_existing_identity_and_the_ignored_cli_list() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("t-identity");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || statuses_answered_200(&server) >= 1));
    wait_registered(&scratch.data());
    agent.stop();
    let sn = read_meta(&scratch.data())["agentsn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let before = std::fs::read(scratch.data().join("meta.json")).expect("meta");
    let out = bootagent()
        .args(["-T", "-S", "other:1", "-D"])
        .arg(scratch.data())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!("identity: {sn} (registered)")),
        "{text}"
    );
    assert!(text.contains("tags: svc=demo,cmpt=ref"), "{text}");
    assert!(text.contains("-S: ignored"), "{text}");
    assert!(!text.contains("other:1"), "{text}");
    let after = std::fs::read(scratch.data().join("meta.json")).expect("meta");
    assert_eq!(before, after, "-T writes nothing");
}

#[test]
fn test_flag_reports_bad_configurations_with_exit_1() {
    let scratch = Scratch::new("t-bad");
    let out = bootagent()
        .arg("-T")
        .arg("-D")
        .arg(scratch.data())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("problem: no server address"), "{text}");

    std::fs::create_dir_all(scratch.data()).expect("dir");
    std::fs::write(scratch.data().join("meta.json"), b"{not json").expect("damage");
    let out = bootagent()
        .args(["-T", "-S", "a:1", "-D"])
        .arg(scratch.data())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("problem: metafile") && text.contains("damaged"),
        "{text}"
    );

    let file = scratch.path.join("a-file");
    std::fs::write(&file, b"").expect("file");
    let out = bootagent()
        .args(["-T", "-S", "a:1", "-D"])
        .arg(file.join("data"))
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("is not a directory"), "{text}");
}

#[test]
fn bad_command_lines_get_one_clear_line_and_exit_2() {
    for (args, part) in [
        (&["-x"][..], "invalid option '-x'"),
        (&["-S"][..], "-S needs a value"),
        (&["-D"][..], "-D needs a value"),
        (&["-L"][..], "-L needs a value"),
        (
            &["-S", "host:notaport"][..],
            "bad server address \"host:notaport\"",
        ),
        (&["-o", "nope=1"][..], "unknown limit"),
        (&["stray"][..], "unknown command \"stray\""),
        (&["status", "a", "b"][..], "unexpected argument \"b\""),
    ] {
        let out = bootagent().args(args).output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.contains(part), "{args:?}: {err}");
    }
    let out = bootagent().arg("-V").output().expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("bootagent 1."),
        "{text}"
    );
    assert!(text.contains("compiled-in servers:"), "{text}");
}

#[test]
fn no_server_from_any_source_refuses_to_start() {
    let scratch = Scratch::new("no-server");
    let out = bootagent()
        .arg("-D")
        .arg(scratch.data())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no server address"), "{err}");
    assert!(
        !scratch.data().join("meta.json").exists(),
        "no identity made"
    );
}

#[test]
fn kill_9_during_a_storm_of_config_changes_leaves_a_metafile_that_loads() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("storm");
    let mut agent = Agent::start(
        &scratch,
        &["-S", &server.addr(), "-o", "report_gap_min_ms=0"],
    );
    assert!(wait_until(DEADLINE, || statuses_answered_200(&server) >= 1));
    let sn = read_meta(&scratch.data())["agentsn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut job = 0;
    for round in 0..8u64 {
        for _ in 0..40 {
            job += 1;
            server.queue_job(
                &sn,
                json!({"id": format!("s{job}"), "action": "config", "step": 1 + job % 3}),
            );
        }
        let seen = statuses_answered_200(&server);
        assert!(wait_until(DEADLINE, || statuses_answered_200(&server) > seen));
        // The moment of the kill varies from round to round: the point of the test.
        std::thread::sleep(Duration::from_millis(37 * (round % 5)));
        agent.kill9();

        let out = bootagent()
            .arg("-T")
            .arg("-D")
            .arg(scratch.data())
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "round {round}: the metafile loads:\n{text}"
        );
        assert!(text.contains(&sn), "round {round}: same identity:\n{text}");
        agent = Agent::start(&scratch, &["-o", "report_gap_min_ms=0"]);
    }
    let seen = statuses_answered_200(&server);
    assert!(wait_until(DEADLINE, || statuses_answered_200(&server) > seen));
    assert_eq!(
        server.requests_to("/agent/register").len(),
        1,
        "never a second identity"
    );
    agent.stop();
}
