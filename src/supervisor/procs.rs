//! The one seam between the supervisor and the kernel's processes: spawning,
//! signalling and reaping go through `Processes`, which `Os` carries out with the
//! system calls of `sys.rs`, and which the whole-agent simulation
//! (`src/simulation_tests.rs`) replaces with processes of its own on a manual clock.

use crate::sys::{self, Reaped, SpawnSpec};
use std::io;

/// What the supervisor asks of the operating system about processes.
pub(crate) trait Processes {
    /// Starts a child (see `sys::spawn_child`); its pid.
    fn spawn(&self, spec: SpawnSpec<'_>) -> io::Result<i32>;
    fn signal_group(&self, pgid: i32, signal: i32) -> io::Result<()>;
    fn signal_process(&self, pid: i32, signal: i32) -> io::Result<()>;
    fn process_group(&self, pid: i32) -> Option<i32>;
    /// Reaps `pid` if it has exited.
    fn reap(&self, pid: i32) -> Option<Reaped>;
    fn parent_of(&self, pid: i32) -> Option<i32>;
    fn become_subreaper(&self) -> io::Result<()>;
    /// A child of this process that has exited, without reaping it.
    fn peek_exited_child(&self) -> Option<i32>;
    fn children_of(&self, parent: u32) -> Vec<i32>;
    /// Processes whose environment holds one of `markers`.
    fn marked_processes(&self, markers: &[&[u8]]) -> Vec<i32>;
    /// Kills the processes whose environment holds `marker`; how many.
    fn kill_marked_processes(&self, marker: &[u8]) -> usize;
}

/// The real processes of this host.
pub(crate) struct Os;

impl Processes for Os {
    fn spawn(&self, spec: SpawnSpec<'_>) -> io::Result<i32> {
        sys::spawn_child(spec)
    }
    fn signal_group(&self, pgid: i32, signal: i32) -> io::Result<()> {
        sys::signal_group(pgid, signal)
    }
    fn signal_process(&self, pid: i32, signal: i32) -> io::Result<()> {
        sys::signal_process(pid, signal)
    }
    fn process_group(&self, pid: i32) -> Option<i32> {
        sys::process_group(pid)
    }
    fn reap(&self, pid: i32) -> Option<Reaped> {
        sys::reap(pid)
    }
    fn parent_of(&self, pid: i32) -> Option<i32> {
        sys::parent_of(pid)
    }
    fn become_subreaper(&self) -> io::Result<()> {
        sys::become_subreaper()
    }
    fn peek_exited_child(&self) -> Option<i32> {
        sys::peek_exited_child()
    }
    fn children_of(&self, parent: u32) -> Vec<i32> {
        sys::children_of(parent)
    }
    fn marked_processes(&self, markers: &[&[u8]]) -> Vec<i32> {
        sys::marked_processes(markers)
    }
    fn kill_marked_processes(&self, marker: &[u8]) -> usize {
        sys::kill_marked_processes(marker)
    }
}
