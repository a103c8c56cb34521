//! A registered agent reporting every second to a reference server that serves
//! packages from a directory, with jobs sent and their results awaited; and the
//! packages built in the tests.

use super::{wait_until, Agent, Options, RefServer, Scratch, DEADLINE};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One tar entry of a test package: path, mode, content.
pub type Entry<'a> = (&'a str, u32, &'a [u8]);

/// Writes a gzip-compressed tar of `entries` to `path`, modes as given (the
/// builder is told the raw mode, setuid bits included).
pub fn tgz(path: &Path, entries: &[Entry<'_>]) -> PathBuf {
    let file = fs::File::create(path).expect("package file");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    for (name, mode, body) in entries {
        let mut header = tar::Header::new_gnu();
        if name.ends_with('/') {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
        } else {
            header.set_size(body.len() as u64);
        }
        header.set_mode(*mode);
        header.set_cksum();
        tar.append_data(&mut header, name, *body).expect("append");
    }
    tar.into_inner().and_then(|gz| gz.finish()).expect("finish");
    path.to_path_buf()
}

/// `SHA256:` and the hex digest of a file.
pub fn sha256(path: &Path) -> String {
    let bytes = fs::read(path).expect("read package");
    let hex: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("SHA256:{hex}")
}

pub struct Host {
    pub server: RefServer,
    pub scratch: Scratch,
    /// Served by the reference server under `/files/`.
    pub files: PathBuf,
    pub agent: Agent,
    pub sn: String,
}

impl Host {
    /// A registered agent with a file server, reporting every second.
    pub fn new(name: &str, extra: &[&str]) -> Host {
        Host::in_scratch(Scratch::new(name), extra)
    }

    /// The same, in a scratch directory prepared by the caller (a data directory
    /// on a small file system, say).
    pub fn in_scratch(scratch: Scratch, extra: &[&str]) -> Host {
        Host::with_env(scratch, extra, &[])
    }

    /// The same, with these variables in the agent's environment.
    pub fn with_env(scratch: Scratch, extra: &[&str], envs: &[(&str, &str)]) -> Host {
        let files = scratch.path.join("served");
        fs::create_dir_all(&files).expect("files dir");
        let server = RefServer::start(Options {
            step: Some(1),
            files_dir: Some(files.clone()),
            ..Options::default()
        })
        .expect("server");
        let addr = server.addr();
        let mut args = vec!["-S", addr.as_str()];
        args.extend_from_slice(extra);
        let agent = Agent::start_with_env(&scratch, &args, envs);
        let mut sn = String::new();
        let registered = wait_until(DEADLINE, || {
            sn = server
                .agents()
                .first()
                .map(|a| a.sn.clone())
                .unwrap_or_default();
            !sn.is_empty() && server.agent(&sn).is_some_and(|a| a.reports > 0)
        });
        assert!(registered, "never reported; log:\n{}", agent.log_text());
        Host {
            server,
            scratch,
            files,
            agent,
            sn,
        }
    }

    pub fn data(&self) -> PathBuf {
        self.scratch.data()
    }

    /// The URL the reference server serves a file of `files` under.
    pub fn url(&self, package: &Path) -> String {
        let file = package
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        format!("{}/files/{file}", self.server.url())
    }

    pub fn send(&self, job: Value) {
        self.server.queue_job(&self.sn, job);
    }

    /// Waits for the result of job `id` and returns it.
    pub fn result(&self, id: &str, deadline: Duration) -> Value {
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

    /// The entry for child `name` of the last report that listed the children.
    pub fn agent_status(&self, name: &str) -> Option<Value> {
        let agents = self.server.agent(&self.sn)?.agents?;
        agents
            .as_array()?
            .iter()
            .find(|a| a["name"] == name)
            .cloned()
    }

    pub fn wait_status(&self, name: &str, status: &str) {
        assert!(
            wait_until(DEADLINE, || self
                .agent_status(name)
                .is_some_and(|a| a["status"] == status)),
            "{name} not {status}: {:?}; log:\n{}",
            self.agent_status(name),
            self.agent.log_text()
        );
    }

    pub fn events(&self) -> Vec<Value> {
        self.server
            .agent(&self.sn)
            .map(|a| a.events)
            .unwrap_or_default()
    }
}
