//! End to end: `fatal` survives a restart of BootAgent within the same boot of the
//! host, and a reboot (another `boot_id`) gives the child a fresh start
//! (docs/protocol.md section 6).

mod common;

use common::host::{sha256, tgz, Host};
use common::*;
use serde_json::json;
use std::fs;
use std::path::Path;

/// Records each start in `$MARK`, then fails at once.
const CRASHER: &[u8] = b"#!/bin/sh\necho start >> \"$MARK\"\nexit 1\n";

fn starts(mark: &Path) -> usize {
    fs::read_to_string(mark).unwrap_or_default().lines().count()
}

fn reports(host: &Host) -> u64 {
    host.server.agent(&host.sn).map_or(0, |a| a.reports)
}

/// Stops the agent (`SIGTERM`), then starts it again on the same data directory
/// and waits for two more reports; `between` runs while it is stopped.
fn restart_agent(host: &mut Host, between: impl FnOnce(&Host)) {
    assert!(host.agent.is_running(), "log:\n{}", host.agent.log_text());
    assert_eq!(host.agent.stop().code(), Some(0));
    between(host);
    let before = reports(host);
    let addr = host.server.addr();
    host.agent = Agent::start(&host.scratch, &["-S", addr.as_str()]);
    assert!(
        wait_until(DEADLINE, || reports(host) >= before + 2),
        "no reports after the restart; log:\n{}",
        host.agent.log_text()
    );
}

#[test]
fn fatal_survives_a_restart_in_the_same_boot_and_a_reboot_starts_afresh() {
    let mut host = Host::new("fatal-boot", &[]);
    let mark = host.scratch.path.join("crasher.starts");
    let package = tgz(
        &host.files.join("crasher-1.tgz"),
        &[("run", 0o755, CRASHER)],
    );
    host.send(json!({"id": "f1", "action": "install", "name": "crasher",
                     "url": host.url(&package), "checksum": sha256(&package),
                     "envs": {"MARK": mark.to_string_lossy()},
                     "restart": {"failures_max": 1}}));
    host.result("f1", DEADLINE);
    host.wait_status("crasher", "fatal");
    let fatal_starts = starts(&mark);
    assert!(fatal_starts >= 2, "{fatal_starts} starts before fatal");
    let meta = read_meta(&host.data());
    assert_eq!(meta["fatal"], json!(["crasher"]), "{meta}");
    assert!(meta["boot_id"].as_str().is_some_and(|id| !id.is_empty()));

    // Same boot: still fatal, not started.
    restart_agent(&mut host, |_| {});
    host.wait_status("crasher", "fatal");
    assert_eq!(
        starts(&mark),
        fatal_starts,
        "started again in the same boot; log:\n{}",
        host.agent.log_text()
    );

    // A reboot: another boot id in the metafile, as if the host had restarted.
    restart_agent(&mut host, |host| {
        let mut meta = read_meta(&host.data());
        meta["boot_id"] = json!("00000000-0000-0000-0000-000000000000");
        fs::write(
            host.data().join("meta.json"),
            serde_json::to_vec(&meta).expect("json"),
        )
        .expect("meta");
    });
    assert!(
        wait_until(DEADLINE, || starts(&mark) > fatal_starts),
        "not started after a reboot; log:\n{}",
        host.agent.log_text()
    );
    // A restart job revives it as before, and the metafile forgets it.
    host.wait_status("crasher", "fatal");
    let revived = starts(&mark);
    host.send(json!({"id": "f2", "action": "restart", "name": "crasher"}));
    host.result("f2", DEADLINE);
    assert!(wait_until(DEADLINE, || starts(&mark) > revived));
}

#[test]
fn uninstall_forgets_a_fatal_child_and_removes_every_rotated_log() {
    let host = Host::new("fatal-uninstall", &[]);
    let mark = host.scratch.path.join("crasher.starts");
    let package = tgz(
        &host.files.join("crasher-1.tgz"),
        &[("run", 0o755, CRASHER)],
    );
    host.send(json!({"id": "u1", "action": "install", "name": "crasher",
                     "url": host.url(&package), "checksum": sha256(&package),
                     "envs": {"MARK": mark.to_string_lossy()},
                     "restart": {"failures_max": 0}}));
    host.result("u1", DEADLINE);
    host.wait_status("crasher", "fatal");
    // Rotated logs as `child_log_files_max=100` leaves them, and files of others.
    let logs = host.data().join("logs");
    for n in 1..100 {
        fs::write(logs.join(format!("crasher.log.{n}")), "old\n").expect("log");
    }
    for other in ["crasher2.log", "crasher.log.x", "other.log.3"] {
        fs::write(logs.join(other), "keep\n").expect("log");
    }
    host.send(json!({"id": "u2", "action": "uninstall", "name": "crasher"}));
    assert_eq!(host.result("u2", DEADLINE)["errcode"], 0);
    let mut left: Vec<String> = fs::read_dir(&logs)
        .expect("logs")
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    left.sort();
    assert_eq!(left, ["crasher.log.x", "crasher2.log", "other.log.3"]);
    assert!(
        wait_until(DEADLINE, || read_meta(&host.data())["fatal"] == json!([])),
        "an uninstalled child is still remembered fatal"
    );
}

#[test]
fn bootagent_status_shows_the_tags_of_the_registration() {
    let host = Host::new("status-tags", &[]);
    wait_registered(&host.data());
    let output = bootagent()
        .arg("status")
        .arg("-D")
        .arg(host.data())
        .output()
        .expect("bootagent status");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("tags: {}", common::server::TAGS)),
        "{text}"
    );
}
