//! Children as a firmware image ships them (`agents/NAME/1.0/run`, `current`,
//! `agent.json`), the pids they record at each start, and the events a server took.

use super::RefServer;
use serde_json::Value;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Installs `agents/NAME/1.0/run` running `script` under `/bin/sh`, `current`
/// pointing at it, and `agent.json` if given; returns the version directory.
pub fn preinstall(data: &Path, name: &str, script: &str, settings: Option<Value>) -> PathBuf {
    let dir = data.join("agents").join(name);
    let version = dir.join("1.0");
    fs::create_dir_all(&version).expect("agent dir");
    let run = version.join("run");
    fs::write(&run, format!("#!/bin/sh\n{script}\n")).expect("run");
    fs::set_permissions(&run, fs::Permissions::from_mode(0o755)).expect("chmod");
    let _ = fs::remove_file(dir.join("current"));
    std::os::unix::fs::symlink("1.0", dir.join("current")).expect("current link");
    if let Some(settings) = settings {
        fs::write(dir.join("agent.json"), settings.to_string()).expect("agent.json");
    }
    version
}

/// The pids a child recorded in `starts` of its version directory (`echo $$ >> starts`).
pub fn starts(version_dir: &Path) -> Vec<i32> {
    fs::read_to_string(version_dir.join("starts"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Every event of the reports the server answered 200, in order.
pub fn events(server: &RefServer) -> Vec<Value> {
    server
        .requests_to("/agent/status")
        .into_iter()
        .filter(|r| r.status == 200)
        .filter_map(|r| r.json)
        .flat_map(|report| report["events"].as_array().cloned().unwrap_or_default())
        .collect()
}
