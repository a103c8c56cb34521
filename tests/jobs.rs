//! End to end: jobs (docs/protocol.md sections 7 and 9) with packages built in the
//! test, served by the reference server (or a file path, or an FTP server), run
//! by the real binary.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A child script that records each start's pid in `$MARK`, then sleeps.
const SLEEPER: &str = "#!/bin/sh\necho $$ >> \"$MARK\"\nexec sleep 1000\n";

/// Builds `NAME-VERSION.tgz` in `dir` holding `run` (and `extra` files), returns its path.
fn package(dir: &Path, name: &str, version: &str, run: &str, extra: &[(&str, &str)]) -> PathBuf {
    let path = dir.join(format!("{name}-{version}.tgz"));
    let file = fs::File::create(&path).expect("package file");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut add = |path: &str, body: &str, mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        tar.append_data(&mut header, path, body.as_bytes())
            .expect("append");
    };
    add("run", run, 0o755);
    for (name, body) in extra {
        add(name, body, 0o644);
    }
    tar.into_inner().and_then(|gz| gz.finish()).expect("finish");
    path
}

/// A tarball with one raw entry whose name is not checked by the builder.
fn evil_package(dir: &Path, entry: &str) -> PathBuf {
    let path = dir.join("evil-1.0.tgz");
    let file = fs::File::create(&path).expect("package file");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let body = b"#!/bin/sh\necho gotcha\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(body.len() as u64);
    header.set_mode(0o755);
    // Write the name into the raw header, past the builder's checks.
    let name = header.as_old_mut().name.as_mut();
    name[..entry.len()].copy_from_slice(entry.as_bytes());
    header.set_cksum();
    tar.append(&header, &body[..]).expect("append");
    let mut run = tar::Header::new_gnu();
    run.set_size(body.len() as u64);
    run.set_mode(0o755);
    run.set_cksum();
    tar.append_data(&mut run, "run", &body[..])
        .expect("append run");
    tar.into_inner().and_then(|gz| gz.finish()).expect("finish");
    path
}

fn sha256(path: &Path) -> String {
    let bytes = fs::read(path).expect("read package");
    let digest = Sha256::digest(&bytes);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

struct Host {
    server: RefServer,
    scratch: Scratch,
    files: PathBuf,
    agent: Agent,
    sn: String,
}

impl Host {
    /// A registered agent with a file server, reporting every second.
    fn new(name: &str, extra: &[&str]) -> Host {
        let scratch = Scratch::new(name);
        let files = scratch.path.join("files");
        fs::create_dir_all(&files).expect("files dir");
        let server = RefServer::start(Options {
            step: Some(1),
            files_dir: Some(files.clone()),
            ..Options::default()
        })
        .expect("server");
        let addr = server.addr();
        // The served directory is also where this host's file:// URLs point.
        let root = files.to_string_lossy().into_owned();
        let mut args = vec!["-S", addr.as_str(), "--file-url-root", root.as_str()];
        args.extend_from_slice(extra);
        let agent = Agent::start(&scratch, &args);
        let mut sn = String::new();
        assert!(wait_until(DEADLINE, || {
            sn = server
                .agents()
                .first()
                .map(|a| a.sn.clone())
                .unwrap_or_default();
            !sn.is_empty() && server.agent(&sn).is_some_and(|a| a.reports > 0)
        }));
        Host {
            server,
            scratch,
            files,
            agent,
            sn,
        }
    }

    fn mark(&self, name: &str) -> PathBuf {
        self.scratch.path.join(format!("{name}.starts"))
    }

    fn starts(&self, name: &str) -> Vec<i32> {
        fs::read_to_string(self.mark(name))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn url(&self, package: &Path) -> String {
        let file = package
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        format!("{}/files/{file}", self.server.url())
    }

    fn install_job(&self, id: &str, action: &str, name: &str, url: &str, checksum: &str) -> Value {
        json!({"id": id, "action": action, "name": name, "url": url, "checksum": checksum,
               "envs": {"MARK": self.mark(name).to_string_lossy()}})
    }

    fn send(&self, job: Value) {
        self.server.queue_job(&self.sn, job);
    }

    /// Waits for the result of job `id` and returns it.
    fn result(&self, id: &str, deadline: Duration) -> Value {
        let mut found = Value::Null;
        let ok = wait_until(deadline, || {
            found = self
                .server
                .agent(&self.sn)
                .and_then(|a| a.job_results.get(id).cloned())
                .unwrap_or(Value::Null);
            !found.is_null()
        });
        assert!(
            ok,
            "no result for job {id}; log:\n{}",
            self.agent.log_text()
        );
        found
    }

    fn agent_status(&self, name: &str) -> Option<Value> {
        let report = self.server.agent(&self.sn)?.last_report?;
        report["agents"]
            .as_array()?
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
    }

    fn wait_status(&self, name: &str, status: &str, version: &str) {
        assert!(
            wait_until(DEADLINE, || self
                .agent_status(name)
                .is_some_and(|a| a["status"] == status && a["version"] == version)),
            "{name} not {status} at {version}: {:?}",
            self.agent_status(name)
        );
    }

    fn data(&self) -> PathBuf {
        self.scratch.data()
    }

    fn events(&self) -> Vec<Value> {
        self.server
            .agent(&self.sn)
            .map(|a| a.events)
            .unwrap_or_default()
    }
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

fn nothing_left(data: &Path, name: &str) {
    assert!(
        !data.join("agents").join(name).exists(),
        "agents/{name} left behind"
    );
    let tmp: Vec<_> = fs::read_dir(data.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "tmp/ not empty: {tmp:?}");
}

#[test]
fn install_from_http_then_from_file_runs_the_child_at_its_version() {
    let host = Host::new("job-install", &[]);
    let pkg = package(&host.files, "BasicAgent", "1.2.3", SLEEPER, &[]);
    host.send(host.install_job(
        "i1",
        "install",
        "BasicAgent",
        &host.url(&pkg),
        &sha256(&pkg),
    ));
    let result = host.result("i1", DEADLINE);
    assert_eq!(result["errcode"], 0, "{result}");
    host.wait_status("BasicAgent", "running", "1.2.3");
    assert_eq!(host.starts("BasicAgent").len(), 1);
    assert!(host.data().join("agents/BasicAgent/1.2.3/run").exists());

    let other = package(
        &host.files,
        "FileAgent",
        "0.9",
        SLEEPER,
        &[("VERSION", "0.9.1\n")],
    );
    let url = format!("file://{}", other.display());
    let mut job = host.install_job("i2", "install", "FileAgent", &url, &sha256(&other));
    job["limits"] = json!({"memory": "64M"});
    host.send(job);
    assert_eq!(host.result("i2", DEADLINE)["errcode"], 0);
    host.wait_status("FileAgent", "running", "0.9.1");
    let settings: Value = serde_json::from_slice(
        &fs::read(host.data().join("agents/FileAgent/agent.json")).expect("agent.json written"),
    )
    .expect("json");
    assert_eq!(settings["limits"], json!({"memory": "64M"}));
    assert_eq!(
        settings["envs"]["MARK"],
        host.mark("FileAgent").to_string_lossy().as_ref()
    );
}

/// A server that sends headers promising `len` bytes, then `sent` bytes, then
/// either stalls or closes. Returns its URL and how many answers it has sent so far
/// (a download under way, when it stalls).
fn bad_file_server(len: usize, sent: usize, stall: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let answered = Arc::new(AtomicUsize::new(0));
    let count = answered.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4).flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head =
                format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n");
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&vec![b'x'; sent]);
            count.fetch_add(1, Ordering::SeqCst);
            if stall {
                // The stall the download must notice: the server's behaviour, not a wait.
                std::thread::sleep(Duration::from_secs(30));
            }
        }
    });
    (format!("http://{addr}/pkg-1.0.tgz"), answered)
}

#[test]
fn failed_installs_get_their_errcode_and_leave_nothing_behind() {
    let host = Host::new("job-fail", &["-o", "download_stall_ms=1000"]);
    let good = package(&host.files, "p", "1.0", SLEEPER, &[]);
    let checksum = sha256(&good);
    let wrong = format!("SHA256:{}", "0".repeat(64));
    let no_run = {
        let path = host.files.join("norun-1.0.tgz");
        let file = fs::File::create(&path).expect("file");
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            file,
            flate2::Compression::default(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "README", &b"hi"[..])
            .expect("append");
        tar.into_inner().and_then(|gz| gz.finish()).expect("finish");
        path
    };
    let evil = evil_package(&host.files, "../evil");
    let refused = format!("http://127.0.0.1:{}/p-1.0.tgz", free_port());
    let cases: Vec<(&str, String, String, u64, &str)> = vec![
        ("checksum", host.url(&good), wrong, 3, "checksum mismatch"),
        (
            "404",
            format!("{}/files/missing-1.0.tgz", host.server.url()),
            checksum.clone(),
            2,
            "404",
        ),
        ("refused", refused, checksum.clone(), 2, "refused"),
        (
            "stalled",
            bad_file_server(5000, 100, true).0,
            checksum.clone(),
            2,
            "stalled",
        ),
        (
            "truncated",
            bad_file_server(5000, 1000, false).0,
            checksum.clone(),
            2,
            "truncated",
        ),
        ("evil", host.url(&evil), sha256(&evil), 4, ""),
        ("norun", host.url(&no_run), sha256(&no_run), 4, "run"),
    ];
    for (id, url, sum, errcode, part) in cases {
        host.send(json!({"id": id, "action": "install", "name": "p", "url": url, "checksum": sum}));
        let result = host.result(id, Duration::from_secs(30));
        assert_eq!(result["errcode"], errcode, "{id}: {result}");
        let message = result["message"].as_str().unwrap_or_default();
        assert!(message.contains(part), "{id}: {message} lacks {part}");
        nothing_left(&host.data(), "p");
        assert!(!host.scratch.path.join("evil").exists() && !host.data().join("evil").exists());
    }
    assert!(host.agent_status("p").is_none());
}

#[test]
fn upgrade_to_a_good_version_then_to_a_bad_one_which_is_rolled_back() {
    let mut host = Host::new("job-upgrade", &[]);
    let v1 = package(&host.files, "svc", "1.0", SLEEPER, &[]);
    host.send(host.install_job("u1", "install", "svc", &host.url(&v1), &sha256(&v1)));
    assert_eq!(host.result("u1", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");

    let v2 = package(&host.files, "svc", "2.0", SLEEPER, &[]);
    let mut job = host.install_job("u2", "upgrade", "svc", &host.url(&v2), &sha256(&v2));
    job["probation"] = json!(2);
    host.send(job);
    let result = host.result("u2", Duration::from_secs(30));
    assert_eq!(result["errcode"], 0, "{result}");
    host.wait_status("svc", "running", "2.0");
    let running: Vec<i32> = host
        .starts("svc")
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert_eq!(running.len(), 1, "one version runs: {running:?}");

    let v3 = package(&host.files, "svc", "3.0", "#!/bin/sh\nexit 1\n", &[]);
    let mut job = host.install_job("u3", "upgrade", "svc", &host.url(&v3), &sha256(&v3));
    job["probation"] = json!(3);
    host.send(job);
    let result = host.result("u3", Duration::from_secs(30));
    assert_eq!(result["errcode"], 6, "{result}");
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("rolled back to 2.0")),
        "{result}"
    );
    host.wait_status("svc", "running", "2.0");
    assert!(
        !host.data().join("agents/svc/3.0").exists(),
        "the failed version is removed"
    );
    assert_eq!(
        versions(&host.data(), "svc"),
        ["1.0", "2.0"],
        "current and previous"
    );
    assert!(
        host.events().iter().any(|e| {
            e["event"] == "restarted"
                && e["message"].as_str().is_some_and(|m| {
                    m.contains("did not stay up") && m.contains("rolled back to 2.0")
                })
        }),
        "{:?}",
        host.events()
    );
    let running: Vec<i32> = host
        .starts("svc")
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert_eq!(running.len(), 1, "exactly one process: {running:?}");

    let v4 = package(&host.files, "svc", "4.0", SLEEPER, &[]);
    let mut job = host.install_job("u4", "upgrade", "svc", &host.url(&v4), &sha256(&v4));
    job["probation"] = json!(1);
    host.send(job);
    assert_eq!(host.result("u4", Duration::from_secs(30))["errcode"], 0);
    assert_eq!(
        versions(&host.data(), "svc"),
        ["2.0", "4.0"],
        "versions beyond current and previous go"
    );
    host.agent.stop();
}

fn versions(data: &Path, name: &str) -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir(data.join("agents").join(name))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn the_same_job_id_twice_runs_once_and_is_reported_both_times() {
    let host = Host::new("job-twice", &[]);
    let pkg = package(&host.files, "once", "1.0", SLEEPER, &[]);
    let job = host.install_job("same", "install", "once", &host.url(&pkg), &sha256(&pkg));
    host.send(job.clone());
    assert_eq!(host.result("same", DEADLINE)["errcode"], 0);
    host.wait_status("once", "running", "1.0");
    let reports_with = |server: &RefServer| {
        server
            .requests_to("/agent/status")
            .iter()
            .filter(|r| {
                r.json
                    .as_ref()
                    .is_some_and(|j| j["jobs"].to_string().contains("\"same\""))
            })
            .count()
    };
    let before = reports_with(&host.server);
    host.send(job);
    assert!(
        wait_until(DEADLINE, || reports_with(&host.server) > before),
        "reported again"
    );
    // Nothing to wait on for a run that must not happen: time for one to show.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(host.starts("once").len(), 1, "not run again");
}

/// `restarted` is the restart policy's start after a crash; a start that a job asked
/// for is `started`, however many crashes came before it.
#[test]
fn a_start_job_after_a_crash_reports_started_and_a_crash_restart_restarted() {
    let host = Host::new("job-started", &[]);
    let pkg = package(&host.files, "svc", "1.0", SLEEPER, &[]);
    host.send(host.install_job("e1", "install", "svc", &host.url(&pkg), &sha256(&pkg)));
    assert_eq!(host.result("e1", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");
    let kinds = |host: &Host| -> Vec<String> {
        host.events()
            .iter()
            .filter(|e| e["name"] == "svc")
            .filter_map(|e| e["event"].as_str().map(str::to_string))
            .filter(|k| k == "started" || k == "restarted")
            .collect()
    };
    let first = host.starts("svc")[0];
    // SAFETY: kill(2) on the test's own grandchild; no memory effects.
    unsafe {
        libc::kill(first, libc::SIGKILL);
    }
    assert!(
        wait_until(DEADLINE, || kinds(&host) == ["started", "restarted"]),
        "a crash restart is restarted: {:?}",
        host.events()
    );

    host.send(json!({"id": "e2", "action": "stop", "name": "svc"}));
    assert_eq!(host.result("e2", DEADLINE)["errcode"], 0);
    host.send(json!({"id": "e3", "action": "start", "name": "svc"}));
    assert_eq!(host.result("e3", DEADLINE)["errcode"], 0);
    host.send(json!({"id": "e4", "action": "restart", "name": "svc"}));
    assert_eq!(host.result("e4", DEADLINE)["errcode"], 0);
    assert!(
        wait_until(DEADLINE, || kinds(&host).len() == 4),
        "{:?}",
        host.events()
    );
    assert_eq!(
        kinds(&host),
        ["started", "restarted", "started", "started"],
        "the start and restart jobs are starts that were asked for: {:?}",
        host.events()
    );
}

#[test]
fn stop_survives_a_restart_and_uninstall_removes_files_state_and_log() {
    let mut host = Host::new("job-stop", &[]);
    let pkg = package(&host.files, "svc", "1.0", SLEEPER, &[]);
    host.send(host.install_job("s1", "install", "svc", &host.url(&pkg), &sha256(&pkg)));
    assert_eq!(host.result("s1", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");
    let pid = host.starts("svc")[0];
    host.send(json!({"id": "s2", "action": "stop", "name": "svc"}));
    assert_eq!(host.result("s2", DEADLINE)["errcode"], 0);
    assert!(wait_until(DEADLINE, || !alive(pid)));
    host.wait_status("svc", "stoped", "1.0");

    host.agent.stop();
    let reports = host.server.requests_to("/agent/status").len();
    host.agent = Agent::start(&host.scratch, &[]);
    // The new process's first report says what it did with the child at its start.
    let mut first = Value::Null;
    assert!(
        wait_until(DEADLINE, || {
            let requests = host.server.requests_to("/agent/status");
            first = requests
                .get(reports)
                .and_then(|r| r.json.clone())
                .unwrap_or(Value::Null);
            !first.is_null()
        }),
        "the restarted agent reports"
    );
    let svc = first["agents"].as_array().and_then(|agents| {
        agents
            .iter()
            .find(|a| a["name"] == "svc")
            .map(|a| a["status"].clone())
    });
    assert_eq!(svc, Some(json!("stoped")), "{first}");
    assert_eq!(host.starts("svc").len(), 1, "still stopped after a restart");
    host.wait_status("svc", "stoped", "1.0");

    host.send(json!({"id": "s3", "action": "start", "name": "svc"}));
    assert_eq!(host.result("s3", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");
    assert!(host.data().join("logs").exists());
    fs::write(host.data().join("logs/svc.log"), b"old output\n").expect("log");

    host.send(json!({"id": "s4", "action": "uninstall", "name": "svc"}));
    assert_eq!(host.result("s4", DEADLINE)["errcode"], 0);
    assert!(!host.data().join("agents/svc").exists());
    assert!(!host.data().join("logs/svc.log").exists());
    assert!(wait_until(DEADLINE, || host.agent_status("svc").is_none()));
    let meta = read_meta(&host.data());
    assert!(!meta["stopped"].to_string().contains("svc"), "{meta}");

    host.send(json!({"id": "s5", "action": "stop", "name": "svc"}));
    assert_eq!(host.result("s5", DEADLINE)["errcode"], 7, "no such agent");
}

#[test]
fn restart_applies_new_envs_and_revives_the_child() {
    let host = Host::new("job-restart", &[]);
    let script =
        "#!/bin/sh\necho \"$$ $COLOR\" >> \"$MARK.env\"\necho $$ >> \"$MARK\"\nexec sleep 1000\n";
    let pkg = package(&host.files, "svc", "1.0", script, &[]);
    host.send(host.install_job("r1", "install", "svc", &host.url(&pkg), &sha256(&pkg)));
    assert_eq!(host.result("r1", DEADLINE)["errcode"], 0);
    let mut job = json!({"id": "r2", "action": "restart", "name": "svc"});
    job["envs"] = json!({"COLOR": "blue", "MARK": host.mark("svc").to_string_lossy()});
    host.send(job);
    assert_eq!(host.result("r2", DEADLINE)["errcode"], 0);
    assert_eq!(host.starts("svc").len(), 2);
    let envs =
        fs::read_to_string(format!("{}.env", host.mark("svc").display())).unwrap_or_default();
    assert!(
        envs.lines().last().is_some_and(|l| l.ends_with(" blue")),
        "{envs}"
    );
    let out = bootagent()
        .arg("status")
        .arg("-D")
        .arg(host.data())
        .output()
        .expect("status");
    assert!(String::from_utf8_lossy(&out.stdout).contains("svc"));
}

/// The processes of `name` that are alive, from its start marks.
fn running(host: &Host, name: &str) -> Vec<i32> {
    host.starts(name)
        .into_iter()
        .filter(|p| alive(*p))
        .collect()
}

#[test]
fn kill_9_during_a_stalled_download_ends_rolled_back_with_the_old_version() {
    let mut host = Host::new("job-kill-download", &["-o", "download_stall_ms=60000"]);
    let v1 = package(&host.files, "svc", "1.0", SLEEPER, &[]);
    host.send(host.install_job("k1", "install", "svc", &host.url(&v1), &sha256(&v1)));
    assert_eq!(host.result("k1", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");
    let v2 = package(&host.files, "svc", "2.0", SLEEPER, &[]);
    let (url, answered) = bad_file_server(1_000_000, 1000, true);
    host.send(host.install_job("k2", "upgrade", "svc", &url, &sha256(&v2)));
    assert!(
        wait_until(DEADLINE, || answered.load(Ordering::SeqCst) == 1),
        "the download is under way"
    );
    host.agent.kill9();
    host.agent = Agent::start(&host.scratch, &[]);
    let result = host.result("k2", DEADLINE);
    assert_eq!(result["errcode"], 6, "{result}");
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("interrupted") && m.contains("svc 1.0 is current")),
        "{result}"
    );
    host.wait_status("svc", "running", "1.0");
    assert!(wait_until(DEADLINE, || running(&host, "svc").len() == 1));
    let tmp: Vec<_> = fs::read_dir(host.data().join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "no half-installed leftovers: {tmp:?}");
    host.agent.stop();
}

/// A small seeded generator (splitmix64), so a failing moment can be replayed.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[test]
fn kill_9_at_random_moments_of_upgrades_ends_confirmed_or_rolled_back_never_between() {
    let seed: u64 = std::env::var("BOOT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    println!("seed {seed} (BOOT_TEST_SEED replays it)");
    let mut rng = seed;
    let mut host = Host::new("job-kill-random", &[]);
    let v1 = package(&host.files, "svc", "1", SLEEPER, &[]);
    let mut first = host.install_job("r0", "install", "svc", &host.url(&v1), &sha256(&v1));
    first["restart"] = json!({"grace_s": 1}); // probation: grace + 1 s
    host.send(first);
    assert_eq!(host.result("r0", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1");
    let mut current = "1".to_string();
    let mut outcomes = Vec::new();
    for round in 2..8 {
        let version = round.to_string();
        let pkg = package(&host.files, "svc", &version, SLEEPER, &[]);
        let id = format!("r{round}");
        let mut job = host.install_job(&id, "upgrade", "svc", &host.url(&pkg), &sha256(&pkg));
        job["probation"] = json!(1);
        host.send(job);
        assert!(
            wait_until(DEADLINE, || host
                .agent
                .log_text()
                .contains(&format!("job {id} queued"))),
            "{id} was received"
        );
        // Somewhere in download, unpack, switch, probation, or just after it: the
        // random moment of the kill is the point of the test.
        let delay = next_random(&mut rng) % 4_000;
        std::thread::sleep(Duration::from_millis(delay));
        host.agent.kill9();
        host.agent = Agent::start(&host.scratch, &[]);
        let result = host.result(&id, Duration::from_secs(30));
        let errcode = result["errcode"].as_u64().unwrap_or(99);
        let runs = match errcode {
            0 => version.clone(),
            6 => current.clone(),
            _ => panic!("{id} killed after {delay} ms ended {result}: neither 0 nor 6"),
        };
        host.wait_status("svc", "running", &runs);
        assert!(
            wait_until(DEADLINE, || running(&host, "svc").len() == 1),
            "{id} killed after {delay} ms: exactly one version runs: {:?}",
            running(&host, "svc")
        );
        // Nothing to wait on for a copy that must not start: time for one to show.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(running(&host, "svc").len(), 1, "{id}: and stays alone");
        let link = fs::read_link(host.data().join("agents/svc/current")).expect("current");
        assert_eq!(link.to_string_lossy(), runs, "{id}: current is what runs");
        outcomes.push((delay, errcode));
        current = runs;
    }
    println!("kill moments (ms) and results: {outcomes:?}");
    host.agent.stop();
}

#[test]
fn install_from_a_real_ftp_server_on_loopback() {
    let host = Host::new("job-ftp", &[]);
    let pkg = package(&host.files, "ftpagent", "1.0", SLEEPER, &[]);
    let port = free_port();
    let ftp = std::process::Command::new("python3")
        .args([
            "-m",
            "pyftpdlib",
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-d",
        ])
        .arg(&host.files)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let mut ftp = ftp.expect("python3 runs (apt-get install python3-pyftpdlib)");
    assert!(
        wait_until(DEADLINE, || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_ok()),
        "pyftpdlib did not start: apt-get install python3-pyftpdlib"
    );
    let url = format!("ftp://127.0.0.1:{port}/ftpagent-1.0.tgz");
    host.send(host.install_job("f1", "install", "ftpagent", &url, &sha256(&pkg)));
    let result = host.result("f1", Duration::from_secs(30));
    let _ = ftp.kill();
    let _ = ftp.wait();
    assert_eq!(result["errcode"], 0, "{result}");
    host.wait_status("ftpagent", "running", "1.0");
}

#[test]
fn reports_and_supervision_go_on_during_a_slow_download() {
    let host = Host::new("job-slow", &[]);
    let pkg = package(&host.files, "first", "1.0", SLEEPER, &[]);
    host.send(host.install_job("d1", "install", "first", &host.url(&pkg), &sha256(&pkg)));
    assert_eq!(host.result("d1", DEADLINE)["errcode"], 0);
    host.wait_status("first", "running", "1.0");

    // A package server that trickles 1 KiB every 100 ms: a download of minutes.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let trickled = Arc::new(AtomicUsize::new(0));
    let count = trickled.clone();
    std::thread::spawn(move || {
        if let Some(Ok(mut stream)) = listener.incoming().next() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n");
            for _ in 0..600 {
                if stream.write_all(&[b'x'; 1024]).is_err() {
                    return;
                }
                count.fetch_add(1, Ordering::SeqCst);
                // The trickle itself: the server's pace, not a wait.
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let url = format!("http://{addr}/slow-1.0.tgz");
    host.send(host.install_job("d2", "install", "slow", &url, &sha256(&pkg)));
    assert!(
        wait_until(DEADLINE, || trickled.load(Ordering::SeqCst) >= 5),
        "the download is under way"
    );
    let reports = host.server.requests_to("/agent/status").len();
    let pid = host.starts("first")[0];
    // SAFETY: kill(2) on the test's own grandchild; no memory effects.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    assert!(
        wait_until(DEADLINE, || host.starts("first").len() == 2),
        "supervision goes on"
    );
    assert!(
        wait_until(DEADLINE, || host.server.requests_to("/agent/status").len()
            >= reports + 3),
        "reports go on during the download"
    );
    assert!(
        host.server
            .agent(&host.sn)
            .is_some_and(|a| !a.job_results.contains_key("d2")),
        "still downloading"
    );
}

#[test]
fn an_upgrade_with_the_same_version_name_but_new_content_runs_the_new_content() {
    let host = Host::new("job-samever", &[]);
    let first = host.files.join("tool");
    fs::write(
        &first,
        "#!/bin/sh\necho one >> \"$MARK.which\"\necho $$ >> \"$MARK\"\nexec sleep 1000\n",
    )
    .expect("write");
    let url = format!("file://{}", first.display());
    host.send(host.install_job("v1", "install", "tool", &url, &sha256(&first)));
    assert_eq!(host.result("v1", DEADLINE)["errcode"], 0);
    host.wait_status("tool", "running", "0");

    // Reinstalling the very same package changes nothing.
    let mut again = host.install_job("v1again", "install", "tool", &url, &sha256(&first));
    again["probation"] = json!(1);
    host.send(again);
    assert_eq!(
        host.result("v1again", Duration::from_secs(30))["errcode"],
        0
    );
    host.wait_status("tool", "running", "0");

    let second = host.files.join("tool2");
    fs::write(
        &second,
        "#!/bin/sh\necho two >> \"$MARK.which\"\necho $$ >> \"$MARK\"\nexec sleep 1000\n",
    )
    .expect("write");
    let url = format!("file://{}", second.display());
    let mut job = host.install_job("v2", "upgrade", "tool", &url, &sha256(&second));
    job["probation"] = json!(1);
    host.send(job);
    let result = host.result("v2", Duration::from_secs(30));
    assert_eq!(result["errcode"], 0, "{result}");
    let which =
        fs::read_to_string(format!("{}.which", host.mark("tool").display())).unwrap_or_default();
    assert_eq!(
        which.lines().last(),
        Some("two"),
        "the new content runs: {which}"
    );
    let version = host
        .agent_status("tool")
        .map(|a| a["version"].clone())
        .unwrap_or_default();
    assert!(
        version.as_str().is_some_and(|v| v.starts_with("0+")),
        "{version}"
    );
}

#[test]
fn sigterm_during_a_download_ends_the_job_and_starts_nothing_more() {
    let mut host = Host::new("job-term", &[]);
    let pkg = package(&host.files, "svc", "1.0", SLEEPER, &[]);
    host.send(host.install_job("t1", "install", "svc", &host.url(&pkg), &sha256(&pkg)));
    assert_eq!(host.result("t1", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");
    let (url, answered) = bad_file_server(1_000_000, 1000, true); // stalls for 30 s
    host.send(host.install_job("t2", "upgrade", "svc", &url, &sha256(&pkg)));
    host.send(json!({"id": "t3", "action": "restart", "name": "svc"}));
    assert!(
        wait_until(DEADLINE, || answered.load(Ordering::SeqCst) == 1
            && host.agent.log_text().contains("job t3 queued")),
        "t2 is downloading, t3 waits:\n{}",
        host.agent.log_text()
    );
    let status = host.agent.stop();
    assert!(status.success(), "{status:?}");
    let pids = host.starts("svc");
    assert!(
        pids.iter().all(|p| !alive(*p)),
        "no child left or started again: {pids:?}"
    );
    assert!(
        host.agent.log_text().contains("svc: stopped"),
        "the child was stopped, not restarted"
    );
    // The interrupted upgrade ends rolled back at the next start, never between.
    host.agent = Agent::start(&host.scratch, &[]);
    let t2 = host.result("t2", DEADLINE);
    assert_eq!(t2["errcode"], 6, "{t2}");
    assert!(
        t2["message"]
            .as_str()
            .is_some_and(|m| m.contains("interrupted") && m.contains("svc 1.0 is current")),
        "{t2}"
    );
    assert_eq!(host.result("t3", DEADLINE)["errcode"], 9, "queued, not run");
    host.wait_status("svc", "running", "1.0");
}

#[test]
fn kill_9_at_random_moments_loses_no_acknowledged_state_and_runs_no_job_twice() {
    let seed: u64 = std::env::var("BOOT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0xacce);
    println!("seed {seed} (BOOT_TEST_SEED replays it)");
    let mut rng = seed;
    let mut host = Host::new("job-kill-state", &[]);
    let pkg = package(&host.files, "svc", "1.0", SLEEPER, &[]);
    let mut first = host.install_job("i0", "install", "svc", &host.url(&pkg), &sha256(&pkg));
    first["restart"] = json!({"grace_s": 1});
    host.send(first);
    assert_eq!(host.result("i0", DEADLINE)["errcode"], 0);
    host.wait_status("svc", "running", "1.0");
    for round in 1..6 {
        let (action, step) = if round % 2 == 1 {
            ("stop", 2)
        } else {
            ("start", 1)
        };
        let (job, config) = (format!("{action}{round}"), format!("c{round}"));
        host.send(json!({"id": job, "action": action, "name": "svc"}));
        host.send(json!({"id": config, "action": "config", "step": step}));
        assert!(wait_until(DEADLINE, || host.server.queued_jobs(&host.sn) == 0));
        // The random moment of the kill is the point of the test.
        let delay = next_random(&mut rng) % 400;
        std::thread::sleep(Duration::from_millis(delay));
        // What the server was told before the kill must hold after it.
        let told = host
            .server
            .agent(&host.sn)
            .map(|a| a.job_results)
            .unwrap_or_default();
        host.agent.kill9();
        host.agent = Agent::start(&host.scratch, &[]);
        let job_result = host.result(&job, DEADLINE);
        let config_result = host.result(&config, DEADLINE);
        for (id, before) in &told {
            let after = host.result(id, DEADLINE);
            assert_eq!(
                &after, before,
                "round {round} ({delay} ms): {id} was told, then changed"
            );
        }
        let reports = host.server.agent(&host.sn).map_or(0, |a| a.reports);
        assert!(wait_until(DEADLINE, || host
            .server
            .agent(&host.sn)
            .is_some_and(|a| a.reports > reports + 1)));
        if config_result["errcode"] == 0 {
            let report = host.server.agent(&host.sn).and_then(|a| a.last_report);
            let reported = report.map(|r| r["step"].clone()).unwrap_or_default();
            assert_eq!(
                reported, step,
                "round {round} ({delay} ms): the step was lost"
            );
        }
        if job_result["errcode"] == 0 {
            let status = if action == "stop" {
                "stoped"
            } else {
                "running"
            };
            host.wait_status("svc", status, "1.0");
            // Nothing to wait on for a change that must not come: time for one to show.
            std::thread::sleep(Duration::from_millis(500));
            host.wait_status("svc", status, "1.0");
        } else {
            // Not acknowledged: put the child in the state this round wanted.
            let redo = format!("{job}-again");
            host.send(json!({"id": redo, "action": action, "name": "svc"}));
            assert_eq!(host.result(&redo, DEADLINE)["errcode"], 0);
        }
    }
    // No job id was ever answered with two different results.
    let mut seen: std::collections::BTreeMap<String, Value> = Default::default();
    for request in host.server.requests_to("/agent/status") {
        let results = request
            .json
            .as_ref()
            .and_then(|j| j["jobs"].as_array().cloned())
            .unwrap_or_default();
        for r in results {
            let id = r["id"].as_str().unwrap_or_default().to_string();
            if let Some(before) = seen.insert(id.clone(), r.clone()) {
                assert_eq!(before, r, "{id} answered twice, differently");
            }
        }
    }
    host.agent.stop();
}
