//! The notifier with real processes: a spawned child, `systemd-notify`, and
//! `tests/notify/notifier.py` with its watchdog.

use super::tests::{next, own_facts, pipe, start, WAIT};
use super::*;
use crate::sys::{self, SpawnSpec};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::Instant;

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
    let mut full = env.to_vec();
    full.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
    let mut tries = 0;
    loop {
        let (reader, writer) = pipe();
        let pid = sys::spawn_child(SpawnSpec {
            program: script,
            cwd: Path::new("/"),
            env: &full,
            output: OwnedFd::from(writer),
            cgroup_procs: Vec::new(),
            watchdog_pid,
        });
        match pid {
            // A test thread forked while the script was open for writing: its copy of
            // the descriptor lives until that child's exec.
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            pid => return (pid.expect("spawn"), reader),
        }
    }
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

    // Run as another user, it names itself: a process below the child's.
    if sys::euid() != 0 {
        return;
    }
    let (pid, out, script) = spawn_sh(
        "setpriv --reuid=65534 --regid=65534 --clear-groups systemd-notify --status=nobody",
        &env,
    );
    let message = next(&rx);
    let end = wait_exit(pid);
    let output = read_all(out);
    let _ = std::fs::remove_file(script);
    assert_eq!(end, sys::Reaped::Code(0), "{output}");
    assert_eq!(message.notices, [Notice::Status("nobody".into())]);
    assert_eq!(message.sender.uid, 65534);
    assert_ne!(message.sender.pid, pid);
    assert_eq!(message.sender.ancestors.first(), Some(&pid));
    assert!(message.sender.of_session(pid), "{:?}", message.sender);
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
