//! End to end: every process of a child is tracked (docs/protocol.md section 6), including
//! one that calls `setsid` and wipes its environment (as nginx's workers do when they
//! set their process title): a stop job, BootAgent's shutdown and the next start after
//! a `kill -9` of BootAgent all end it. With cgroups (this host's kind), and without
//! (`limit_mechanism=proc`: child subreaper and the environment marker).

mod common;

use common::children::preinstall;
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A child whose `run` starts a daemon in a new session, with an empty environment
/// (no marker to find it by), that ignores `SIGTERM` and writes its pid to `daemon.N`; then the main
/// process records its own pid in `starts` and sleeps.
const DAEMONIZER: &str = "n=$(($(cat starts 2>/dev/null | wc -l) + 1))\n\
    setsid -f env -i /bin/sh -c \"trap '' TERM; echo \\$\\$ > daemon.$n.tmp; mv daemon.$n.tmp daemon.$n; exec sleep 1000\"\n\
    echo $$ >> starts\n\
    exec sleep 1000";

/// A child whose daemon keeps its environment (the marker) and ignores `SIGTERM`, for
/// the fallback.
const MARKED_DAEMONIZER: &str = "n=$(($(cat starts 2>/dev/null | wc -l) + 1))\n\
    setsid -f /bin/sh -c \"trap '' TERM; echo \\$\\$ > daemon.$n.tmp; mv daemon.$n.tmp daemon.$n; exec sleep 1000\"\n\
    echo $$ >> starts\n\
    exec sleep 1000";

fn daemon(version: &Path, n: usize) -> Option<i32> {
    fs::read_to_string(version.join(format!("daemon.{n}")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn wait_daemon(version: &Path, n: usize) -> i32 {
    let mut pid = None;
    assert!(
        wait_until(DEADLINE, || {
            pid = daemon(version, n);
            pid.is_some()
        }),
        "daemon {n} started"
    );
    pid.unwrap_or(0)
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

fn kill(pid: i32) {
    if pid > 1 {
        // SAFETY: kill(2) on a pid this test started (through the agent).
        unsafe {
            libc::kill(pid, libc::SIGKILL);
        }
    }
}

/// Kills the daemons a failed test left behind.
struct Daemons(PathBuf);

impl Drop for Daemons {
    fn drop(&mut self) {
        for n in 1..10 {
            if let Some(pid) = daemon(&self.0, n) {
                kill(pid);
            }
        }
    }
}

/// Whether this host lets BootAgent make cgroups: root and a cgroup file system. When
/// not, the cgroup tests say so and pass, except under CI (`skip`), which runs as root
/// on a host with cgroups: there a missing precondition fails loudly.
fn cgroups_usable(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mounted = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" - cgroup"));
    if root && mounted {
        return true;
    }
    skip(&format!(
        "{test}: needs root and a mounted cgroup file system (root: {root}, mounted: {mounted})"
    ));
    false
}

struct Host {
    server: RefServer,
    scratch: Scratch,
    agent: Agent,
    sn: String,
}

impl Host {
    fn start(name: &str, script: &str, extra: &[&str]) -> (Host, PathBuf) {
        let server = start_server(Some(1));
        let scratch = Scratch::new(name);
        let version = preinstall(&scratch.data(), "daemonizer", script, None);
        let mut args = vec!["-S".to_string(), server.addr()];
        args.extend(extra.iter().map(ToString::to_string));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let agent = Agent::start(&scratch, &args);
        wait_registered(&scratch.data());
        let sn = read_meta(&scratch.data())["agentsn"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let host = Host {
            server,
            scratch,
            agent,
            sn,
        };
        (host, version)
    }

    fn job(&self, job: Value) -> Value {
        let id = job["id"].as_str().unwrap_or_default().to_string();
        self.server.queue_job(&self.sn, job);
        let mut found = Value::Null;
        wait_until(DEADLINE, || {
            found = (self.server.agent(&self.sn))
                .and_then(|a| a.job_results.get(&id).cloned())
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        found
    }
}

#[test]
fn a_daemon_that_left_its_session_is_ended_by_stop_by_shutdown_and_after_kill_9() {
    if !cgroups_usable("tracking with cgroups") {
        return;
    }
    let (mut host, version) = Host::start("track-cgroup", DAEMONIZER, &[]);
    let _daemons = Daemons(version.clone());
    let first = wait_daemon(&version, 1);

    // A stop job ends the daemon too.
    let result = host.job(json!({"id": "stop1", "action": "stop", "name": "daemonizer"}));
    assert_eq!(result["errcode"], 0, "{result}");
    assert!(
        wait_until(DEADLINE, || !alive(first)),
        "the daemon outlived a stop job"
    );

    // So does BootAgent's shutdown.
    let result = host.job(json!({"id": "start1", "action": "start", "name": "daemonizer"}));
    assert_eq!(result["errcode"], 0, "{result}");
    let second = wait_daemon(&version, 2);
    host.agent.stop();
    assert!(
        wait_until(DEADLINE, || !alive(second)),
        "the daemon outlived BootAgent's shutdown"
    );

    // After a kill -9 of BootAgent, the next start ends it before starting afresh.
    host.agent = Agent::start(&host.scratch, &[]);
    let third = wait_daemon(&version, 3);
    host.agent.kill9();
    assert!(
        alive(third),
        "precondition: the daemon survives BootAgent's kill -9"
    );
    host.agent = Agent::start(&host.scratch, &[]);
    let fourth = wait_daemon(&version, 4);
    assert!(
        wait_until(DEADLINE, || !alive(third)),
        "the previous run's daemon still runs beside the new one"
    );
    assert!(alive(fourth), "the new instance runs");
    host.agent.stop();
    assert!(wait_until(DEADLINE, || !alive(fourth)));
}

#[test]
fn without_cgroups_a_marked_daemon_is_ended_by_stop_and_an_unmarked_one_at_shutdown() {
    let (mut host, version) = Host::start(
        "track-subreaper",
        MARKED_DAEMONIZER,
        &["-o", "limit_mechanism=proc"],
    );
    let _daemons = Daemons(version.clone());
    let first = wait_daemon(&version, 1);
    let result = host.job(json!({"id": "stop1", "action": "stop", "name": "daemonizer"}));
    assert_eq!(result["errcode"], 0, "{result}");
    assert!(
        wait_until(DEADLINE, || !alive(first)),
        "the marked daemon outlived a stop job"
    );
    assert!(
        host.agent.log_text().contains("subreaper"),
        "the fallback is said in the log:\n{}",
        host.agent.log_text()
    );

    // A daemon without the marker, reparented to BootAgent, ends with BootAgent.
    fs::write(version.join("run"), format!("#!/bin/sh\n{DAEMONIZER}\n")).expect("run");
    let result = host.job(json!({"id": "start1", "action": "start", "name": "daemonizer"}));
    assert_eq!(result["errcode"], 0, "{result}");
    let second = wait_daemon(&version, 2);
    let ppid_is_agent = || {
        fs::read_to_string(format!("/proc/{second}/stat"))
            .ok()
            .and_then(|s| {
                let rest = s.rsplit_once(')')?.1.to_string();
                rest.split_whitespace().nth(1)?.parse::<i32>().ok()
            })
            == Some(host.agent.pid())
    };
    assert!(
        wait_until(DEADLINE, ppid_is_agent),
        "the orphaned daemon is reparented to BootAgent, its subreaper"
    );
    host.agent.stop();
    assert!(
        wait_until(DEADLINE, || !alive(second)),
        "the unmarked daemon outlived BootAgent's shutdown"
    );
}

/// Where cgroup v2 has no controllers (this host's kind), limits fall back to `/proc`
/// and the child still gets a v2 cgroup of its own, to track it.
#[test]
fn a_v2_cgroup_without_controllers_still_tracks_a_daemon() {
    if !cgroups_usable("tracking with cgroup v2") {
        return;
    }
    let v2 = fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.contains(" - cgroup2 "));
    if !v2 {
        skip("tracking with cgroup v2: no cgroup2 file system is mounted");
        return;
    }
    let (mut host, version) =
        Host::start("track-v2", DAEMONIZER, &["-o", "limit_mechanism=cgroup2"]);
    let _daemons = Daemons(version.clone());
    let first = wait_daemon(&version, 1);
    let result = host.job(json!({"id": "stop1", "action": "stop", "name": "daemonizer"}));
    assert_eq!(result["errcode"], 0, "{result}");
    assert!(
        wait_until(DEADLINE, || !alive(first)),
        "the daemon outlived a stop job:\n{}",
        host.agent.log_text()
    );
    host.agent.stop();
}

/// Every report's events.
fn reports_events(server: &RefServer) -> Vec<Vec<Value>> {
    server
        .requests_to("/agent/status")
        .into_iter()
        .filter_map(|r| r.json)
        .map(|report| report["events"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// A master/worker child whose worker (a forked process) goes over the memory limit
/// again and again while the main process lives: each kill is reported as `killed`,
/// naming the limit and the process, coalesced to one event per report with a `count`,
/// and the child stays `running` with the same main process.
#[test]
fn a_worker_killed_for_the_memory_limit_is_reported_and_the_child_runs_on() {
    if !cgroups_usable("worker OOM kills") {
        return;
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let v1_memory = (mountinfo.lines())
        .any(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o.trim() == "memory"));
    let v2_memory = fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    if !v1_memory && !v2_memory {
        skip("worker OOM kills: no cgroup memory controller");
        return;
    }
    let server = start_server(Some(2));
    let scratch = Scratch::new("track-oom");
    let version = preinstall(
        &scratch.data(),
        "master",
        // The worker doubles a string to 128 MiB, far over the limit; the main process
        // starts another one after each is killed.
        "echo $$ >> starts\n\
         while :; do awk 'BEGIN { s = \"x\"; for (i = 0; i < 27; i++) s = s s }'; sleep 0.3; done",
        None,
    );
    fs::write(
        scratch.data().join("agents/master/agent.json"),
        json!({"limits": {"memory": "20M"}}).to_string(),
    )
    .expect("agent.json");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    let killed = |server: &RefServer| -> Vec<Value> {
        reports_events(server)
            .into_iter()
            .flatten()
            .filter(|e| e["event"] == "killed" && e["name"] == "master")
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(30), || killed(&server)
            .iter()
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum::<u64>()
            >= 3),
        "worker kills reported: {:?}\n{}",
        killed(&server),
        agent.log_text()
    );
    for event in killed(&server) {
        let message = event["message"].as_str().unwrap_or_default();
        assert!(
            message.contains("memory 20M") && message.contains("worker"),
            "names the limit and the process: {event}"
        );
        assert!(event["count"].as_u64().is_some_and(|c| c >= 1), "{event}");
    }
    for events in reports_events(&server) {
        let per_report = events
            .iter()
            .filter(|e| e["event"] == "killed" && e["name"] == "master")
            .count();
        assert!(per_report <= 1, "coalesced, one per report: {events:?}");
    }
    let starts: Vec<String> = fs::read_to_string(version.join("starts"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(starts.len(), 1, "the main process was never restarted");
    let status = server
        .requests_to("/agent/status")
        .into_iter()
        .filter_map(|r| r.json)
        .next_back()
        .and_then(|r| r["agents"].as_array().cloned())
        .unwrap_or_default();
    assert!(
        status.iter().any(|a| a["name"] == "master"
            && a["status"] == "running"
            && a["pid"].as_u64().map(|p| p.to_string()).as_deref() == Some(starts[0].as_str())),
        "still running: {status:?}"
    );
    agent.stop();
}
