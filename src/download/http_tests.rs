//! HTTP downloads against a small HTTP server written here, on 127.0.0.1.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;

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
pub(super) fn hold(stream: &mut TcpStream) {
    let mut sink = [0u8; 256];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            return;
        }
    }
}

const SMALL_BYTES: usize = 100_000;

pub(super) fn standard_server() -> u16 {
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
}

#[test]
fn http_endless_headers_fail_cleanly() {
    let port = standard_server();
    let dir = TestDir::new("http-endless-headers");
    let url = format!("http://127.0.0.1:{port}/endless-headers");
    let err = failed(&url, &dir, &limits());
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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

#[test]
fn a_trickle_below_the_speed_floor_is_aborted() {
    let port = standard_server();
    let dir = TestDir::new("http-slow");
    // The trickle sends 100 bytes every 20 ms, about 5000 bytes/s: below 50 000.
    let limits = DownloadLimits {
        stall_ms: STALL_TEST_MS,
        speed_min_bytes_per_s: 50_000,
        ..limits()
    };
    let url = format!("http://127.0.0.1:{port}/trickle");
    let start = Instant::now();
    let err = failed(&url, &dir, &limits);
    let elapsed = start.elapsed();
    let text = err.to_string();
    assert!(
        text.starts_with("too slow: ")
            && text.ends_with(&format!("(less than 50000 bytes/s) downloading {url}")),
        "{text}"
    );
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
    assert!(elapsed < Duration::from_secs(3), "took {elapsed:?}");
    dir.assert_empty();

    // The same trickle passes a floor below its speed (it ends by itself).
    let limits = DownloadLimits {
        stall_ms: STALL_TEST_MS,
        speed_min_bytes_per_s: 1000,
        ..limits
    };
    let cancel = Arc::new(AtomicBool::new(false));
    let setter = Arc::clone(&cancel);
    thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        setter.store(true, Ordering::Relaxed);
    });
    let err = download(&url, &dir.0, &limits, &cancel).unwrap_err();
    assert_eq!(err.to_string(), format!("download cancelled: {url}"));
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_without_tls_is_an_invalid_url() {
    let dir = TestDir::new("https");
    let err = failed("https://example.invalid/p.tgz", &dir, &limits());
    assert_eq!(err.errcode(), ErrCode::Invalid);
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed, "{err}");
}
