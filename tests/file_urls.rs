//! End to end: `file://` package URLs are confined to the `file_url_roots`
//! (docs/protocol.md section 9): the data directory's `files/` by default, more with
//! `--file-url-root`, persisted at the first start. Anything else, symlinks resolved,
//! fails with errcode 2 before the file is opened, and no message carries its checksum.

mod common;

use common::host::{sha256, tgz, Host};
use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::Path;

const RUN: &[u8] = b"#!/bin/sh\nexec sleep 1000\n";

fn install_file(host: &Host, id: &str, name: &str, path: &Path, checksum: &str) -> Value {
    host.send(json!({"id": id, "action": "install", "name": name,
                     "url": format!("file://{}", path.display()), "checksum": checksum}));
    host.result(id, DEADLINE)
}

fn assert_refused(result: &Value, secret_sha: &str) {
    assert_eq!(result["errcode"], 2, "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains("file_url_roots"), "{message}");
    let hex = secret_sha.trim_start_matches("SHA256:");
    assert!(!message.contains(hex), "the checksum leaked: {message}");
    assert!(!message.contains("SHA256"), "{message}");
}

#[test]
fn file_urls_outside_the_roots_are_refused_and_inside_install() {
    let host = Host::new("file-urls", &[]);
    let files = host.data().join("files");
    assert!(files.is_dir(), "DATA/files is made at start");

    // A readable file of the host, outside: refused, its checksum never shown.
    let secret = host.scratch.path.join("secret");
    fs::write(&secret, b"root:$6$hash:19000:0:99999:7:::\n").expect("secret");
    let secret_sha = sha256(&secret);
    let wrong = format!("SHA256:{}", "0".repeat(64));
    assert_refused(
        &install_file(&host, "f1", "shadow", &secret, &wrong),
        &secret_sha,
    );
    assert_refused(
        &install_file(&host, "f2", "shadow", Path::new("/etc/shadow"), &wrong),
        &secret_sha,
    );
    // The right checksum does not help.
    assert_refused(
        &install_file(&host, "f3", "shadow", &secret, &secret_sha),
        &secret_sha,
    );
    // A symlink inside pointing out, and a `..` climbing out.
    let outside_pkg = tgz(
        &host.scratch.path.join("outside-1.tgz"),
        &[("run", 0o755, RUN)],
    );
    let outside_sha = sha256(&outside_pkg);
    std::os::unix::fs::symlink(&outside_pkg, files.join("link.tgz")).expect("symlink");
    assert_refused(
        &install_file(&host, "f4", "linked", &files.join("link.tgz"), &outside_sha),
        &outside_sha,
    );
    let climbing = files.join("..").join("..").join("outside-1.tgz");
    assert_refused(
        &install_file(&host, "f5", "linked", &climbing, &outside_sha),
        &outside_sha,
    );
    for name in ["shadow", "linked"] {
        assert!(!host.data().join("agents").join(name).exists());
    }

    // Inside: installs.
    let inside = tgz(&files.join("inside-1.tgz"), &[("run", 0o755, RUN)]);
    let result = install_file(&host, "f6", "inside", &inside, &sha256(&inside));
    assert_eq!(result["errcode"], 0, "{result}");
    host.wait_status("inside", "running");
}

#[test]
fn more_roots_are_given_at_the_first_start_and_persisted() {
    let scratch = Scratch::new("file-roots");
    let extra = scratch.path.join("firmware");
    fs::create_dir_all(&extra).expect("extra root");
    let extra_arg = extra.to_string_lossy().into_owned();
    let mut host = Host::in_scratch(scratch, &["--file-url-root", extra_arg.as_str()]);
    let package = tgz(&extra.join("fw-1.tgz"), &[("run", 0o755, RUN)]);
    let result = install_file(&host, "r1", "fw", &package, &sha256(&package));
    assert_eq!(result["errcode"], 0, "{result}");
    assert_eq!(
        read_meta(&host.data())["file_url_roots"],
        json!([extra_arg])
    );

    // Persisted: a later start without the flag keeps it, and -T shows it.
    assert_eq!(host.agent.stop().code(), Some(0));
    let output = bootagent()
        .arg("-D")
        .arg(host.data())
        .arg("-T")
        .output()
        .expect("bootagent -T");
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("file_url_roots: "))
        .unwrap_or_default();
    assert!(line.contains(&extra_arg), "{text}");
    assert!(line.contains("/data/files"), "{text}");
    let addr = host.server.addr();
    host.agent = Agent::start(&host.scratch, &["-S", addr.as_str()]);
    let again = tgz(&extra.join("fw-2.tgz"), &[("run", 0o755, RUN)]);
    host.send(
        json!({"id": "r2", "action": "upgrade", "name": "fw", "probation": 1,
                     "url": format!("file://{}", again.display()), "checksum": sha256(&again)}),
    );
    let result = host.result("r2", DEADLINE);
    assert_eq!(result["errcode"], 0, "{result}");
}

#[test]
fn a_relative_file_url_root_is_a_usage_error() {
    let output = bootagent()
        .args(["--file-url-root", "relative/dir", "-T"])
        .output()
        .expect("bootagent");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--file-url-root: relative/dir is not an absolute path"),
        "{stderr}"
    );
}
