use super::*;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A directory of its own, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("bootagent-sys-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Spawns `script` (a shell script) with `env`, and returns what it printed and its pid.
fn run_script(
    dir: &Path,
    script: &str,
    env: &[(String, String)],
    watchdog_pid: bool,
) -> (String, i32) {
    let program = dir.join("run");
    std::fs::write(&program, script).expect("write the script");
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut tries = 0;
    let (mut reader, pid) = loop {
        let (reader, writer) = io::pipe().expect("pipe");
        let spawned = spawn_child(SpawnSpec {
            program: &program,
            cwd: dir,
            env,
            output: writer.into(),
            cgroup_procs: Vec::new(),
            watchdog_pid,
        });
        match spawned {
            // A test thread forked while the script was open for writing: its copy of
            // the descriptor lives until that child's exec.
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            spawned => break (reader, spawned.expect("spawn")),
        }
    };
    let mut out = String::new();
    reader.read_to_string(&mut out).expect("read its output");
    let deadline = Instant::now() + Duration::from_secs(10);
    while reap(pid).is_none() {
        assert!(Instant::now() < deadline, "the child did not end");
        std::thread::sleep(Duration::from_millis(5));
    }
    (out, pid)
}

#[test]
fn watchdog_pid_is_the_pid_of_the_process_that_runs() {
    let scratch = Scratch::new("wdpid");
    let env = vec![
        ("PATH".to_string(), "/usr/bin:/bin".to_string()),
        ("WATCHDOG_PID".to_string(), "1".to_string()), // replaced, not kept
        ("OTHER".to_string(), "kept".to_string()),
    ];
    let script = "#!/bin/sh\necho \"pid=$$ wd=$WATCHDOG_PID other=$OTHER dir=$(pwd)\"\nenv | grep -c '^WATCHDOG_PID='\n";
    let (out, pid) = run_script(&scratch.0, script, &env, true);
    let dir = scratch.0.display();
    assert_eq!(out, format!("pid={pid} wd={pid} other=kept dir={dir}\n1\n"));

    let (out, pid) = run_script(&scratch.0, script, &env[..1], false);
    assert_eq!(out, format!("pid={pid} wd= other= dir={dir}\n0\n"));
}

#[test]
fn watchdog_pid_spawn_reports_a_failed_exec() {
    let scratch = Scratch::new("wdfail");
    let (_reader, writer) = io::pipe().expect("pipe");
    let err = spawn_child(SpawnSpec {
        program: &scratch.0.join("missing"),
        cwd: &scratch.0,
        env: &[],
        output: writer.into(),
        cgroup_procs: Vec::new(),
        watchdog_pid: true,
    })
    .expect_err("no such program");
    assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    let (_reader, writer) = io::pipe().expect("pipe");
    let err = spawn_child(SpawnSpec {
        program: Path::new("/bin/true"),
        cwd: &scratch.0,
        env: &[("BAD".to_string(), "a\0b".to_string())],
        output: writer.into(),
        cgroup_procs: Vec::new(),
        watchdog_pid: true,
    })
    .expect_err("a NUL in the environment");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{err}");
}
