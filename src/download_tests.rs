//! Downloads against real servers on 127.0.0.1: a small HTTP server written here,
//! pyftpdlib for FTP, scripted hostile servers, and local files.

use super::*;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread;

/// Deadline for a test server to come up or a test to see its effect.
const WAIT_MS: u64 = 10_000;
/// A stall short enough for tests.
const STALL_TEST_MS: u64 = 500;

// ---------------------------------------------------------------- helpers

/// A fresh directory, removed with its content on drop.
struct TestDir(PathBuf);

impl TestDir {
    fn new(name: &str) -> TestDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "bootagent-download-{}-{seq}-{name}",
            std::process::id()
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        TestDir(path)
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    fn assert_empty(&self) {
        assert_eq!(self.names(), Vec::<String>::new(), "leftover files");
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Deterministic content of `len` bytes, generated in pieces (never whole for big ones).
fn pattern(offset: u64, buf: &mut [u8]) {
    for (i, byte) in buf.iter_mut().enumerate() {
        let at = offset + i as u64;
        *byte = (at.wrapping_mul(31) ^ (at >> 9)) as u8;
    }
}

fn content(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    pattern(0, &mut buf);
    buf
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn limits() -> DownloadLimits {
    DownloadLimits {
        stall_ms: STALL_TEST_MS * 4,
        connect_timeout_ms: WAIT_MS,
        free_bytes_min: 0,
        ..DownloadLimits::default()
    }
}

fn get(url: &str, dir: &TestDir, limits: &DownloadLimits) -> Result<Downloaded, DownloadError> {
    download(url, &dir.0, limits, &AtomicBool::new(false))
}

fn failed(url: &str, dir: &TestDir, limits: &DownloadLimits) -> DownloadError {
    let err = match get(url, dir, limits) {
        Ok(done) => panic!("{url} downloaded {} bytes, expected a failure", done.bytes),
        Err(err) => err,
    };
    dir.assert_empty();
    let line = err.to_string();
    assert!(!line.contains('\n'), "one line: {line}");
    err
}

fn assert_downloaded(done: &Downloaded, dir: &TestDir, expected: &[u8]) {
    assert_eq!(done.bytes, expected.len() as u64);
    assert_eq!(done.sha256, sha(expected));
    assert!(done.path.starts_with(&dir.0));
    assert_eq!(fs::read(&done.path).unwrap(), expected);
    let mode = fs::metadata(&done.path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

/// A port nothing listens on (just released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------- http server

type Handler = dyn Fn(&str, &mut TcpStream) + Send + Sync;

/// A loopback HTTP server: each connection's request path goes to `handler`, which
/// writes the whole answer.
fn http_server(handler: impl Fn(&str, &mut TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handler: Arc<Handler> = Arc::new(handler);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let handler = Arc::clone(&handler);
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(WAIT_MS)));
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let path = head.split(' ').nth(1).unwrap_or("/").to_string();
                handler(&path, &mut stream);
            });
        }
    });
    port
}

/// Waits until the client closes (or `WAIT_MS`), so a handler can hold a connection.
fn hold(stream: &mut TcpStream) {
    let mut sink = [0u8; 256];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            return;
        }
    }
}

const SMALL_BYTES: usize = 100_000;

fn standard_server() -> u16 {
    http_server(|path, stream| {
        let small = content(SMALL_BYTES);
        let head = |status: &str, extra: &str| format!("HTTP/1.1 {status}\r\n{extra}\r\n");
        let _ = match path {
            "/p.tgz" => {
                let head = head("200 OK", &format!("Content-Length: {SMALL_BYTES}\r\n"));
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&small))
            }
            "/moved" => stream.write_all(
                head("302 Found", "Location: /p.tgz\r\nContent-Length: 0\r\n").as_bytes(),
            ),
            "/loop" => stream.write_all(
                head("302 Found", "Location: /loop\r\nContent-Length: 0\r\n").as_bytes(),
            ),
            "/stall" => {
                let _ = stream.write_all(head("200 OK", "Content-Length: 1000\r\n").as_bytes());
                hold(stream);
                Ok(())
            }
            "/truncated" => {
                let head = head("200 OK", "Content-Length: 5000\r\n");
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&small[..1000]))
            }
            "/unannounced" => {
                // No Content-Length: the body ends when the connection closes.
                let head = head("200 OK", "Connection: close\r\n");
                stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(&small))
            }
            "/endless-headers" => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n");
                let mut sent = 0;
                while sent < 16 * 1024 * 1024 {
                    if stream
                        .write_all(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaa\r\n")
                        .is_err()
                    {
                        break;
                    }
                    sent += 1;
                }
                Ok(())
            }
            "/huge-header" => {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Filler: ");
                let mut sent = 0;
                while sent < 16 * 1024 && stream.write_all(&[b'a'; 1024]).is_ok() {
                    sent += 1;
                }
                Ok(())
            }
            "/trickle" => {
                let _ = stream.write_all(head("200 OK", "Connection: close\r\n").as_bytes());
                let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
                while Instant::now() < deadline && stream.write_all(&small[..100]).is_ok() {
                    thread::sleep(Duration::from_millis(20));
                }
                Ok(())
            }
            _ => stream.write_all(head("404 Not Found", "Content-Length: 0\r\n").as_bytes()),
        };
    })
}

// ---------------------------------------------------------------- http

#[test]
fn http_file_is_downloaded_with_size_and_sha256() {
    let port = standard_server();
    let dir = TestDir::new("http-file");
    let done = get(&format!("http://127.0.0.1:{port}/p.tgz"), &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &content(SMALL_BYTES));
    let name = done
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX),
        "{name}"
    );
}

#[test]
fn http_redirect_is_followed() {
    let port = standard_server();
    let dir = TestDir::new("http-redirect");
    let done = get(&format!("http://127.0.0.1:{port}/moved"), &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &content(SMALL_BYTES));
}

#[test]
fn http_redirect_loop_is_bounded() {
    let port = standard_server();
    let dir = TestDir::new("http-loop");
    let err = failed(&format!("http://127.0.0.1:{port}/loop"), &dir, &limits());
    assert_eq!(err.errcode(), 2);
    assert!(err.to_string().contains("redirects"), "{err}");
}

#[test]
fn http_body_without_length_is_read_to_the_end() {
    let port = standard_server();
    let dir = TestDir::new("http-unannounced");
    let url = format!("http://127.0.0.1:{port}/unannounced");
    let done = get(&url, &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &content(SMALL_BYTES));
}

#[test]
fn http_404_names_the_status_and_url() {
    let port = standard_server();
    let dir = TestDir::new("http-404");
    let url = format!("http://127.0.0.1:{port}/missing.tgz");
    let err = failed(&url, &dir, &limits());
    assert_eq!(err.errcode(), 2);
    assert_eq!(err.to_string(), format!("HTTP 404 for {url}"));
}

#[test]
fn http_stall_after_headers_is_aborted() {
    let port = standard_server();
    let dir = TestDir::new("http-stall");
    let limits = DownloadLimits {
        stall_ms: STALL_TEST_MS,
        ..limits()
    };
    let url = format!("http://127.0.0.1:{port}/stall");
    let start = Instant::now();
    let err = failed(&url, &dir, &limits);
    let elapsed = start.elapsed();
    assert_eq!(
        err.to_string(),
        format!("stalled for 500 ms downloading {url}")
    );
    assert_eq!(err.errcode(), 2);
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

#[test]
fn http_truncated_body_is_detected() {
    let port = standard_server();
    let dir = TestDir::new("http-truncated");
    let url = format!("http://127.0.0.1:{port}/truncated");
    let err = failed(&url, &dir, &limits());
    assert_eq!(
        err.to_string(),
        format!("truncated: got 1000 of 5000 bytes from {url}")
    );
    assert_eq!(err.errcode(), 2);
}

#[test]
fn http_announced_body_over_bytes_max_is_refused() {
    let port = standard_server();
    let dir = TestDir::new("http-announced-large");
    let limits = DownloadLimits {
        bytes_max: 4096,
        ..limits()
    };
    let url = format!("http://127.0.0.1:{port}/p.tgz");
    let err = failed(&url, &dir, &limits);
    assert_eq!(err.to_string(), format!("larger than 4096 bytes: {url}"));
    assert_eq!(err.errcode(), 2);
}

#[test]
fn http_unannounced_body_over_bytes_max_is_aborted() {
    let port = standard_server();
    let dir = TestDir::new("http-unannounced-large");
    let limits = DownloadLimits {
        bytes_max: 4096,
        ..limits()
    };
    let url = format!("http://127.0.0.1:{port}/unannounced");
    let err = failed(&url, &dir, &limits);
    assert_eq!(err.to_string(), format!("larger than 4096 bytes: {url}"));
}

#[test]
fn http_connection_refused_names_the_address() {
    let port = free_port();
    let dir = TestDir::new("http-refused");
    let err = failed(&format!("http://127.0.0.1:{port}/p.tgz"), &dir, &limits());
    assert_eq!(
        err.to_string(),
        format!("connection refused to 127.0.0.1:{port}")
    );
    assert_eq!(err.errcode(), 2);
}

#[test]
fn http_endless_headers_fail_cleanly() {
    let port = standard_server();
    let dir = TestDir::new("http-endless-headers");
    let url = format!("http://127.0.0.1:{port}/endless-headers");
    let err = failed(&url, &dir, &limits());
    assert_eq!(err.errcode(), 2);
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("bad HTTP answer from {url}: ")),
        "{line}"
    );
    let url = format!("http://127.0.0.1:{port}/huge-header");
    let err = failed(&url, &dir, &limits());
    assert_eq!(
        err.to_string(),
        format!("answer head over 65536 bytes from {url}")
    );
}

#[test]
fn cancel_stops_a_running_download() {
    let port = standard_server();
    let dir = TestDir::new("http-cancel");
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = Arc::clone(&cancel);
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        setter.store(true, Ordering::Relaxed);
    });
    let url = format!("http://127.0.0.1:{port}/trickle");
    let start = Instant::now();
    let err = download(&url, &dir.0, &limits(), &cancel).unwrap_err();
    assert_eq!(err.to_string(), format!("download cancelled: {url}"));
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    dir.assert_empty();
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_without_tls_is_an_invalid_url() {
    let dir = TestDir::new("https");
    let err = failed("https://example.invalid/p.tgz", &dir, &limits());
    assert_eq!(err.errcode(), 1);
    assert_eq!(
        err.to_string(),
        "https:// needs a bootagent built with the tls feature: https://example.invalid/p.tgz"
    );
}

#[cfg(feature = "tls")]
#[test]
fn https_to_a_plain_server_fails_in_one_line() {
    let port = standard_server();
    let dir = TestDir::new("https-plain");
    let err = failed(&format!("https://127.0.0.1:{port}/p.tgz"), &dir, &limits());
    assert_eq!(err.errcode(), 2, "{err}");
}

#[test]
fn extreme_limits_do_not_panic() {
    let port = standard_server();
    let src = TestDir::new("extreme-src");
    fs::write(src.0.join("p"), content(1000)).unwrap();
    let root = TestDir::new("extreme-ftp-root");
    fs::write(root.0.join("p"), content(1000)).unwrap();
    let ftp = ftp_server(&root.0, None);
    let urls = [
        format!("http://127.0.0.1:{port}/p.tgz"),
        format!("file://{}/p", src.0.display()),
        format!("ftp://127.0.0.1:{}/p", ftp.port),
    ];
    let huge = DownloadLimits {
        bytes_max: u64::MAX,
        stall_ms: u64::MAX,
        connect_timeout_ms: u64::MAX,
        free_bytes_min: 0,
        ..DownloadLimits::default()
    };
    for url in &urls {
        let dir = TestDir::new("extreme-huge");
        assert!(get(url, &dir, &huge).is_ok(), "{url}");
    }
    let zero = DownloadLimits {
        bytes_max: 0,
        stall_ms: 0,
        connect_timeout_ms: 0,
        free_bytes_min: 0,
        ..DownloadLimits::default()
    };
    for url in &urls {
        let dir = TestDir::new("extreme-zero");
        let err = failed(url, &dir, &zero);
        assert_eq!(err.errcode(), 2, "{url}: {err}");
    }
}

#[test]
fn other_schemes_are_invalid_urls() {
    let dir = TestDir::new("schemes");
    for url in [
        "gopher://h/p.tgz",
        "p.tgz",
        "",
        "http://",
        "ftp:///p.tgz",
        "ftp://h/",
    ] {
        let err = failed(url, &dir, &limits());
        assert_eq!(err.errcode(), 1, "{url}: {err}");
    }
}

// ---------------------------------------------------------------- file

#[test]
fn file_url_is_copied() {
    let src = TestDir::new("file-src");
    let dir = TestDir::new("file-dst");
    let bytes = content(300_000);
    fs::write(src.0.join("a b.tgz"), &bytes).unwrap();
    let url = format!("file://{}/a%20b.tgz", src.0.display());
    let done = get(&url, &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &bytes);
}

#[test]
fn file_missing_names_the_path() {
    let dir = TestDir::new("file-missing");
    let missing = dir.0.join("nope.tgz");
    let err = failed(&format!("file://{}", missing.display()), &dir, &limits());
    assert_eq!(err.errcode(), 2);
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read {}: no such file or directory",
            missing.display()
        )
    );
}

#[test]
fn file_directory_is_refused() {
    let src = TestDir::new("file-dir-src");
    let dir = TestDir::new("file-dir");
    let err = failed(&format!("file://{}", src.0.display()), &dir, &limits());
    assert_eq!(err.errcode(), 2);
    assert_eq!(
        err.to_string(),
        format!("cannot read {}: not a regular file", src.0.display())
    );
}

#[test]
fn file_url_must_be_local_and_absolute() {
    let dir = TestDir::new("file-bad");
    for url in [
        "file://otherhost/etc/hosts",
        "file://relative",
        "file://%zz",
    ] {
        assert_eq!(failed(url, &dir, &limits()).errcode(), 1, "{url}");
    }
    let src = TestDir::new("file-localhost-src");
    let bytes = content(10);
    fs::write(src.0.join("p"), &bytes).unwrap();
    let url = format!("file://localhost{}/p", src.0.display());
    let done = get(&url, &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &bytes);
}

// ---------------------------------------------------------------- disk

#[test]
fn not_enough_free_space_is_errcode_5() {
    let src = TestDir::new("space-src");
    let dir = TestDir::new("space");
    fs::write(src.0.join("p"), content(1000)).unwrap();
    let limits = DownloadLimits {
        free_bytes_min: u64::MAX / 2,
        ..limits()
    };
    let err = failed(&format!("file://{}/p", src.0.display()), &dir, &limits);
    assert_eq!(err.errcode(), 5);
    let need = (u64::MAX / 2 + 1000).div_ceil(MIB);
    let line = err.to_string();
    let prefix = format!("no space left: need {need} MB in {}, ", dir.0.display());
    assert!(
        line.starts_with(&prefix) && line.ends_with(" MB free"),
        "{line}"
    );
}

#[test]
fn missing_target_directory_is_errcode_5() {
    let src = TestDir::new("nodir-src");
    fs::write(src.0.join("p"), content(10)).unwrap();
    let dir = src.0.join("absent");
    let err = download(
        &format!("file://{}/p", src.0.display()),
        &dir,
        &limits(),
        &AtomicBool::new(false),
    )
    .unwrap_err();
    assert_eq!(err.errcode(), 5, "{err}");
}

#[test]
fn cancel_before_start_leaves_nothing() {
    let src = TestDir::new("cancel-src");
    let dir = TestDir::new("cancel");
    fs::write(src.0.join("p"), content(10)).unwrap();
    let url = format!("file://{}/p", src.0.display());
    let err = download(&url, &dir.0, &limits(), &AtomicBool::new(true)).unwrap_err();
    assert_eq!(err.to_string(), format!("download cancelled: {url}"));
    dir.assert_empty();
}

// ---------------------------------------------------------------- ftp (pyftpdlib)

/// A pyftpdlib server on loopback, killed on drop.
struct FtpServer {
    child: Child,
    port: u16,
}

impl Drop for FtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `root` for `user:password` (EPSV refused, so PASV is used).
const FTP_USER_SCRIPT: &str = r#"
import sys
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler
from pyftpdlib.servers import FTPServer
port, root, user, password = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
class Handler(FTPHandler):
    def ftp_EPSV(self, line):
        self.respond("502 EPSV disabled for this test.")
authorizer = DummyAuthorizer()
authorizer.add_user(user, password, root, perm="elr")
Handler.authorizer = authorizer
FTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

fn ftp_server(root: &Path, login: Option<(&str, &str)>) -> FtpServer {
    let present = Command::new("python3")
        .args(["-c", "import pyftpdlib"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        present,
        "the FTP tests need pyftpdlib for python3: pip install pyftpdlib"
    );
    let port = free_port();
    let mut command = Command::new("python3");
    match login {
        None => command
            .args(["-m", "pyftpdlib", "-i", "127.0.0.1", "-p"])
            .arg(port.to_string())
            .arg("-d")
            .arg(root),
        Some((user, password)) => command
            .args(["-c", FTP_USER_SCRIPT])
            .arg(port.to_string())
            .arg(root)
            .args([user, password]),
    };
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = FtpServer { child, port };
    let deadline = Instant::now() + Duration::from_millis(WAIT_MS);
    loop {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return server;
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("pyftpdlib exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "pyftpdlib did not start on {port}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ftp_anonymous_download() {
    let root = TestDir::new("ftp-root");
    let bytes = content(200_000);
    fs::create_dir(root.0.join("pkgs")).unwrap();
    fs::write(root.0.join("pkgs/p-1.0.tgz"), &bytes).unwrap();
    let server = ftp_server(&root.0, None);
    let dir = TestDir::new("ftp-anonymous");
    let url = format!("ftp://127.0.0.1:{}/pkgs/p-1.0.tgz", server.port);
    let done = get(&url, &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &bytes);
}

#[test]
fn ftp_user_password_download_with_pasv() {
    let root = TestDir::new("ftp-user-root");
    let bytes = content(150_000);
    fs::write(root.0.join("agent.bin"), &bytes).unwrap();
    let server = ftp_server(&root.0, Some(("deploy", "p@ss:w/rd")));
    let dir = TestDir::new("ftp-user");
    let url = format!(
        "ftp://deploy:p%40ss%3Aw%2Frd@127.0.0.1:{}/agent.bin",
        server.port
    );
    let done = get(&url, &dir, &limits()).unwrap();
    assert_downloaded(&done, &dir, &bytes);

    let wrong = format!("ftp://deploy:wrong@127.0.0.1:{}/agent.bin", server.port);
    let dir = TestDir::new("ftp-user-wrong");
    // pyftpdlib answers a wrong password only after a delay of its own (3 s).
    let patient = DownloadLimits {
        stall_ms: WAIT_MS,
        ..limits()
    };
    let err = failed(&wrong, &dir, &patient);
    assert_eq!(err.errcode(), 2);
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("ftp 127.0.0.1:{}: 530 ", server.port)),
        "{line}"
    );
    assert!(!line.contains("wrong"), "password shown: {line}");
}

#[test]
fn ftp_missing_file_reports_the_550_line() {
    let root = TestDir::new("ftp-missing-root");
    let server = ftp_server(&root.0, None);
    let dir = TestDir::new("ftp-missing");
    let err = failed(
        &format!("ftp://127.0.0.1:{}/nope.tgz", server.port),
        &dir,
        &limits(),
    );
    assert_eq!(err.errcode(), 2);
    let line = err.to_string();
    assert!(
        line.starts_with(&format!("ftp 127.0.0.1:{}: 550 ", server.port)),
        "{line}"
    );
}

#[test]
fn ftp_file_over_bytes_max_is_refused_by_its_size() {
    let root = TestDir::new("ftp-large-root");
    fs::write(root.0.join("p.tgz"), content(10_000)).unwrap();
    let server = ftp_server(&root.0, None);
    let dir = TestDir::new("ftp-large");
    let limits = DownloadLimits {
        bytes_max: 4096,
        ..limits()
    };
    let url = format!("ftp://127.0.0.1:{}/p.tgz", server.port);
    let err = failed(&url, &dir, &limits);
    assert_eq!(err.to_string(), format!("larger than 4096 bytes: {url}"));
}

// ---------------------------------------------------------------- ftp (hostile)

/// A server that writes `script` to each connection, then holds it open.
fn scripted_server(script: impl Fn(&mut TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = Arc::new(script);
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let script = Arc::clone(&script);
            thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(WAIT_MS)));
                script(&mut stream);
                hold(&mut stream);
            });
        }
    });
    port
}

#[test]
fn ftp_garbage_greeting_fails_cleanly() {
    let port = scripted_server(|stream| {
        let _ = stream.write_all(b"HELLO \xff\x00 there\r\n");
    });
    let dir = TestDir::new("ftp-garbage");
    let err = failed(&format!("ftp://127.0.0.1:{port}/p"), &dir, &limits());
    assert_eq!(err.errcode(), 2);
    assert!(
        err.to_string()
            .starts_with(&format!("ftp 127.0.0.1:{port}: not an FTP reply: HELLO")),
        "{err}"
    );
}

#[test]
fn ftp_endless_multiline_reply_is_bounded() {
    let port = scripted_server(
        |stream| {
            while stream.write_all(b"220-welcome\r\n").is_ok() {}
        },
    );
    let dir = TestDir::new("ftp-endless");
    let err = failed(&format!("ftp://127.0.0.1:{port}/p"), &dir, &limits());
    assert_eq!(
        err.to_string(),
        format!("ftp 127.0.0.1:{port}: reply over 200 lines")
    );
}

#[test]
fn ftp_endless_line_is_bounded() {
    let port = scripted_server(|stream| {
        let _ = stream.write_all(b"220 ");
        while stream.write_all(&[b'a'; 1024]).is_ok() {}
    });
    let dir = TestDir::new("ftp-long-line");
    let err = failed(&format!("ftp://127.0.0.1:{port}/p"), &dir, &limits());
    assert_eq!(
        err.to_string(),
        format!("ftp 127.0.0.1:{port}: reply line over 2048 bytes")
    );
}

#[test]
fn ftp_silent_server_stalls() {
    let port = scripted_server(|_| {});
    let dir = TestDir::new("ftp-silent");
    let limits = DownloadLimits {
        stall_ms: STALL_TEST_MS,
        ..limits()
    };
    let url = format!("ftp://127.0.0.1:{port}/p");
    let start = Instant::now();
    let err = failed(&url, &dir, &limits);
    assert_eq!(
        err.to_string(),
        format!("stalled for 500 ms downloading {url}")
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn ftp_connection_refused_names_the_address() {
    let port = free_port();
    let dir = TestDir::new("ftp-refused");
    let err = failed(
        &format!("ftp://u:secret@127.0.0.1:{port}/p"),
        &dir,
        &limits(),
    );
    assert_eq!(
        err.to_string(),
        format!("connection refused to 127.0.0.1:{port}")
    );
}

// ---------------------------------------------------------------- pure parts

#[test]
fn parse_checksum_table() {
    let lower = "ab".repeat(32);
    let upper = "AB".repeat(32);
    let check = |text: &str, ok: bool| {
        assert_eq!(
            parse_checksum(text).is_ok(),
            ok,
            "{text:?}: {:?}",
            parse_checksum(text)
        );
    };
    check(&format!("SHA256:{lower}"), true);
    check(&format!("SHA256:{upper}"), true);
    check(&format!("sha256:{lower}"), true);
    check(&format!("SHA1:{lower}"), false);
    check(&format!("MD5:{lower}"), false);
    check(&lower, false);
    check(&format!("SHA256:{}", &lower[..63]), false);
    check(&format!("SHA256:{lower}a"), false);
    check(&format!("SHA256:{}g", &lower[..63]), false);
    check(&format!("SHA256: {}", &lower[..63]), false);
    check(&format!("SHA256:{}é", &lower[..62]), false);
    check("", false);
    check("SHA256", false);
    assert_eq!(
        parse_checksum(&format!("SHA256:{upper}")).unwrap(),
        [0xab; 32]
    );
    let sum = sha(b"hello");
    assert_eq!(
        parse_checksum(&format!("SHA256:{}", hex(&sum))).unwrap(),
        sum
    );
    assert_eq!(
        hex(&sum),
        "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    );
}

#[test]
fn shown_urls_mask_passwords_and_stay_one_line() {
    let cases = [
        ("ftp://u:secret@h/p", "ftp://u:***@h/p"),
        ("http://u:p@ss@h:8/p?q=a@b", "http://u:***@h:8/p?q=a@b"),
        ("ftp://u@h/p", "ftp://u@h/p"),
        ("http://h/p@x", "http://h/p@x"),
        ("http://h/a\nb", "http://h/a?b"),
    ];
    for (url, shown) in cases {
        assert_eq!(shown_url(url), shown, "{url}");
    }
    assert_eq!(
        shown_url(&"x".repeat(10_000)).chars().count(),
        SHOWN_CHARS_MAX + 1
    );
}

#[test]
fn url_parts() {
    let parts = split_url("ftp://u:p@[::1]:2121/a/b#frag").unwrap();
    assert_eq!(
        (
            parts.scheme,
            parts.userinfo,
            parts.host,
            parts.port,
            parts.path
        ),
        ("ftp", Some("u:p"), "::1", Some(2121), "/a/b")
    );
    let parts = split_url("http://h").unwrap();
    assert_eq!((parts.host, parts.port, parts.path), ("h", None, ""));
    assert!(split_url("ftp://h:0/p").is_none());
    assert!(split_url("ftp://h:99999/p").is_none());
    assert!(split_url("ftp://[::1/p").is_none());
    assert_eq!(host_port("::1", 21), "[::1]:21");
    assert_eq!(percent_decode("a%2Fb%41").unwrap(), b"a/bA");
    assert!(percent_decode("a%2").is_err());
}

#[test]
fn ftp_reply_parsing() {
    assert_eq!(reply_code(b"220 ready"), Some(220));
    assert_eq!(reply_code(b"220-ready"), Some(220));
    assert_eq!(reply_code(b"226"), Some(226));
    assert_eq!(reply_code(b"2201"), None);
    assert_eq!(reply_code(b"620 x"), None);
    assert_eq!(reply_code(b"22"), None);
    assert_eq!(reply_code(b""), None);
    assert_eq!(
        epsv_port("Entering extended passive mode (|||6446|)."),
        Some(6446)
    );
    assert_eq!(epsv_port("(!!!80!)"), Some(80));
    assert_eq!(epsv_port("(|||0|)"), None);
    assert_eq!(epsv_port("(|||x|)"), None);
    assert_eq!(epsv_port("no parens"), None);
    assert_eq!(epsv_port("("), None);
    assert_eq!(
        pasv_port("Entering Passive Mode (127,0,0,1,25,36)."),
        Some(25 * 256 + 36)
    );
    assert_eq!(pasv_port("=127,0,0,1,25,36"), Some(25 * 256 + 36));
    assert_eq!(pasv_port("(127,0,0,1,256,36)"), None);
    assert_eq!(pasv_port("(127,0,0,1,25)"), None);
    assert_eq!(pasv_port(""), None);
}

#[test]
fn errcodes_and_messages() {
    let err = DownloadError::NoSpace {
        dir: PathBuf::from("/data"),
        need_bytes: 300 * MIB,
        free_bytes: 12 * MIB + 5,
    };
    assert_eq!(
        err.to_string(),
        "no space left: need 300 MB in /data, 12 MB free"
    );
    assert_eq!(err.errcode(), 5);
    let err = DownloadError::Stalled {
        url: "http://h/p.tgz".into(),
        stall_ms: STALL_MS_DEFAULT,
    };
    assert_eq!(
        err.to_string(),
        "stalled for 60 s downloading http://h/p.tgz"
    );
    let err = DownloadError::Ftp {
        server: "127.0.0.1:2121".into(),
        reply: "550 No such file".into(),
    };
    assert_eq!(err.to_string(), "ftp 127.0.0.1:2121: 550 No such file");
    assert_eq!(err.errcode(), 2);
    let defaults = DownloadLimits::default();
    assert_eq!(
        (
            defaults.bytes_max,
            defaults.stall_ms,
            defaults.connect_timeout_ms,
            defaults.free_bytes_min
        ),
        (1 << 30, 60_000, 10_000, FREE_BYTES_MIN_DEFAULT)
    );
}
