//! End to end: write-ahead jobs (docs/protocol.md section 7). A job runs only once
//! its receipt is on disk: on a full disk it is refused with errcode 5 and runs
//! when sent again once there is room; the metafile is written again when space
//! returns, without anything else changing. A flood of jobs in one answer gets a
//! result for each, or a `dropped` event counting the rest; a full event queue
//! holds its bound exactly (docs/protocol.md section 3).

mod common;

use common::*;
use serde_json::{json, Value};
use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A registered agent reporting every second.
fn start(scratch: &Scratch, extra: &[&str]) -> (RefServer, Agent, String) {
    let server = start_server(Some(1));
    let addr = server.addr();
    let mut args = vec!["-S", addr.as_str()];
    args.extend_from_slice(extra);
    let agent = Agent::start(scratch, &args);
    let mut sn = String::new();
    assert!(
        wait_until(DEADLINE, || {
            sn = server
                .agents()
                .first()
                .map(|a| a.sn.clone())
                .unwrap_or_default();
            !sn.is_empty() && server.agent(&sn).is_some_and(|a| a.reports > 0)
        }),
        "the agent never reported; log:\n{}",
        agent.log_text()
    );
    wait_registered(&scratch.data());
    (server, agent, sn)
}

fn result(server: &RefServer, sn: &str, id: &str, agent: &Agent) -> Value {
    let mut found = Value::Null;
    let ok = wait_until(Duration::from_secs(30), || {
        found = server
            .agent(sn)
            .and_then(|a| a.job_results.get(id).cloned())
            .unwrap_or(Value::Null);
        !found.is_null()
    });
    assert!(ok, "no result for {id}; log:\n{}", agent.log_text());
    found
}

/// A tmpfs mounted on a directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`"2m"`) on `dir`; `Err` says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid(2) has no preconditions and no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root: cannot mount a tmpfs".to_string());
        }
        fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let c = |s: &str| CString::new(s).map_err(|e| e.to_string());
        let target = c(&dir.to_string_lossy())?;
        let (source, fstype, options) = (
            c("tmpfs")?,
            c("tmpfs")?,
            c(&format!("size={size},mode=0700"))?,
        );
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            return Err(format!(
                "mount -t tmpfs on {}: {}",
                dir.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.dir.to_string_lossy().as_bytes()) {
            // SAFETY: a valid NUL-terminated path; MNT_DETACH needs nothing else.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Fills the file system of `dir` with `dir/filler` until it is full.
fn fill(dir: &Path) {
    let mut file = fs::File::create(dir.join("filler")).expect("filler");
    let chunk = vec![0u8; 4096];
    while file.write_all(&chunk).is_ok() {}
}

#[test]
fn on_a_full_disk_a_job_is_refused_with_errcode_5_and_runs_when_sent_again() {
    let scratch = Scratch::new("wa-full");
    let _tmpfs = match Tmpfs::mount(&scratch.data(), "2m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            skip(&format!("the full-disk case needs a tmpfs: {why}"));
            return;
        }
    };
    let data = scratch.data();
    // A child that records each start, preinstalled on the small disk.
    let starts = scratch.path.join("svc.starts");
    let run = data.join("agents/svc/1.0/run");
    fs::create_dir_all(run.parent().expect("dir")).expect("agent dir");
    let script = format!(
        "#!/bin/sh\necho $$ >> {}\nexec sleep 1000\n",
        starts.display()
    );
    fs::write(&run, script).expect("run");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("1.0", data.join("agents/svc/current")).expect("current");
    let pids = || -> Vec<i32> {
        fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    };
    let (server, mut agent, sn) = start(&scratch, &["-o", "meta_save_retry_ms=200"]);
    assert!(
        wait_until(DEADLINE, || pids().len() == 1),
        "the child started"
    );
    let step_reported = |server: &RefServer| {
        server
            .agent(&sn)
            .and_then(|a| a.last_report)
            .map(|r| r["step"].clone())
            .unwrap_or(Value::Null)
    };

    fill(&data);
    let job = json!({"id": "c1", "action": "config", "step": 7});
    let stop = json!({"id": "s1", "action": "stop", "name": "svc"});
    server.queue_job(&sn, stop.clone());
    server.queue_job(&sn, job.clone());
    let stop_refused = result(&server, &sn, "s1", &agent);
    assert_eq!(stop_refused["errcode"], 5, "{stop_refused}");
    let refused = result(&server, &sn, "c1", &agent);
    assert_eq!(refused["errcode"], 5, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("metafile") && m.contains("No space left")),
        "{refused}"
    );
    let reports = server.agent(&sn).map_or(0, |a| a.reports);
    assert!(wait_until(DEADLINE, || server
        .agent(&sn)
        .is_some_and(|a| a.reports > reports + 1)));
    assert_eq!(step_reported(&server), 1, "the refused job did not run");
    assert_eq!(pids().len(), 1);
    assert!(alive(pids()[0]), "the refused stop did not run");

    // Room again: the metafile is written again, though nothing else happens.
    let written = || {
        fs::metadata(data.join("meta.json"))
            .and_then(|m| m.modified())
            .expect("meta.json")
    };
    let before = written();
    assert!(
        !fs::read_to_string(data.join("meta.json"))
            .expect("meta.json")
            .contains("\"c1\""),
        "the refused job is not remembered"
    );
    fs::remove_file(data.join("filler")).expect("free the disk");
    assert!(
        wait_until(DEADLINE, || written() > before),
        "the metafile was never written again; log:\n{}",
        agent.log_text()
    );
    read_meta(&data);

    // Sent again, the job runs: the last result for the id counts.
    server.queue_job(&sn, job);
    assert!(
        wait_until(DEADLINE, || server
            .agent(&sn)
            .and_then(|a| a.job_results.get("c1").cloned())
            .is_some_and(|r| r["errcode"] == 0)),
        "the job sent again did not run; log:\n{}",
        agent.log_text()
    );
    assert!(wait_until(DEADLINE, || step_reported(&server) == 7));
    server.queue_job(&sn, stop);
    assert!(
        wait_until(DEADLINE, || server
            .agent(&sn)
            .and_then(|a| a.job_results.get("s1").cloned())
            .is_some_and(|r| r["errcode"] == 0)),
        "the stop sent again did not run"
    );
    assert!(wait_until(DEADLINE, || !alive(pids()[0])));

    // What the server was told survives a kill -9: the step, the stopped child.
    agent.kill9();
    let agent = Agent::start(&scratch, &[]);
    let reports = server.agent(&sn).map_or(0, |a| a.reports);
    assert!(wait_until(DEADLINE, || server
        .agent(&sn)
        .is_some_and(|a| a.reports > reports)));
    assert_eq!(step_reported(&server), 7, "log:\n{}", agent.log_text());
    assert_eq!(pids().len(), 1, "the stopped child stays stopped");
}

fn alive(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            !stat
                .rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

#[test]
fn ten_thousand_jobs_in_one_answer_get_ten_thousand_results_or_a_dropped_count() {
    let scratch = Scratch::new("wa-flood");
    let (server, agent, sn) = start(&scratch, &[]);
    const JOBS: usize = 10_000;
    for i in 0..JOBS {
        server.queue_job(
            &sn,
            json!({"id": format!("f{i:05}"), "action": "stop", "name": "nobody"}),
        );
    }
    let answered = |server: &RefServer| -> (usize, u64) {
        let Some(view) = server.agent(&sn) else {
            return (0, 0);
        };
        let dropped = view
            .events
            .iter()
            .filter(|e| e["event"] == "dropped" && e["what"] == "results")
            .map(|e| e["count"].as_u64().unwrap_or(0))
            .sum();
        (view.job_results.len(), dropped)
    };
    assert!(
        wait_until(Duration::from_secs(60), || {
            let (results, dropped) = answered(&server);
            results as u64 + dropped >= JOBS as u64
        }),
        "answered: {:?}; log:\n{}",
        answered(&server),
        agent.log_text()
    );
    let (results, dropped) = answered(&server);
    assert_eq!(results as u64 + dropped, JOBS as u64, "each job once");
    let view = server.agent(&sn).expect("agent");
    let run = view
        .job_results
        .values()
        .filter(|r| r["errcode"] == 7)
        .count();
    let full = view
        .job_results
        .values()
        .filter(|r| r["errcode"] == 9 && r["message"] == "queue full")
        .count();
    assert_eq!(run + full, results, "run, or refused with \"queue full\"");
    assert!(run > 0 && full > 0 && dropped > 0, "{run} {full} {dropped}");
    // A job refused with "queue full" is not remembered: sent again, it runs.
    let refused = view
        .job_results
        .iter()
        .find(|(_, r)| r["errcode"] == 9)
        .map(|(id, _)| id.clone())
        .expect("a refused job");
    server.queue_job(
        &sn,
        json!({"id": refused, "action": "stop", "name": "nobody"}),
    );
    assert!(
        wait_until(DEADLINE, || server
            .agent(&sn)
            .and_then(|a| a.job_results.get(&refused).cloned())
            .is_some_and(|r| r["errcode"] == 7)),
        "{refused} sent again did not run"
    );
}

#[test]
fn a_full_event_queue_holds_its_bound_exactly_with_one_dropped_event() {
    const MAX: usize = 256; // pending_events_max
    let scratch = Scratch::new("wa-events");
    let server = start_server(Some(1));
    let data = scratch.data();
    // An agent back from a long outage: its event queue is full, and a child
    // that fails at once adds more.
    let run = data.join("agents/crash/1.0/run");
    fs::create_dir_all(run.parent().expect("dir")).expect("agent dir");
    fs::write(&run, "#!/bin/sh\nexit 3\n").expect("run");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::symlink("1.0", data.join("agents/crash/current")).expect("current");
    let events: Vec<Value> = (1..=MAX)
        .map(|seq| {
            json!({"seq": seq, "event": {"time": 1_763_700_000, "name": "old", "event": "exited",
                   "code": 1, "message": "exited with code 1"}})
        })
        .collect();
    let meta = json!({"schema": 1, "agentsn": "5d3c3e46-1bb5-4d2c-a8c4-3b1e2f0a9c11",
        "registered": true, "servers_cli": server.url(), "step_s": 1,
        "events": events, "event_seq": MAX});
    fs::set_permissions(&data, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(data.join("meta.json"), meta.to_string()).expect("meta.json");
    let agent = Agent::start(&scratch, &[]);
    let reports = || -> Vec<Value> {
        server
            .requests_to("/agent/status")
            .into_iter()
            .filter_map(|r| r.json)
            .collect()
    };
    let dropped_count = |report: &Value| -> Vec<u64> {
        report["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| e["event"] == "dropped")
                    .map(|e| e["count"].as_u64().unwrap_or(0))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        wait_until(Duration::from_secs(30), || reports()
            .iter()
            .any(|r| dropped_count(r).iter().sum::<u64>() >= 2)),
        "no report counted the dropped events; log:\n{}",
        agent.log_text()
    );
    for report in reports() {
        let events = report["events"].as_array().map_or(0, Vec::len);
        assert!(
            events <= MAX,
            "{events} events in one report: the bound is {MAX}"
        );
        assert!(
            dropped_count(&report).len() <= 1,
            "one `dropped` event: {report}"
        );
    }
}
