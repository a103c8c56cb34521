//! Job validation (accepted jobs, malformed ones and their reasons, masked
//! passwords).
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use serde_json::json;

fn check(job: Value, expected: Result<Job, &str>) {
    let got = parse_job(&job, &Limits::default(), 2);
    match expected {
        Ok(want) => assert_eq!(got.map(|(_, j)| j), Ok(want), "{job}"),
        Err(part) => {
            let err = got.expect_err(&job.to_string());
            assert!(
                err.message.contains(part),
                "{job}: {} lacks {part}",
                err.message
            );
        }
    }
}

#[test]
fn config_jobs() {
    let step = |s| {
        Ok(Job::Config {
            svrlist: None,
            step_s: Some(s),
        })
    };
    check(json!({"id": "1", "action": "config", "step": 60}), step(60));
    check(json!({"id": "1", "action": "config", "step": 0}), step(1));
    check(
        json!({"id": "1", "action": "config", "step": 999_999}),
        step(86_400),
    );
    check(
        json!({"id": "1", "action": "config", "step": -5}),
        Err("negative"),
    );
    check(
        json!({"id": "1", "action": "config", "step": 1.5}),
        Err("whole number"),
    );
    check(
        json!({"id": "1", "action": "config", "step": "60"}),
        Err("step is a string"),
    );
    check(json!({"id": "1", "action": "config"}), Err("neither"));
    check(
        json!({"id": "1", "action": "config", "svrlist": "a:1, b:2"}),
        Ok(Job::Config {
            svrlist: Some(addr::parse_list("a:1,b:2").expect("valid")),
            step_s: None,
        }),
    );
    check(
        json!({"id": "1", "action": "config", "svrlist": ["a:1", "b:2"]}),
        Ok(Job::Config {
            svrlist: Some(addr::parse_list("a:1,b:2").expect("valid")),
            step_s: None,
        }),
    );
    check(
        json!({"id": "1", "action": "config", "svrlist": "a:99999"}),
        Err("bad port"),
    );
}

#[test]
fn malformed_jobs_are_rejected_with_a_reason() {
    check(json!({"action": "config"}), Err("no id"));
    check(
        json!({"id": 7, "action": "config"}),
        Err("job id must be a string"),
    );
    check(json!({"id": "", "action": "config"}), Err("job id must be"));
    check(
        json!({"id": "x".repeat(200), "action": "config"}),
        Err("job id must be"),
    );
    check(json!({"id": "1"}), Err("no action"));
    check(json!({"id": "1", "action": 3}), Err("action is a number"));
    check(
        json!({"id": "1", "action": "reboot"}),
        Err("unknown action \"reboot\""),
    );
    check(json!([1]), Err("not an object"));
    check(json!({"id": "1", "action": "install"}), Err("no name"));
    check(
        json!({"id": "1", "action": "stop", "name": "../../etc"}),
        Err("bad name"),
    );
    check(
        json!({"id": "1", "action": "stop", "name": ".hidden"}),
        Err("bad name"),
    );
    check(
        json!({"id": "1", "action": "stop", "name": "ok"}),
        Ok(Job::Stop { name: "ok".into() }),
    );
    let sum = format!("SHA256:{}", "ab".repeat(32));
    let install = |extra: Value| {
        let mut job = json!({"id": "1", "action": "install", "name": "a", "url": "http://x/a.tgz", "checksum": sum});
        if let (Some(job), Value::Object(extra)) = (job.as_object_mut(), extra) {
            job.extend(extra);
        }
        job
    };
    check(install(json!({"url": "gopher://x"})), Err("url must start"));
    check(install(json!({"checksum": null})), Err("checksum is null"));
    check(install(json!({"checksum": "MD5:00"})), Err("SHA256"));
    check(
        install(json!({"limits": {"memory": "lots"}})),
        Err("limits"),
    );
    check(
        install(json!({"envs": {"BOOT_AGENT_NAME": "x"}})),
        Err("BOOT_AGENT_NAME"),
    );
    check(install(json!({"probation": -1})), Err("probation"));
    check(install(json!({"version": "../x"})), Err("bad version"));
    match parse_job(
        &install(json!({"envs": {"A": "1"}, "probation": 5})),
        &Limits::default(),
        2,
    ) {
        Ok((_, Job::Install(install))) => {
            assert_eq!((install.probation_s, install.checksum[0]), (5, 0xab));
            assert_eq!(install.settings.0.get("envs"), Some(&json!({"A": "1"})));
        }
        other => panic!("unexpected {other:?}"),
    }
    let rejected = parse_job(&json!({"id": "k", "action": 1}), &Limits::default(), 2);
    assert_eq!(rejected.expect_err("bad").id.as_deref(), Some("k"));
}

#[test]
fn passwords_never_show_in_urls() {
    assert_eq!(
        masked_url("ftp://u:secret@h:21/p.tgz"),
        "ftp://u:***@h:21/p.tgz"
    );
    assert_eq!(masked_url("http://h/p@x"), "http://h/p@x");
    assert_eq!(masked_url("file:///x"), "file:///x");
}
