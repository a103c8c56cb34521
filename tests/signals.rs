//! End to end: signals (docs/protocol.md section 6). The asynchronous signals whose
//! default would end BootAgent are ignored, and children start with every signal at
//! its default disposition and an empty mask, whatever BootAgent ignores.

mod common;

use common::host::{sha256, tgz, Host};
use common::*;
use serde_json::json;
use std::fs;

/// Writes its pid into `$MARK`, then becomes `sleep`.
const CHILD: &[u8] = b"#!/bin/sh\necho $$ > \"$MARK\"\nexec sleep 1000\n";

/// A field of `/proc/PID/status` (`SigIgn`, `SigBlk`, …).
fn status_field(pid: i32, field: &str) -> String {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
        .unwrap_or_default()
}

fn send_signal(pid: i32, signal: libc::c_int) {
    // SAFETY: kill(2) on a pid of this test; no memory effects.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "kill {signal}");
}

#[test]
fn async_signals_are_ignored_and_children_start_with_default_signals() {
    let host = Host::new("signals", &[]);
    let mark = host.scratch.path.join("child.pid");
    let package = tgz(&host.files.join("sig-1.tgz"), &[("run", 0o755, CHILD)]);
    host.send(json!({"id": "s1", "action": "install", "name": "sig",
                     "url": host.url(&package), "checksum": sha256(&package),
                     "envs": {"MARK": mark.to_string_lossy()}}));
    assert_eq!(host.result("s1", DEADLINE)["errcode"], 0);
    host.wait_status("sig", "running");
    let mut child = 0;
    assert!(wait_until(DEADLINE, || {
        child = fs::read_to_string(&mark)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        child > 0 && status_field(child, "Name") == "sleep"
    }));

    // The agent itself ignores them (a set bit per ignored signal).
    let agent_ignored = u64::from_str_radix(&status_field(host.agent.pid(), "SigIgn"), 16)
        .expect("SigIgn of the agent");
    for signal in [libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM, libc::SIGPWR] {
        assert_ne!(agent_ignored & (1 << (signal - 1)), 0, "signal {signal}");
    }
    // The child ignores and blocks nothing.
    assert_eq!(status_field(child, "SigIgn"), "0000000000000000");
    assert_eq!(status_field(child, "SigBlk"), "0000000000000000");

    let reports = host.server.agent(&host.sn).map_or(0, |a| a.reports);
    for signal in [
        libc::SIGUSR1,
        libc::SIGUSR2,
        libc::SIGALRM,
        libc::SIGVTALRM,
        libc::SIGPROF,
        libc::SIGIO,
        libc::SIGPWR,
        libc::SIGPIPE,
        libc::SIGWINCH,
        libc::SIGURG,
    ] {
        send_signal(host.agent.pid(), signal);
    }
    // Still reporting, and the child still the same process.
    assert!(
        host.server.wait_for(DEADLINE, |server| server
            .agent(&host.sn)
            .is_some_and(|a| a.reports >= reports + 2)),
        "no more reports after the signals; log:\n{}",
        host.agent.log_text()
    );
    let mut agent = host.agent;
    assert!(agent.is_running(), "the agent died of a signal");
    assert_eq!(status_field(child, "Name"), "sleep");
    assert_eq!(agent.stop().code(), Some(0));
}
