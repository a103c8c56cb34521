//! Hostile input, case by case, at the library level: deep nesting, 10 MB strings,
//! wrong types in every field, negative and huge numbers, names that climb out,
//! 100 000 jobs in one answer. Each is refused (or accepted) quickly, with a one-line
//! message that names the problem, and nothing panics. The fuzz targets of
//! `tests/fuzz.rs` wander around the same ground at random.

#[allow(dead_code)] // what tar.rs needs
#[path = "fuzz/gen.rs"]
mod gen;
#[allow(dead_code)] // the header and gzip helpers only
#[path = "fuzz/tar.rs"]
mod tar;

use bootagent::child::RestartPolicy;
use bootagent::jobs::ErrCode;
use bootagent::jobs::{self, Job};
use bootagent::journal::Bounds;
use bootagent::limits::Limits;
use bootagent::meta::{JobState, Loaded, Meta, MetaStore};
use bootagent::reslimit;
use bootagent::unpack::{self, UnpackLimits};
use bootagent::wire;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Longest job rejection message (see `tests/fuzz.rs`): 1024 of them are journaled
/// in a metafile that must stay under 8 MiB.
const REJECTION_BYTES_MAX: usize = 4096;
const SUM: &str = "SHA256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const CPUS: u32 = 2;

/// A valid job of each action, with every field it may carry.
fn valid_jobs() -> Vec<Value> {
    vec![
        json!({"id": "c1", "action": "config", "svrlist": "a:1,b:2", "step": 60}),
        json!({"id": "i1", "action": "install", "name": "BasicAgent", "url": "http://h/BasicAgent-1.0.tgz",
               "checksum": SUM, "envs": {"MODE": "prod"}, "limits": {"CPU": "10%", "memory": "20M"},
               "version": "1.0", "restart": {"delay_s": 10}, "probation": 30}),
        json!({"id": "u1", "action": "upgrade", "name": "BasicAgent", "url": "ftp://h/p.tgz",
               "checksum": SUM, "probation": 30}),
        json!({"id": "x1", "action": "uninstall", "name": "BasicAgent"}),
        json!({"id": "r1", "action": "restart", "name": "BasicAgent", "envs": {"MODE": "debug"},
               "limits": {"memory": 1048576}, "restart": {"grace_s": 5}}),
        json!({"id": "s1", "action": "stop", "name": "BasicAgent"}),
        json!({"id": "s2", "action": "start", "name": "BasicAgent"}),
    ]
}

/// `job` with `field` set to `value`.
fn with(job: &Value, field: &str, value: Value) -> Value {
    let mut job = job.clone();
    job[field] = value;
    job
}

/// The rejection of a job that must be rejected, checked to be one line.
fn rejection(job: &Value) -> String {
    match jobs::parse_job(job, &Limits::default(), CPUS) {
        Ok(accepted) => panic!("{} accepted as {accepted:?}", clip(&job.to_string())),
        Err(rejected) => {
            assert!(
                !rejected.message.contains(['\n', '\r']),
                "not one line: {}",
                clip(&rejected.message)
            );
            rejected.message
        }
    }
}

fn clip(text: &str) -> String {
    let short: String = text.chars().take(160).collect();
    if short.len() < text.len() {
        format!("{short:?}… ({} bytes)", text.len())
    } else {
        format!("{short:?}")
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("hostile-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Loads `meta.json` holding `content`; never a first start.
fn load_meta(dir: &Path, content: &[u8], bytes_max: u64) -> Result<Box<Meta>, String> {
    fs::write(dir.join("meta.json"), content).expect("write meta.json");
    match MetaStore::new(dir, bytes_max).load() {
        Ok(Loaded::Found { meta, .. }) => Ok(meta),
        Ok(Loaded::FirstStart) => panic!("a metafile exists, yet loading says first start"),
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("refusing to start"), "{message}");
            Err(message)
        }
    }
}

#[test]
fn deep_nesting_is_refused_by_every_reader() {
    let deep = "[".repeat(100_000);
    let started = Instant::now();
    for body in [
        deep.clone(),
        format!(r#"{{"status": 0, "tags": {deep}"#),
        format!(
            r#"{{"status": 0, "tags": {}{}}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
    ] {
        let err = wire::parse_register_answer(body.as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
    for body in [
        format!(r#"{{"jobs": {deep}"#),
        format!(r#"{{"jobs": [{{"id": "1", "action": "restart", "name": "a", "envs": {deep}"#),
        format!(
            r#"{{"jobs": [{}{}]}}"#,
            "{\"a\":".repeat(200),
            "}".repeat(200)
        ),
    ] {
        let err = wire::parse_status_answer(body.as_bytes()).expect_err("refused");
        assert!(err.to_string().contains("not JSON"), "{err}");
    }
    // Within serde_json's limit of 128 levels, each field names itself.
    let nested = serde_json::from_str::<Value>(&format!("{}1{}", "[".repeat(120), "]".repeat(120)))
        .expect("120 levels parse");
    let base = &valid_jobs()[4];
    for (field, part) in [
        ("envs", "envs is an array"),
        ("limits", "limits must be an object"),
        ("restart", "restart is an array"),
    ] {
        let message = rejection(&with(base, field, nested.clone()));
        assert!(message.contains(part), "{field}: {message}");
    }
    let scratch = Scratch::new("deep");
    let metafile = format!(
        r#"{{"schema": 1, "agentsn": "x", "step_s": 1, "events": [{{"seq": 1, "event": {deep}"#
    );
    load_meta(&scratch.0, metafile.as_bytes(), 8 << 20).expect_err("refused");
    println!(
        "deep nesting: every reader refused in {:?}",
        started.elapsed()
    );
}

#[test]
fn ten_megabyte_strings_are_refused_quickly_with_short_messages() {
    let big = "a".repeat(10 << 20);
    let started = Instant::now();
    for field in ["agentsn", "tags", "key", "secret"] {
        let body = json!({"status": 0, field: big}).to_string();
        let answer = wire::parse_register_answer(body.as_bytes()).expect("answer read");
        assert_eq!((answer.agentsn, answer.tags), (None, None), "{field}");
        assert_eq!(answer.credentials, None, "{field}");
        let notes = answer.ignored.join("; ");
        assert!(
            notes.contains(field) && notes.len() < 200,
            "{field}: {}",
            clip(&notes)
        );
    }
    let body = json!({"status": big}).to_string();
    let err = wire::parse_register_answer(body.as_bytes()).expect_err("refused");
    assert_eq!(err.to_string(), "bad answer: status is a string");

    let install = &valid_jobs()[1];
    let config = &valid_jobs()[0];
    let cases = [
        (with(install, "id", json!(big)), "job id must be"),
        (with(install, "action", json!(big)), "unknown action"),
        (with(install, "name", json!(big)), "bad name"),
        (
            with(install, "url", json!(format!("http://{big}"))),
            "url is longer than",
        ),
        (
            with(install, "checksum", json!(big)),
            "checksum must start with",
        ),
        (
            with(install, "checksum", json!(format!("SHA256:{big}"))),
            "64 hex digits",
        ),
        (with(install, "version", json!(big)), "bad version"),
        (with(install, "envs", json!({"A": big})), "longer than"),
        (
            with(install, "limits", json!({"CPU": big})),
            "must be a whole percentage",
        ),
        (
            with(install, "limits", json!({"memory": big})),
            "like \"20M\"",
        ),
        (
            with(install, "limits", json!({"memory": "9".repeat(10 << 20)})),
            "out of range",
        ),
        (with(config, "svrlist", json!(big)), "server list is"),
        (with(config, "svrlist", json!([big])), "server list is"),
    ];
    for (job, part) in &cases {
        let message = rejection(job);
        assert!(message.contains(part), "{part}: {}", clip(&message));
        assert!(
            message.len() <= REJECTION_BYTES_MAX,
            "{part}: {}",
            clip(&message)
        );
    }
    let scratch = Scratch::new("big");
    let mut meta = serde_json::to_value(Meta::new("x".into(), String::new(), 600)).expect("meta");
    meta["agentsn"] = json!(big);
    let content = meta.to_string();
    let too_big = load_meta(
        &scratch.0,
        content.as_bytes(),
        Limits::default().meta_bytes_max,
    );
    assert!(too_big.expect_err("refused").contains("larger than"));
    let too_long = load_meta(&scratch.0, content.as_bytes(), 64 << 20);
    assert!(too_long
        .expect_err("refused")
        .contains("agentsn is empty or too long"));
    println!(
        "10 MB strings: {} readers refused in {:?}",
        cases.len() + 7,
        started.elapsed()
    );
}

#[test]
fn wrong_types_in_every_field_are_named_in_the_rejection() {
    let wrong = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1.5),
        json!("x"),
        json!([]),
        json!({}),
        json!([[1]]),
    ];
    let mut rejected = 0;
    for job in valid_jobs() {
        let fields: Vec<String> = job.as_object().expect("object").keys().cloned().collect();
        for field in &fields {
            for value in &wrong {
                let bad = with(&job, field, value.clone());
                match jobs::parse_job(&bad, &Limits::default(), CPUS) {
                    Ok(_) => {} // `null` for an optional field, `"x"` for a name, …
                    Err(r) => {
                        rejected += 1;
                        assert!(r.message.contains(field.as_str()), "{bad}: {}", r.message);
                        let id_expected = (field != "id")
                            .then(|| job["id"].as_str().map(String::from))
                            .flatten();
                        assert_eq!(r.id, id_expected, "{bad}");
                    }
                }
            }
        }
        // One level down: the members of envs, limits and restart.
        for (field, member) in [
            ("envs", "MODE"),
            ("limits", "CPU"),
            ("limits", "memory"),
            ("restart", "delay_s"),
            ("restart", "failures_max"),
        ] {
            if job.get(field).is_none() {
                continue;
            }
            for value in &wrong {
                let bad = with(&job, field, json!({ member: value }));
                if let Err(r) = jobs::parse_job(&bad, &Limits::default(), CPUS) {
                    rejected += 1;
                    assert!(r.message.contains(member), "{bad}: {}", r.message);
                }
            }
        }
    }
    assert!(rejected > 200, "only {rejected} rejections");

    for field in ["agentsn", "tags", "key", "secret", "step"] {
        for value in &wrong[1..] {
            let body = json!({"status": 0, field: value}).to_string();
            let answer = wire::parse_register_answer(body.as_bytes()).expect("read");
            let notes = answer.ignored.join("; ");
            let usable = matches!((field, value), ("agentsn" | "tags", Value::String(_)));
            assert!(usable || notes.contains(field), "{body}: {notes}");
        }
    }
    for value in &wrong {
        let body = json!({"status": value}).to_string();
        let err = wire::parse_register_answer(body.as_bytes());
        if let Err(e) = err {
            assert!(e.to_string().contains("status"), "{body}: {e}");
        }
        let body = json!({"jobs": value}).to_string();
        if let Err(e) = wire::parse_status_answer(body.as_bytes()) {
            assert!(e.to_string().contains("jobs is"), "{body}: {e}");
        }
    }

    // The metafile: a wrong type in any field refuses to start, never a first start.
    let scratch = Scratch::new("types");
    let good = serde_json::to_value(Meta::new("sn".into(), String::new(), 600)).expect("meta");
    for field in good.as_object().expect("object").keys() {
        for value in &wrong {
            let bad = with(&good, field, value.clone());
            let _ = load_meta(&scratch.0, bad.to_string().as_bytes(), 1 << 20);
        }
    }
}

#[test]
fn negative_huge_and_fractional_numbers_are_named() {
    let config = &valid_jobs()[0];
    let install = &valid_jobs()[1];
    let cases = [
        (with(config, "step", json!(-5)), "step -5 is negative"),
        (with(config, "step", json!(1e308)), "not a whole number"),
        (with(config, "step", json!(i64::MIN)), "is negative"),
        (with(install, "probation", json!(-1)), "probation -1"),
        (with(install, "probation", json!(3601)), "probation 3601"),
        (
            with(install, "probation", json!(u64::MAX)),
            "probation 18446744073709551615",
        ),
        (
            with(install, "limits", json!({"memory": -1})),
            "whole number of bytes",
        ),
        (
            with(install, "limits", json!({"memory": 0})),
            "out of range",
        ),
        (
            with(
                install,
                "limits",
                json!({"memory": "99999999999999999999999G"}),
            ),
            "out of range",
        ),
        (
            with(install, "limits", json!({"memory": 2_199_023_255_552_u64})),
            "out of range",
        ),
        (
            with(install, "limits", json!({"CPU": "0%"})),
            "out of range",
        ),
        (
            with(install, "limits", json!({"CPU": "201%"})),
            "out of range",
        ),
        (
            with(install, "limits", json!({"CPU": "-5%"})),
            "whole percentage",
        ),
        (
            with(install, "limits", json!({"CPU": "99999999999999999999%"})),
            "out of range",
        ),
        (
            with(install, "restart", json!({"delay_s": -1})),
            "restart.delay_s",
        ),
        (
            with(install, "restart", json!({"window_s": 86_401})),
            "over 86400",
        ),
        (
            with(install, "restart", json!({"failures_max": 1001})),
            "over 1000",
        ),
        (
            with(install, "restart", json!({"grace_s": u64::MAX})),
            "over 86400",
        ),
    ];
    for (job, part) in &cases {
        let message = rejection(job);
        assert!(message.contains(part), "{job}: {message}");
    }
    // A step beyond the ceiling is clamped, not refused.
    let clamped = jobs::parse_job(
        &with(config, "step", json!(u64::MAX)),
        &Limits::default(),
        CPUS,
    );
    assert!(
        matches!(
            clamped,
            Ok((
                _,
                Job::Config {
                    step_s: Some(86_400),
                    ..
                }
            ))
        ),
        "{clamped:?}"
    );
    for (body, part) in [
        (r#"{"status": 0, "step": -5}"#, "step -5"),
        (r#"{"status": 0, "step": 0}"#, "step 0"),
        (r#"{"status": 0, "step": 1.5}"#, "step 1.5"),
    ] {
        let answer = wire::parse_register_answer(body.as_bytes()).expect("read");
        assert_eq!(answer.step_s, None, "{body}");
        assert!(
            answer.ignored.join(";").contains(part),
            "{body}: {:?}",
            answer.ignored
        );
    }
    let err = wire::parse_register_answer(br#"{"status": 1e400}"#).expect_err("refused");
    assert!(err.to_string().contains("not JSON"), "{err}");
    let err =
        wire::parse_register_answer(br#"{"status": 18446744073709551615}"#).expect_err("refused");
    assert!(err.to_string().contains("not an integer"), "{err}");
}

#[test]
fn names_and_versions_that_climb_out_are_refused() {
    let names = [
        "../../etc",
        "..",
        ".",
        "/etc",
        "a/b",
        "a\0b",
        "",
        ".hidden",
        "a b",
        "a\nb",
        "é",
        "a\\b",
    ];
    let long = "x".repeat(65);
    for job in valid_jobs().iter().filter(|job| job["action"] != "config") {
        for name in names.iter().copied().chain([long.as_str()]) {
            let message = rejection(&with(job, "name", json!(name)));
            assert!(message.starts_with("bad name"), "{name:?}: {message}");
        }
    }
    let install = &valid_jobs()[1];
    for version in [
        "../x",
        "current",
        ".",
        "..",
        "/abs",
        "a/b",
        "1.0\n",
        &"1".repeat(65),
    ] {
        let message = rejection(&with(install, "version", json!(version)));
        assert!(message.starts_with("bad version"), "{version:?}: {message}");
    }
}

#[test]
fn a_hundred_thousand_jobs_parse_and_validate_in_bounded_time() {
    let mut jobs = Vec::with_capacity(100_000);
    let valid = valid_jobs();
    for index in 0..100_000 {
        let mut job = valid[index % valid.len()].clone();
        job["id"] = json!(format!("j{index}"));
        if index % 10 == 9 {
            job["name"] = json!("../../etc"); // a tenth are refused
        }
        jobs.push(job);
    }
    let body = serde_json::to_vec(&json!({"status": 0, "jobs": jobs})).expect("body");
    let started = Instant::now();
    let answer = wire::parse_status_answer(&body).expect("read");
    let parsed = started.elapsed();
    assert_eq!(answer.jobs.len(), 100_000);
    let (mut accepted, mut refused) = (0, 0);
    for job in &answer.jobs {
        match jobs::parse_job(job, &Limits::default(), CPUS) {
            Ok(_) => accepted += 1,
            Err(r) => {
                assert!(
                    r.message.starts_with("bad name") || r.message.contains("neither"),
                    "{}",
                    r.message
                );
                refused += 1;
            }
        }
    }
    // The config jobs (a seventh) have no name to spoil.
    assert_eq!(accepted + refused, 100_000);
    assert!(refused >= 8_000, "{refused} refused");
    println!(
        "100 000 jobs ({} MB): parsed in {parsed:?}, all validated in {:?} (the agent \
         validates only the first {} of one answer)",
        body.len() / 1_000_000,
        started.elapsed(),
        Limits::default().jobs_per_answer_max
    );
}

/// The rejections that quote what the server sent, as it sent it.
fn echoing_jobs() -> Vec<(&'static str, Value)> {
    let restart = &valid_jobs()[4];
    let config = &valid_jobs()[0];
    // Within one answer of `response_body_bytes_max` (1 MiB).
    let long = "k".repeat(1_000_000);
    vec![
        (
            "restart key with a newline",
            with(restart, "restart", json!({"x\ny": "1"})),
        ),
        (
            "restart key of 1 MB",
            with(restart, "restart", json!({long.as_str(): "1"})),
        ),
        (
            "restart value of 1 MB",
            with(restart, "restart", json!({"delay_s": long})),
        ),
        (
            "restart value, a long array",
            with(restart, "restart", json!({"delay_s": vec![1; 200_000]})),
        ),
        (
            "envs name with a newline",
            with(restart, "envs", json!({"A\nB": 1})),
        ),
        (
            "envs name of 1 MB",
            with(restart, "envs", json!({long.as_str(): "v"})),
        ),
        (
            "svrlist of control characters",
            with(config, "svrlist", json!("\u{1}".repeat(4096))),
        ),
    ]
}

/// The rejections of `restart`, `envs` and `svrlist` quote keys, values and entries
/// from the job: a job's result message must still be one line (docs/protocol.md section 7)
/// and bounded, however long or strange the input.
#[test]
fn rejected_job_messages_are_one_line_and_bounded() {
    let mut bad = Vec::new();
    for (case, job) in echoing_jobs() {
        let message = match jobs::parse_job(&job, &Limits::default(), CPUS) {
            Ok(_) => panic!("{case}: accepted"),
            Err(r) => r.message,
        };
        if message.contains(['\n', '\r']) || message.len() > REJECTION_BYTES_MAX {
            bad.push(format!(
                "{case}: {} bytes: {}",
                message.len(),
                clip(&message)
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "job rejections that are not one line of at most {REJECTION_BYTES_MAX} bytes:\n  {}",
        bad.join("\n  ")
    );
}

/// Each rejection is journaled with its message, and the journal keeps 1024 of them:
/// with unbounded messages, a few answers of 1 MiB would push the metafile over
/// `meta_bytes_max` and leave BootAgent unable to start.
#[test]
fn a_journal_of_rejected_jobs_still_loads() {
    let limits = Limits::default();
    let scratch = Scratch::new("journal");
    let store = MetaStore::new(&scratch.0, limits.meta_bytes_max);
    let mut meta = Meta::new(
        "bfdcc18c-b6b9-4725-9c47-37fd93dba5b6".into(),
        String::new(),
        600,
    );
    let (_, job) = echoing_jobs().swap_remove(2); // restart value of 1 MB
    let message = jobs::parse_job(&job, &limits, CPUS)
        .expect_err("rejected")
        .message;
    // As many as the journal keeps, or enough to pass the bound: no more is needed.
    let needed = (limits.meta_bytes_max as usize / message.len().max(1)) + 2;
    let count = limits.job_ids_remembered.min(needed);
    for index in 0..count {
        meta.journal.enter(
            format!("j{index}"),
            JobState::Finished,
            (jobs::ErrCode::Invalid as u32, &message),
            false,
            Bounds::new(&limits),
        );
        if index + 2 >= count {
            store.save(&meta).expect("save"); // the last two saves: meta.json and .prev
        }
    }
    let size = fs::metadata(store.path()).map(|m| m.len()).unwrap_or(0);
    match store.load() {
        Ok(Loaded::Found {
            recovered: None, ..
        }) => {}
        Ok(other) => panic!("after {count} rejected jobs ({size} bytes): {other:?}"),
        Err(e) => panic!(
            "after {count} rejected jobs of {} bytes each the metafile is {size} bytes and \
             BootAgent refuses to start: {e}",
            message.len()
        ),
    }
}

/// An entry whose parent path passes PATH_MAX under `dest` (while the entry path
/// itself is within `path_bytes_max`, 4096) fails with ENAMETOOLONG: that is the
/// package's fault (errcode 4), in a one-line message.
#[test]
fn a_path_past_path_max_is_the_packages_fault() {
    let scratch = Scratch::new("pathmax");
    let mut parent = vec!["d".repeat(254); 16].join("/"); // 4079 bytes
    parent.insert_str(0, "a\nb/");
    let name = format!("{parent}/x"); // 4085 bytes, within path_bytes_max
    assert!(name.len() <= UnpackLimits::default().path_bytes_max);
    let mut data = name.clone().into_bytes();
    data.push(0);
    let mut tar = tar::header(b"././@LongLink", b"", b'L', 0o644, data.len() as u64);
    tar.extend_from_slice(&data);
    tar.resize(tar.len().div_ceil(512) * 512, 0);
    tar.extend_from_slice(&tar::header(b"x", b"", b'0', 0o644, 0));
    tar.extend_from_slice(&[0; 1024]);
    let package = scratch.0.join("package");
    fs::write(&package, tar::gzip(&tar)).expect("package");
    let dest = scratch.0.join("dest");
    let err = unpack::unpack(&package, &dest, &UnpackLimits::default()).expect_err("refused");
    assert!(!dest.exists(), "dest left behind");
    assert_eq!(
        (err.errcode, err.message.contains('\n')),
        (ErrCode::BadPackage, false),
        "errcode {:?}: {}",
        err.errcode,
        clip(&err.message)
    );
}

#[test]
fn hostile_limits_and_restart_objects_are_named() {
    for (value, part) in [
        (json!([]), "limits must be an object"),
        (json!({"CPU": "10%", "cpu": "20%"}), "given twice"),
        (json!({"memory": "1M", "MEMORY": "2M"}), "given twice"),
        (json!({"disk": "1G"}), "unknown limit \"disk\""),
        (json!({"x".repeat(1 << 20): 1}), "unknown limit"),
        (json!({"CPU": "10 %"}), "whole percentage"),
        (json!({"memory": "20 M"}), "like \"20M\""),
        (json!({"memory": "٣M"}), "like \"20M\""),
    ] {
        let err = reslimit::parse_limits(&value, CPUS).expect_err("refused");
        assert!(
            err.contains(part) && err.len() < 300,
            "{part}: {}",
            clip(&err)
        );
    }
    for (value, part) in [
        (json!([]), "restart is an array"),
        (
            json!({"reboot_s": 1}),
            "unknown restart setting \"reboot_s\"",
        ),
        (
            json!({"delay_s": 1.5}),
            "restart.delay_s must be a whole number",
        ),
    ] {
        let err = RestartPolicy::from_json(&value).expect_err("refused");
        assert!(err.contains(part), "{part}: {err}");
    }
}

/// serde's "unknown variant" error quotes the metafile's text: the refusal an
/// operator reads must stay one line whatever a damaged `state` holds.
#[test]
fn metafile_errors_are_one_line() {
    let scratch = Scratch::new("meta-line");
    let mut meta = serde_json::to_value(Meta::new("sn".into(), String::new(), 600)).expect("meta");
    meta["jobs"] = json!([{"id": "j1", "errcode": 0, "message": "", "state": "finished\nrunning"}]);
    let err = load_meta(&scratch.0, meta.to_string().as_bytes(), 1 << 20).expect_err("refused");
    assert!(!err.contains(['\n', '\r']), "not one line: {}", clip(&err));
}

/// A package of `(name, link target, typeflag, mode, data)` entries, gzip'd.
fn package_of(entries: &[(&str, &str, u8, u32, &[u8])]) -> Vec<u8> {
    let mut tar = Vec::new();
    for (name, link, typeflag, mode, data) in entries {
        if link.len() > 100 {
            // A GNU long link before the entry, whose own field is cut.
            let mut long = link.as_bytes().to_vec();
            long.push(0);
            let header = tar::header(b"././@LongLink", b"", b'K', 0o644, long.len() as u64);
            tar.extend_from_slice(&header);
            tar.extend_from_slice(&long);
            tar.resize(tar.len().div_ceil(512) * 512, 0);
        }
        let header = tar::header(
            name.as_bytes(),
            link.as_bytes(),
            *typeflag,
            *mode,
            data.len() as u64,
        );
        tar.extend_from_slice(&header);
        tar.extend_from_slice(data);
        tar.resize(tar.len().div_ceil(512) * 512, 0);
    }
    tar.extend_from_slice(&[0; 1024]);
    tar::gzip(&tar)
}

/// A symlink target may hold a name longer than NAME_MAX: that is the package's
/// fault (errcode 4), not the host's.
#[test]
fn a_link_target_past_name_max_is_the_packages_fault() {
    let scratch = Scratch::new("namemax");
    let target = "x".repeat(300);
    let package = scratch.0.join("package");
    fs::write(&package, package_of(&[("run", &target, b'2', 0o777, b"")])).expect("package");
    let dest = scratch.0.join("dest");
    let err = unpack::unpack(&package, &dest, &UnpackLimits::default()).expect_err("refused");
    assert!(!dest.exists(), "dest left behind");
    assert_eq!(err.errcode, ErrCode::BadPackage, "{}", clip(&err.message));
}

/// A `VERSION` file that cannot be read is logged and ignored, as an unusable one is
/// (as root, permission bits do not stop the read, and this passes either way).
#[test]
fn an_unreadable_version_file_is_ignored() {
    let scratch = Scratch::new("version-mode");
    let package = scratch.0.join("package");
    let script: &[u8] = b"#!/bin/sh\necho hi\n";
    let entries: [(&str, &str, u8, u32, &[u8]); 2] = [
        ("run", "", b'0', 0o755, script),
        ("VERSION", "", b'0', 0o000, b"1.2.3\n"),
    ];
    fs::write(&package, package_of(&entries)).expect("package");
    let dest = scratch.0.join("dest");
    let unpacked = unpack::unpack(&package, &dest, &UnpackLimits::default());
    assert!(unpacked.is_ok(), "{unpacked:?}");
    assert!(dest.join("run").is_file());
}
