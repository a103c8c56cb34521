//! End to end: the console's commands (docs/protocol.md section 6, local control) against
//! the real binary and the reference server: `restart|stop|start NAME` over
//! `control.sock`, `status NAME`, `logs NAME [-f] [-n LINES]`, their exit codes, who may
//! use the socket, and what a flood of connections costs the agent.

mod common;

use common::children::{events, preinstall};
use common::*;
use serde_json::Value;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child that records each start's pid in `starts`, then sleeps.
const SLEEPER: &str = "echo $$ >> starts\nexec sleep 1000";

fn starts(version_dir: &Path) -> Vec<i32> {
    fs::read_to_string(version_dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
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

fn local_events(server: &RefServer, kind: &str) -> Vec<Value> {
    events(server)
        .into_iter()
        .filter(|e| e["event"] == kind && e["origin"] == "local")
        .collect()
}

fn reported_status(server: &RefServer, name: &str) -> Option<String> {
    server
        .requests_to("/agent/status")
        .into_iter()
        .filter_map(|r| r.json)
        .filter_map(|r| r["agents"].as_array().cloned())
        .next_back()?
        .into_iter()
        .find(|a| a["name"] == name)
        .and_then(|a| a["status"].as_str().map(String::from))
}

/// `bootagent ARGS -D DATA`, run to its end.
fn console(data: &Path, args: &[&str]) -> Output {
    bootagent()
        .args(args)
        .arg("-D")
        .arg(data)
        .stdin(Stdio::null())
        .output()
        .expect("bootagent runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// CPU time (ms) in a `/proc/.../stat` file so far.
fn cpu_ms(stat: &str) -> u64 {
    let stat = fs::read_to_string(stat).unwrap_or_default();
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

fn wait_socket(data: &Path) {
    assert!(
        wait_until(DEADLINE, || UnixStream::connect(data.join("control.sock"))
            .is_ok()),
        "the agent listens on control.sock"
    );
}

#[test]
fn stop_start_restart_change_the_child_and_the_server_sees_local_events() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("console-cmds");
    let data = scratch.data();
    let version = preinstall(&data, "BasicAgent", SLEEPER, None);
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 1));
    wait_socket(&data);
    let mode = fs::metadata(data.join("control.sock"))
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "owner only");

    // stop: the child goes down, the command says so, the server hears it.
    let first = starts(&version)[0];
    let out = console(&data, &["stop", "BasicAgent"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("stoped: BasicAgent"),
        "{}",
        text(&out.stdout)
    );
    assert!(!alive(first), "the child was stopped");
    assert!(
        wait_until(DEADLINE, || local_events(&server, "stopped")
            .iter()
            .any(|e| e["name"] == "BasicAgent")),
        "a stopped event with origin local: {:?}",
        events(&server)
    );
    let out = console(&data, &["stop", "BasicAgent"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stopping a stopped child is done"
    );

    // It stays stopped across a restart of BootAgent, as after a stop job.
    assert!(agent.stop().success());
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_socket(&data);
    let out = console(&data, &["status", "BasicAgent"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("stoped"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(starts(&version).len(), 1, "not started again");

    // start: a new process.
    let out = console(&data, &["start", "BasicAgent"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 2));
    let second = starts(&version)[1];
    assert!(
        line.starts_with(&format!("running: BasicAgent: (pid {second}) ")),
        "{line}"
    );
    assert!(alive(second));
    assert!(
        wait_until(DEADLINE, || !local_events(&server, "started").is_empty()),
        "a started event with origin local: {:?}",
        events(&server)
    );

    // restart: another process.
    let out = console(&data, &["restart", "BasicAgent"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(wait_until(DEADLINE, || starts(&version).len() == 3));
    let third = starts(&version)[2];
    assert!(!alive(second) && alive(third));
    assert!(text(&out.stdout).contains(&format!("(pid {third})")));
    assert!(
        wait_until(DEADLINE, || !local_events(&server, "restarted").is_empty()),
        "a restarted event with origin local: {:?}",
        events(&server)
    );
    assert!(wait_until(DEADLINE, || reported_status(
        &server,
        "BasicAgent"
    )
    .is_some_and(|s| s == "running")));

    // No such child: 3, whatever the command.
    for args in [
        &["restart", "Nobody"][..],
        &["stop", "Nobody"],
        &["start", "Nobody"],
        &["status", "Nobody"],
        &["logs", "Nobody"],
    ] {
        let out = console(&data, args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let out = console(&data, &["stop", "Nobody"]);
    assert!(text(&out.stderr).contains("no such child: Nobody"));

    // Bad usage: 2, and nothing happens to the child.
    for args in [
        &["restart"][..],
        &["frob", "BasicAgent"],
        &["stop", "BasicAgent", "extra"],
        &["stop", "../BasicAgent"],
        &["logs", "BasicAgent", "-n", "many"],
        &["restart", "BasicAgent", "-f"],
    ] {
        let out = console(&data, args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    assert_eq!(starts(&version).len(), 3);
    assert!(agent.stop().success());
}

#[test]
fn without_an_agent_commands_exit_1_and_logs_still_work() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("console-noagent");
    let data = scratch.data();
    preinstall(&data, "BasicAgent", SLEEPER, None);
    preinstall(&data, "Quiet", "exec sleep 1000", None);

    let out = console(&data, &["restart", "BasicAgent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        text(&out.stderr)
    );

    // A socket left by an agent killed with -9: still "not running", at once.
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_socket(&data);
    agent.kill9();
    assert!(data.join("control.sock").exists());
    let out = console(&data, &["stop", "BasicAgent"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not running"),
        "{}",
        text(&out.stderr)
    );

    fs::create_dir_all(data.join("logs")).expect("logs dir");
    fs::write(data.join("logs/BasicAgent.log"), "one\ntwo\nthree\n").expect("log");
    let out = console(&data, &["logs", "BasicAgent", "-n", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "two\nthree\n");
    let _ = fs::remove_file(data.join("logs/Quiet.log"));
    let out = console(&data, &["logs", "Quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty() && out.stderr.is_empty());
}

#[test]
fn a_user_other_than_root_or_the_agent_s_own_is_refused() {
    // SAFETY: geteuid has no memory effects.
    if unsafe { libc::geteuid() } != 0 {
        skip("needs root to run a client as another user");
        return;
    }
    const NOBODY: u32 = 65534;
    // Under the system's temporary directory, not the checkout (which may sit in a home
    // directory that the other user cannot enter), with a copy of the binary.
    let tmp = std::env::temp_dir().join(format!("bootagent-console-uid-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).expect("scratch");
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755)).expect("chmod");
    let scratch = Scratch { path: tmp };
    let binary = scratch.path.join("bootagent");
    fs::copy(env!("CARGO_BIN_EXE_bootagent"), &binary).expect("copy of the binary");
    fs::set_permissions(&binary, fs::Permissions::from_mode(0o755)).expect("chmod");
    let server = start_server(Some(600));
    let data = scratch.data();
    let version = preinstall(&data, "BasicAgent", SLEEPER, None);
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || starts(&version).len() == 1));
    wait_socket(&data);
    let as_nobody = || {
        std::process::Command::new(&binary)
            .args(["restart", "BasicAgent", "-D"])
            .arg(&data)
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .output()
            .expect("bootagent runs as nobody")
    };
    // The socket's mode keeps another user out...
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("permission denied"),
        "{}",
        text(&out.stderr)
    );

    // ...and when the modes let it in, the peer's credentials do.
    let mode = fs::metadata(&data).expect("dir").permissions().mode();
    fs::set_permissions(&data, fs::Permissions::from_mode(mode | 0o011)).expect("chmod");
    fs::set_permissions(data.join("control.sock"), fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let out = as_nobody();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("refused: uid {NOBODY}")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(starts(&version).len(), 1, "not restarted");
    assert!(alive(starts(&version)[0]));
    assert!(agent.stop().success());
    assert!(local_events(&server, "restarted").is_empty());
}

#[test]
fn logs_follow_sees_lines_written_after_rotations_and_ends_on_sigint() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("console-logs");
    let data = scratch.data();
    preinstall(
        &data,
        "Chatty",
        "i=0\nwhile :; do i=$((i+1)); echo \"line $i\"; sleep 0.01; done",
        None,
    );
    let _agent = Agent::start(
        &scratch,
        &["-S", &server.addr(), "-o", "child_log_bytes_max=1024"],
    );
    let log = data.join("logs/Chatty.log");
    assert!(wait_until(DEADLINE, || log.exists()));

    let mut follower = bootagent()
        .args(["logs", "Chatty", "-f", "-n", "3", "-D"])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("logs -f starts");
    let stdout = follower.stdout.take().expect("stdout");
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let reader_seen = Arc::clone(&seen);
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let n = line.trim_start_matches("line ").parse().unwrap_or(0);
            reader_seen.lock().expect("lock").push(n);
        }
    });
    // 1024-byte files hold about 110 lines: 400 lines span three rotations or more.
    let inode = |p: &Path| {
        fs::metadata(p)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let first_inode = inode(&log);
    assert!(
        wait_until(Duration::from_secs(60), || seen.lock().expect("lock").len()
            >= 400),
        "follows across rotations: saw {} lines",
        seen.lock().expect("lock").len()
    );
    assert_ne!(inode(&log), first_inode, "the log rotated meanwhile");
    let lines = seen.lock().expect("lock").clone();
    for pair in lines.windows(2) {
        assert_eq!(pair[1], pair[0] + 1, "no line lost or repeated: {lines:?}");
    }

    // SAFETY: kill(2) on our own child; no memory effects.
    unsafe { libc::kill(follower.id() as i32, libc::SIGINT) };
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Ok(Some(status)) = follower.try_wait() {
            break status;
        }
        assert!(Instant::now() < end, "logs -f ends on SIGINT");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0), "a clean end");
    let mut stderr = String::new();
    let _ = follower
        .stderr
        .take()
        .map(|mut e| e.read_to_string(&mut stderr));
    assert!(stderr.is_empty(), "{stderr}");
    reader.join().expect("reader");

    let out = console(&data, &["logs", "Chatty", "-n", "5"]);
    let tail: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| l.trim_start_matches("line ").parse().unwrap_or(0))
        .collect();
    assert_eq!(tail.len(), 5, "{tail:?}");
    assert!(tail.windows(2).all(|p| p[1] == p[0] + 1), "{tail:?}");
}

#[test]
fn a_flood_of_connections_and_a_silent_client_leave_the_agent_reporting_on_time() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("console-flood");
    let data = scratch.data();
    let version = preinstall(&data, "BasicAgent", SLEEPER, None);
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    wait_registered(&data);
    wait_socket(&data);
    let socket = data.join("control.sock");

    // A client that connects and never sends is dropped by the agent's deadline.
    let mut silent = UnixStream::connect(&socket).expect("connect");
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");

    // Connections as fast as one thread can open them, for 4 s, with some held open.
    let loop_stat = format!("/proc/{0}/task/{0}/stat", agent.pid());
    let all_stat = format!("/proc/{}/stat", agent.pid());
    let (loop_before, all_before) = (cpu_ms(&loop_stat), cpu_ms(&all_stat));
    let flooding = Instant::now();
    let flood_socket = socket.clone();
    let flood = std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut count = 0u64;
        while flooding.elapsed() < Duration::from_secs(4) {
            if let Ok(stream) = UnixStream::connect(&flood_socket) {
                count += 1;
                if held.len() < 100 {
                    held.push(stream);
                }
            }
        }
        count
    });
    let connections = flood.join().expect("flood");
    let times: Vec<Instant> = server
        .requests_to("/agent/status")
        .into_iter()
        .map(|r| r.received)
        .filter(|&t| t >= flooding)
        .collect();
    let gaps: Vec<Duration> = std::iter::once(flooding)
        .chain(times.iter().copied())
        .collect::<Vec<_>>()
        .windows(2)
        .map(|w| w[1] - w[0])
        .collect();
    eprintln!(
        "{connections} connections in 4 s; reports {gaps:?} apart; CPU of the loop thread \
         {} ms, of the whole agent {} ms",
        cpu_ms(&loop_stat) - loop_before,
        cpu_ms(&all_stat) - all_before
    );
    assert!(connections > 100, "the flood ran: {connections}");
    assert!(
        times.len() >= 3,
        "reports went on during the flood: {gaps:?}"
    );
    assert!(
        gaps.iter().all(|&gap| gap < Duration::from_millis(2500)),
        "every step (1 s) had its report: {gaps:?}"
    );

    let mut answer = String::new();
    let _ = silent.read_to_string(&mut answer);
    assert!(
        answer.starts_with("2 "),
        "the silent client is told and dropped: {answer:?}"
    );

    // Past the flood, a command goes through (the bucket refills within a second).
    let pids = starts(&version).len();
    let mut out = console(&data, &["restart", "BasicAgent"]);
    for _ in 0..20 {
        if out.status.code() == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        out = console(&data, &["restart", "BasicAgent"]);
    }
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(wait_until(DEADLINE, || starts(&version).len() > pids));
    assert!(agent.is_running());
    assert!(agent.stop().success());
}

#[test]
fn dash_t_shows_the_restart_numbers_and_children_max_and_dash_o_changes_them() {
    let scratch = Scratch::new("console-limits");
    let shown = console(
        &scratch.data(),
        &["-S", "127.0.0.1:9", "-o", "restart_grace_ms=2000", "-T"],
    );
    let out = text(&shown.stdout);
    assert!(shown.status.success(), "{out}{}", text(&shown.stderr));
    for line in [
        "restart_grace_ms = 2000  (changed)",
        "restart_window_ms = 900000",
        "restart_delay_ms = 10000",
        "restart_delay_max_ms = 180000",
        "restart_failures_max = 3",
        "restart_start_gap_min_ms = 1000",
        "children_max = 256",
        "unpack_path_bytes_max = 4096",
        "child_log_pipe_bytes = 1048576",
    ] {
        assert!(out.lines().any(|l| l.trim() == line), "{line:?} in:\n{out}");
    }
    let refused = console(
        &scratch.data(),
        &["-S", "127.0.0.1:9", "-o", "children_max=1000", "-T"],
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("children_max"),
        "{}",
        text(&refused.stderr)
    );
}
