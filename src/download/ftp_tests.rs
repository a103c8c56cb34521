//! FTP downloads against pyftpdlib and scripted hostile servers on 127.0.0.1, and the
//! parsing of FTP replies.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::http_tests::hold;
use super::*;
use crate::download::ftp::{epsv_port, pasv_port, reply_code};
use std::process::{Child, Command, Stdio};

// ---------------------------------------------------------------- ftp (pyftpdlib)

/// A pyftpdlib server on loopback, killed on drop.
pub(super) struct FtpServer {
    child: Child,
    pub(super) port: u16,
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

pub(super) fn ftp_server(root: &Path, login: Option<(&str, &str)>) -> FtpServer {
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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

// ---------------------------------------------------------------- replies

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
