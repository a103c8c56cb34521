//! End to end with the real binary over TLS (feature `tls`): a fleet CA given
//! with `-C`, refusals named in the log, mutual TLS, and a clock that is wrong
//! at first. Run with `cargo test --features tls --test tls_e2e`.
#![cfg(feature = "tls")]

mod common;
#[path = "common/tls_server.rs"]
mod tls_server;

use common::*;
use std::path::Path;
use std::time::Duration;
use tls_server::{TestPki, TlsServer};

fn registered(server: &TlsServer) -> bool {
    server
        .requests()
        .iter()
        .any(|r| r.path == "/agent/register")
}

fn reported(server: &TlsServer) -> bool {
    server.requests().iter().any(|r| r.path == "/agent/status")
}

fn https(server: &TlsServer) -> String {
    format!("https://127.0.0.1:{}", server.addr.port())
}

/// Starts the agent against `server`, with `-C CA` when `ca` is given.
fn start(scratch: &Scratch, server: &TlsServer, ca: Option<&Path>) -> Agent {
    let address = https(server);
    let ca = ca.map(|p| p.display().to_string());
    let mut args = vec!["-S", address.as_str()];
    if let Some(ca) = &ca {
        args.extend_from_slice(&["-C", ca]);
    }
    Agent::start(scratch, &args)
}

#[test]
fn connects_with_the_fleet_ca_given_by_c_and_keeps_it_across_a_restart() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let scratch = Scratch::new("tls-ca");
    let mut agent = start(&scratch, &server, Some(&pki.ca_file));
    assert!(
        wait_until(DEADLINE, || registered(&server) && reported(&server)),
        "{}",
        agent.log_text()
    );
    agent.stop();
    assert!(
        read_meta(&scratch.data())["ca_file"].as_str().is_some(),
        "-C is persisted"
    );
    let before = server.requests().len();
    let mut agent = Agent::start(&scratch, &[]);
    assert!(
        wait_until(DEADLINE, || server.requests().len() > before),
        "the persisted CA is used"
    );
    agent.stop();
}

#[test]
fn without_the_ca_the_certificate_is_refused_and_named_and_nothing_is_sent() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let scratch = Scratch::new("tls-noca");
    let mut agent = start(&scratch, &server, None);
    assert!(
        wait_until(DEADLINE, || agent.log_text().contains("unknown issuer")),
        "the log names the problem:\n{}",
        agent.log_text()
    );
    assert!(
        server.requests().is_empty(),
        "no request over an untrusted connection"
    );
    assert!(agent.is_running(), "keeps trying");
    agent.stop();
}

#[test]
fn an_expired_certificate_is_refused_and_named() {
    let pki = TestPki::new();
    let server = TlsServer::start_with(&pki.expired_cert, &pki.expired_key, None);
    let scratch = Scratch::new("tls-expired");
    let mut agent = start(&scratch, &server, Some(&pki.ca_file));
    assert!(
        wait_until(DEADLINE, || agent.log_text().contains("expired")),
        "{}",
        agent.log_text()
    );
    assert!(server.requests().is_empty());
    agent.stop();
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, true);
    let scratch = Scratch::new("tls-mtls");
    let address = https(&server);
    let (ca, cert, key) = (
        pki.ca_file.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let mut agent = Agent::start(
        &scratch,
        &[
            "-S",
            &address,
            "-C",
            &ca,
            "--client-cert",
            &cert,
            "--client-key",
            &key,
        ],
    );
    assert!(
        wait_until(DEADLINE, || reported(&server)),
        "{}",
        agent.log_text()
    );
    assert!(
        server.requests().iter().all(|r| r.client_cert),
        "every request showed the certificate"
    );
    agent.stop();

    let refused = Scratch::new("tls-mtls-none");
    let mut agent = Agent::start(&refused, &["-S", &address, "-C", &ca]);
    assert!(
        wait_until(DEADLINE, || agent
            .log_text()
            .contains("client certificate refused")
            || agent.log_text().contains("TLS")),
        "{}",
        agent.log_text()
    );
    agent.stop();
}

#[test]
fn a_clock_that_is_wrong_at_first_connects_once_it_is_right_without_a_restart() {
    // The device's clock is behind the certificate's start ("not yet valid"), as
    // a board that boots at 1970 is; when the time is right, it connects. Moving
    // the server to a certificate valid now stands in for NTP setting the clock.
    let pki = TestPki::new();
    let server = TlsServer::start_with(&pki.future_cert, &pki.future_key, None);
    let scratch = Scratch::new("tls-clock");
    let mut agent = start(&scratch, &server, Some(&pki.ca_file));
    assert!(
        wait_until(DEADLINE, || agent.log_text().contains("not yet valid")),
        "{}",
        agent.log_text()
    );
    let pid = agent.pid();
    server.use_certificate(&pki.server_cert, &pki.server_key);
    assert!(
        wait_until(Duration::from_secs(40), || registered(&server)),
        "connects with the backoff's next try:\n{}",
        agent.log_text()
    );
    assert_eq!(agent.pid(), pid, "no restart");
    agent.stop();
}
