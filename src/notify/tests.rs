use super::*;
use crate::sys::{self, SpawnSpec};
use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Instant;

/// Longest any test waits for something that should come at once.
const WAIT: Duration = Duration::from_secs(10);

/// A notifier whose messages arrive on the receiver, under a tag no other test uses.
fn start(test: &str) -> (Notifier, Receiver<Message>) {
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
fn name(address: &str) -> &[u8] {
    address
        .strip_prefix('@')
        .expect("an abstract address")
        .as_bytes()
}

fn send(address: &str, data: &[u8]) -> io::Result<usize> {
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(data, &SocketAddr::from_abstract_name(name(address))?)
}

fn next(rx: &Receiver<Message>) -> Message {
    rx.recv_timeout(WAIT)
        .expect("a message within the deadline")
}

fn own_facts() -> ProcessFacts {
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
fn pipe() -> (std::fs::File, std::fs::File) {
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

/// `tests/notify/notifier.py`.
fn notifier_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/notify/notifier.py")
}

/// Spawns a shell script of `command` as BootAgent spawns a child (in its own session),
/// its output into a pipe; the script's path, for removal.
fn spawn_sh(command: &str, env: &[(String, String)]) -> (i32, std::fs::File, PathBuf) {
    spawn_sh_with(command, env, false)
}

/// `spawn_sh`, with `WATCHDOG_PID` set to the child's pid when `watchdog_pid`.
fn spawn_sh_with(
    command: &str,
    env: &[(String, String)],
    watchdog_pid: bool,
) -> (i32, std::fs::File, PathBuf) {
    let script = std::env::temp_dir().join(format!(
        "bootagent-notify-{}-{}",
        std::process::id(),
        next_number()
    ));
    std::fs::write(&script, format!("#!/bin/sh\n{command}\n")).expect("script");
    let (pid, out) = spawn_script(&script, env, watchdog_pid);
    (pid, out, script)
}

fn next_number() -> u64 {
    use std::sync::atomic::AtomicU64;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::SeqCst)
}

fn spawn_script(
    script: &Path,
    env: &[(String, String)],
    watchdog_pid: bool,
) -> (i32, std::fs::File) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (reader, writer) = pipe();
    let mut full = env.to_vec();
    full.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    let pid = sys::spawn_child(SpawnSpec {
        program: script,
        cwd: Path::new("/"),
        env: &full,
        output: OwnedFd::from(writer),
        cgroup_procs: Vec::new(),
        watchdog_pid,
    });
    (pid.expect("spawn"), reader)
}

/// Waits for `pid` to end; its exit.
fn wait_exit(pid: i32) -> sys::Reaped {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(end) = sys::reap(pid) {
            return end;
        }
        assert!(Instant::now() < deadline, "{pid} did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn read_all(mut out: std::fs::File) -> String {
    let mut text = String::new();
    let _ = out.read_to_string(&mut text);
    text
}

#[test]
fn a_message_from_a_child_arrives_with_its_facts() {
    let (notifier, rx) = start("facts");
    let address = notifier.open("daemon").expect("open");
    let command = format!(
        "exec python3 {} --status 'hello there' --ready-after 0 --mainpid --exit-after 1",
        notifier_script().display()
    );
    let (pid, out, script) = spawn_sh(&command, &[("NOTIFY_SOCKET".into(), address.clone())]);
    let (other, _, other_script) = spawn_sh("exit 0", &[]);
    let first = next(&rx);
    let second = next(&rx);
    assert_eq!(wait_exit(pid), sys::Reaped::Code(0), "{}", read_all(out));
    wait_exit(other);
    let _ = std::fs::remove_file(script);
    let _ = std::fs::remove_file(other_script);

    assert_eq!(first.child, "daemon");
    assert_eq!(first.notices, [Notice::Status("hello there".into())]);
    assert_eq!(second.notices, [Notice::Ready, Notice::MainPid(pid)]);
    let me = std::process::id() as i32;
    for message in [&first, &second] {
        let sender = &message.sender;
        assert_eq!(sender.pid, pid, "exec keeps the pid");
        assert_eq!(sender.sid, Some(pid), "spawned with setsid");
        assert_eq!(sender.uid, sys::euid());
        assert_eq!(sender.ancestors.first(), Some(&me));
        assert_eq!(
            sender.cgroup,
            own_facts().cgroup,
            "a child shares our cgroup here"
        );
        assert!(sender.of_session(pid));
        assert!(!sender.of_session(other), "another child");
    }
    let main = second.main_pid.as_ref().expect("facts of MAINPID");
    assert_eq!((main.pid, main.sid), (pid, Some(pid)));
    assert!(first.main_pid.is_none());
    // Not of the child: BootAgent's own process, or another session.
    assert!(!own_facts().of_session(pid));
}

#[test]
fn systemd_notify_is_understood_and_not_kept_waiting() {
    let (notifier, rx) = start("sdn");
    let address = notifier.open("sdn").expect("open");
    let env = [("NOTIFY_SOCKET".to_string(), address)];
    let (pid, out, script) = spawn_sh(
        "command -v systemd-notify >/dev/null || { echo 'systemd-notify missing: install systemd'; exit 3; }\n\
         systemd-notify --ready --status=hello; rc=$?; echo \"rc=$rc\"; exit $rc",
        &env,
    );
    let message = next(&rx);
    // systemd-notify waits until the descriptor of its BARRIER=1 is closed (else it
    // fails after 5 s with "Failed to invoke barrier").
    let end = wait_exit(pid);
    let output = read_all(out);
    let _ = std::fs::remove_file(script);
    assert_eq!(end, sys::Reaped::Code(0), "{output}");
    assert_eq!(
        message.notices,
        [Notice::Ready, Notice::Status("hello".into())]
    );
    // As root it names its parent (the shell, the child's own process) as the sender;
    // otherwise itself. Either way a process of the child's session.
    assert!(message.sender.of_session(pid), "{:?}", message.sender);
    if sys::euid() == 0 {
        assert_eq!(message.sender.pid, pid);
    }
    assert!(
        rx.recv_timeout(Duration::from_millis(200)).is_err(),
        "BARRIER=1 alone is not delivered"
    );
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
fn the_watchdog_of_a_daemon_run_by_exec_reaches_the_loop() {
    let (notifier, rx) = start("wd");
    let address = notifier.open("wd").expect("open");
    let env = [
        ("NOTIFY_SOCKET".to_string(), address),
        ("WATCHDOG_USEC".to_string(), "100000".to_string()),
    ];
    let script = notifier_script();
    let args = "--watchdog-every auto --exit-after 0.3";
    // `exec`: the daemon is the process WATCHDOG_PID names, as libsystemd wants.
    let command = format!("exec python3 {} {args}", script.display());
    let (pid, out, run) = spawn_sh_with(&command, &env, true);
    let message = next(&rx);
    assert_eq!(wait_exit(pid), sys::Reaped::Code(0), "{}", read_all(out));
    let _ = std::fs::remove_file(run);
    assert_eq!(message.notices, [Notice::Watchdog]);
    assert_eq!(message.sender.pid, pid);
    while rx.try_recv().is_ok() {}

    // Without exec the daemon is not the process WATCHDOG_PID names: watchdog off.
    let command = format!("python3 {} {args}; exit $?", script.display());
    let (pid, out, run) = spawn_sh_with(&command, &env, true);
    assert_eq!(wait_exit(pid), sys::Reaped::Code(0));
    let output = read_all(out);
    let _ = std::fs::remove_file(run);
    assert!(output.contains(&format!("WATCHDOG_PID={pid}")), "{output}");
    assert!(output.contains("watchdog off"), "{output}");
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
}
