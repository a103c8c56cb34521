//! Helpers of the tests of `reslimit` that run real processes.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cgroup::{join_in_child, Cgroup};
use super::shared::read_text;
use crate::sys;

/// A precondition of the test is missing (`why`): fails the test loudly under CI
/// (`BOOTAGENT_CI=1`, set by `.ci/run`, which runs as root on a host with cgroup v1
/// memory and cpu hierarchies), elsewhere prints `skipped: WHY` for the caller to return.
pub(super) fn skip(why: &str) {
    assert!(
        std::env::var_os("BOOTAGENT_CI").is_none_or(|v| v != "1"),
        "{why}: CI (BOOTAGENT_CI=1) must meet this test's preconditions"
    );
    println!("skipped: {why}");
}

/// A shell in its own process group, SIGKILLed with its group and reaped on drop.
pub(super) struct Group(pub(super) Child);

impl Group {
    pub(super) fn spawn(script: &str, cgroup: Option<&Cgroup>) -> Group {
        let mut command = Command::new("/bin/sh");
        command.args(["-c", script]).process_group(0);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cgroup) = cgroup {
            let fds = cgroup.procs_fds();
            // SAFETY: the hook only calls join_in_child, which makes write(2) calls
            // and allocates nothing.
            unsafe {
                command.pre_exec(move || join_in_child(&fds));
            }
        }
        Group(command.spawn().expect("spawn /bin/sh"))
    }

    pub(super) fn pgid(&self) -> i32 {
        i32::try_from(self.0.id()).expect("pid fits i32")
    }

    pub(super) fn signal(&self, signal: libc::c_int) {
        let _ = sys::signal_group(self.pgid(), signal);
    }

    /// Waits up to `timeout_ms` for the shell to exit.
    pub(super) fn wait_exit(&mut self, timeout_ms: u64) -> Option<std::process::ExitStatus> {
        let mut status = None;
        wait_until(timeout_ms, || {
            status = self.0.try_wait().expect("try_wait");
            status.is_some()
        });
        status
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.0.wait();
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout_ms` passes.
pub(super) fn wait_until(timeout_ms: u64, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A shell that holds 50 MB (a command substitution keeps it all), then waits.
pub(super) const ALLOCATE_50M: &str = "x=$(head -c 52428800 /dev/zero | tr '\\0' a); sleep 30";

pub(super) fn read_trimmed(path: &Path) -> String {
    read_text(path).expect("readable").trim().to_owned()
}
