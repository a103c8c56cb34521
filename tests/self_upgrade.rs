//! End to end: BootAgent upgrades itself (docs/protocol.md section 10) with the real
//! binary, a second build of it (`BOOT_VERSION=9.9.9`) and the reference server.
//! The test plays init: when the agent's process ends, it starts the installed
//! binary again.

mod common;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The version of the second build.
const V2: &str = "9.9.9";
/// Long enough for a self-upgrade with its probation, under load.
const UPGRADE_DEADLINE: Duration = Duration::from_secs(90);

/// Builds the second binary once (`BOOT_VERSION=9.9.9`, its own target directory).
fn second_build() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = built.as_ref() {
        return path.clone();
    }
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/selfup-v2");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let status = Command::new(cargo)
        .args(["build", "--bin", "bootagent", "--target-dir"])
        .arg(&target)
        .env("BOOT_VERSION", V2)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("cargo runs");
    assert!(status.success(), "the second build failed");
    let path = target.join("debug/bootagent");
    *built = Some(path.clone());
    path
}

/// A small program that is not BootAgent but answers `-V` like one, then behaves
/// as `mode` says at start: "exit" (exits 3) or "hang" (sleeps for ever).
fn impostor(dir: &Path, version: &str, mode: &str) -> PathBuf {
    let source = dir.join(format!("impostor-{mode}.rs"));
    let behaviour = match mode {
        "exit" => "std::process::exit(3)",
        _ => "loop { std::thread::sleep(std::time::Duration::from_secs(1000)); }",
    };
    fs::write(
        &source,
        format!(
            "fn main() {{ if std::env::args().nth(1).as_deref() == Some(\"-V\") {{ \
             println!(\"bootagent {version} (impostor)\"); return; }} {behaviour} }}"
        ),
    )
    .expect("write source");
    let out = dir.join(format!("impostor-{mode}"));
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let status = Command::new(rustc)
        .arg("-o")
        .arg(&out)
        .arg(&source)
        .status()
        .expect("rustc runs");
    assert!(status.success(), "the impostor does not compile");
    out
}

fn checksum(path: &Path) -> String {
    let digest = Sha256::digest(fs::read(path).expect("read"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
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

fn parent(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn exe(pid: i32) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default()
}

/// The version the test binary reports (`bootagent-X-arch`).
fn reported(version: &str) -> String {
    format!("bootagent-{version}-{}", std::env::consts::ARCH)
}

fn this_version() -> String {
    let out = bootagent().arg("-V").output().expect("-V runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// A host: the server (with a file area), an agent, one preinstalled child `svc`
/// that notes each start's pid and writes a line to its output every 100 ms.
struct Host {
    server: RefServer,
    scratch: Scratch,
    files: PathBuf,
    agent: Agent,
    sn: String,
}

impl Host {
    fn new(name: &str) -> Host {
        Host::with_child(
            name,
            "n=0\nwhile :; do n=$((n+1)); echo \"tick $n\"; sleep 0.1; done",
            None,
        )
    }

    /// The agent with one child `svc` running `script` (after it records its pid),
    /// with `agent.json` if given.
    fn with_child(name: &str, script: &str, settings: Option<Value>) -> Host {
        let scratch = Scratch::new(name);
        let files = scratch.path.join("files");
        fs::create_dir_all(&files).expect("files dir");
        let version_dir = scratch.data().join("agents/svc/1.0");
        fs::create_dir_all(&version_dir).expect("agent dir");
        let starts = scratch.path.join("svc.starts");
        let run = version_dir.join("run");
        fs::write(
            &run,
            format!("#!/bin/sh\necho $$ >> '{}'\n{script}\n", starts.display()),
        )
        .expect("write run");
        if let Some(settings) = settings {
            fs::write(
                scratch.data().join("agents/svc/agent.json"),
                settings.to_string(),
            )
            .expect("agent.json");
        }
        fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
        std::os::unix::fs::symlink("1.0", scratch.data().join("agents/svc/current"))
            .expect("current");
        fs::set_permissions(scratch.data(), fs::Permissions::from_mode(0o700)).expect("chmod");
        let server = RefServer::start(Options {
            step: Some(1),
            files_dir: Some(files.clone()),
            ..Options::default()
        })
        .expect("server");
        let agent = Agent::start(&scratch, &["-S", server.addr().as_str()]);
        let mut host = Host {
            server,
            scratch,
            files,
            agent,
            sn: String::new(),
        };
        host.wait_sn();
        assert!(
            wait_until(DEADLINE, || host.alive_starts().len() == 1),
            "svc never started"
        );
        host
    }

    fn wait_sn(&mut self) {
        let mut sn = String::new();
        assert!(
            wait_until(DEADLINE, || {
                sn = self
                    .server
                    .agents()
                    .first()
                    .map(|a| a.sn.clone())
                    .unwrap_or_default();
                !sn.is_empty() && self.server.agent(&sn).is_some_and(|a| a.reports > 0)
            }),
            "no report; log:\n{}",
            self.agent.log_text()
        );
        self.sn = sn;
    }

    /// Every pid `svc` started with, oldest first.
    fn starts(&self) -> Vec<i32> {
        fs::read_to_string(self.scratch.path.join("svc.starts"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn alive_starts(&self) -> Vec<i32> {
        self.starts().into_iter().filter(|&p| alive(p)).collect()
    }

    /// Puts `file` in the server's file area and queues a self-upgrade to it.
    fn upgrade(&self, id: &str, file: &Path, probation_s: u64) {
        let name = format!("{id}-bootagent");
        fs::copy(file, self.files.join(&name)).expect("copy");
        self.send(json!({"id": id, "action": "self_upgrade",
                         "url": format!("{}/files/{name}", self.server.url()),
                         "checksum": checksum(file), "probation": probation_s}));
    }

    fn send(&self, job: Value) {
        self.server.queue_job(&self.sn, job);
    }

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

    /// Every result of job `id` any report carried.
    fn all_results(&self, id: &str) -> Vec<Value> {
        self.server
            .requests_to("/agent/status")
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .flat_map(|b| b["jobs"].as_array().cloned().unwrap_or_default())
            .filter(|j| j["id"] == id)
            .collect()
    }

    fn version(&self) -> Option<String> {
        self.server.agent(&self.sn)?.version
    }

    fn log(&self) -> String {
        fs::read_to_string(self.scratch.data().join("logs/svc.log")).unwrap_or_default()
    }

    /// Plays init: starts the installed binary again.
    fn restart_installed(&mut self) {
        self.agent = Agent::start(&self.scratch, &[]);
    }

    fn bin_versions(&self) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.scratch.data().join("bin"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// The last tick number in the child's log.
fn last_tick(log: &str) -> u64 {
    log.lines()
        .rev()
        .find_map(|l| l.strip_prefix("tick ").and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

#[test]
fn upgrade_keeps_every_child_and_survives_a_restart() {
    let v2 = second_build();
    let mut host = Host::new("selfup-ok");
    let agent_pid = host.agent.pid();
    let child = host.alive_starts()[0];
    let installed = exe(agent_pid);
    assert_eq!(host.version(), Some(reported(&this_version())));
    let cgroups = fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap_or_default();

    host.upgrade("up1", &v2, 2);
    let result = host.result("up1", UPGRADE_DEADLINE);
    assert_eq!(
        result["errcode"],
        0,
        "{result}; log:\n{}",
        host.agent.log_text()
    );

    // Same process, now running the new binary, which reports its version.
    assert!(host.agent.is_running(), "the agent's process ended");
    assert_eq!(host.agent.pid(), agent_pid);
    let upgraded = host.scratch.data().join("bin").join(V2).join("bootagent");
    assert_eq!(exe(agent_pid), upgraded.canonicalize().expect("bin/9.9.9"));
    assert_eq!(host.version(), Some(reported(V2)));
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&upgraded), 0o755);
    assert_eq!(mode(upgraded.parent().expect("dir")), 0o700);

    // The child never noticed: same pid, never restarted, its output still logged.
    assert_eq!(host.starts(), vec![child], "svc was restarted");
    assert!(alive(child));
    assert_eq!(parent(child), Some(agent_pid));
    let now_in = fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap_or_default();
    assert_eq!(now_in, cgroups, "svc changed cgroups");
    let tick = last_tick(&host.log());
    assert!(
        wait_until(DEADLINE, || last_tick(&host.log()) > tick + 5),
        "svc's output stopped reaching its log"
    );
    let report = host.server.agent(&host.sn).and_then(|a| a.last_report);
    let svc = report
        .as_ref()
        .and_then(|r| r["agents"].as_array().cloned())
        .unwrap_or_default();
    assert!(
        svc.iter()
            .any(|a| a["name"] == "svc" && a["pid"] == child && a["restarts"] == 0),
        "{svc:?}"
    );

    // The new image supervises: a killed child is restarted by it.
    // SAFETY: kill(2) on a pid this test saw start; no memory effects.
    unsafe { libc::kill(child, libc::SIGKILL) };
    assert!(
        wait_until(DEADLINE, || host.alive_starts().len() == 1
            && host.starts().len() == 2),
        "svc not restarted by the new image: {:?}",
        host.starts()
    );
    let second = host.alive_starts()[0];
    assert_eq!(parent(second), Some(agent_pid));

    // `status` shows the running version and where it came from.
    let status = bootagent()
        .args(["status", "-D"])
        .arg(host.scratch.data())
        .output()
        .expect("status runs");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains(&format!("bootagent {V2} from")), "{text}");
    assert!(text.contains(&format!("confirmed {V2}")), "{text}");

    // SIGTERM stops everything.
    host.agent.stop();
    assert!(
        wait_until(DEADLINE, || !alive(second)),
        "svc outlived SIGTERM"
    );

    // Init starts the installed binary: it hands over to the confirmed one.
    host.restart_installed();
    let pid = host.agent.pid();
    assert!(
        wait_until(DEADLINE, || exe(pid)
            == upgraded.canonicalize().unwrap_or_default()),
        "the installed binary did not hand over: runs {:?} (installed {installed:?})",
        exe(pid)
    );
    let reports = host.server.agent(&host.sn).map_or(0, |a| a.reports);
    assert!(wait_until(DEADLINE, || host
        .server
        .agent(&host.sn)
        .is_some_and(
            |a| a.reports > reports && a.version.as_deref() == Some(reported(V2).as_str())
        )));
    assert!(wait_until(DEADLINE, || host.alive_starts().len() == 1));
}

/// The inode of the notify socket of `child` that the process `pid` holds: its
/// abstract name (`@bootagent/TAG/CHILD`) in `/proc/net/unix`, among the sockets of
/// `/proc/PID/fd`.
fn notify_socket_of(pid: i32, child: &str) -> Option<u64> {
    let held: Vec<u64> = fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|fd| fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_string_lossy().into_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    let table = fs::read_to_string("/proc/net/unix").ok()?;
    let suffix = format!("/{child}");
    table.lines().skip(1).find_map(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&str> = line.split_whitespace().collect();
        let path = fields.get(7)?;
        let inode: u64 = fields.get(6)?.parse().ok()?;
        (path.starts_with("@bootagent/") && path.ends_with(&suffix) && held.contains(&inode))
            .then_some(inode)
    })
}

#[test]
fn a_ready_notify_child_stays_ready_across_the_upgrade() {
    let v2 = second_build();
    let notifier = format!("{}/tests/notify/notifier.py", env!("CARGO_MANIFEST_DIR"));
    let host = Host::with_child(
        "selfup-notify",
        &format!(
            "exec python3 {notifier} --ready-after 0.2 --status serving --watchdog-every auto"
        ),
        Some(json!({"health": {"notify": true, "ready_timeout_s": 2, "watchdog_s": 2}})),
    );
    let svc = |host: &Host| {
        host.server
            .agent(&host.sn)
            .and_then(|a| a.agents)
            .and_then(|agents| agents.as_array().cloned())
            .and_then(|agents| agents.into_iter().find(|a| a["name"] == "svc"))
            .unwrap_or_default()
    };
    assert!(
        wait_until(DEADLINE, || svc(&host)["ready"] == true),
        "{:?}",
        svc(&host)
    );
    let child = host.alive_starts()[0];
    let socket = notify_socket_of(host.agent.pid(), "svc").expect("svc's notify socket");
    host.upgrade("up-notify", &v2, 2);
    let result = host.result("up-notify", UPGRADE_DEADLINE);
    assert_eq!(result["errcode"], 0, "{result}");
    // The same socket, not one bound again under the same name: a datagram sent while
    // the exec ran waits in it for the new image.
    assert_eq!(
        notify_socket_of(host.agent.pid(), "svc"),
        Some(socket),
        "the notify socket crosses the exec; log:\n{}",
        host.agent.log_text()
    );
    // Longer than the ready timeout and the watchdog: the new image knows the child
    // said READY=1, and its sockets take the watchdog's keep-alives.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        host.starts(),
        vec![child],
        "log:\n{}",
        host.agent.log_text()
    );
    assert!(wait_until(DEADLINE, || {
        let svc = svc(&host);
        svc["ready"] == true && svc["status_text"] == "serving" && svc["health"] == "ok"
    }));
    assert!(!host
        .server
        .agent(&host.sn)
        .map(|a| a.events)
        .unwrap_or_default()
        .iter()
        .any(|e| e["event"] == "unhealthy"));
}

#[test]
fn refused_binaries_change_nothing() {
    let mut host = Host::new("selfup-refused");
    let agent_pid = host.agent.pid();
    let child = host.alive_starts()[0];
    let dir = host.scratch.path.clone();
    let own = PathBuf::from(env!("CARGO_BIN_EXE_bootagent"));

    // Another architecture: this very binary with another e_machine.
    let mut foreign = fs::read(&own).expect("read own binary");
    let other: u16 = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    foreign[18..20].copy_from_slice(&other.to_le_bytes());
    // An ELF header of this machine over garbage.
    let mut garbage = own_header(&own);
    garbage.extend((0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("foreign", foreign),
        ("garbage", garbage),
        (
            "script",
            b"#!/bin/sh\necho bootagent 7.7.7 (script)\n".to_vec(),
        ),
        ("empty", Vec::new()),
    ];
    for (id, bytes) in &cases {
        let path = dir.join(id);
        fs::write(&path, bytes).expect("write candidate");
        host.upgrade(id, &path, 2);
        let result = host.result(id, UPGRADE_DEADLINE);
        assert_eq!(result["errcode"], 4, "{id}: {result}");
    }
    // A checksum that does not match.
    fs::copy(&own, host.files.join("mismatch-bootagent")).expect("copy");
    host.send(json!({"id": "mismatch", "action": "self_upgrade",
                     "url": format!("{}/files/mismatch-bootagent", host.server.url()),
                     "checksum": format!("SHA256:{}", "0".repeat(64))}));
    let result = host.result("mismatch", UPGRADE_DEADLINE);
    assert_eq!(result["errcode"], 3, "{result}");
    // A bad job.
    host.send(json!({"id": "bad", "action": "self_upgrade", "url": "gopher://x"}));
    assert_eq!(host.result("bad", DEADLINE)["errcode"], 1);

    assert!(host.agent.is_running());
    assert_eq!(exe(agent_pid), own.canonicalize().expect("own path"));
    assert_eq!(host.version(), Some(reported(&this_version())));
    assert_eq!(host.starts(), vec![child], "svc was touched");
    assert!(alive(child));
    assert!(host.bin_versions().is_empty(), "{:?}", host.bin_versions());
}

/// The first 20 bytes of `own`'s ELF header (class, byte order, type, machine).
fn own_header(own: &Path) -> Vec<u8> {
    fs::read(own).expect("read")[..20].to_vec()
}

#[test]
fn a_new_binary_that_exits_or_hangs_is_rolled_back() {
    let v1 = this_version();
    for (mode, probation) in [("exit", 30), ("hang", 1)] {
        let mut host = Host::new(&format!("selfup-{mode}"));
        let candidate = impostor(&host.scratch.path, "6.6.6", mode);
        host.upgrade("bad", &candidate, probation);
        // The process ends (the impostor exits, or the alarm ends its hang): init
        // starts the installed binary again.
        let ended = host.agent.wait_exit(UPGRADE_DEADLINE);
        assert!(ended.is_some(), "{mode}: the process did not end");
        host.restart_installed();
        let result = host.result("bad", UPGRADE_DEADLINE);
        assert_eq!(result["errcode"], 6, "{mode}: {result}");
        assert!(
            wait_until(DEADLINE, || host.version() == Some(reported(&v1))),
            "{mode}: not back at {v1}"
        );
        assert_eq!(
            exe(host.agent.pid()),
            PathBuf::from(env!("CARGO_BIN_EXE_bootagent"))
                .canonicalize()
                .expect("own path")
        );
        assert!(
            wait_until(DEADLINE, || host.alive_starts().len() == 1),
            "{mode}: svc instances {:?}",
            host.alive_starts()
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(host.alive_starts().len(), 1, "{mode}: two copies of svc");
        let results = host.all_results("bad");
        assert!(results.iter().all(|r| r["errcode"] == 6), "{results:?}");
        let status = bootagent()
            .args(["status", "-D"])
            .arg(host.scratch.data())
            .output()
            .expect("status runs");
        let text = String::from_utf8_lossy(&status.stdout);
        assert!(text.contains("self-upgrade failed: 6.6.6"), "{text}");
    }
}

/// kill -9 at seeded moments of download, switch and probation: afterwards one
/// version runs, the job has one result (0 with the new version, 6 with the old),
/// and never two copies of the child.
#[test]
fn kill_9_anywhere_leaves_one_version_and_one_result() {
    let v2 = second_build();
    let v1 = this_version();
    let mut seed: u64 = 0x5e1f_u64;
    for round in 0..8 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let delay_ms = (seed >> 33) % 7_000;
        let mut host = Host::new(&format!("selfup-kill-{round}"));
        host.upgrade("k", &v2, 2);
        // From the moment the job is on disk (before it, a lost answer loses the job).
        assert!(wait_until(DEADLINE, || fs::read_to_string(
            host.scratch.data().join("meta.json")
        )
        .is_ok_and(|m| m.contains("\"id\": \"k\""))));
        std::thread::sleep(Duration::from_millis(delay_ms));
        host.agent.kill9();
        host.restart_installed();
        let result = host.result("k", UPGRADE_DEADLINE);
        let code = result["errcode"].as_u64().unwrap_or(99);
        assert!(
            code == 0 || code == 6,
            "round {round} ({delay_ms} ms): {result}"
        );
        eprintln!("round {round}: kill -9 {delay_ms} ms after the job was on disk: errcode {code}");
        let expected = if code == 0 {
            V2.to_string()
        } else {
            v1.clone()
        };
        assert!(
            wait_until(DEADLINE, || host.version() == Some(reported(&expected))),
            "round {round} ({delay_ms} ms): errcode {code} but version {:?}; log:\n{}",
            host.version(),
            host.agent.log_text()
        );
        assert!(
            wait_until(DEADLINE, || host.alive_starts().len() == 1),
            "round {round}: svc {:?}",
            host.alive_starts()
        );
        let results = host.all_results("k");
        assert!(
            results.iter().all(|r| r["errcode"] == code),
            "round {round}: two results {results:?}"
        );
        // It stays so: no late second result, no second copy.
        std::thread::sleep(Duration::from_millis(2_500));
        assert_eq!(host.alive_starts().len(), 1, "round {round}");
        assert!(host.all_results("k").iter().all(|r| r["errcode"] == code));
        assert_eq!(host.version(), Some(reported(&expected)));
    }
}

/// A new image that cannot get a report answered within its probation: the previous
/// binary takes over again by exec, in the same process, and the children never notice.
#[test]
fn a_new_image_that_cannot_report_is_rolled_back_in_place() {
    let v2 = second_build();
    let v1 = this_version();
    let host = Host::new("selfup-noreport");
    let agent_pid = host.agent.pid();
    let child = host.alive_starts()[0];
    host.upgrade("nr", &v2, 2);
    // Once the job is on disk, no report gets a 200 until the rollback is done.
    assert!(wait_until(DEADLINE, || fs::read_to_string(
        host.scratch.data().join("meta.json")
    )
    .is_ok_and(|m| m.contains("\"id\": \"nr\""))));
    host.server.set_sticky_fault(Some(Fault::Status(500)));
    let back = format!("bootagent {v1} took over by exec");
    assert!(
        wait_until(UPGRADE_DEADLINE, || {
            let log = host.agent.log_text();
            log.contains(&format!("bootagent {V2} took over by exec")) && log.contains(&back)
        }),
        "no rollback by exec; log:\n{}",
        host.agent.log_text()
    );
    host.server.set_sticky_fault(None);
    let result = host.result("nr", UPGRADE_DEADLINE);
    assert_eq!(result["errcode"], 6, "{result}");
    assert!(
        result["message"]
            .as_str()
            .unwrap_or("")
            .contains("no status report"),
        "{result}"
    );
    assert!(wait_until(DEADLINE, || host.version() == Some(reported(&v1))));
    assert_eq!(host.agent.pid(), agent_pid);
    assert_eq!(
        exe(agent_pid),
        PathBuf::from(env!("CARGO_BIN_EXE_bootagent"))
            .canonicalize()
            .expect("own path")
    );
    assert_eq!(host.starts(), vec![child], "svc was restarted");
    assert!(alive(child));
    assert_eq!(parent(child), Some(agent_pid));
    let tick = last_tick(&host.log());
    assert!(
        wait_until(DEADLINE, || last_tick(&host.log()) > tick + 5),
        "svc's output stopped reaching its log"
    );
}
