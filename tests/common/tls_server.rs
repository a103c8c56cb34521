//! A test PKI made with rcgen and a small HTTPS control server on loopback (rustls over
//! std `TcpListener`, one thread per connection), for the TLS tests with and without
//! the real binary. Needs the `tls` feature (rustls comes with it).

#![allow(dead_code)] // each test file uses its own subset

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Bounds one connection's socket reads and writes, and the drain before closing.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest request head read.
const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest request body read.
const BODY_BYTES_MAX: usize = 1024 * 1024;

/// PEM files in a scratch directory (removed on drop): a CA and what it signed, plus
/// a second CA that the servers do not use.
pub struct TestPki {
    pub dir: PathBuf,
    /// The fleet CA: `-C` with this file trusts the servers below.
    pub ca_file: PathBuf,
    /// For `127.0.0.1` and `localhost`, valid from 2020 to 2999.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// Valid in 2000 only.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    /// Valid from 2200 on.
    pub future_cert: PathBuf,
    pub future_key: PathBuf,
    /// For `other.invalid` only.
    pub wrong_name_cert: PathBuf,
    pub wrong_name_key: PathBuf,
    /// A client certificate signed by the fleet CA, for mutual TLS.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A CA that signed none of the servers' certificates.
    pub other_ca_file: PathBuf,
    /// A client certificate signed by the other CA, which the servers refuse.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

impl TestPki {
    pub fn new() -> TestPki {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("tls-pki-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("pki directory");
        let write = |name: &str, pem: String| {
            let path = dir.join(name);
            fs::write(&path, pem).expect("pki file");
            path
        };

        let (ca_pem, ca) = make_ca("BootAgent test fleet CA");
        let (other_ca_pem, other_ca) = make_ca("Some other CA");
        let ca_file = write("ca.pem", ca_pem);
        let other_ca_file = write("other-ca.pem", other_ca_pem);
        let local = ["127.0.0.1", "localhost"];
        let leaf = |name: &str,
                    names: &[&str],
                    from: i32,
                    to: i32,
                    client: bool,
                    by: &Issuer<'_, KeyPair>| {
            let (cert, key) = make_leaf(names, from, to, client, by);
            (
                write(&format!("{name}.pem"), cert),
                write(&format!("{name}-key.pem"), key),
            )
        };
        let (server_cert, server_key) = leaf("server", &local, 2020, 2999, false, &ca);
        let (expired_cert, expired_key) = leaf("expired", &local, 2000, 2001, false, &ca);
        let (future_cert, future_key) = leaf("future", &local, 2200, 2999, false, &ca);
        let (wrong_name_cert, wrong_name_key) =
            leaf("wrong-name", &["other.invalid"], 2020, 2999, false, &ca);
        let (client_cert, client_key) = leaf("client", &["device-1"], 2020, 2999, true, &ca);
        let (stranger_cert, stranger_key) =
            leaf("stranger", &["device-2"], 2020, 2999, true, &other_ca);
        TestPki {
            dir,
            ca_file,
            server_cert,
            server_key,
            expired_cert,
            expired_key,
            future_cert,
            future_key,
            wrong_name_cert,
            wrong_name_key,
            client_cert,
            client_key,
            other_ca_file,
            stranger_cert,
            stranger_key,
        }
    }
}

impl Drop for TestPki {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A self-signed CA: its PEM certificate and the issuer that signs leaves.
fn make_ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::new(Vec::new()).expect("CA params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(2000, 1, 1);
    params.not_after = date_time_ymd(2999, 1, 1);
    let key = KeyPair::generate().expect("CA key");
    let cert = params.self_signed(&key).expect("CA certificate");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate valid from `from` to `to` (1 January of each year): PEM
/// certificate and PEM key.
fn make_leaf(
    names: &[&str],
    from: i32,
    to: i32,
    client: bool,
    issuer: &Issuer<'_, KeyPair>,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names.clone()).expect("leaf params");
    params
        .distinguished_name
        .push(DnType::CommonName, &names[0]);
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    params.not_before = date_time_ymd(from, 1, 1);
    params.not_after = date_time_ymd(to, 1, 1);
    let key = KeyPair::generate().expect("leaf key");
    let cert = params.signed_by(&key, issuer).expect("leaf certificate");
    (cert.pem(), key.serialize_pem())
}

/// One request the server answered (or refused with 404).
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub body: Vec<u8>,
    /// Whether the client presented a certificate.
    pub client_cert: bool,
}

#[derive(Default)]
struct State {
    config: Mutex<Option<Arc<ServerConfig>>>,
    requests: Mutex<Vec<Request>>,
    files: Mutex<HashMap<String, Vec<u8>>>,
    handshake_errors: Mutex<Vec<String>>,
}

/// An HTTPS control server on 127.0.0.1: `POST /agent/register` answers
/// `{"status":0,"step":1}`, `POST /agent/status` answers `{"status":0,"jobs":[]}`,
/// `GET` serves the files added with [`TlsServer::add_file`]; anything else is 404.
/// Stops accepting on drop.
pub struct TlsServer {
    pub addr: SocketAddr,
    client_ca: Option<PathBuf>,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
}

impl TlsServer {
    /// Presents the PKI's good server certificate; asks for a client certificate
    /// signed by the PKI's CA when `require_client_cert`.
    pub fn start(pki: &TestPki, require_client_cert: bool) -> TlsServer {
        let client_ca = require_client_cert.then_some(pki.ca_file.as_path());
        TlsServer::start_with(&pki.server_cert, &pki.server_key, client_ca)
    }

    /// Presents `cert` (PEM chain) with `key`; requires a client certificate signed by
    /// `client_ca` when given.
    pub fn start_with(cert: &Path, key: &Path, client_ca: Option<&Path>) -> TlsServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local address");
        let server = TlsServer {
            addr,
            client_ca: client_ca.map(Path::to_path_buf),
            state: Arc::new(State::default()),
            stop: Arc::new(AtomicBool::new(false)),
        };
        server.use_certificate(cert, key);
        let (state, stop) = (server.state.clone(), server.stop.clone());
        thread::Builder::new()
            .name("tls-server".into())
            .spawn(move || {
                for tcp in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(tcp) = tcp else { continue };
                    let config = state.config.lock().expect("config lock").clone();
                    let (state, config) = (state.clone(), config.expect("a certificate"));
                    thread::spawn(move || serve(tcp, config, &state));
                }
            })
            .expect("accept thread");
        server
    }

    /// Presents another certificate from the next connection on (a device whose clock
    /// was set, seen from the other side).
    pub fn use_certificate(&self, cert: &Path, key: &Path) {
        let config = server_config(cert, key, self.client_ca.as_deref());
        *self.state.config.lock().expect("config lock") = Some(Arc::new(config));
    }

    /// `https://127.0.0.1:PORT` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Serves `bytes` at `GET path` (a package download).
    pub fn add_file(&self, path: &str, bytes: Vec<u8>) {
        let mut files = self.state.files.lock().expect("files lock");
        files.insert(path.to_string(), bytes);
    }

    /// The requests answered so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// Why handshakes failed, as rustls said it, oldest first.
    pub fn handshake_errors(&self) -> Vec<String> {
        self.state
            .handshake_errors
            .lock()
            .expect("errors lock")
            .clone()
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1)); // wakes accept
    }
}

fn server_config(cert: &Path, key: &Path, client_ca: Option<&Path>) -> ServerConfig {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .expect("server certificate file")
        .collect::<Result<_, _>>()
        .expect("server certificate PEM");
    let key = PrivateKeyDer::from_pem_file(key).expect("server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for der in CertificateDer::pem_file_iter(ca).expect("client CA file") {
                roots.add(der.expect("client CA PEM")).expect("client CA");
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder
        .with_single_cert(chain, key)
        .expect("server certificate and key")
}

/// One connection: handshake, one request, one answer, close.
fn serve(mut tcp: TcpStream, config: Arc<ServerConfig>, state: &State) {
    let _ = tcp.set_read_timeout(Some(IO_TIMEOUT));
    let _ = tcp.set_write_timeout(Some(IO_TIMEOUT));
    let Ok(mut conn) = ServerConnection::new(config) else {
        return;
    };
    while conn.is_handshaking() {
        if let Err(err) = conn.complete_io(&mut tcp) {
            // The alert is sent; drain so that the client reads it rather than a reset.
            let mut errors = state.handshake_errors.lock().expect("errors lock");
            errors.push(err.to_string());
            drop(errors);
            drain(&mut tcp);
            return;
        }
    }
    let client_cert = conn.peer_certificates().is_some();
    let mut stream = rustls::Stream::new(&mut conn, &mut tcp);
    let Some((method, path, body)) = read_request(&mut stream) else {
        return;
    };
    let (status, answer) = match (method.as_str(), path.as_str()) {
        ("POST", "/agent/register") => ("200 OK", br#"{"status":0,"step":1}"#.to_vec()),
        ("POST", "/agent/status") => ("200 OK", br#"{"status":0,"jobs":[]}"#.to_vec()),
        ("GET", _) => match state.files.lock().expect("files lock").get(&path) {
            Some(bytes) => ("200 OK", bytes.clone()),
            None => ("404 Not Found", Vec::new()),
        },
        _ => ("404 Not Found", Vec::new()),
    };
    state.requests.lock().expect("requests lock").push(Request {
        method,
        path,
        body,
        client_cert,
    });
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        answer.len()
    );
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(&answer);
    let _ = stream.flush();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut tcp);
    drain(&mut tcp);
}

/// Method, path and body of one request: the head up to the blank line, then
/// `Content-Length` bytes.
fn read_request(stream: &mut impl Read) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > HEAD_BYTES_MAX {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next()?.to_string();
    let path = words.next()?.to_string();
    let length = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if length > BODY_BYTES_MAX {
        return None;
    }
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some((method, path, body))
}

/// Half-closes and reads until the client closes (bounded), so that closing never
/// resets the connection under data the client has yet to read.
fn drain(tcp: &mut TcpStream) {
    let _ = tcp.shutdown(Shutdown::Write);
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut sink = [0u8; 4096];
    while Instant::now() < deadline {
        match tcp.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}
