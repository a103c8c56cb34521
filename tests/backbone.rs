//! End to end: the real binary against the reference server on loopback.
//! Registration, reports, identity across restarts, SN conflicts, the `config`
//! job, and rejection of identity (docs/protocol.md sections 2–5 and 8).

mod common;

use common::*;
use serde_json::{json, Value};

const REGISTER: &str = "/agent/register";
const STATUS: &str = "/agent/status";

fn reports(server: &RefServer) -> Vec<Value> {
    server
        .requests_to(STATUS)
        .into_iter()
        .filter_map(|r| r.json)
        .collect()
}

fn wait_reports(server: &RefServer, n: usize) -> Vec<Value> {
    assert!(
        wait_until(DEADLINE, || reports(server).len() >= n),
        "expected {n} reports, got {}",
        reports(server).len()
    );
    reports(server)
}

#[test]
fn first_start_registers_then_reports_with_every_original_field() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("first-start");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);

    let report = wait_reports(&server, 1).remove(0);
    let registers = server.requests_to(REGISTER);
    assert_eq!(registers.len(), 1);
    let reg = registers[0].json.clone().expect("register body is JSON");
    let sn = reg["agentsn"].as_str().expect("agentsn").to_string();
    assert_eq!(sn.len(), 36);
    assert_eq!(&sn[14..15], "4", "UUID v4: {sn}");
    assert_eq!(sn, sn.to_lowercase());
    assert!(reg["hostname"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(reg["version"]
        .as_str()
        .is_some_and(|v| v.starts_with("bootagent-")));
    assert_eq!(reg["host"]["os"], "linux");

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
            report.get(field).is_some(),
            "report lacks {field}: {report}"
        );
    }
    assert_eq!(report["agentsn"], sn.as_str());
    assert_eq!(report["step"], 600);
    assert!(report["agents"].is_array() && report["jobs"].is_array());
    assert!(report["timestamp"]
        .as_i64()
        .is_some_and(|t| t > 1_600_000_000));

    wait_registered(&scratch.data());
    let meta = read_meta(&scratch.data());
    assert_eq!(meta["agentsn"], sn.as_str());
    assert_eq!(meta["registered"], true);
    assert_eq!(meta["tags"], "svc=demo,cmpt=ref");
    let status = agent.stop();
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
}

#[test]
fn restart_keeps_the_identity_and_ignores_a_new_server_list() {
    let server = start_server(Some(600));
    let other = start_server(Some(600));
    let scratch = Scratch::new("restart");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_reports(&server, 1);
    wait_registered(&scratch.data());
    let sn = read_meta(&scratch.data())["agentsn"].clone();
    agent.stop();

    let mut agent = Agent::start(&scratch, &["-S", &other.addr()]);
    wait_reports(&server, 2);
    assert_eq!(
        server.requests_to(REGISTER).len(),
        1,
        "no second registration"
    );
    assert!(
        other.requests().is_empty(),
        "-S of a later start is ignored"
    );
    assert_eq!(reports(&server)[1]["agentsn"], sn);
    assert!(agent.log_text().contains("-S ignored"));
    agent.stop();
}

#[test]
fn sn_conflict_the_agent_uses_the_server_given_sn_from_then_on() {
    let server = start_server(Some(600));
    let new_sn = "dcb886e9-04ed-41bb-9c12-4d2de12cd59b";
    server.set_conflict_sn(Some(new_sn.to_string()));
    let scratch = Scratch::new("conflict");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let report = wait_reports(&server, 1).remove(0);
    assert_eq!(report["agentsn"], new_sn);
    wait_registered(&scratch.data());
    assert_eq!(read_meta(&scratch.data())["agentsn"], new_sn);
    agent.stop();

    let mut agent = Agent::start(&scratch, &[]);
    wait_reports(&server, 2);
    assert_eq!(
        reports(&server)[1]["agentsn"],
        new_sn,
        "persisted across a restart"
    );
    assert_eq!(server.requests_to(REGISTER).len(), 1);
    agent.stop();
}

#[test]
fn config_job_changes_step_and_servers_both_survive_a_restart() {
    let first = start_server(Some(3));
    // The second server gives no step at registration, so the job's step stands.
    let second = start_server(None);
    let scratch = Scratch::new("config");
    let mut agent = Agent::start(&scratch, &["-S", &first.addr()]);
    let sn = wait_reports(&first, 1)[0]["agentsn"]
        .as_str()
        .expect("sn")
        .to_string();

    first.queue_job(&sn, json!({"id": "step-1", "action": "config", "step": 1}));
    let result = wait_for_job_result(&first, "step-1");
    assert_eq!(
        result,
        json!({"id": "step-1", "errcode": 0, "message": "success"})
    );
    let n = reports(&first).len();
    wait_reports(&first, n + 4);
    let times: Vec<_> = first
        .requests_to(STATUS)
        .iter()
        .map(|r| r.received)
        .collect();
    let gaps: Vec<f64> = times[times.len() - 4..]
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    assert!(
        gaps.iter().all(|g| (0.85..1.6).contains(g)),
        "step 1 s (was 3 s) between reports: {gaps:?}"
    );
    let carrying: Vec<usize> = reports(&first)
        .iter()
        .enumerate()
        .filter(|(_, r)| r["jobs"].as_array().is_some_and(|j| !j.is_empty()))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        carrying.len(),
        1,
        "sent until acknowledged, then no more: {carrying:?}"
    );

    first.queue_job(
        &sn,
        json!({"id": "svr-1", "action": "config", "svrlist": second.addr()}),
    );
    assert!(
        wait_until(DEADLINE, || !reports(&second).is_empty()),
        "reports move to the new server"
    );
    assert_eq!(
        reports(&second)[0]["jobs"][0]["id"],
        "svr-1",
        "its result goes there too"
    );
    agent.stop();

    let before_first = reports(&first).len();
    let before = reports(&second).len();
    let mut agent = Agent::start(&scratch, &[]);
    assert!(
        wait_until(DEADLINE, || reports(&second).len() >= before + 3),
        "after a restart the server-given list is used:\n{}",
        agent.log_text()
    );
    assert_eq!(
        reports(&first).len(),
        before_first,
        "the old server hears nothing more"
    );
    let times: Vec<_> = second
        .requests_to(STATUS)
        .iter()
        .map(|r| r.received)
        .collect();
    let gap = (times[times.len() - 1] - times[times.len() - 2]).as_secs_f64();
    assert!(
        (0.85..1.6).contains(&gap),
        "step 1 s after the restart: {gap}"
    );
    let meta = read_meta(&scratch.data());
    assert_eq!(meta["step_s"], 1);
    assert_eq!(meta["servers_server"], format!("http://{}", second.addr()));
    agent.stop();
}

#[test]
fn sighup_reopens_the_log_file() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sighup");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_reports(&server, 1);
    let moved = scratch.path.join("agent.log.moved");
    std::fs::rename(scratch.log(), &moved).expect("move the log away");
    agent.signal("HUP");
    assert!(
        wait_until(DEADLINE, || agent.log_text().contains("log file reopened")),
        "SIGHUP reopens the log at its path"
    );
    assert!(agent.is_running(), "SIGHUP does not stop the agent");
    agent.stop();
}

fn wait_for_job_result(server: &RefServer, id: &str) -> Value {
    let mut found = None;
    let ok = wait_until(DEADLINE, || {
        found = reports(server)
            .iter()
            .flat_map(|r| r["jobs"].as_array().cloned().unwrap_or_default())
            .find(|j| j["id"] == id);
        found.is_some()
    });
    assert!(ok, "no report carried the result of job {id}");
    found.unwrap_or(Value::Null)
}

#[test]
fn invalid_jobs_are_answered_with_errcode_1() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("badjobs");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let sn = wait_reports(&server, 1)[0]["agentsn"]
        .as_str()
        .expect("sn")
        .to_string();
    server.queue_job(&sn, json!({"id": "i1", "action": "install", "name": "x"}));
    server.queue_job(&sn, json!({"id": "i2", "action": "reboot"}));
    server.queue_job(&sn, json!({"id": "i3", "action": "config", "step": -5}));
    for (id, part) in [
        ("i1", "no url"),
        ("i2", "unknown action"),
        ("i3", "negative"),
    ] {
        let result = wait_for_job_result(&server, id);
        assert_eq!(result["errcode"], 1, "{id}: {result}");
        assert!(
            result["message"].as_str().is_some_and(|m| m.contains(part)),
            "{result}"
        );
    }
    assert!(agent.is_running());
    agent.stop();
}

#[test]
fn rejected_identity_on_status_registers_again_with_the_same_sn() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("reject");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let sn = wait_reports(&server, 1)[0]["agentsn"].clone();
    server.push_faults(Fault::Status(401), 1);
    assert!(
        wait_until(DEADLINE, || server.requests_to(REGISTER).len() >= 2),
        "401 on status makes the agent register again"
    );
    let regs = server.requests_to(REGISTER);
    assert_eq!(
        regs[1].json.as_ref().map(|j| j["agentsn"].clone()),
        Some(sn.clone())
    );
    let n = reports(&server).len();
    wait_reports(&server, n + 1);
    assert_eq!(
        reports(&server).last().map(|r| r["agentsn"].clone()),
        Some(sn)
    );
    agent.stop();
}

#[test]
fn damaged_metafile_never_makes_a_second_identity() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("corrupt");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_reports(&server, 1);
    wait_registered(&scratch.data());
    agent.stop();
    let sn = read_meta(&scratch.data())["agentsn"].clone();

    // Damaged, with the previous copy present: the previous copy is used.
    std::fs::write(scratch.data().join("meta.json"), b"{\"schema\":1,\"agen").expect("damage");
    let mut agent = Agent::start(&scratch, &[]);
    wait_reports(&server, 2);
    assert_eq!(reports(&server)[1]["agentsn"], sn);
    assert_eq!(server.requests_to(REGISTER).len(), 1);
    agent.stop();

    // Damaged with no good copy at all: refuse to start, register nothing.
    for name in ["meta.json", "meta.json.prev"] {
        std::fs::write(scratch.data().join(name), b"garbage").expect("damage");
    }
    let out = bootagent()
        .arg("-D")
        .arg(scratch.data())
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("damaged") && err.contains("refusing to start"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(server.requests_to(REGISTER).len(), 1, "no second identity");
    assert_eq!(
        std::fs::read(scratch.data().join("meta.json")).ok(),
        Some(b"garbage".to_vec()),
        "nothing overwritten"
    );
}

#[test]
fn sigterm_stops_the_agent_promptly_with_a_consistent_metafile() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sigterm");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_reports(&server, 1);
    wait_registered(&scratch.data());
    let started = std::time::Instant::now();
    let status = agent.stop();
    let took = started.elapsed();
    assert!(status.success(), "{status:?}");
    eprintln!("SIGTERM to exit: {took:?}");
    assert_eq!(read_meta(&scratch.data())["registered"], true);
    assert!(agent.log_text().contains("stopped, metafile saved"));
}
