//! End to end: credentials and signed requests (docs/protocol.md section 4), file
//! modes, and a data directory others may write to.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const STATUS: &str = "/agent/status";
const REGISTER: &str = "/agent/register";
const SECRET: &str = "s3cret-never-logged";

fn signed_server() -> RefServer {
    let server = start_server(Some(1));
    server.set_credentials(Some(("ak-1".to_string(), SECRET.to_string())));
    server
}

fn answered(server: &RefServer, path: &str, status: u16) -> usize {
    server
        .requests_to(path)
        .iter()
        .filter(|r| r.status == status)
        .count()
}

#[test]
fn credentials_are_persisted_0600_every_request_is_signed_and_the_secret_never_logged() {
    let server = signed_server();
    let scratch = Scratch::new("sec-signed");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr(), "-vv"]);
    assert!(
        wait_until(DEADLINE, || answered(&server, STATUS, 200) >= 3),
        "signed reports are accepted: {:?}",
        server
            .requests_to(STATUS)
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>()
    );
    for request in server.requests_to(STATUS) {
        assert_eq!(request.boot_key.as_deref(), Some("ak-1"));
        let ts: i64 = request
            .boot_timestamp
            .as_deref()
            .and_then(|t| t.parse().ok())
            .expect("timestamp");
        let expected = server::sign(SECRET.as_bytes(), ts, STATUS, &request.body);
        assert_eq!(request.boot_signature.as_deref(), Some(expected.as_str()));
    }
    let meta = read_meta(&scratch.data());
    assert_eq!(meta["key"], "ak-1");
    assert_eq!(meta["secret"], SECRET);
    let mode = |p: &std::path::Path| {
        fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    assert_eq!(
        mode(&scratch.data().join("meta.json")),
        0o600,
        "metafile 0600"
    );
    assert_eq!(mode(&scratch.data()), 0o700, "data directory 0700");
    agent.stop();
    let log = agent.log_text();
    assert!(
        log.contains("[DEBUG]") || log.contains("[TRACE]"),
        "ran at debug level"
    );
    assert!(!log.contains(SECRET), "the secret is never logged");
}

#[test]
fn the_reference_server_rejects_a_tampered_body_a_wrong_secret_and_a_stale_timestamp() {
    let server = signed_server();
    let scratch = Scratch::new("sec-tamper");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || answered(&server, STATUS, 200) >= 1));
    agent.stop();
    let good = server
        .requests_to(STATUS)
        .into_iter()
        .find(|r| r.status == 200)
        .expect("a report");
    let ts: i64 = good
        .boot_timestamp
        .as_deref()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let post = |body: &[u8], ts: i64, secret: &str| -> u16 {
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build(),
        );
        agent
            .post(format!("{}{STATUS}", server.url()))
            .header("Content-Type", "application/json")
            .header("X-Boot-Key", "ak-1")
            .header("X-Boot-Timestamp", ts.to_string())
            .header(
                "X-Boot-Signature",
                server::sign(secret.as_bytes(), ts, STATUS, body),
            )
            .send(body)
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    };
    assert_eq!(
        post(&good.body, now, SECRET),
        200,
        "a fresh, correct signature passes"
    );
    let mut tampered = good.body.clone();
    let signed = server::sign(SECRET.as_bytes(), now, STATUS, &good.body);
    tampered.extend_from_slice(b" ");
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let status = agent
        .post(format!("{}{STATUS}", server.url()))
        .header("X-Boot-Key", "ak-1")
        .header("X-Boot-Timestamp", now.to_string())
        .header("X-Boot-Signature", signed)
        .send(&tampered[..])
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(status, 401, "a tampered body is rejected");
    assert_eq!(
        post(&good.body, now, "wrong"),
        401,
        "a wrong secret is rejected"
    );
    assert_eq!(
        post(&good.body, ts - 3600, SECRET),
        401,
        "a stale timestamp is rejected"
    );
}

#[test]
fn new_credentials_on_the_server_and_a_401_storm_the_agent_registers_again_and_recovers() {
    let server = signed_server();
    let scratch = Scratch::new("sec-rotate");
    let mut agent = Agent::start(&scratch, &["-S", &server.addr()]);
    assert!(wait_until(DEADLINE, || answered(&server, STATUS, 200) >= 1));
    let sn = read_meta(&scratch.data())["agentsn"].clone();

    // The server rotates the credentials: the old key is refused, the agent
    // registers again (keeping its SN) and signs with the new ones.
    server.set_credentials(Some(("ak-2".to_string(), "new-secret".to_string())));
    assert!(
        wait_until(DEADLINE, || server
            .requests_to(STATUS)
            .iter()
            .any(|r| r.status == 200 && r.boot_key.as_deref() == Some("ak-2"))),
        "reports signed with the new key are accepted"
    );
    assert_eq!(read_meta(&scratch.data())["key"], "ak-2");
    assert_eq!(read_meta(&scratch.data())["agentsn"], sn, "same identity");

    // A storm of 401 answers: the agent keeps registering, with backoff, and
    // reports again once it passes; no restart of either side.
    let registers = server.requests_to(REGISTER).len();
    server.push_faults(Fault::Status(401), 12);
    let ok_before = answered(&server, STATUS, 200);
    assert!(
        wait_until(Duration::from_secs(60), || answered(&server, STATUS, 200)
            > ok_before),
        "recovers after the storm"
    );
    assert!(
        server.requests_to(REGISTER).len() > registers,
        "registered again"
    );
    assert!(agent.is_running());
    agent.stop();
}

#[test]
fn a_data_directory_writable_by_others_is_refused() {
    let server = start_server(Some(600));
    let scratch = Scratch::new("sec-mode");
    fs::create_dir_all(scratch.data()).expect("data dir");
    fs::set_permissions(scratch.data(), fs::Permissions::from_mode(0o777)).expect("chmod");
    let out = bootagent()
        .arg("-S")
        .arg(server.addr())
        .arg("-D")
        .arg(scratch.data())
        .output()
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("writable by its group or others"), "{err}");
    assert!(
        !scratch.data().join("meta.json").exists(),
        "nothing written"
    );
    assert!(server.requests().is_empty());
    let out = bootagent()
        .arg("-T")
        .arg("-D")
        .arg(scratch.data())
        .arg("-S")
        .arg("a:1")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("writable by its group or others"));
}
