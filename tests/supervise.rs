//! End to end: supervision of real child processes by the real binary
//! (docs/protocol.md section 6), reported to the reference server.

mod common;

use common::children::{events, preinstall, starts};
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Installs `agents/NAME/1.0/run` with `script`, `current` pointing at it, and
/// `agent.json` if given: what a firmware image ships.
/// A child that records each start's pid in `starts`, then sleeps.
const SLEEPER: &str = "echo $$ >> starts\nexec sleep 1000";

/// The pid a child wrote into `path`; 0 until the whole number is there.
fn pid_in(path: &Path) -> i32 {
    fs::read_to_string(path)
        .ok()
        .filter(|text| text.ends_with('\n'))
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

fn kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) on a pid the test started (through the agent); no memory effects.
    unsafe {
        libc::kill(pid, signal);
    }
}

fn last_agents(server: &RefServer) -> Vec<Value> {
    server
        .requests_to("/agent/status")
        .into_iter()
        .filter_map(|r| r.json)
        .next_back()
        .and_then(|r| r["agents"].as_array().cloned())
        .unwrap_or_default()
}

fn agent_status(server: &RefServer, name: &str) -> Option<Value> {
    last_agents(server).into_iter().find(|a| a["name"] == name)
}

/// CPU time (ms) of one process so far.
fn cpu_ms(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1000 / hz
}

#[test]
fn a_preinstalled_child_runs_and_is_restarted_at_once_after_kill_9() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-restart");
    let version = preinstall(&scratch.data(), "BasicAgent", SLEEPER, None);
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(DEADLINE, || starts(&version).len() == 1),
        "the child starts"
    );
    assert!(
        wait_until(DEADLINE, || agent_status(&server, "BasicAgent")
            .is_some_and(|a| a["status"] == "running")),
        "reported running: {:?}",
        last_agents(&server)
    );
    let reported = agent_status(&server, "BasicAgent").unwrap_or_default();
    assert_eq!(reported["version"], "1.0");
    assert_eq!(reported["pid"], starts(&version)[0]);

    // Past the one-start-a-second rule, so that the restart measured below is the
    // policy's immediate one, not one held back to a second after the start.
    std::thread::sleep(Duration::from_millis(1100));
    let first = starts(&version)[0];
    let killed_at = Instant::now();
    kill(first, libc::SIGKILL);
    assert!(
        wait_until(DEADLINE, || starts(&version).len() == 2),
        "a new process"
    );
    let latency = killed_at.elapsed();
    eprintln!("kill -9 to new process: {latency:?}");
    assert!(
        latency < Duration::from_millis(1000),
        "restarted at once, not by a poll: {latency:?}"
    );
    assert!(alive(starts(&version)[1]));

    assert!(
        wait_until(DEADLINE, || events(&server)
            .iter()
            .any(|e| e["event"] == "exited" && e["signal"] == 9)),
        "an exited event with the signal reaches the server: {:?}",
        events(&server)
    );
    assert!(wait_until(DEADLINE, || agent_status(&server, "BasicAgent")
        .is_some_and(|a| a["restarts"] == 1)));
    let status = agent.stop();
    assert!(status.success());
    assert!(
        !alive(starts(&version)[1]),
        "BootAgent's SIGTERM stops its children"
    );
}

#[test]
fn a_child_that_exits_at_once_goes_fatal_after_four_failures() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-fatal");
    let version = preinstall(
        &scratch.data(),
        "crasher",
        "echo $$ >> starts\ndate +%s.%N >> times\nexit 3",
        Some(json!({"restart": {"delay_s": 1, "delay_max_s": 2}})),
    );
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(Duration::from_secs(30), || agent_status(&server, "crasher")
            .is_some_and(|a| a["status"] == "fatal")),
        "goes fatal: {:?}",
        last_agents(&server)
    );
    // Nothing to wait on for a start that must not happen: time for one to show.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        starts(&version).len(),
        4,
        "started 4 times: no start after fatal"
    );
    let all = events(&server);
    let fatal: Vec<&Value> = all.iter().filter(|e| e["event"] == "fatal").collect();
    assert_eq!(fatal.len(), 1, "one fatal event: {all:?}");
    assert_eq!(fatal[0]["name"], "crasher");
    let exited: Vec<&Value> = all.iter().filter(|e| e["event"] == "exited").collect();
    assert_eq!(exited.len(), 4, "{all:?}");
    assert!(exited.iter().all(|e| e["code"] == 3));
    assert!(
        exited[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("restart 2 in 1 s")),
        "{exited:?}"
    );

    // The policy's delays, seen from the child's side: 1 s (one start a second),
    // then 1 s, then 2 s.
    let times = start_times(&version);
    let gaps: Vec<f64> = times.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        (0.9..1.6).contains(&gaps[0])
            && (0.9..1.6).contains(&gaps[1])
            && (1.9..2.6).contains(&gaps[2]),
        "{gaps:?}"
    );

    let out = bootagent()
        .arg("status")
        .arg("-D")
        .arg(scratch.data())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "fatal makes `status` fail:\n{text}"
    );
    assert!(text.contains("crasher") && text.contains("fatal"), "{text}");
    assert!(agent.is_running(), "BootAgent itself is fine");
    agent.stop();
}

/// `bootagent status -D DATA`: its exit code and output.
fn status_of(data: &Path) -> (Option<i32>, String) {
    let out = bootagent()
        .arg("status")
        .arg("-D")
        .arg(data)
        .output()
        .expect("runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn status_of_an_agent_without_children_is_an_empty_table() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-status-empty");
    let (code, text) = status_of(&scratch.data());
    assert_eq!(code, Some(3), "never ran here:\n{text}");
    assert!(text.contains("has not run"), "{text}");

    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_registered(&scratch.data());
    let (code, text) = status_of(&scratch.data());
    assert_eq!(code, Some(0), "no children is fine:\n{text}");
    // The table's header and no row (the tags may come before it, the version after
    // a blank line).
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("NAME"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 1, "the header alone:\n{text}");
    assert!(table[0].contains("STATE"), "{text}");

    assert!(agent.stop().success());
    let (code, text) = status_of(&scratch.data());
    assert_eq!(code, Some(0), "stopped, still no children:\n{text}");
    assert!(text.contains("bootagent is not running"), "{text}");
    let table: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("NAME"))
        .take_while(|l| !l.is_empty())
        .collect();
    assert_eq!(table.len(), 1, "the header alone:\n{text}");
}

/// Start times of a child (Unix seconds), as the child itself recorded them.
fn start_times(version: &Path) -> Vec<f64> {
    fs::read_to_string(version.join("times"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_child_that_ignores_sigterm_is_killed_after_the_grace_period_with_its_grandchild() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-grace");
    let version = preinstall(
        &scratch.data(),
        "stubborn",
        "trap '' TERM\nsleep 1000 &\necho $! > grandchild\necho $$ >> starts\nwhile :; do sleep 1; done",
        Some(json!({"restart": {"grace_s": 2}})),
    );
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let mut grandchild = 0;
    assert!(wait_until(DEADLINE, || {
        grandchild = pid_in(&version.join("grandchild"));
        starts(&version).len() == 1 && grandchild > 0
    }));
    let child = starts(&version)[0];
    assert!(alive(child) && alive(grandchild));

    let asked = Instant::now();
    agent.signal("TERM");
    // Half the grace period passes: the point is that nothing kills it before its end.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        alive(child),
        "SIGTERM is ignored: still alive within the grace period"
    );
    let status = agent
        .wait_exit(DEADLINE)
        .expect("BootAgent exits after its children");
    let took = asked.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= Duration::from_millis(1900),
        "waited for the grace period: {took:?}"
    );
    assert!(
        wait_until(DEADLINE, || !alive(child) && !alive(grandchild)),
        "both gone"
    );
    assert!(agent.log_text().contains("stopping every child"));
}

#[test]
fn kill_9_of_bootagent_leaves_no_child_and_a_restart_runs_exactly_one_copy() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-kill9");
    let version = preinstall(&scratch.data(), "solo", SLEEPER, None);
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 1));
    let first = starts(&version)[0];
    agent.kill9();
    assert!(
        wait_until(DEADLINE, || !alive(first)),
        "the child dies with BootAgent"
    );

    let mut agent = Agent::start(&scratch, &[]);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 2));
    // Nothing to wait on for a copy that must not start: time for one to show.
    std::thread::sleep(Duration::from_millis(1500));
    let running: Vec<i32> = starts(&version).into_iter().filter(|p| alive(*p)).collect();
    assert_eq!(running.len(), 1, "exactly one copy: {running:?}");
    agent.stop();
}

#[test]
fn a_grandchild_left_by_a_killed_bootagent_is_cleared_at_the_next_start() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-leftover");
    let version = preinstall(
        &scratch.data(),
        "forker",
        "sleep 1000 &\necho $! > grandchild\necho $$ >> starts\nexec sleep 1000",
        None,
    );
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let mut grandchild = 0;
    assert!(wait_until(DEADLINE, || {
        grandchild = pid_in(&version.join("grandchild"));
        starts(&version).len() == 1 && grandchild > 0
    }));
    agent.kill9();
    let mut agent = Agent::start(&scratch, &[]);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 2));
    assert!(
        wait_until(DEADLINE, || !alive(grandchild)),
        "the old grandchild does not survive"
    );
    agent.stop();
}

#[test]
fn a_missing_or_not_executable_run_is_an_event_not_a_crash_of_bootagent() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-noexec");
    let version = preinstall(
        &scratch.data(),
        "broken",
        "exit 0",
        Some(json!({"restart": {"delay_s": 1, "delay_max_s": 1}})),
    );
    fs::set_permissions(version.join("run"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(Duration::from_secs(30), || events(&server).iter().any(
            |e| e["event"] == "exited"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("not executable"))
        )),
        "{:?}",
        events(&server)
    );
    assert!(agent.is_running());
    agent.stop();
}

#[test]
fn fifty_children_are_all_supervised_and_one_dying_disturbs_no_other() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-fifty");
    let versions: Vec<PathBuf> = (0..50)
        .map(|i| preinstall(&scratch.data(), &format!("child{i:02}"), SLEEPER, None))
        .collect();
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(DEADLINE, || versions.iter().all(|v| starts(v).len() == 1)),
        "all 50 start"
    );
    assert!(wait_until(DEADLINE, || last_agents(&server).len() == 50
        && last_agents(&server)
            .iter()
            .all(|a| a["status"] == "running")));
    let victim = starts(&versions[17])[0];
    kill(victim, libc::SIGKILL);
    assert!(wait_until(DEADLINE, || starts(&versions[17]).len() == 2));
    // Nothing to wait on for a disturbance that must not come: time for one to show.
    std::thread::sleep(Duration::from_millis(300));
    for (i, v) in versions.iter().enumerate() {
        if i != 17 {
            assert_eq!(starts(v).len(), 1, "child{i:02} untouched");
            assert!(alive(starts(v)[0]));
        }
    }
    let out = bootagent()
        .arg("-s")
        .arg("-D")
        .arg(scratch.data())
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.contains(" running ")).count(),
        50,
        "{text}"
    );
    agent.stop();
    assert!(versions
        .iter()
        .all(|v| !alive(*starts(v).last().unwrap_or(&0))));
}

#[test]
fn a_child_over_its_memory_limit_is_killed_and_reported_killed() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sv-memory");
    preinstall(
        &scratch.data(),
        "hog",
        // Doubles a string to 128 MiB, far over the limit, then idles.
        "awk 'BEGIN { s = \"x\"; for (i = 0; i < 27; i++) s = s s; while (1) system(\"sleep 1\") }'",
        Some(json!({"limits": {"memory": "20M"}, "restart": {"delay_s": 30}})),
    );
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(
        wait_until(Duration::from_secs(30), || events(&server).iter().any(
            |e| e["event"] == "killed"
                && e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("memory 20M"))
        )),
        "a killed event naming the limit: {:?}",
        events(&server)
    );
    assert!(
        wait_until(Duration::from_secs(30), || agent_status(&server, "hog")
            .is_some_and(|a| a["status"] == "killed")),
        "status killed while waiting to restart: {:?}",
        last_agents(&server)
    );
    agent.stop();
}

fn cpu_share_of_a_spinning_child(name: &str, extra: &[&str]) -> f64 {
    let server = start_server(Some(600));
    let scratch = Scratch::new(name);
    let version = preinstall(
        &scratch.data(),
        "spinner",
        "echo $$ >> starts\nwhile :; do :; done",
        Some(json!({"limits": {"CPU": "10%"}})),
    );
    let mut args = vec!["-S".to_string(), server.addr()];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut agent = Agent::start(&scratch, &args);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 1));
    let pid = starts(&version)[0];
    // A second for the limit to take hold (the /proc fallback needs samples), then a
    // window of CPU time to measure: the time is what is measured.
    std::thread::sleep(Duration::from_millis(1000));
    let (cpu0, t0) = (cpu_ms(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(5));
    let share = (cpu_ms(pid) - cpu0) as f64 / t0.elapsed().as_millis() as f64;
    eprintln!(
        "{name}: spinning child used {:.1} % of a CPU",
        share * 100.0
    );
    agent.stop();
    share
}

#[test]
fn a_spinning_child_with_a_10_percent_cpu_limit_stays_near_10_percent() {
    let share = cpu_share_of_a_spinning_child("sv-cpu", &[]);
    assert!((0.03..0.2).contains(&share), "{:.1} %", share * 100.0);
}

#[test]
fn the_proc_fallback_also_holds_a_spinning_child_near_10_percent() {
    let share = cpu_share_of_a_spinning_child("sv-cpu-proc", &["-o", "limit_mechanism=proc"]);
    assert!((0.03..0.2).contains(&share), "{:.1} %", share * 100.0);
}

#[test]
fn a_child_that_writes_without_pause_has_bounded_logs_and_does_not_stall_bootagent() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("sv-chatty");
    preinstall(
        &scratch.data(),
        "chatty",
        "exec yes 'a line of output from a chatty child'",
        None,
    );
    let mut agent = Agent::start(
        &scratch,
        &["-S", &server.addr(), "-o", "child_log_bytes_max=65536"],
    );
    let logs = scratch.data().join("logs");
    assert!(
        wait_until(DEADLINE, || logs.join("chatty.log.1").exists()),
        "the log rotates"
    );
    let before = server.requests_to("/agent/status").len();
    assert!(
        wait_until(DEADLINE, || server.requests_to("/agent/status").len()
            >= before + 2),
        "reports go on"
    );
    agent.stop();
    let mut names: Vec<String> = fs::read_dir(&logs)
        .expect("logs")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["chatty.log", "chatty.log.1"], "two files, no more");
    for name in names {
        let len = fs::metadata(logs.join(&name)).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 65536 + 64 * 1024, "{name}: {len} bytes");
    }
}
