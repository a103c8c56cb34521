//! TLS against a real HTTPS server on loopback whose certificates come from a CA made
//! in the test: trust through a CA file, the named certificate failures, mutual TLS,
//! no fall-back to plain HTTP, and `load`'s errors. Run with
//! `cargo test --features tls --test tls`.

#![cfg(feature = "tls")]

#[path = "common/tls_server.rs"]
mod tls_server;

use bootagent::tls::{self, certificate_problem, TlsFiles};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tls_server::{TestPki, TlsServer};

/// An agent configured as the HTTP thread's, with `files` for TLS.
fn agent(files: &TlsFiles) -> ureq::Agent {
    agent_with_baked(files, &[])
}

/// An agent with `files` and a compiled-in CA bundle.
fn agent_with_baked(files: &TlsFiles, baked_ca_pem: &[u8]) -> ureq::Agent {
    let loaded = tls::load_with_baked(files, baked_ca_pem).expect("TLS files load");
    let config = ureq::Agent::config_builder()
        .tls_config(tls::ureq_config(&loaded))
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_idle_connections(0)
        .proxy(None)
        .build();
    ureq::Agent::new_with_config(config)
}

/// POSTs a JSON body and returns the status and the answer.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<(u16, String), ureq::Error> {
    let mut response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header("Connection", "close")
        .send(body)?;
    let status = response.status().as_u16();
    Ok((status, response.body_mut().read_to_string()?))
}

fn ca(pki: &TestPki) -> TlsFiles {
    TlsFiles {
        ca_file: Some(pki.ca_file.clone()),
        ..TlsFiles::default()
    }
}

fn with_client(pki: &TestPki, cert: &Path, key: &Path) -> TlsFiles {
    TlsFiles {
        client_cert: Some(cert.to_path_buf()),
        client_key: Some(key.to_path_buf()),
        ..ca(pki)
    }
}

/// The exchange fails, nothing reaches the server, and the failure has this name.
fn assert_refused(server: &TlsServer, files: &TlsFiles, problem: &str) {
    let err = post(&agent(files), &server.url("/agent/register"), "{}")
        .expect_err("the exchange must fail");
    assert_eq!(certificate_problem(&err), Some(problem), "error: {err:?}");
    assert!(server.requests().is_empty(), "a request got through");
}

#[test]
fn connects_with_the_ca_file() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let agent = agent(&ca(&pki));
    let body = r#"{"agentsn":"x"}"#;
    let answer = post(&agent, &server.url("/agent/register"), body).expect("register");
    assert_eq!(answer, (200, r#"{"status":0,"step":1}"#.to_string()));
    let answer = post(&agent, &server.url("/agent/status"), "{}").expect("status");
    assert_eq!(answer, (200, r#"{"status":0,"jobs":[]}"#.to_string()));
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/agent/register");
    assert_eq!(requests[0].body, body.as_bytes());
    assert!(!requests[0].client_cert);
}

#[test]
fn connects_by_host_name_with_the_ca_file() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let url = format!("https://localhost:{}/agent/status", server.addr.port());
    assert_eq!(post(&agent(&ca(&pki)), &url, "{}").expect("status").0, 200);
}

#[test]
fn refuses_the_fleet_ca_without_the_ca_file_as_unknown_issuer() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    assert_refused(&server, &TlsFiles::default(), "unknown issuer");
}

#[test]
fn a_ca_file_replaces_the_public_roots() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let files = TlsFiles {
        ca_file: Some(pki.other_ca_file.clone()),
        ..TlsFiles::default()
    };
    assert_refused(&server, &files, "unknown issuer");
}

#[test]
fn connects_with_the_compiled_in_ca_bundle() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let baked = std::fs::read(&pki.ca_file).expect("CA PEM");
    let agent = agent_with_baked(&TlsFiles::default(), &baked);
    assert_eq!(
        post(&agent, &server.url("/agent/status"), "{}")
            .expect("status")
            .0,
        200
    );
}

#[test]
fn a_ca_file_takes_precedence_over_the_compiled_in_bundle() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, false);
    let baked = std::fs::read(&pki.ca_file).expect("CA PEM");
    let files = TlsFiles {
        ca_file: Some(pki.other_ca_file.clone()),
        ..TlsFiles::default()
    };
    let err = post(
        &agent_with_baked(&files, &baked),
        &server.url("/agent/status"),
        "{}",
    )
    .expect_err("the other CA only");
    assert_eq!(certificate_problem(&err), Some("unknown issuer"));
}

#[test]
fn refuses_an_expired_certificate() {
    let pki = TestPki::new();
    let server = TlsServer::start_with(&pki.expired_cert, &pki.expired_key, None);
    assert_refused(&server, &ca(&pki), "expired");
}

#[test]
fn refuses_a_certificate_not_yet_valid() {
    let pki = TestPki::new();
    let server = TlsServer::start_with(&pki.future_cert, &pki.future_key, None);
    assert_refused(&server, &ca(&pki), "not yet valid");
}

#[test]
fn refuses_a_certificate_for_another_name() {
    let pki = TestPki::new();
    let server = TlsServer::start_with(&pki.wrong_name_cert, &pki.wrong_name_key, None);
    assert_refused(&server, &ca(&pki), "wrong host name");
}

/// The 1970 clock seen from the server's side: the same agent, refused while the
/// certificate is not yet valid for its clock, connects once it is, with nothing reset.
#[test]
fn the_same_agent_connects_once_the_certificate_is_valid() {
    let pki = TestPki::new();
    let server = TlsServer::start_with(&pki.future_cert, &pki.future_key, None);
    let agent = agent(&ca(&pki));
    let err = post(&agent, &server.url("/agent/register"), "{}").expect_err("not yet valid");
    assert_eq!(certificate_problem(&err), Some("not yet valid"));
    server.use_certificate(&pki.server_cert, &pki.server_key);
    let answer = post(&agent, &server.url("/agent/register"), "{}").expect("register");
    assert_eq!(answer.0, 200);
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, true);
    let files = with_client(&pki, &pki.client_cert, &pki.client_key);
    let answer = post(&agent(&files), &server.url("/agent/register"), "{}").expect("register");
    assert_eq!(answer.0, 200);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert!(requests[0].client_cert);
}

#[test]
fn mutual_tls_refuses_a_client_without_a_certificate() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, true);
    assert_refused(&server, &ca(&pki), "client certificate refused");
    // The server's side of the failed handshake is recorded by its own thread,
    // possibly just after the client saw the alert: wait for it, with a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while server.handshake_errors().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(server.handshake_errors().len(), 1);
}

#[test]
fn mutual_tls_refuses_a_client_certificate_from_another_ca() {
    let pki = TestPki::new();
    let server = TlsServer::start(&pki, true);
    let files = with_client(&pki, &pki.stranger_cert, &pki.stranger_key);
    assert_refused(&server, &files, "client certificate refused");
}

/// A server that answers in plain HTTP on an `https://` address is an error, never an
/// exchange in the clear.
#[test]
fn never_falls_back_to_plain_http() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let port = listener.local_addr().expect("address").port();
    let plain = std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().expect("accept");
        tcp.set_read_timeout(Some(Duration::from_secs(5))).ok();
        let mut hello = [0u8; 512];
        let n = tcp.read(&mut hello).unwrap_or(0);
        let answer = "HTTP/1.1 200 OK\r\nContent-Length: 21\r\nConnection: close\r\n\r\n";
        let _ = tcp.write_all(format!("{answer}{{\"status\":0,\"step\":1}}").as_bytes());
        hello[..n].to_vec()
    });
    let url = format!("https://127.0.0.1:{port}/agent/register");
    let err = post(&agent(&TlsFiles::default()), &url, "{}").expect_err("plain HTTP answer");
    let hello = plain.join().expect("plain server");
    assert_eq!(hello.first(), Some(&0x16), "the client spoke TLS first"); // handshake record
    assert_eq!(certificate_problem(&err), None, "error: {err:?}");
}

#[test]
fn other_failures_are_not_certificate_problems() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!(
        "https://{}/agent/status",
        listener.local_addr().expect("address")
    );
    drop(listener); // connection refused from now on
    let err = post(&agent(&TlsFiles::default()), &url, "{}").expect_err("refused");
    assert_eq!(certificate_problem(&err), None, "error: {err:?}");
}

/// `load`'s error for `files`: one line that names `file`.
fn load_error(files: &TlsFiles, file: &Path) -> String {
    let err = tls::load(files).expect_err("load must fail");
    assert!(!err.contains('\n'), "one line: {err}");
    assert!(
        err.contains(&file.display().to_string()),
        "names the file: {err}"
    );
    err
}

#[test]
fn load_names_the_file_that_is_wrong() {
    let pki = TestPki::new();
    let file = |name: &str, text: &str| -> PathBuf {
        let path = pki.dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let ca_at = |path: &Path| TlsFiles {
        ca_file: Some(path.to_path_buf()),
        ..TlsFiles::default()
    };

    let missing = pki.dir.join("missing.pem");
    assert!(load_error(&ca_at(&missing), &missing).starts_with("CA file "));

    let empty = file("empty.pem", "not a certificate\n");
    assert!(load_error(&ca_at(&empty), &empty).contains("no usable PEM certificate"));

    let junk = file(
        "junk.pem",
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    assert!(load_error(&ca_at(&junk), &junk).contains("no usable"));

    let with_key = file(
        "with-key.pem",
        &(std::fs::read_to_string(&pki.ca_file).expect("read")
            + &std::fs::read_to_string(&pki.server_key).expect("read")),
    );
    assert!(load_error(&ca_at(&with_key), &with_key).contains("private key"));

    let huge = file("huge.pem", &"#".repeat(tls::CA_FILE_BYTES_MAX as usize + 1));
    assert!(load_error(&ca_at(&huge), &huge).contains("over"));

    let cert_only = TlsFiles {
        client_cert: Some(pki.client_cert.clone()),
        ..TlsFiles::default()
    };
    assert!(load_error(&cert_only, &pki.client_cert).contains("no client key"));

    let key_only = TlsFiles {
        client_key: Some(pki.client_key.clone()),
        ..TlsFiles::default()
    };
    assert!(load_error(&key_only, &pki.client_key).contains("no client certificate"));

    let no_cert = with_client(&pki, &pki.client_key, &pki.client_key);
    assert!(load_error(&no_cert, &pki.client_key).contains("no PEM certificate"));

    let no_key = with_client(&pki, &pki.client_cert, &pki.client_cert);
    assert!(load_error(&no_key, &pki.client_cert).contains("no unencrypted PEM private key"));

    let mismatch = with_client(&pki, &pki.client_cert, &pki.stranger_key);
    let err = load_error(&mismatch, &pki.stranger_key);
    assert!(err.contains("does not match"), "{err}");
}

#[test]
fn load_summarises_what_it_read() {
    let pki = TestPki::new();
    assert_eq!(tls::load(&TlsFiles::default()).expect("load").summary, "");
    let files = with_client(&pki, &pki.client_cert, &pki.client_key);
    let summary = tls::load(&files).expect("load").summary;
    let expected = format!(
        "CA file {} (1 certificate), client certificate {}",
        pki.ca_file.display(),
        pki.client_cert.display()
    );
    assert_eq!(summary, expected);
    let baked = std::fs::read(&pki.ca_file).expect("CA PEM");
    let loaded = tls::load_with_baked(&TlsFiles::default(), &baked).expect("load");
    assert_eq!(loaded.summary, "compiled-in CA bundle (1 certificate)");
    let err = tls::load_with_baked(&TlsFiles::default(), b"junk").expect_err("no certificate");
    assert_eq!(
        err,
        "compiled-in CA bundle: no usable PEM certificate in it"
    );
}
