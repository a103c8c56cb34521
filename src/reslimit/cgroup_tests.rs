//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;

use crate::reslimit::facts::Facts;
use crate::reslimit::parse::MIB;
use crate::reslimit::testing::{read_trimmed, skip, wait_until, Group, ALLOCATE_50M};
use crate::reslimit::{detect, group_usage, release, Choice};

#[test]
fn keyed_values_of_memory_events() {
    let events = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 2\noom_group_kill 1\n";
    assert_eq!(keyed_value(events, "oom_kill"), Some(2));
    assert_eq!(
        keyed_value("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
        Some(3)
    );
    assert_eq!(
        keyed_value("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
        None
    );
}

#[test]
fn cgroup_names_must_be_plain() {
    for bad in ["", ".", "..", ".hidden", "a/b", "a\0b"] {
        assert_eq!(
            check_name(bad).map_err(|e| e.kind()),
            Err(io::ErrorKind::InvalidInput),
            "{bad:?}"
        );
    }
    assert!(check_name("agent-1.2_x").is_ok());
    assert!(check_name(&"n".repeat(NAME_BYTES_MAX + 1)).is_err());
    assert_eq!(cpu_quota_us(10), 10_000);
    assert_eq!(cpu_quota_us(250), 250_000);
}

// cgroup v1, on a host like this one (root, v1 memory and cpu mounted).

/// The cgroup tests share BootAgent's parent cgroups, and `release` them at the end.
static CGROUP_TESTS: Mutex<()> = Mutex::new(());

/// The v1 mechanism, or `None` (with the reason printed; a failure under CI) on a
/// host that is not root or has no writable v1 hierarchy. Any other failure fails
/// the test.
fn v1_host() -> Option<Mechanism> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        skip("not root, so no cgroup can be created");
        return None;
    }
    let facts = Facts::read().expect("/proc/self is readable");
    let usable = facts.mounts.iter().any(|m| {
        m.fstype == "cgroup"
            && m.super_options
                .split(',')
                .any(|c| c == "memory" || c == "cpu")
            && sys::writable(&m.point)
    });
    if !usable {
        skip("no writable cgroup v1 memory or cpu hierarchy");
        return None;
    }
    let mechanism = detect(Choice::CgroupV1);
    assert!(
        matches!(mechanism, Mechanism::CgroupV1 { .. }),
        "{mechanism}"
    );
    Some(mechanism)
}

/// Removes the cgroup (and the parents, when the last test is done) even when the
/// test fails.
struct Cleanup<'a>(&'a Mechanism, Option<Cgroup>);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Some(cgroup) = self.1.take() {
            cgroup.remove();
        }
        release(self.0);
    }
}

fn unique_name(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

#[test]
fn cgroup_v1_create_writes_limits_and_the_child_joins() {
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mechanism) = v1_host() else { return };
    let Mechanism::CgroupV1 {
        memory: Some(memory),
        cpu: Some(cpu),
    } = &mechanism
    else {
        panic!("both hierarchies are writable here: {mechanism}");
    };
    println!("detect(cgroup1): {mechanism}");
    let name = unique_name("create");
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: Some(20 * MIB),
    };
    let mut cleanup = Cleanup(&mechanism, None);
    let cgroup = cleanup
        .1
        .insert(Cgroup::create(&mechanism, &name, &limits).expect("create"));
    let (memory_dir, cpu_dir) = (memory.join(&name), cpu.join(&name));
    assert_eq!(cgroup.dirs(), [memory_dir.clone(), cpu_dir.clone()]);
    assert_eq!(
        read_trimmed(&memory_dir.join("memory.limit_in_bytes")),
        "20971520"
    );
    if memory_dir.join("memory.memsw.limit_in_bytes").exists() {
        assert_eq!(
            read_trimmed(&memory_dir.join("memory.memsw.limit_in_bytes")),
            "20971520"
        );
    }
    assert_eq!(read_trimmed(&cpu_dir.join("cpu.cfs_period_us")), "100000");
    assert_eq!(read_trimmed(&cpu_dir.join("cpu.cfs_quota_us")), "10000");
    assert_eq!(cgroup.oom_kills(), 0);
    assert_eq!(cgroup.procs_fds().len(), 2);

    let mut group = Group::spawn("sleep 30", Some(cgroup));
    let pid = group.0.id().to_string();
    for dir in [&memory_dir, &cpu_dir] {
        let procs = read_text(&dir.join(PROCS_FILE)).expect("cgroup.procs");
        assert!(
            procs.split_whitespace().any(|p| p == pid),
            "{pid} not in {}",
            dir.display()
        );
    }
    // remove kills what is left in the cgroup, then removes the directories.
    cleanup.1.take().expect("created").remove();
    let status = group.wait_exit(5_000).expect("killed by remove");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    assert!(!memory_dir.exists() && !cpu_dir.exists());
}

#[test]
fn cgroup_v1_leftover_is_cleared_and_made_anew() {
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mechanism) = v1_host() else { return };
    let name = unique_name("leftover");
    let limits = ResourceLimits {
        cpu_pct: Some(50),
        memory_bytes: None,
    };
    let mut cleanup = Cleanup(&mechanism, None);
    let first = Cgroup::create(&mechanism, &name, &limits).expect("create");
    let mut group = Group::spawn("sleep 30", Some(&first));
    drop(first); // as after a crash: the directories stay, with a process in them
    let again = cleanup
        .1
        .insert(Cgroup::create(&mechanism, &name, &limits).expect("recreate"));
    let status = group.wait_exit(5_000).expect("leftover process killed");
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    for dir in again.dirs() {
        assert_eq!(read_trimmed(&dir.join(PROCS_FILE)), "", "{}", dir.display());
    }
}

#[test]
fn cgroup_v1_memory_limit_kills_a_process_that_takes_50m() {
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mechanism) = v1_host() else { return };
    let Mechanism::CgroupV1 {
        memory: Some(_), ..
    } = &mechanism
    else {
        skip(&format!("no memory hierarchy ({mechanism})"));
        return;
    };
    let name = unique_name("oom");
    let limits = ResourceLimits {
        cpu_pct: None,
        memory_bytes: Some(20 * MIB),
    };
    let mut cleanup = Cleanup(&mechanism, None);
    let cgroup = cleanup
        .1
        .insert(Cgroup::create(&mechanism, &name, &limits).expect("create"));
    let mut group = Group::spawn(ALLOCATE_50M, Some(cgroup));
    let status = group
        .wait_exit(20_000)
        .expect("the shell was not killed within 20 s");
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
    assert!(cgroup.oom_kills() >= 1);
    let peak = read_trimmed(&cgroup.dirs()[0].join("memory.max_usage_in_bytes"));
    println!(
        "cgroup v1 20M: killed by SIGKILL, oom_kill {}, peak usage {peak} bytes",
        cgroup.oom_kills()
    );
    assert!(peak.parse::<u64>().is_ok_and(|p| p <= 20 * MIB));
}

#[test]
fn cgroup_v1_cpu_quota_throttles_a_spinning_process() {
    const MEASURE_MS: u64 = 2_000;
    let _serial = CGROUP_TESTS.lock().unwrap_or_else(|e| e.into_inner());
    let Some(mechanism) = v1_host() else { return };
    let Mechanism::CgroupV1 { cpu: Some(_), .. } = &mechanism else {
        skip(&format!("no cpu hierarchy ({mechanism})"));
        return;
    };
    let name = unique_name("cpu");
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: None,
    };
    let mut cleanup = Cleanup(&mechanism, None);
    let cgroup = cleanup
        .1
        .insert(Cgroup::create(&mechanism, &name, &limits).expect("create"));
    let group = Group::spawn("while :; do :; done", Some(cgroup));
    let started = wait_until(5_000, || {
        group_usage(group.pgid()).is_ok_and(|u| u.cpu_ms > 0)
    });
    assert!(started, "the spinner never ran");
    let begin = (
        Instant::now(),
        group_usage(group.pgid()).expect("scan").cpu_ms,
    );
    std::thread::sleep(Duration::from_millis(MEASURE_MS)); // time passing is the point
    let used_ms = group_usage(group.pgid()).expect("scan").cpu_ms - begin.1;
    let elapsed_ms = u64::try_from(begin.0.elapsed().as_millis()).unwrap_or(u64::MAX);
    let pct = used_ms * 100 / elapsed_ms;
    let cpu_dir = cgroup.dirs().last().expect("a cpu directory");
    let stat = read_text(&cpu_dir.join("cpu.stat")).expect("cpu.stat");
    let throttled = keyed_value(&stat, "nr_throttled").unwrap_or(0);
    println!("cgroup v1 10%: {used_ms} ms of CPU in {elapsed_ms} ms ({pct}%), throttled {throttled} times");
    assert!(pct <= 15, "{pct}% of a CPU under a 10% quota");
    assert!(throttled > 0);
}
