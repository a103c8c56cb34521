//! A forward HTTP proxy on loopback, as Squid configured to refuse `CONNECT`: it
//! answers `CONNECT` with 403, serves requests in absolute form
//! (`GET http://host:port/path HTTP/1.1`) by passing them on in origin form, and
//! refuses origin-form requests with 400. It records the request line of each.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Longest request head read from a client.
const HEAD_BYTES_MAX: usize = 64 * 1024;

pub struct ForwardProxy {
    pub port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    headers: Arc<Mutex<Vec<String>>>,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let headers = Arc::new(Mutex::new(Vec::new()));
        let (seen, seen_headers) = (lines.clone(), headers.clone());
        thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let (seen, seen_headers) = (seen.clone(), seen_headers.clone());
                thread::spawn(move || {
                    let _ = serve(client, &seen, &seen_headers);
                });
            }
        });
        ForwardProxy {
            port,
            lines,
            headers,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The request lines received, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every header line received (`Name: value`).
    pub fn headers(&self) -> Vec<String> {
        self.headers.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

fn serve(
    client: TcpStream,
    seen: &Mutex<Vec<String>>,
    seen_headers: &Mutex<Vec<String>>,
) -> io::Result<()> {
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = Vec::new();
    let mut first = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || head.len() > HEAD_BYTES_MAX {
            return Ok(());
        }
        if first.is_empty() {
            first = line.trim_end().to_string();
        } else if line.trim_end().is_empty() {
            head.extend_from_slice(b"\r\n");
            break;
        } else {
            if let Ok(mut h) = seen_headers.lock() {
                h.push(line.trim_end().to_string());
            }
            head.extend_from_slice(line.as_bytes());
        }
    }
    if let Ok(mut s) = seen.lock() {
        s.push(first.clone());
    }
    let mut client = client;
    let mut words = first.split(' ');
    let (method, target, version) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    if method == "CONNECT" {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    let Some(rest) = target.strip_prefix("http://") else {
        client.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    let mut upstream = TcpStream::connect(authority)?;
    upstream.write_all(format!("{method} {path} {version}\r\n").as_bytes())?;
    upstream.write_all(&head)?;
    // What the client sent past the head (a body), then both ways until closed.
    let buffered = reader.buffer().to_vec();
    upstream.write_all(&buffered)?;
    let mut from_client = reader.into_inner();
    let mut to_upstream = upstream.try_clone()?;
    let pump = thread::spawn(move || {
        let _ = io::copy(&mut from_client, &mut to_upstream);
        let _ = to_upstream.shutdown(Shutdown::Write);
    });
    let mut answer = Vec::new();
    upstream.read_to_end(&mut answer)?;
    client.write_all(&answer)?;
    let _ = client.shutdown(Shutdown::Both);
    let _ = pump.join();
    Ok(())
}
