//! The checks of the fuzz targets: for one input each says `Ok(Yes)` accepted and
//! sound, `Ok(No)` refused with a good message, or `Err` an invariant broken. Shared by
//! the plain-Rust fuzzer (`tests/fuzz.rs`) and the libFuzzer targets
//! (`tests/libfuzzer/`), so that both hold BootAgent to the same invariants.

use crate::gen::{fnv, Accepted, Verdict};
use bootagent::addr;
use bootagent::child::RestartPolicy;
use bootagent::jobs::{self, Job, Settings};
use bootagent::limits::Limits;
use bootagent::meta::SN_BYTES_MAX;
use bootagent::reslimit::{self, CPU_PCT_MIN, CPU_PCT_PER_CPU, MEMORY_BYTES_MAX, MEMORY_BYTES_MIN};
use bootagent::supervisor;
use bootagent::unpack;
use bootagent::wire;
use serde_json::{Map, Value};

/// Longest job rejection message. Each one is journaled in the metafile, which keeps
/// `job_ids_remembered` (1024) of them and must stay under `meta_bytes_max` (8 MiB)
/// to load again: 8 KiB a record, of which at most half for the message, which JSON
/// escaping can still double.
const REJECTION_BYTES_MAX: usize = 4096;
/// Longest message of the `limits` and `restart` parsers, which quote values cut short.
const SETTING_ERROR_BYTES_MAX: usize = 1024;

pub fn check_register(input: &[u8]) -> Verdict {
    match wire::parse_register_answer(input) {
        Ok(answer) => {
            if let Some(sn) = &answer.agentsn {
                if sn.is_empty() {
                    return Err("accepted an empty agentsn".to_string());
                }
                printable("agentsn", sn, SN_BYTES_MAX)?;
            }
            if let Some(tags) = &answer.tags {
                printable("tags", tags, wire::FIELD_BYTES_MAX)?;
            }
            if let Some((key, secret)) = &answer.credentials {
                if key.is_empty() || secret.is_empty() {
                    return Err("accepted an empty key or secret".to_string());
                }
                printable("key", key, wire::FIELD_BYTES_MAX)?;
                printable("secret", secret, wire::FIELD_BYTES_MAX)?;
            }
            if answer.step_s == Some(0) {
                return Err("accepted step 0".to_string());
            }
            for note in &answer.ignored {
                one_line("a note on an ignored field", note)?;
            }
            Ok(Accepted::Yes)
        }
        Err(e) => {
            one_line("a bad-answer error", &e.to_string())?;
            Ok(Accepted::No)
        }
    }
}

pub fn check_status(input: &[u8]) -> Verdict {
    match wire::parse_status_answer(input) {
        Ok(answer) => {
            // The agent validates at most this many jobs of one answer.
            for job in answer
                .jobs
                .iter()
                .take(Limits::default().jobs_per_answer_max)
            {
                check_job(job, 2)?;
            }
            Ok(Accepted::Yes)
        }
        Err(e) => {
            one_line("a bad-answer error", &e.to_string())?;
            Ok(Accepted::No)
        }
    }
}

pub fn check_job_text(input: &[u8]) -> Verdict {
    let Ok(value) = serde_json::from_slice::<Value>(input) else {
        return Ok(Accepted::No); // the answer parser's business
    };
    let cpus = [1, 2, 4, 64][(fnv(input) % 4) as usize];
    check_job(&value, cpus)
}

fn check_job(value: &Value, cpus: u32) -> Verdict {
    let limits = Limits::default();
    let id = jobs::job_id(value);
    match jobs::parse_job(value, &limits, cpus) {
        Ok((job_id, job)) => {
            if id.as_deref() != Some(job_id.as_str()) {
                return Err(format!("accepted job id {job_id:?}, job_id says {id:?}"));
            }
            printable("a job id", &job_id, jobs::JOB_ID_BYTES_MAX)?;
            if let Some(name) = job.agent() {
                if !supervisor::valid_name(name) {
                    return Err(format!("accepted a job for the bad name {name:?}"));
                }
            }
            match &job {
                Job::Config { svrlist, step_s } => {
                    if svrlist.is_none() && step_s.is_none() {
                        return Err("accepted a config job that sets nothing".to_string());
                    }
                    if let Some(step) = step_s {
                        if !(limits.step_min_s..=limits.step_max_s).contains(step) {
                            return Err(format!("accepted step {step}, outside the clamp"));
                        }
                    }
                    if let Some(list) = svrlist {
                        check_servers(list)?;
                    }
                }
                Job::SelfUpgrade(job) => {
                    printable("a url", &job.url, jobs::URL_BYTES_MAX)?;
                    if let Some(version) = &job.version {
                        if !unpack::valid_version(version) {
                            return Err(format!("accepted the version {version:?}"));
                        }
                    }
                    if job.probation_s > jobs::PROBATION_MAX_S {
                        return Err(format!("accepted probation {}", job.probation_s));
                    }
                }
                Job::Install(install) => {
                    printable("a url", &install.url, jobs::URL_BYTES_MAX)?;
                    let scheme_ok = ["http://", "https://", "file://", "ftp://"]
                        .iter()
                        .any(|scheme| install.url.starts_with(scheme));
                    if !scheme_ok {
                        return Err(format!("accepted the url {:?}", install.url));
                    }
                    let _ = jobs::masked_url(&install.url);
                    if let Some(version) = unpack::version_from_url(&install.url, &install.name) {
                        if !unpack::valid_version(&version) {
                            return Err(format!("version {version:?} from the url is not valid"));
                        }
                    }
                    if let Some(version) = &install.version {
                        if !unpack::valid_version(version) {
                            return Err(format!("accepted the version {version:?}"));
                        }
                    }
                    if install.probation_s > jobs::PROBATION_MAX_S {
                        return Err(format!("accepted probation {}", install.probation_s));
                    }
                    check_settings(&install.settings, cpus)?;
                }
                Job::Restart { settings, .. } => check_settings(settings, cpus)?,
                Job::Uninstall { .. } | Job::Stop { .. } | Job::Start { .. } => {}
            }
            Ok(Accepted::Yes)
        }
        Err(rejected) => {
            if rejected.id != id {
                return Err(format!(
                    "rejection carries id {:?}, job_id says {id:?}",
                    rejected.id
                ));
            }
            one_line("a job rejection", &rejected.message)?;
            at_most("a job rejection", &rejected.message, REJECTION_BYTES_MAX)?;
            Ok(Accepted::No)
        }
    }
}

/// The settings a job accepted read again as the supervisor will read them.
fn check_settings(settings: &Settings, cpus: u32) -> Result<(), String> {
    for (key, value) in &settings.0 {
        let read = match key.as_str() {
            "envs" => supervisor::parse_envs(value).map(drop),
            "limits" => reslimit::parse_limits(value, cpus).map(drop),
            "restart" => RestartPolicy::from_json(value).map(drop),
            other => Err(format!("unexpected setting {other:?}")),
        };
        read.map_err(|e| format!("accepted {key} that do not read again: {e}"))?;
    }
    Ok(())
}

fn check_servers(list: &[addr::ServerAddr]) -> Result<(), String> {
    if list.len() > addr::LIST_ENTRIES_MAX {
        return Err(format!("accepted {} servers", list.len()));
    }
    for server in list {
        if server.host.is_empty() || server.host.len() > addr::HOST_BYTES_MAX || server.port == 0 {
            return Err(format!("accepted the server {server:?}"));
        }
    }
    let again = addr::parse_list(&addr::format_list(list));
    if again.as_deref() != Ok(list) {
        return Err(format!("server list does not read back: {again:?}"));
    }
    Ok(())
}

pub fn check_limits(input: &[u8]) -> Verdict {
    let Ok(value) = serde_json::from_slice::<Value>(input) else {
        return Ok(Accepted::No);
    };
    let mut accepted = Accepted::No;
    for cpus in [0, 1, 2, 64, u32::MAX] {
        match reslimit::parse_limits(&value, cpus) {
            Ok(limits) => {
                accepted = Accepted::Yes;
                let max = CPU_PCT_PER_CPU.saturating_mul(cpus.max(1));
                if limits
                    .cpu_pct
                    .is_some_and(|pct| !(CPU_PCT_MIN..=max).contains(&pct))
                {
                    return Err(format!("accepted {limits:?} with {cpus} CPUs"));
                }
                let memory = MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX;
                if limits
                    .memory_bytes
                    .is_some_and(|bytes| !memory.contains(&bytes))
                {
                    return Err(format!("accepted {limits:?}"));
                }
                // What `-T` and the logs show reads back as the same limits.
                let shown = limits.to_string();
                let again = reslimit::parse_limits(&shown_limits_as_json(&shown), cpus);
                if again != Ok(limits) {
                    return Err(format!(
                        "{limits:?} shown as {shown:?} reads back as {again:?}"
                    ));
                }
            }
            Err(e) => {
                one_line("a limits error", &e)?;
                at_most("a limits error", &e, SETTING_ERROR_BYTES_MAX)?;
            }
        }
    }
    Ok(accepted)
}

/// `CPU 10%, memory 20M` (or `none`) as the `limits` object it came from.
fn shown_limits_as_json(shown: &str) -> Value {
    let mut map = Map::new();
    if shown != "none" {
        for part in shown.split(", ") {
            if let Some((key, value)) = part.split_once(' ') {
                map.insert(key.to_string(), Value::from(value));
            }
        }
    }
    Value::Object(map)
}

pub fn check_restart(input: &[u8]) -> Verdict {
    let Ok(value) = serde_json::from_slice::<Value>(input) else {
        return Ok(Accepted::No);
    };
    match RestartPolicy::from_json(&value) {
        Ok(policy) => {
            let day_ms = 86_400_000;
            let longest = [
                policy.delay_ms,
                policy.delay_max_ms,
                policy.window_ms,
                policy.grace_ms,
            ];
            if longest.iter().any(|ms| *ms > day_ms) || policy.failures_max > 1000 {
                return Err(format!("accepted {policy:?}"));
            }
            for failures in [0, 1, 2, 3, 10, 33, 34, 35, 1000, u32::MAX] {
                let delay = policy.delay_after(failures);
                if delay > policy.delay_max_ms.max(policy.delay_ms) {
                    return Err(format!("{policy:?}: delay {delay} ms after {failures}"));
                }
            }
            Ok(Accepted::Yes)
        }
        Err(e) => {
            one_line("a restart error", &e)?;
            at_most("a restart error", &e, SETTING_ERROR_BYTES_MAX)?;
            Ok(Accepted::No)
        }
    }
}

pub fn check_addr(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    match addr::parse_list(&text) {
        Ok(list) => {
            check_servers(&list)?;
            Ok(Accepted::Yes)
        }
        Err(e) => {
            one_line("a server list error", &e.to_string())?;
            Ok(Accepted::No)
        }
    }
}

pub fn check_limits_set(input: &[u8]) -> Verdict {
    let text = String::from_utf8_lossy(input);
    let mut limits = Limits::default();
    match limits.set(&text) {
        Ok(()) if limits.step_min_s > limits.step_max_s => {
            Err(format!("{text:?} left step_min_s above step_max_s"))
        }
        Ok(()) => Ok(Accepted::Yes),
        Err(_) => Ok(Accepted::No), // the operator's own words, echoed to the operator
    }
}

// ---------------------------------------------------------------------------------
// Helpers

pub fn one_line(what: &str, text: &str) -> Result<(), String> {
    if text.contains(['\n', '\r']) {
        return Err(format!("{what} is not one line: {}", clip(text)));
    }
    Ok(())
}

fn at_most(what: &str, text: &str, bytes_max: usize) -> Result<(), String> {
    if text.len() > bytes_max {
        return Err(format!(
            "{what} is {} bytes, more than {bytes_max}: {}",
            text.len(),
            clip(text)
        ));
    }
    Ok(())
}

fn printable(what: &str, text: &str, bytes_max: usize) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err(format!(
            "accepted {what} with control characters: {}",
            clip(text)
        ));
    }
    at_most(what, text, bytes_max)
}

/// A message fit for a failure report: escaped, cut short.
fn clip(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    if short.len() < text.len() {
        format!("{short:?}…")
    } else {
        format!("{short:?}")
    }
}
