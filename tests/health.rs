//! End to end: health beyond a pid (docs/protocol.md section 6, "Health") and lazy
//! reports (section 3, `report`), with the real binary, real children and the
//! reference server.

mod common;

use common::children::{events, preinstall, starts};
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;
use std::time::Duration;

/// The child `name` as the last report that listed the children described it.
fn reported(server: &RefServer, name: &str) -> Option<Value> {
    let view = server.agents().into_iter().next()?;
    let agents = view.agents?;
    agents
        .as_array()?
        .iter()
        .find(|a| a["name"] == name)
        .cloned()
}

fn unhealthy_events(server: &RefServer, name: &str) -> Vec<Value> {
    events(server)
        .into_iter()
        .filter(|e| e["event"] == "unhealthy" && e["name"] == name)
        .collect()
}

/// Writes the Unix time into `hb` every 200 ms while `hang` does not exist, then
/// stops writing but stays alive: a deadlocked daemon.
const HEARTBEAT_WRITER: &str = "echo $$ >> starts
while true; do
  [ -e hang ] || date +%s%N > hb
  sleep 0.2
done";

#[test]
fn a_child_whose_heartbeat_stops_is_restarted_with_an_unhealthy_event() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-heartbeat");
    let version = preinstall(
        &scratch.data(),
        "worker",
        HEARTBEAT_WRITER,
        Some(
            json!({"health": {"heartbeat_file": "hb", "heartbeat_timeout_s": 1},
               "restart": {"grace_s": 1}}),
        ),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(DEADLINE, || reported(&server, "worker")
            .is_some_and(|a| a["status"] == "running" && a["health"] == "ok")),
        "reported running and ok: {:?}; log:\n{}",
        reported(&server, "worker"),
        agent.log_text()
    );
    // A fresh heartbeat is never judged stale: several timeouts pass quietly.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(starts(&version).len(), 1, "restarted while fresh");
    assert!(unhealthy_events(&server, "worker").is_empty());

    fs::write(version.join("hang"), "").expect("hang");
    assert!(
        wait_until(DEADLINE, || !unhealthy_events(&server, "worker").is_empty()),
        "an unhealthy event; log:\n{}",
        agent.log_text()
    );
    let event = &unhealthy_events(&server, "worker")[0];
    assert!(
        event["message"]
            .as_str()
            .is_some_and(|m| m.contains("heartbeat unchanged")),
        "{event}"
    );
    // The hung process was stopped, and a new one started (still hung: the file
    // stays, so it goes on failing until the policy gives up).
    assert!(
        wait_until(DEADLINE, || starts(&version).len() >= 2),
        "restarted; log:\n{}",
        agent.log_text()
    );
    let first = starts(&version)[0];
    assert!(
        wait_until(DEADLINE, || !Path::new(&format!("/proc/{first}")).exists()),
        "the hung process is gone"
    );
    fs::remove_file(version.join("hang")).expect("unhang");
    assert!(
        wait_until(DEADLINE, || reported(&server, "worker").is_some_and(|a| {
            a["status"] == "running" && a["health"] == "ok" && a["restarts"].as_u64() >= Some(1)
        })),
        "running and ok again: {:?}",
        reported(&server, "worker")
    );
}

#[test]
fn a_hang_that_never_ends_makes_the_child_fatal() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-fatal");
    let version = preinstall(
        &scratch.data(),
        "stuck",
        "echo $$ >> starts\nexec sleep 1000",
        Some(
            json!({"health": {"heartbeat_file": "hb", "heartbeat_timeout_s": 1},
               "restart": {"grace_s": 1, "delay_s": 0, "failures_max": 1}}),
        ),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(Duration::from_secs(30), || reported(&server, "stuck")
            .is_some_and(|a| a["status"] == "fatal")),
        "fatal after failures_max unhealthy runs: {:?}; log:\n{}",
        reported(&server, "stuck"),
        agent.log_text()
    );
    assert_eq!(starts(&version).len(), 2);
    assert_eq!(unhealthy_events(&server, "stuck").len(), 2);
    assert!(events(&server).iter().any(|e| e["event"] == "fatal"));
    assert_eq!(
        reported(&server, "stuck").unwrap_or_default()["health"],
        "unhealthy"
    );
}

#[test]
fn a_heartbeat_path_outside_the_version_directory_is_refused_by_the_job() {
    let host = common::host::Host::new("health-job", &[]);
    let package = common::host::tgz(
        &host.files.join("p-1.0.tar.gz"),
        &[("run", 0o755, b"#!/bin/sh\nexec sleep 1000\n")],
    );
    host.send(json!({"id": "bad-health", "action": "install", "name": "p",
        "url": host.url(&package), "checksum": common::host::sha256(&package),
        "health": {"heartbeat_file": "../../etc/passwd"}}));
    let result = host.result("bad-health", DEADLINE);
    assert_eq!(result["errcode"], 1, "{result}");
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("health.heartbeat_file")),
        "{result}"
    );
    assert!(!host.data().join("agents/p").exists());
}

#[test]
fn lazy_reports_leave_agents_out_until_a_child_changes() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-lazy");
    let version = preinstall(
        &scratch.data(),
        "quiet",
        "echo $$ >> starts\nexec sleep 1000",
        Some(json!({})),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || reported(&server, "quiet")
        .is_some_and(|a| a["status"] == "running")));
    server.set_report(Some("lazy"));
    let lazy_count = || server.agents().first().map_or(0, |a| a.lazy_reports);
    assert!(
        wait_until(DEADLINE, || lazy_count() >= 2),
        "reports without agents; log:\n{}",
        agent.log_text()
    );
    // Results and events are always sent; the child's change brings `agents` back.
    let first = starts(&version)[0];
    // SAFETY: kill(2) on the child the test's agent started; no memory effects.
    unsafe { libc::kill(first, libc::SIGKILL) };
    assert!(
        wait_until(DEADLINE, || reported(&server, "quiet")
            .is_some_and(|a| a["pid"] != first && a["restarts"] == 1)),
        "the restart is reported in full: {:?}",
        reported(&server, "quiet")
    );
    assert!(events(&server).iter().any(|e| e["event"] == "exited"));
    let lazy_before = lazy_count();
    assert!(wait_until(DEADLINE, || lazy_count() > lazy_before));

    // "full" goes back to sending `agents` in every report, and the mode persisted.
    assert_eq!(read_meta(&scratch.data())["report_lazy"], true);
    server.set_report(Some("full"));
    assert!(wait_until(DEADLINE, || read_meta(&scratch.data())
        .get("report_lazy")
        .is_none()));
    let before = lazy_count();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(lazy_count(), before, "full reports again");
}

/// The test daemon that speaks sd_notify as libsystemd does (tests/notify/notifier.py).
fn notifier() -> String {
    format!("{}/tests/notify/notifier.py", env!("CARGO_MANIFEST_DIR"))
}

/// The value of variable `key` in the environment of process `pid`.
fn env_of(pid: i32, key: &str) -> Option<String> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    environ.split(|&b| b == 0).find_map(|entry| {
        let entry = String::from_utf8_lossy(entry);
        entry.strip_prefix(&format!("{key}=")).map(str::to_string)
    })
}

#[test]
fn ready_and_status_from_sd_notify_reach_the_report() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-notify");
    let version = preinstall(
        &scratch.data(),
        "daemon",
        &format!(
            "echo $$ >> starts\nexec python3 {} --status 'warming up' --ready-after 2 --watchdog-every auto",
            notifier()
        ),
        Some(json!({"health": {"notify": true, "ready_timeout_s": 20, "watchdog_s": 2}})),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(DEADLINE, || reported(&server, "daemon").is_some_and(|a| {
            a["status"] == "running" && a["ready"] == false && a["status_text"] == "warming up"
        })),
        "running, not ready yet, with its status: {:?}; log:\n{}",
        reported(&server, "daemon"),
        agent.log_text()
    );
    assert!(
        wait_until(DEADLINE, || reported(&server, "daemon")
            .is_some_and(|a| a["ready"] == true && a["health"] == "ok")),
        "ready: {:?}",
        reported(&server, "daemon")
    );
    // The watchdog is fed (every second): no restart over several of its periods.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(starts(&version).len(), 1, "log:\n{}", agent.log_text());
    assert!(unhealthy_events(&server, "daemon").is_empty());
    let pid = starts(&version)[0];
    assert_eq!(env_of(pid, "WATCHDOG_PID"), Some(pid.to_string()));
    assert_eq!(env_of(pid, "WATCHDOG_USEC").as_deref(), Some("2000000"));
    assert!(env_of(pid, "NOTIFY_SOCKET").is_some_and(|s| s.starts_with('@')));

    // `bootagent status` shows them.
    let out = bootagent()
        .args(["status", "-D"])
        .arg(scratch.data())
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("HEALTH") && text.contains(" ok "), "{text}");
}

#[test]
fn systemd_notify_makes_a_shell_child_ready() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-systemd-notify");
    preinstall(
        &scratch.data(),
        "shell",
        "systemd-notify --status=booting\nsleep 1\nsystemd-notify --ready --status=serving\nexec sleep 1000",
        Some(json!({"health": {"notify": true, "ready_timeout_s": 20}})),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(DEADLINE, || reported(&server, "shell")
            .is_some_and(
                |a| a["ready"] == true && a["status_text"] == "serving"
            )),
        "ready through systemd-notify: {:?}; log:\n{}",
        reported(&server, "shell"),
        agent.log_text()
    );
}

#[test]
fn a_child_never_ready_or_whose_watchdog_stops_is_restarted() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-never-ready");
    let never = preinstall(
        &scratch.data(),
        "never",
        "echo $$ >> starts\nexec sleep 1000",
        Some(json!({"health": {"notify": true, "ready_timeout_s": 1}, "restart": {"grace_s": 1}})),
    );
    let hangs = preinstall(
        &scratch.data(),
        "hangs",
        &format!(
            "echo $$ >> starts\nexec python3 {} --ready-after 0 --watchdog-every 0.3 --watchdog-for 1",
            notifier()
        ),
        Some(json!({"health": {"notify": true, "watchdog_s": 1}, "restart": {"grace_s": 1}})),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(DEADLINE, || starts(&never).len() >= 2
            && starts(&hangs).len() >= 2),
        "both restarted: {:?} {:?}; log:\n{}",
        starts(&never),
        starts(&hangs),
        agent.log_text()
    );
    let reasons = |name| -> Vec<String> {
        unhealthy_events(&server, name)
            .iter()
            .filter_map(|e| e["message"].as_str().map(str::to_string))
            .collect()
    };
    assert!(
        wait_until(DEADLINE, || reasons("never")
            .iter()
            .any(|m| m.contains("not ready within 1 s"))
            && reasons("hangs")
                .iter()
                .any(|m| m.contains("no WATCHDOG=1 for 1 s"))),
        "{:?} {:?}",
        reasons("never"),
        reasons("hangs")
    );
}

#[test]
fn a_message_from_a_process_outside_the_child_is_ignored() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("health-foreign");
    let version = preinstall(
        &scratch.data(),
        "guarded",
        "echo $$ >> starts\nexec sleep 1000",
        Some(json!({"health": {"notify": true, "ready_timeout_s": 4}, "restart": {"grace_s": 1}})),
    );
    let agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || !starts(&version).is_empty()));
    let pid = starts(&version)[0];
    let mut socket = None;
    assert!(wait_until(DEADLINE, || {
        socket = env_of(pid, "NOTIFY_SOCKET");
        socket.is_some()
    }));
    // The test is not a process of the child: its READY=1 must not count.
    let sent = std::process::Command::new("python3")
        .arg(notifier())
        .args([
            "--ready-after",
            "0",
            "--status",
            "forged",
            "--exit-after",
            "0.2",
        ])
        .env("NOTIFY_SOCKET", socket.unwrap_or_default())
        .output()
        .expect("python3 runs");
    assert!(
        String::from_utf8_lossy(&sent.stdout).contains("sent READY=1"),
        "{sent:?}"
    );
    assert!(
        wait_until(DEADLINE, || agent
            .log_text()
            .contains("not a process of this child")),
        "log:\n{}",
        agent.log_text()
    );
    assert!(
        wait_until(DEADLINE, || starts(&version).len() >= 2),
        "still not ready, so restarted after its ready timeout; log:\n{}",
        agent.log_text()
    );
    assert!(server
        .requests_to("/agent/status")
        .iter()
        .filter_map(|r| r.json.as_ref())
        .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
        .all(|a| a["ready"] != true && a["status_text"] != "forged"));
}

#[test]
fn an_upgrade_whose_new_version_never_gets_ready_is_rolled_back() {
    let host = common::host::Host::new("health-probation", &[]);
    let ready = format!("#!/bin/sh\nexec python3 {} --ready-after 0.5\n", notifier());
    let v1 = common::host::tgz(
        &host.files.join("svc-1.0.tar.gz"),
        &[("run", 0o755, ready.as_bytes())],
    );
    let health = json!({"notify": true, "ready_timeout_s": 3});
    host.send(
        json!({"id": "i1", "action": "install", "name": "svc", "version": "1.0",
        "url": host.url(&v1), "checksum": common::host::sha256(&v1), "health": health}),
    );
    assert_eq!(host.result("i1", DEADLINE)["errcode"], 0);
    assert!(wait_until(DEADLINE, || host
        .agent_status("svc")
        .is_some_and(|a| a["ready"] == true)));

    // 2.0 runs, but never says READY=1: a probation of 1 s alone would pass it.
    let v2 = common::host::tgz(
        &host.files.join("svc-2.0.tar.gz"),
        &[("run", 0o755, b"#!/bin/sh\nexec sleep 1000\n")],
    );
    host.send(
        json!({"id": "u2", "action": "upgrade", "name": "svc", "version": "2.0",
        "url": host.url(&v2), "checksum": common::host::sha256(&v2), "probation": 1,
        "restart": {"grace_s": 1}}),
    );
    let result = host.result("u2", Duration::from_secs(30));
    assert_eq!(result["errcode"], 6, "{result}");
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("rolled back to 1.0")),
        "{result}"
    );
    assert!(wait_until(DEADLINE, || host
        .agent_status("svc")
        .is_some_and(|a| a["version"] == "1.0" && a["ready"] == true)));
}
