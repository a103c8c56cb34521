use super::*;
use crate::sys;
use std::io::Read;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

/// Longest any test waits for something that should come at once.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// A notifier whose messages arrive on the receiver, under a tag no other test uses.
pub(super) fn start(test: &str) -> (Notifier, Receiver<Message>) {
    let (tx, rx) = mpsc::channel();
    let tag = format!("t{}-{test}", std::process::id());
    let notifier = Notifier::start(
        &tag,
        Box::new(move |m| {
            let _ = tx.send(m);
            true
        }),
    )
    .expect("start the notifier");
    (notifier, rx)
}

/// The abstract name of a `NOTIFY_SOCKET` value.
pub(super) fn name(address: &str) -> &[u8] {
    address
        .strip_prefix('@')
        .expect("an abstract address")
        .as_bytes()
}

pub(super) fn send(address: &str, data: &[u8]) -> io::Result<usize> {
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(data, &SocketAddr::from_abstract_name(name(address))?)
}

pub(super) fn next(rx: &Receiver<Message>) -> Message {
    rx.recv_timeout(WAIT)
        .expect("a message within the deadline")
}

pub(super) fn own_facts() -> ProcessFacts {
    ProcessFacts::read(std::process::id() as i32, Some(sys::euid()))
}

#[test]
fn open_gives_one_address_per_child_and_close_refuses() {
    let (notifier, rx) = start("open");
    let a = notifier.open("alpha").expect("open");
    assert_eq!(a, format!("@bootagent/t{}-open/alpha", std::process::id()));
    assert_eq!(notifier.open("alpha").expect("open again"), a);
    let b = notifier.open("beta").expect("open another");
    assert_ne!(a, b);
    for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
        let err = notifier.open(bad).expect_err("a bad name");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
    }

    send(&a, b"READY=1").expect("send");
    let message = next(&rx);
    assert_eq!(
        (message.child.as_str(), message.notices.as_slice()),
        ("alpha", &[Notice::Ready][..])
    );
    assert_eq!(message.sender, own_facts());
    assert_eq!(message.main_pid, None);

    notifier.close("alpha");
    let err = send(&a, b"READY=1").expect_err("closed");
    assert_eq!(err.raw_os_error(), Some(libc::ECONNREFUSED), "{err}");
    send(&b, b"STOPPING=1").expect("the other stays open");
    assert_eq!(next(&rx).child, "beta");
    // Opened again: the same address works again.
    assert_eq!(notifier.open("alpha").expect("reopen"), a);
    send(&a, b"WATCHDOG=1").expect("send");
    assert_eq!(next(&rx).notices, [Notice::Watchdog]);

    drop(notifier);
    assert!(
        send(&b, b"READY=1").is_err(),
        "sockets close with the notifier"
    );
}

#[test]
fn a_taken_name_or_a_bad_tag_is_an_error() {
    let (notifier, _rx) = start("taken");
    let squatter_name = format!("bootagent/t{}-taken/squat", std::process::id());
    let _squatter =
        UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(squatter_name).expect("name"))
            .expect("bind");
    let err = notifier.open("squat").expect_err("taken");
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(err.to_string().contains("@bootagent/"), "{err}");
    for tag in ["", "a/b", &"t".repeat(TAG_BYTES_MAX + 1)] {
        assert!(Notifier::start(tag, Box::new(|_| true)).is_err(), "{tag:?}");
    }
    assert_eq!(tag_for(Path::new("/var/lib/bootagent")).len(), 16);
    assert_eq!(tag_for(Path::new("/a")), tag_for(Path::new("/a")));
    assert_ne!(tag_for(Path::new("/a")), tag_for(Path::new("/b")));
}

/// A pipe; the read end sees end of file once every copy of the write end is closed.
pub(super) fn pipe() -> (std::fs::File, std::fs::File) {
    let (reader, writer) = io::pipe().expect("pipe");
    (
        std::fs::File::from(OwnedFd::from(reader)),
        std::fs::File::from(OwnedFd::from(writer)),
    )
}

/// Waits for end of file on `reader` (the other end closed everywhere).
fn assert_closed(reader: std::fs::File) {
    let (done, wait) = mpsc::channel();
    std::thread::spawn(move || {
        let mut rest = Vec::new();
        let _ = (&reader).read_to_end(&mut rest);
        let _ = done.send(());
    });
    wait.recv_timeout(WAIT)
        .expect("the descriptor sent is closed");
}

#[test]
fn descriptors_sent_along_are_closed() {
    let (notifier, rx) = start("fds");
    let address = notifier.open("fds").expect("open");

    // BARRIER=1 alone, as systemd-notify sends it: closed, nothing delivered.
    let (reader, writer) = pipe();
    sock::send_with_fds(name(&address), b"BARRIER=1", &[writer.as_raw_fd()]).expect("send");
    drop(writer);
    assert_closed(reader);

    // With a message: closed, and the message delivered.
    let (reader, writer) = pipe();
    sock::send_with_fds(name(&address), b"READY=1", &[writer.as_raw_fd()]).expect("send");
    drop(writer);
    assert_closed(reader);
    assert_eq!(next(&rx).notices, [Notice::Ready]);

    // More than the room for descriptors (MSG_CTRUNC): all closed, still read.
    let pipes: Vec<_> = (0..FDS_PER_DATAGRAM_MAX + 4).map(|_| pipe()).collect();
    let fds: Vec<_> = pipes.iter().map(|(_, w)| w.as_raw_fd()).collect();
    sock::send_with_fds(name(&address), b"STATUS=many", &fds).expect("send");
    for (reader, writer) in pipes {
        drop(writer);
        assert_closed(reader);
    }
    assert_eq!(next(&rx).notices, [Notice::Status("many".into())]);

    // Oversized: ignored whole, its descriptor closed; the next one arrives alone.
    let (reader, writer) = pipe();
    let mut big = b"STATUS=big\n".to_vec();
    big.resize(DATAGRAM_BYTES_MAX + 1, b'x');
    sock::send_with_fds(name(&address), &big, &[writer.as_raw_fd()]).expect("send");
    drop(writer);
    assert_closed(reader);
    send(&address, b"STOPPING=1").expect("send");
    assert_eq!(next(&rx).notices, [Notice::Stopping]);
}

#[test]
fn a_flood_from_one_child_does_not_delay_another() {
    let (notifier, rx) = start("flood");
    let loud = notifier.open("loud").expect("open");
    let quiet = notifier.open("quiet").expect("open");
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flooder = {
        let (stop, sent) = (stop.clone(), sent.clone());
        let loud = loud.clone();
        std::thread::spawn(move || {
            let socket = UnixDatagram::unbound().expect("socket");
            socket.set_nonblocking(true).expect("nonblocking");
            let addr = SocketAddr::from_abstract_name(name(&loud)).expect("name");
            while !stop.load(Ordering::SeqCst) {
                if socket
                    .send_to_addr(b"STATUS=flood\nWATCHDOG=1", &addr)
                    .is_ok()
                {
                    sent.fetch_add(1, Ordering::SeqCst);
                } else {
                    std::thread::yield_now(); // its queue is full
                }
            }
        })
    };
    // Once the flood runs (its socket's allowance spent), the other child speaks.
    let started = Instant::now();
    let mut loud_seen = 0u64;
    while loud_seen < u64::from(DATAGRAMS_PER_S_MAX) {
        let m = next(&rx);
        assert_eq!(m.child, "loud");
        loud_seen += 1;
    }
    // More than that waits in the loud socket's queue, unread.
    let deadline = Instant::now() + WAIT;
    while sent.load(Ordering::SeqCst) < loud_seen + 5 {
        assert!(Instant::now() < deadline, "the flood stalled");
        std::thread::yield_now();
    }
    send(&quiet, b"READY=1").expect("send");
    let sent_at = Instant::now();
    let quiet_message = loop {
        let m = next(&rx);
        if m.child == "quiet" {
            break m;
        }
        loud_seen += 1;
    };
    let quiet_wait = sent_at.elapsed();
    // The flood goes on for half a second: nothing more of it is read in this second.
    let half = started + Duration::from_millis(500);
    while let Ok(m) = rx.recv_timeout(half.saturating_duration_since(Instant::now())) {
        if Instant::now() < half {
            loud_seen += u64::from(m.child == "loud");
        }
    }
    stop.store(true, Ordering::SeqCst);
    flooder.join().expect("flooder");
    let sent = sent.load(Ordering::SeqCst);
    assert_eq!(quiet_message.notices, [Notice::Ready]);
    // The quiet child's message came at once, not after the flood's second was over.
    assert!(quiet_wait < Duration::from_millis(500), "{quiet_wait:?}");
    assert_eq!(
        loud_seen,
        u64::from(DATAGRAMS_PER_S_MAX),
        "read from the flood in its first half second (sent {sent})"
    );
    assert!(sent > loud_seen + 5, "sent {sent}");
}

#[test]
fn a_busy_loop_gets_the_latest_of_each_notice_later() {
    let (tx, rx) = mpsc::channel();
    let refuse = Arc::new(AtomicBool::new(true));
    let (offered_tx, offered) = mpsc::channel();
    let notifier = {
        let refuse = refuse.clone();
        let tag = format!("t{}-busy", std::process::id());
        Notifier::start(
            &tag,
            Box::new(move |m: Message| {
                if refuse.load(Ordering::SeqCst) {
                    let _ = offered_tx.send(m);
                    return false;
                }
                let _ = tx.send(m);
                true
            }),
        )
        .expect("start")
    };
    let address = notifier.open("busy").expect("open");
    send(&address, b"STATUS=one").expect("send");
    send(&address, b"READY=1\nWATCHDOG=1").expect("send");
    send(&address, b"STATUS=two").expect("send");
    // Refused and offered again (every RETRY_MS) until it holds all three.
    let deadline = Instant::now() + WAIT;
    loop {
        let m = offered.recv_timeout(WAIT).expect("offered");
        if m.notices.contains(&Notice::Status("two".into())) {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    refuse.store(false, Ordering::SeqCst);
    let message = next(&rx);
    assert_eq!(
        message.notices,
        [
            Notice::Ready,
            Notice::Watchdog,
            Notice::Status("two".into())
        ]
    );
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "one message"
    );
}

#[test]
fn the_thread_sleeps_while_nothing_arrives() {
    let (notifier, rx) = start("idle");
    let address = notifier.open("idle").expect("open");
    send(&address, b"READY=1").expect("send");
    next(&rx);
    let before = notifier.rounds();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(notifier.rounds(), before, "no wake-up without a datagram");
    send(&address, b"WATCHDOG=1").expect("send");
    next(&rx);
    assert!(notifier.rounds() > before);
}

#[test]
fn an_exec_hand_over_keeps_the_sockets_and_what_waits_in_them() {
    let (first, _first_rx) = start("exec");
    let address = first.open("kept").expect("open");
    first.open("other").expect("open");
    assert!(
        first.handover("none").is_none(),
        "no socket, nothing to hand over"
    );
    let handed = |child| first.handover(child).expect("open").expect("dup");
    // What the exec keeps: a descriptor of the same socket, which outlives the
    // first image's notifier.
    let inherited = handed("kept").into_raw_fd();
    let stray = handed("other").into_raw_fd();
    drop(first);
    send(&address, b"READY=1").expect("the kept socket still takes datagrams");

    let tag = format!("t{}-exec", std::process::id());
    let (tx, rx) = mpsc::channel();
    let next_image = Notifier::start(
        &tag,
        Box::new(move |m| {
            let _ = tx.send(m);
            true
        }),
    )
    .expect("start");
    // Not the socket of that child: refused, and left open.
    let err = next_image
        .inherit("kept", stray)
        .expect_err("another child's");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
    let (reader, _writer) = pipe();
    assert!(
        next_image.inherit("kept", reader.as_raw_fd()).is_err(),
        "a pipe"
    );
    assert!(sys::set_cloexec(stray, true).is_ok(), "still open");

    assert_eq!(
        next_image.inherit("kept", inherited).expect("inherit"),
        address
    );
    let message = next(&rx);
    assert_eq!(
        (message.child.as_str(), &message.notices[..]),
        ("kept", &[Notice::Ready][..])
    );
    assert_eq!(
        next_image.open("kept").expect("open"),
        address,
        "the same socket"
    );
    next_image.close("kept");
    assert!(send(&address, b"READY=1").is_err());
    let _ = next_image
        .inherit("other", stray)
        .expect("the other child's");
}

#[test]
fn sockets_are_bounded() {
    let (notifier, _rx) = start("many");
    for i in 0..SOCKETS_MAX {
        notifier.open(&format!("c{i}")).expect("open");
    }
    let err = notifier.open("one-more").expect_err("past the bound");
    assert!(err.to_string().contains(&SOCKETS_MAX.to_string()), "{err}");
    notifier.close("c0");
    notifier.open("one-more").expect("room again");
}

#[test]
fn many_flooding_children_are_read_within_the_total() {
    let (notifier, rx) = start("total");
    let children = (DATAGRAMS_PER_S_TOTAL_MAX / DATAGRAMS_PER_S_MAX + 2) as usize;
    let addresses: Vec<String> = (0..children)
        .map(|i| notifier.open(&format!("f{i}")).expect("open"))
        .collect();
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let flooder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let socket = UnixDatagram::unbound().expect("socket");
            socket.set_nonblocking(true).expect("nonblocking");
            let targets: Vec<SocketAddr> = (addresses.iter())
                .map(|a| SocketAddr::from_abstract_name(name(a)).expect("name"))
                .collect();
            let mut sent = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for target in &targets {
                    sent += u64::from(socket.send_to_addr(b"WATCHDOG=1", target).is_ok());
                }
                std::thread::yield_now();
            }
            sent
        })
    };
    let half = started + Duration::from_millis(500);
    let mut per_child = std::collections::HashMap::<String, u32>::new();
    while let Ok(m) = rx.recv_timeout(half.saturating_duration_since(Instant::now())) {
        if Instant::now() < half {
            *per_child.entry(m.child).or_default() += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let sent = flooder.join().expect("flooder");
    let read: u32 = per_child.values().sum();
    assert!(
        read <= DATAGRAMS_PER_S_TOTAL_MAX,
        "{read} read in the first half second"
    );
    assert!(
        per_child.values().all(|&n| n <= DATAGRAMS_PER_S_MAX),
        "{per_child:?}"
    );
    assert!(u64::from(read) < sent, "read {read}, sent {sent}");
}
