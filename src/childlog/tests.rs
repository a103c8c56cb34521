//! Tests of the child logs: real children writing through real pipes, and the file
//! side (rotation, cut points, failure streaks) driven directly.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::rotate::cut_len;
use super::*;
use std::fs;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::{RwLock, RwLockReadGuard};

/// Longest any condition of these tests is waited for.
const DEADLINE_S: u64 = 30;
/// Voluntary context switches an idle log thread may make in a second: the one
/// that puts it back to sleep after the last line, and one more from the kernel.
const IDLE_SWITCHES_MAX: u64 = 2;

impl ChildLogs {
    fn thread_tid(&self) -> i32 {
        self.inner.shared.tid.load(Ordering::SeqCst)
    }
    fn rounds(&self) -> u64 {
        self.inner.shared.rounds.load(Ordering::SeqCst)
    }
    fn read_bytes(&self) -> u64 {
        self.inner.shared.read_bytes.load(Ordering::SeqCst)
    }
    fn dropped_bytes(&self) -> u64 {
        self.inner.shared.dropped_bytes.load(Ordering::SeqCst)
    }
    fn failure_streaks(&self) -> u64 {
        self.inner.shared.failure_streaks.load(Ordering::SeqCst)
    }
}

/// Held for reading by the tests that start processes, for writing by the one that
/// counts the log thread's wake-ups: a fork anywhere in the process also wakes a
/// thread asleep in `poll(2)` inside the kernel, without returning from it.
static SPAWNS: RwLock<()> = RwLock::new(());

fn spawning() -> RwLockReadGuard<'static, ()> {
    SPAWNS.read().unwrap_or_else(|e| e.into_inner())
}

/// A fresh directory, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("childlog-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(&self.0)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A child's output pipe as the supervisor makes it (`std::io::pipe`, close-on-exec).
fn output_pipe() -> (OwnedFd, OwnedFd) {
    let (read_end, write_end) = std::io::pipe().expect("pipe");
    (read_end.into(), write_end.into())
}

fn spawn_with(logs: &ChildLogs, path: &Path, script: &str, stdin: Stdio) -> Child {
    let (read_end, write_end) = output_pipe();
    logs.attach(path.to_path_buf(), read_end).expect("attach");
    let stderr = write_end.try_clone().expect("dup");
    // The Command, with the parent's copies of the write end, is dropped here.
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(stdin)
        .stdout(write_end)
        .stderr(stderr)
        .spawn()
        .expect("spawn")
}

fn spawn(logs: &ChildLogs, path: &Path, script: &str) -> Child {
    spawn_with(logs, path, script, Stdio::null())
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(DEADLINE_S);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for the children to exit and their pipes to reach end of file.
fn finish(logs: &ChildLogs, children: Vec<Child>) {
    for mut child in children {
        wait_until("the child to exit", || {
            child.try_wait().expect("wait").is_some()
        });
    }
    wait_until("the pipes to close", || logs.attached() == 0);
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

fn bound(config: &LogConfig) -> u64 {
    config.file_bytes_max + config.read_chunk_bytes as u64
}

#[test]
fn a_childs_stdout_and_stderr_land_in_its_file() {
    let _spawning = spawning();
    let dir = Scratch::new("output");
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    let path = dir.path("agent.log");
    let child = spawn(&logs, &path, "echo hello; echo err >&2");
    finish(&logs, vec![child]);
    assert_eq!(read(&path), "hello\nerr\n");
}

#[test]
fn five_megabytes_leave_two_files_within_the_limit() {
    let _spawning = spawning();
    const LINE: &[u8] = b"0123456789abcdef\n";
    const TOTAL_BYTES: usize = 5_000_000;
    let dir = Scratch::new("rotation");
    let config = LogConfig {
        bytes_per_s_max: 0, // every byte, to check the rotation's cuts
        ..LogConfig::default()
    };
    let logs = ChildLogs::start(config).expect("start");
    let path = dir.path("agent.log");
    let child = spawn(&logs, &path, "yes 0123456789abcdef | head -c 5000000");
    finish(&logs, vec![child]);

    assert_eq!(dir.names(), ["agent.log", "agent.log.1"]);
    let older = fs::read(dir.path("agent.log.1")).expect("read");
    let newer = fs::read(&path).expect("read");
    for file in [&older, &newer] {
        assert!(file.len() as u64 <= bound(&config), "{} bytes", file.len());
    }
    assert_eq!(older.len() % LINE.len(), 0, "rotated between lines");
    let stream = LINE.repeat(TOTAL_BYTES / LINE.len() + 1);
    let stream = &stream[..TOTAL_BYTES];
    assert!(
        stream.ends_with(&[older, newer].concat()),
        "the newest output, in order"
    );
}

#[test]
fn a_child_writing_without_pause_is_never_blocked() {
    let _spawning = spawning();
    const TOTAL_BYTES: u64 = 50_000_000;
    let dir = Scratch::new("flood");
    let config = LogConfig {
        bytes_per_s_max: 0, // every byte to the file: the most work there is
        ..LogConfig::default()
    };
    let logs = ChildLogs::start(config).expect("start");
    let path = dir.path("agent.log");
    let started = Instant::now();
    let child = spawn(&logs, &path, "yes | head -c 50000000; echo done");

    // Another thread of BootAgent's, meanwhile: how late do its 1 ms sleeps wake?
    let flooding = Arc::new(AtomicBool::new(true));
    let ticker = {
        let flooding = Arc::clone(&flooding);
        thread::spawn(move || {
            let mut late_max = Duration::ZERO;
            while flooding.load(Ordering::SeqCst) {
                let slept = Instant::now();
                thread::sleep(Duration::from_millis(1));
                late_max = late_max.max(slept.elapsed().saturating_sub(Duration::from_millis(1)));
            }
            late_max
        })
    };
    finish(&logs, vec![child]);
    flooding.store(false, Ordering::SeqCst);
    let late_max = ticker.join().expect("ticker");
    eprintln!(
        "50 MB through the log in {:?}; another thread's 1 ms sleep woke {late_max:?} late at most",
        started.elapsed()
    );

    assert_eq!(logs.read_bytes(), TOTAL_BYTES + b"done\n".len() as u64);
    assert!(read(&path).ends_with("\ndone\n"));
    assert_eq!(dir.names(), ["agent.log", "agent.log.1"]);
    for name in dir.names() {
        let len = fs::metadata(dir.path(&name)).expect("stat").len();
        assert!(len <= bound(&config), "{name} is {len} bytes");
    }
}

#[test]
fn output_over_the_rate_is_dropped_and_the_log_says_how_much() {
    let _spawning = spawning();
    let dir = Scratch::new("rate");
    let config = LogConfig {
        bytes_per_s_max: 64 * 1024,
        ..LogConfig::default()
    };
    let logs = ChildLogs::start(config).expect("start");
    let path = dir.path("agent.log");
    let child = spawn(
        &logs,
        &path,
        // The empty line is the end of a line that may have been dropped in part.
        "yes 0123456789abcdef | head -c 1000000; sleep 1.2; echo; echo after",
    );
    finish(&logs, vec![child]);
    let text = read(&path);
    let shed = logs.inner.shared.shed_bytes.load(Ordering::SeqCst);
    assert_eq!(
        logs.read_bytes() + shed,
        1_000_000 + b"\nafter\n".len() as u64
    );
    // The allowance, and the end of the line in progress when it ran out.
    assert!(shed >= 1_000_000 - 64 * 1024 - 64, "{shed} bytes dropped");
    let tail = &text[text.len().saturating_sub(200)..];
    let (before, note) = (tail.trim_end_matches("after\n").trim_end_matches('\n'))
        .rsplit_once('\n')
        .unwrap_or_default();
    assert!(text.ends_with("]\nafter\n"), "{tail:?}");
    assert!(
        note.starts_with("[bootagent: ")
            && note.ends_with(" bytes of output dropped, over 65536 bytes/s]"),
        "{note:?}"
    );
    let before = before.split_once('\n').map_or("", |(_, whole)| whole); // the tail's cut
    assert!(
        before.lines().all(|l| l == "0123456789abcdef"),
        "whole lines: {before:?}"
    );
    assert!(
        text.len() < 64 * 1024 + 200,
        "{} bytes in the file",
        text.len()
    );
}

/// An operator's `: > NAME.log` (logrotate's copytruncate) mid-stream: what follows is
/// written at the new end, not after a hole of zeros where the old end was.
#[test]
fn a_log_truncated_by_hand_goes_on_at_its_new_end() {
    let _spawning = spawning();
    let dir = Scratch::new("truncated");
    let config = LogConfig {
        bytes_per_s_max: 0,
        ..LogConfig::default()
    };
    let logs = ChildLogs::start(config).expect("start");
    let path = dir.path("agent.log");
    let go = dir.path("go");
    let script = format!(
        "yes 0123456789abcdef | head -c 300000; while [ ! -e {} ]; do sleep 0.01; done; \
         yes 0123456789abcdef | head -c 300000",
        go.display()
    );
    let child = spawn(&logs, &path, &script);
    wait_until("the first part", || {
        fs::metadata(&path).is_ok_and(|m| m.len() == 300_000)
    });
    fs::File::create(&path).expect("truncate");
    fs::write(&go, b"").expect("go");
    finish(&logs, vec![child]);
    let bytes = fs::read(&path).expect("read");
    assert_eq!(bytes.len(), 300_000, "only the second part");
    assert!(!bytes.contains(&0), "no hole of zeros");
}

#[test]
fn a_chatty_child_does_not_starve_a_quiet_one() {
    let _spawning = spawning();
    let dir = Scratch::new("fair");
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    let mut chatty = spawn(&logs, &dir.path("chatty.log"), "exec yes");
    let quiet_path = dir.path("quiet.log");
    let quiet = spawn(&logs, &quiet_path, "echo quiet");
    wait_until("the quiet child's line", || read(&quiet_path) == "quiet\n");
    assert!(chatty.try_wait().expect("wait").is_none(), "still writing");
    chatty.kill().expect("kill");
    finish(&logs, vec![chatty, quiet]);
}

#[test]
fn an_idle_child_leaves_the_log_thread_asleep() {
    // Alone: forks elsewhere in the process wake threads sleeping in the kernel.
    let _alone = SPAWNS.write().unwrap_or_else(|e| e.into_inner());
    let dir = Scratch::new("idle");
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    let path = dir.path("agent.log");
    let mut child = spawn(&logs, &path, "echo ready; exec sleep 3");
    wait_until("the first line", || read(&path) == "ready\n");

    let switches = || {
        let status = format!("/proc/self/task/{}/status", logs.thread_tid());
        let status = fs::read_to_string(status).expect("thread status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .expect("voluntary_ctxt_switches");
        line.trim().parse::<u64>().expect("a count")
    };
    let (rounds, before) = (logs.rounds(), switches());
    thread::sleep(Duration::from_secs(1)); // the span measured, not a synchronisation
    let after = switches();
    assert_eq!(logs.rounds(), rounds, "poll returned");
    assert!(
        after - before <= IDLE_SWITCHES_MAX,
        "{} wake-ups in 1 s",
        after - before
    );

    child.kill().expect("kill");
    finish(&logs, vec![child]);
}

#[test]
fn a_failing_disk_drops_output_with_one_warning() {
    let _spawning = spawning();
    const TOTAL_BYTES: u64 = 1_000_000;
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    // Every write to /dev/full fails with ENOSPC, like a full disk.
    let child = spawn(
        &logs,
        Path::new("/dev/full"),
        "yes | head -c 1000000; echo done",
    );
    finish(&logs, vec![child]);
    let total = TOTAL_BYTES + b"done\n".len() as u64;
    assert_eq!(logs.read_bytes(), total);
    assert_eq!(logs.dropped_bytes(), total);
    assert_eq!(logs.failure_streaks(), 1);
}

#[test]
fn a_failure_streak_warns_once_and_ends_at_the_first_good_write() {
    let dir = Scratch::new("streak");
    let shared = Shared::new(ATTACHED_MAX);
    let config = LogConfig::default();
    // Two missing directories: only the last one of a path is created.
    let path = dir.path("gone/logs/agent.log");
    let mut log = LogFile::new(path.clone());
    for _ in 0..3 {
        log.append(b"lost\n", &config, &shared);
    }
    assert_eq!(shared.failure_streaks.load(Ordering::SeqCst), 1);
    assert_eq!(shared.dropped_bytes.load(Ordering::SeqCst), 15);
    fs::create_dir(dir.path("gone")).expect("mkdir");
    log.append(b"kept\n", &config, &shared);
    assert_eq!(read(&path), "kept\n");
    assert_eq!(log.failing, None);
}

#[test]
fn fifty_children_at_once_each_get_their_lines() {
    let _spawning = spawning();
    const CHILDREN: usize = 50;
    let dir = Scratch::new("fifty");
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    let children = (0..CHILDREN)
        .map(|i| {
            let script = format!("for n in 1 2 3; do echo agent{i} line $n; done");
            spawn(&logs, &dir.path(&format!("agent{i}.log")), &script)
        })
        .collect();
    finish(&logs, children);
    for i in 0..CHILDREN {
        let expected: String = (1..=3).map(|n| format!("agent{i} line {n}\n")).collect();
        assert_eq!(read(&dir.path(&format!("agent{i}.log"))), expected);
    }
}

#[test]
fn two_pipes_of_one_name_share_its_file() {
    let _spawning = spawning();
    let dir = Scratch::new("shared");
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    let path = dir.path("agent.log");
    // The first child waits on its stdin until the second one is done.
    let (gate_read, gate_write) = output_pipe();
    let first = spawn_with(
        &logs,
        &path,
        "echo one; read x; echo three",
        gate_read.into(),
    );
    let mut second = spawn(&logs, &path, "echo two");
    wait_until("the second child to exit", || {
        second.try_wait().expect("wait").is_some()
    });
    wait_until("two lines", || read(&path).lines().count() == 2);
    // Not at once: a fork elsewhere in the test process may hold the write end a moment.
    wait_until("the second pipe to close", || logs.attached() == 1);
    drop(gate_write);
    finish(&logs, vec![first]);
    let text = read(&path);
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.pop(), Some("three"));
    lines.sort_unstable();
    assert_eq!(lines, ["one", "two"]);
}

#[test]
fn attach_is_bounded() {
    const ATTACHED: usize = 2;
    let dir = Scratch::new("bounded");
    let logs = ChildLogs::start_bounded(LogConfig::default(), ATTACHED).expect("start");
    let path = dir.path("agent.log");
    let mut writers = Vec::new();
    for _ in 0..ATTACHED {
        let (read_end, write_end) = output_pipe();
        logs.attach(path.clone(), read_end).expect("attach");
        writers.push(write_end);
    }
    let (read_end, _write_end) = output_pipe();
    assert!(logs.attach(path.clone(), read_end).is_err());
    assert_eq!(logs.attached(), ATTACHED);
    drop(writers);
    wait_until("the pipes to close", || logs.attached() == 0);
    let (read_end, _write_end) = output_pipe();
    logs.attach(path, read_end).expect("a free slot again");
}

#[test]
fn shutdown_drains_promptly_and_refuses_new_pipes() {
    let _spawning = spawning();
    let dir = Scratch::new("shutdown");
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    let path = dir.path("agent.log");
    let (read_end, write_end) = output_pipe();
    logs.attach(path.clone(), read_end).expect("attach");
    let writer = File::from(write_end);
    (&writer).write_all(b"last words\n").expect("write");
    let mut chatty = spawn(&logs, &dir.path("chatty.log"), "exec yes");

    let started = Instant::now();
    logs.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(read(&path), "last words\n");
    assert_eq!(logs.attached(), 0);
    let (read_end, _write_end) = output_pipe();
    assert!(logs.attach(path, read_end).is_err());
    logs.shutdown();

    // Its pipe closed, the chatty child dies of SIGPIPE.
    wait_until("the chatty child to exit", || {
        chatty.try_wait().expect("wait").is_some()
    });
}

#[test]
fn dropping_the_last_handle_ends_the_thread() {
    let logs = ChildLogs::start(LogConfig::default()).expect("start");
    wait_until("the thread to start", || logs.thread_tid() != 0);
    let task = PathBuf::from(format!("/proc/self/task/{}", logs.thread_tid()));
    let other = logs.clone();
    drop(logs);
    assert!(task.exists(), "a clone still holds the thread");
    drop(other);
    wait_until("the thread to end", || !task.exists());
}

#[test]
fn files_rotate_in_order_and_stay_bounded() {
    const LINES: usize = 100;
    const LINE_BYTES: usize = 100;
    for files_max in [1, 2, 3] {
        let dir = Scratch::new(&format!("order{files_max}"));
        let shared = Shared::new(ATTACHED_MAX);
        let config = LogConfig {
            file_bytes_max: 1024,
            files_max,
            read_chunk_bytes: 512,
            ..LogConfig::default()
        };
        let path = dir.path("agent.log");
        // A file over the limit from an earlier run is rotated before the first write.
        fs::write(&path, [b'x'; 2000]).expect("write");
        let mut log = LogFile::new(path.clone());
        let lines: Vec<String> = (0..LINES).map(|i| format!("{i:099}\n")).collect();
        for line in &lines {
            log.append(line.as_bytes(), &config, &shared);
        }

        let names: Vec<String> = std::iter::once("agent.log".to_string())
            .chain((1..files_max).map(|n| format!("agent.log.{n}")))
            .collect();
        let mut listed = dir.names();
        listed.sort_by_key(|name| name.len());
        assert_eq!(listed, names, "files_max {files_max}");
        let mut kept = Vec::new();
        for name in names.iter().rev() {
            let bytes = fs::read(dir.path(name)).expect("read");
            assert!(
                bytes.len() as u64 <= bound(&config),
                "{name}: {} bytes",
                bytes.len()
            );
            assert_eq!(bytes.len() % LINE_BYTES, 0, "{name}: lines are never split");
            kept.extend(bytes);
        }
        assert!(
            lines.concat().as_bytes().ends_with(&kept),
            "files_max {files_max}: in order"
        );
    }
}

#[test]
fn cut_len_prefers_line_ends() {
    fn check(chunk: &str, room: usize, expected: &str) {
        let len = cut_len(chunk.as_bytes(), room);
        assert_eq!(&chunk[..len], expected, "chunk {chunk:?}, room {room}");
    }
    check("ab\ncd\nef", 7, "ab\ncd\n"); // the last line end that fits
    check("ab\ncd\nef", 4, "ab\n");
    check("\nabcdef", 5, "\n");
    check("abcdef\ngh\n", 3, "abcdef\n"); // else the first one past the room
    check("abcdefgh", 3, "abc"); // else exactly the room
    check("abc", 0, "a"); // the room counts as one byte at least
    check("abc", 9, "abc");
}
