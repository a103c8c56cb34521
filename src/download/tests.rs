//! Downloads against real servers on 127.0.0.1: a small HTTP server written here,
//! pyftpdlib for FTP, scripted hostile servers, and local files.
//!
//! This file: the helpers, every scheme at once, `file://`, the disk and the pure
//! parts; HTTP in `http_tests.rs`, FTP in `ftp_tests.rs`.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

#[path = "ftp_tests.rs"]
mod ftp_tests;
#[path = "http_tests.rs"]
mod http_tests;

use super::shared::{MIB, SHOWN_CHARS_MAX};
use super::url::{host_port, percent_decode, split_url};
use super::*;
use crate::job_fields::ErrCode;
use ftp_tests::ftp_server;
use http_tests::standard_server;
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::Instant;

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
        file_url_roots: vec![std::env::temp_dir()],
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

// ---------------------------------------------------------------- every scheme

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
        file_url_roots: vec![std::env::temp_dir()],
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
        file_url_roots: vec![std::env::temp_dir()],
        ..DownloadLimits::default()
    };
    for url in &urls {
        let dir = TestDir::new("extreme-zero");
        let err = failed(url, &dir, &zero);
        assert_eq!(err.errcode(), ErrCode::DownloadFailed, "{url}: {err}");
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
        assert_eq!(err.errcode(), ErrCode::Invalid, "{url}: {err}");
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
    assert_eq!(
        err.to_string(),
        format!(
            "cannot read {}: no such file or directory",
            missing.display()
        )
    );
}

#[test]
fn file_outside_the_roots_is_refused_before_it_is_opened() {
    let root = TestDir::new("file-root");
    let outside = TestDir::new("file-outside");
    let dir = TestDir::new("file-confined");
    fs::write(root.0.join("in.tgz"), content(10)).unwrap();
    fs::write(outside.0.join("secret"), content(10)).unwrap();
    std::os::unix::fs::symlink(outside.0.join("secret"), root.0.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside.0, root.0.join("dirlink")).unwrap();
    let confined = DownloadLimits {
        file_url_roots: vec![root.0.clone()],
        ..limits()
    };
    let secret = outside.0.join("secret");
    let refused = [
        format!("file://{}", secret.display()),
        format!("file://{}/link", root.0.display()),
        format!("file://{}/dirlink/secret", root.0.display()),
        format!(
            "file://{}/../{}/secret",
            root.0.display(),
            outside.0.file_name().unwrap().to_string_lossy()
        ),
        // Missing outside: the same answer as existing, nothing learnt.
        format!("file://{}/missing", outside.0.display()),
        format!("file://{}/../missing", root.0.display()),
        "file:///etc/shadow".to_string(),
    ];
    for url in &refused {
        let err = failed(url, &dir, &confined);
        assert_eq!(err.errcode(), ErrCode::DownloadFailed, "{url}");
        assert!(
            err.to_string().starts_with("file URL refused: "),
            "{url}: {err}"
        );
        assert!(err.to_string().contains("file_url_roots"), "{err}");
    }
    let none = DownloadLimits {
        file_url_roots: Vec::new(),
        ..limits()
    };
    let inside = format!("file://{}/in.tgz", root.0.display());
    assert_eq!(
        failed(&inside, &dir, &none).errcode(),
        ErrCode::DownloadFailed
    );
    let missing = failed(
        &format!("file://{}/nope", root.0.display()),
        &dir,
        &confined,
    );
    assert!(missing.to_string().contains("no such file"), "{missing}");
    assert!(get(&inside, &dir, &confined).is_ok());
}

#[test]
fn file_directory_is_refused() {
    let src = TestDir::new("file-dir-src");
    let dir = TestDir::new("file-dir");
    let err = failed(&format!("file://{}", src.0.display()), &dir, &limits());
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
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
        assert_eq!(
            failed(url, &dir, &limits()).errcode(),
            ErrCode::Invalid,
            "{url}"
        );
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
    assert_eq!(err.errcode(), ErrCode::InstallFailed);
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
    assert_eq!(err.errcode(), ErrCode::InstallFailed, "{err}");
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
    assert_eq!(err.errcode(), ErrCode::InstallFailed);
    let err = DownloadError::Stalled {
        url: "http://h/p.tgz".into(),
        stall_ms: 60_000,
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
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
    let defaults = DownloadLimits::default();
    assert_eq!(
        (
            defaults.bytes_max,
            defaults.stall_ms,
            defaults.connect_timeout_ms,
            defaults.free_bytes_min
        ),
        (1 << 30, 60_000, 10_000, 1024 * 1024)
    );
}

#[test]
fn pace_fails_only_after_a_whole_window_below_the_floor() {
    let limits = DownloadLimits {
        stall_ms: 10_000,
        speed_min_bytes_per_s: 100,
        ..DownloadLimits::default()
    };
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    // A slow start (9.9 s without a byte), then a fast link: passes.
    let mut pace = Pace::new(&limits, t0);
    assert_eq!(pace.add(500, at(9_900)), Ok(()));
    for second in 11..40 {
        assert_eq!(pace.add(20_000, at(second * 1000)), Ok(()));
    }
    // A trickle of 50 bytes a second: fails once 10 s of samples were all slow.
    let mut pace = Pace::new(&limits, t0);
    for second in 1..10 {
        assert_eq!(pace.add(50, at(second * 1000)), Ok(()), "{second} s");
    }
    assert_eq!(
        pace.add(50, at(10_000)),
        Err(Slow {
            bytes: 500,
            elapsed_ms: 10_000
        })
    );
    // One sample at the floor starts the count again.
    let mut pace = Pace::new(&limits, t0);
    for second in 1..=20 {
        let bytes = if second % 5 == 0 { 100 } else { 50 };
        assert_eq!(pace.add(bytes, at(second * 1000)), Ok(()), "{second} s");
    }
    // A byte a minute, the stall timeout never reached: fails after the window.
    let mut pace = Pace::new(&limits, t0);
    assert_eq!(pace.add(1, at(9_000)), Ok(()));
    assert_eq!(
        pace.add(1, at(18_000)),
        Err(Slow {
            bytes: 2,
            elapsed_ms: 18_000
        })
    );
    // Off at 0.
    let off = DownloadLimits {
        speed_min_bytes_per_s: 0,
        ..limits
    };
    let mut pace = Pace::new(&off, t0);
    assert_eq!(pace.add(1, at(60_000)), Ok(()));
    assert_eq!(pace.add(1, at(120_000)), Ok(()));
    let err = DownloadError::TooSlow {
        url: "http://h/p.tgz".into(),
        bytes: 7,
        elapsed_ms: 61_000,
        speed_min_bytes_per_s: 512,
    };
    assert_eq!(
        err.to_string(),
        "too slow: 7 bytes in 61 s (less than 512 bytes/s) downloading http://h/p.tgz"
    );
    assert_eq!(err.errcode(), ErrCode::DownloadFailed);
}
