//! End to end: packages as fleets ship them (docs/protocol.md section 9), built in
//! the test by the real tools (`rpmbuild`, `dpkg-deb`, `tar`, `xz`, `zstd`),
//! served over http by the reference server and over ftp by pyftpdlib, installed,
//! upgraded and rolled back by the real binary.

mod common;
#[path = "common/packages.rs"]
mod packages;

use common::*;
use packages::{PackageFile, Spec};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A child script that records each start's pid in `$MARK`, then sleeps.
const SLEEPER: &[u8] = b"#!/bin/sh\necho $$ >> \"$MARK\"\nexec sleep 1000\n";
const FAILING: &[u8] = b"#!/bin/sh\nexit 1\n";
const JOB_DEADLINE: Duration = Duration::from_secs(40);

fn sha256(path: &Path) -> String {
    let digest = Sha256::digest(fs::read(path).expect("read package"));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("SHA256:{hex}")
}

struct Host {
    server: RefServer,
    scratch: Scratch,
    files: PathBuf,
    agent: Agent,
    args: Vec<String>,
    sn: String,
    ftp: Option<(Child, u16)>,
}

impl Host {
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
        let mut args = vec!["-S".to_string(), server.addr()];
        args.extend(extra.iter().map(|a| a.to_string()));
        let agent = Agent::start(
            &scratch,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
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
            args,
            sn,
            ftp: None,
        }
    }

    fn restart_agent(&mut self) {
        self.agent.stop();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.agent = Agent::start(&self.scratch, &args);
    }

    fn http(&self, package: &Path) -> String {
        let file = package
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        format!("{}/files/{file}", self.server.url())
    }

    /// The package's URL on an FTP server (pyftpdlib) serving the same files.
    fn ftp(&mut self, package: &Path) -> String {
        let port = match &self.ftp {
            Some((_, port)) => *port,
            None => {
                let port = free_port();
                let child = Command::new("python3")
                    .args([
                        "-m",
                        "pyftpdlib",
                        "-i",
                        "127.0.0.1",
                        "-p",
                        &port.to_string(),
                        "-d",
                    ])
                    .arg(&self.files)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("python3 runs (apt-get install python3-pyftpdlib)");
                self.ftp = Some((child, port));
                assert!(
                    wait_until(DEADLINE, || std::net::TcpStream::connect((
                        "127.0.0.1",
                        port
                    ))
                    .is_ok()),
                    "pyftpdlib did not start: apt-get install python3-pyftpdlib"
                );
                port
            }
        };
        let file = package
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        format!("ftp://127.0.0.1:{port}/{file}")
    }

    fn mark(&self, name: &str) -> PathBuf {
        self.scratch.path.join(format!("{name}.starts"))
    }

    fn job(&self, id: &str, action: &str, name: &str, url: &str, package: &Path) -> Value {
        json!({"id": id, "action": action, "name": name, "url": url,
               "checksum": sha256(package), "probation": 2,
               "envs": {"MARK": self.mark(name).to_string_lossy()}})
    }

    /// Sends a job and waits for its result.
    fn run(&self, job: Value) -> Value {
        let id = job["id"].as_str().unwrap_or_default().to_string();
        self.server.queue_job(&self.sn, job);
        let mut found = Value::Null;
        let ok = wait_until(JOB_DEADLINE, || {
            found = self
                .server
                .agent(&self.sn)
                .and_then(|a| a.job_results.get(&id).cloned())
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

    fn wait_status(&self, name: &str, status: &str, version: &str) {
        let mut seen = None;
        assert!(
            wait_until(DEADLINE, || {
                seen = self
                    .server
                    .agent(&self.sn)
                    .and_then(|a| a.last_report)
                    .and_then(|r| {
                        r["agents"]
                            .as_array()?
                            .iter()
                            .find(|a| a["name"] == name)
                            .cloned()
                    });
                seen.as_ref()
                    .is_some_and(|a| a["status"] == status && a["version"] == version)
            }),
            "{name} not {status} at {version}: {seen:?}"
        );
    }

    fn data(&self) -> PathBuf {
        self.scratch.data()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some((mut child, _)) = self.ftp.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn spec<'a>(version: &'a str, compression: &'a str, files: &'a [PackageFile<'a>]) -> Spec<'a> {
    Spec {
        name: "svc",
        version,
        release: "1",
        compression,
        files,
        script: true,
    }
}

fn assert_ok(result: &Value, scripts: &str) {
    assert_eq!(result["errcode"], 0, "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&format!("maintainer scripts not run: {scripts}")),
        "{result}"
    );
}

/// Installs v1 over http, upgrades to v2 over ftp, then to a v3 that fails and is
/// rolled back; a restart of BootAgent finds the version that runs.
fn install_upgrade_roll_back(
    host: &mut Host,
    build: impl Fn(&Path, &Spec<'_>) -> PathBuf,
    versions: [(&str, &str, &str); 3],
    scripts: &str,
) {
    let good: &[PackageFile<'_>] = &[("usr/bin/svc", SLEEPER, 0o755)];
    let bad: &[PackageFile<'_>] = &[("usr/bin/svc", FAILING, 0o755)];
    let [(v1, c1, r1), (v2, c2, r2), (v3, c3, _)] = versions;

    let package = build(&host.files, &spec(v1, c1, good));
    let result = host.run(host.job("j1", "install", "svc", &host.http(&package), &package));
    assert_ok(&result, scripts);
    host.wait_status("svc", "running", r1);
    assert_eq!(
        fs::read_link(host.data().join(format!("agents/svc/{r1}/run"))).expect("run link"),
        Path::new("usr/bin/svc")
    );

    let package = build(&host.files, &spec(v2, c2, good));
    let url = host.ftp(&package);
    let result = host.run(host.job("j2", "upgrade", "svc", &url, &package));
    assert_ok(&result, scripts);
    host.wait_status("svc", "running", r2);

    let package = build(&host.files, &spec(v3, c3, bad));
    let result = host.run(host.job("j3", "upgrade", "svc", &host.http(&package), &package));
    assert_eq!(result["errcode"], 6, "{result}");
    host.wait_status("svc", "running", r2);

    host.restart_agent();
    host.wait_status("svc", "running", r2);
}

#[test]
fn rpms_install_upgrade_and_roll_back_over_http_and_ftp_at_their_own_version() {
    let mut host = Host::new("formats-rpm", &[]);
    install_upgrade_roll_back(
        &mut host,
        packages::rpm,
        [
            ("1.0", "zstd", "1.0-1"),
            ("2.0~rc1", "xz", "2.0~rc1-1"),
            ("3.0", "gzip", "3.0-1"),
        ],
        "%post",
    );
    host.agent.stop();
}

#[test]
fn debs_install_upgrade_and_roll_back_over_http_and_ftp_at_their_own_version() {
    let mut host = Host::new("formats-deb", &[]);
    install_upgrade_roll_back(
        &mut host,
        packages::deb,
        [
            ("1:1.0", "xz", "1_1.0-1"),
            ("1:1.1+b1", "zstd", "1_1.1+b1-1"),
            ("1:2.0", "gzip", "1_2.0-1"),
        ],
        "postinst",
    );
    host.agent.stop();
}

#[test]
fn tar_xz_zst_and_plain_tar_take_their_version_from_the_file_name() {
    let mut host = Host::new("formats-tar", &[]);
    let files: &[PackageFile<'_>] = &[("svc/run", SLEEPER, 0o755)];
    for (id, file_name, compression) in [
        ("t1", "svc-1.0.tar.xz", "xz"),
        ("t2", "svc-1.1~b.tar.zst", "zstd"),
        ("t3", "svc-1.2+x.tar", "none"),
        ("t4", "svc-1.3.txz", "xz"),
    ] {
        let package = packages::tar(&host.files, file_name, compression, files);
        let url = if id == "t2" {
            host.ftp(&package)
        } else {
            host.http(&package)
        };
        let result = host.run(host.job(id, "upgrade", "svc", &url, &package));
        assert_eq!(result["errcode"], 0, "{file_name}: {result}");
        let version = file_name
            .trim_start_matches("svc-")
            .trim_end_matches(".tar.xz")
            .trim_end_matches(".tar.zst")
            .trim_end_matches(".tar")
            .trim_end_matches(".txz");
        host.wait_status("svc", "running", version);
    }
    host.agent.stop();
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
fn bombs_of_each_compression_and_packages_without_a_program_fail_with_errcode_4() {
    let host = Host::new("formats-bombs", &["-o", "unpack_bytes_max=4194304"]);
    let big = packages::zero_file(64 << 20);
    let bomb: &[PackageFile<'_>] = &[
        ("usr/bin/bomb", SLEEPER, 0o755),
        ("usr/lib/zeros", &big, 0o644),
    ];
    let tar_bomb: &[PackageFile<'_>] = &[("run", SLEEPER, 0o755), ("zeros", &big, 0o644)];
    let mut spec = spec("1.0", "zstd", bomb);
    spec.name = "bomb";
    let mut built = vec![
        packages::tar(&host.files, "bomb-1.tar.gz", "gzip", tar_bomb),
        packages::tar(&host.files, "bomb-1.tar.xz", "xz", tar_bomb),
        packages::tar(&host.files, "bomb-1.tar.zst", "zstd", tar_bomb),
        packages::rpm(&host.files, &spec),
    ];
    spec.compression = "xz";
    built.push(packages::deb(&host.files, &spec));
    for (index, package) in built.iter().enumerate() {
        assert!(
            fs::metadata(package).expect("bomb").len() < 1 << 20,
            "{package:?}"
        );
        let id = format!("b{index}");
        let result = host.run(host.job(&id, "install", "bomb", &host.http(package), package));
        assert_eq!(result["errcode"], 4, "{package:?}: {result}");
        assert!(
            result["message"]
                .as_str()
                .is_some_and(|m| m.contains("more than")),
            "{result}"
        );
        nothing_left(&host.data(), "bomb");
    }

    let elsewhere: &[PackageFile<'_>] = &[("usr/libexec/svc", SLEEPER, 0o755)];
    let package = packages::rpm(&host.files, &spec_named("1.0", "gzip", elsewhere));
    let result = host.run(host.job("n1", "install", "svc", &host.http(&package), &package));
    assert_eq!(result["errcode"], 4, "{result}");
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("looked for run, usr/bin/svc")),
        "{result}"
    );
    nothing_left(&host.data(), "svc");
    // An exec that leaves the package is an invalid job.
    for (id, exec) in [
        ("e1", json!("../../bin/sh")),
        ("e2", json!("/bin/sh")),
        ("e3", json!(7)),
    ] {
        let mut job = host.job(id, "install", "svc", &host.http(&package), &package);
        job["exec"] = exec;
        let result = host.run(job);
        assert_eq!(result["errcode"], 1, "{result}");
        nothing_left(&host.data(), "svc");
    }
    // The job's exec names it.
    let mut job = host.job("n2", "install", "svc", &host.http(&package), &package);
    job["exec"] = json!("usr/libexec/svc");
    assert_eq!(host.run(job)["errcode"], 0);
    host.wait_status("svc", "running", "1.0-1");
}

fn spec_named<'a>(
    version: &'a str,
    compression: &'a str,
    files: &'a [PackageFile<'a>],
) -> Spec<'a> {
    Spec {
        script: false,
        ..spec(version, compression, files)
    }
}
