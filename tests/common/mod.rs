//! Shared helpers of the end-to-end tests: the reference server, the real
//! `bootagent` binary in a scratch data directory, and waiting on conditions
//! with deadlines.

#![allow(dead_code)] // each test file uses its own subset

#[path = "../refserver/server.rs"]
pub mod server;

pub mod children;
pub mod host;
pub mod proxy;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // each test file uses its own subset
pub use server::{Fault, Options, RefServer};

/// Generous deadline for conditions that normally hold within a second.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// Starts a reference server on loopback with the given register step.
pub fn start_server(step: Option<u64>) -> RefServer {
    RefServer::start(Options {
        step,
        ..Options::default()
    })
    .expect("reference server starts on loopback")
}

/// A fresh scratch directory under the target directory, removed on drop.
pub struct Scratch {
    pub path: PathBuf,
}

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let base = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let path = base.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("scratch directory");
        Scratch { path }
    }

    pub fn data(&self) -> PathBuf {
        self.path.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.path.join("agent.log")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// The real binary.
pub fn bootagent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bootagent"))
}

/// A running agent, killed on drop.
pub struct Agent {
    pub child: Child,
    log: PathBuf,
}

impl Agent {
    /// Starts `bootagent -D DATA -L LOG -v` plus `args`.
    pub fn start(scratch: &Scratch, args: &[&str]) -> Agent {
        Agent::start_with_env(scratch, args, &[])
    }

    /// The same, with these variables added to its environment.
    pub fn start_with_env(scratch: &Scratch, args: &[&str], envs: &[(&str, &str)]) -> Agent {
        let child = bootagent()
            .envs(envs.iter().copied())
            .arg("-D")
            .arg(scratch.data())
            .arg("-L")
            .arg(scratch.log())
            .arg("-v")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("bootagent starts");
        Agent {
            child,
            log: scratch.log(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (`"TERM"`, `"HUP"`, …) to the agent.
    pub fn signal(&self, signal: &str) {
        let number = match signal {
            "TERM" => libc::SIGTERM,
            "INT" => libc::SIGINT,
            "HUP" => libc::SIGHUP,
            "KILL" => libc::SIGKILL,
            other => panic!("no such signal in the tests: {other}"),
        };
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        let rc = unsafe { libc::kill(self.pid(), number) };
        assert_eq!(rc, 0, "kill -{signal} failed");
    }

    /// Waits for the process to exit, up to `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let end = Instant::now() + deadline;
        while Instant::now() < end {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// `SIGTERM`, then waits for a clean exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(DEADLINE)
            .expect("bootagent exits after SIGTERM")
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The variable `.ci/run` sets: under CI every precondition of a test holds (it runs
/// as root, on a host with cgroups and tmpfs), so a missing one is a failure.
pub const CI_ENV: &str = "BOOTAGENT_CI";

/// A precondition of the test is missing (`why`): fails the test loudly under CI
/// (`BOOTAGENT_CI=1`), elsewhere prints `skipped: WHY` and lets the caller return.
pub fn skip(why: &str) {
    assert!(
        std::env::var_os(CI_ENV).is_none_or(|v| v != "1"),
        "{why}: CI ({CI_ENV}=1) must meet this test's preconditions"
    );
    eprintln!("skipped: {why}");
}

/// Polls `condition` every 10 ms until it holds or `deadline` passes.
pub fn wait_until(deadline: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + deadline;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The metafile of a data directory, parsed.
pub fn read_meta(data: &Path) -> serde_json::Value {
    let text = fs::read_to_string(data.join("meta.json")).expect("meta.json exists");
    serde_json::from_str(&text).expect("meta.json is JSON")
}

/// Waits until the agent has recorded an answered report (`registered` in its
/// metafile): a report the server saw may not have had its answer read yet.
pub fn wait_registered(data: &Path) {
    assert!(
        wait_until(DEADLINE, || fs::read_to_string(data.join("meta.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|m| m["registered"] == true)),
        "the agent never recorded an answered report"
    );
}

/// A loopback port that nothing listens on (at the moment of the call).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
