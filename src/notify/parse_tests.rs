use super::*;

fn check(datagram: &[u8], expected: &[Notice]) {
    assert_eq!(
        parse(datagram),
        expected,
        "{:?}",
        String::from_utf8_lossy(datagram)
    );
}

#[test]
fn parse_takes_every_key_of_sd_notify() {
    check(b"READY=1", &[Notice::Ready]);
    check(b"RELOADING=1", &[Notice::Reloading]);
    check(b"STOPPING=1", &[Notice::Stopping]);
    check(
        b"STATUS=serving 3 clients",
        &[Notice::Status("serving 3 clients".into())],
    );
    check(b"STATUS=", &[Notice::Status(String::new())]);
    check(b"STATUS=a=b", &[Notice::Status("a=b".into())]);
    check(b"WATCHDOG=1", &[Notice::Watchdog]);
    check(b"WATCHDOG=trigger", &[Notice::WatchdogTrigger]);
    check(b"MAINPID=4242", &[Notice::MainPid(4242)]);
    check(b"BARRIER=1", &[Notice::Barrier]);
    check(
        b"READY=1\nSTATUS=up\nMAINPID=7\nWATCHDOG=1\n",
        &[
            Notice::Ready,
            Notice::Status("up".into()),
            Notice::MainPid(7),
            Notice::Watchdog,
        ],
    );
    // Other keys of sd_notify(3) are not ours to act on.
    check(
        b"ERRNO=2\nFDSTORE=1\nEXTEND_TIMEOUT_USEC=5\nWATCHDOG_USEC=9\nREADY=1",
        &[Notice::Ready],
    );
}

#[test]
fn parse_ignores_garbage() {
    check(b"", &[]);
    check(b"\n\n\n", &[]);
    check(b"READY", &[]);
    check(b"READY=0", &[]);
    check(b"READY=1 ", &[]);
    check(b"ready=1", &[]);
    check(b" READY=1", &[]);
    check(b"WATCHDOG=2", &[]);
    check(b"STOPPING=yes", &[]);
    for bad in [
        "MAINPID=",
        "MAINPID=0",
        "MAINPID=-5",
        "MAINPID=+5",
        "MAINPID=12x",
        "MAINPID=99999999999",
        "MAINPID=2147483648",
        "MAINPID= 5",
    ] {
        check(bad.as_bytes(), &[]);
    }
    check(b"MAINPID=2147483647", &[Notice::MainPid(i32::MAX)]);
    // A C reader's text ends at the first NUL.
    check(b"READY=1\0\nSTOPPING=1", &[Notice::Ready]);
    check(b"\0READY=1", &[]);
    check(&[0xff, 0xfe, b'=', b'1', b'\n', 0x80], &[]);
    // Status text: not UTF-8 and control characters made visible-safe.
    check(
        b"STATUS=a\tb\x1b[31mc\xffd\x7f",
        &[Notice::Status("a b [31mc\u{fffd}d ".into())],
    );
    // Every byte value, one at a time, never panics.
    for b in 0..=255u8 {
        let _ = parse(&[b]);
        let _ = parse(&[b'S', b'T', b'A', b'T', b'U', b'S', b'=', b]);
    }
}

#[test]
fn parse_is_bounded() {
    let long = format!("STATUS={}", "é".repeat(STATUS_BYTES_MAX));
    let notices = parse(long.as_bytes());
    let [Notice::Status(text)] = notices.as_slice() else {
        panic!("one status expected: {notices:?}");
    };
    assert_eq!(text.len(), STATUS_BYTES_MAX); // "é" is 2 bytes: cut on a boundary
    assert!(text.chars().all(|c| c == 'é'));

    let mut max = b"READY=1\n".to_vec();
    max.resize(DATAGRAM_BYTES_MAX, b'x');
    check(&max, &[Notice::Ready]);
    max.push(b'x');
    check(&max, &[]); // longer than systemd takes: ignored whole

    let many = "WATCHDOG=1\n".repeat(ASSIGNMENTS_MAX + 10);
    assert_eq!(parse(many.as_bytes()).len(), ASSIGNMENTS_MAX);
    let late = format!("{}READY=1", "X=1\n".repeat(ASSIGNMENTS_MAX));
    check(late.as_bytes(), &[]);

    check(&vec![b'\n'; 1 << 20], &[]);
}
