use super::*;
use serde_json::json;

#[test]
fn settings_are_read_with_defaults() {
    let spec = HealthSpec::from_json(&json!({"notify": true})).unwrap();
    assert!(spec.notify && spec.is_set());
    assert_eq!(spec.ready_timeout_ms, 30_000);
    assert_eq!(spec.watchdog_ms, None);
    let spec = HealthSpec::from_json(&json!({"heartbeat_file": "run/hb"})).unwrap();
    assert_eq!(
        spec.heartbeat,
        Some(HeartbeatSpec {
            file: "run/hb".into(),
            timeout_ms: 60_000
        })
    );
    let spec = HealthSpec::from_json(&json!({
        "notify": false, "ready_timeout_s": 5, "watchdog_s": 20,
        "heartbeat_file": "hb", "heartbeat_timeout_s": 9
    }))
    .unwrap();
    assert_eq!(spec.ready_timeout_ms, 5_000);
    assert_eq!(spec.watchdog_ms, Some(20_000));
    assert_eq!(spec.heartbeat.map(|h| h.timeout_ms), Some(9_000));
    assert!(!HealthSpec::from_json(&json!({})).unwrap().is_set());
}

#[test]
fn bad_settings_name_the_field() {
    for (value, field) in [
        (json!([]), "health is an array"),
        (json!({"notify": 1}), "health.notify"),
        (json!({"ready_timeout_s": 0}), "health.ready_timeout_s"),
        (json!({"watchdog_s": "20"}), "health.watchdog_s"),
        (json!({"watchdog_s": 86_401}), "health.watchdog_s"),
        (
            json!({"heartbeat_timeout_s": -1}),
            "health.heartbeat_timeout_s",
        ),
        (
            json!({"heartbeat_timeout_s": 5}),
            "needs health.heartbeat_file",
        ),
        (json!({"heartbeat_file": "../hb"}), "health.heartbeat_file"),
        (
            json!({"heartbeat_file": "/tmp/hb"}),
            "health.heartbeat_file",
        ),
        (json!({"heartbeat_file": ""}), "health.heartbeat_file"),
        (json!({"heartbeat_file": 3}), "health.heartbeat_file"),
        (
            json!({"heartbeat_file": "a".repeat(300)}),
            "health.heartbeat_file",
        ),
        (
            json!({"hearbeat_file": "hb"}),
            "unknown health setting \"hearbeat_file\"",
        ),
    ] {
        let err = HealthSpec::from_json(&value).unwrap_err();
        assert!(err.contains(field), "{value}: {err}");
        assert!(!err.contains('\n'));
    }
}

#[test]
fn content_is_a_value_only_when_it_is_a_time() {
    assert_eq!(
        Read::of_content(b"1763700000\n"),
        Read::Value(b"1763700000".to_vec())
    );
    assert_eq!(
        Read::of_content(b" 1763700000.25 "),
        Read::Value(b"1763700000.25".to_vec())
    );
    for content in [
        &b""[..],
        b"\n",
        b"17637x",
        b"-5",
        b"1.",
        b".5",
        b"1.2.3",
        b"\0\0",
    ] {
        assert_eq!(Read::of_content(content), Read::NoValue, "{content:?}");
    }
}

fn value(v: &str) -> Read {
    Read::Value(v.as_bytes().to_vec())
}

#[test]
fn a_fresh_heartbeat_is_read_once_per_timeout_and_never_stale() {
    let mut watch = HeartbeatWatch::new(1_000, 60_000);
    assert_eq!(watch.first_check(), 61_000);
    let mut at = watch.first_check();
    for second in 0..100u64 {
        // Written every 50 s: each read sees a new value.
        match watch.observe(value(&(1_763_700_000 + second * 50).to_string()), at) {
            Verdict::CheckAt(next) => {
                assert_eq!(next, at + 60_000);
                at = next;
            }
            Verdict::Stale(why) => panic!("stale at {at}: {why}"),
        }
    }
}

#[test]
fn an_unchanged_value_is_stale_after_the_timeout() {
    let mut watch = HeartbeatWatch::new(0, 60_000);
    assert_eq!(
        watch.observe(value("100"), 60_000),
        Verdict::CheckAt(120_000)
    );
    // Read early (it cannot be judged yet), then at the deadline.
    assert_eq!(
        watch.observe(value("100"), 90_000),
        Verdict::CheckAt(120_000)
    );
    assert_eq!(
        watch.observe(value("100"), 120_000),
        Verdict::Stale("heartbeat unchanged for 60 s".into())
    );
}

#[test]
fn a_missing_file_is_stale_after_one_more_read() {
    let mut watch = HeartbeatWatch::new(0, 10_000);
    assert_eq!(
        watch.observe(Read::Missing, 10_000),
        Verdict::CheckAt(11_000)
    );
    assert_eq!(
        watch.observe(Read::Missing, 11_000),
        Verdict::Stale("no heartbeat file 10 s after the start".into())
    );
}

#[test]
fn a_write_in_progress_is_not_a_fault() {
    let mut watch = HeartbeatWatch::new(0, 10_000);
    assert_eq!(watch.observe(value("5"), 10_000), Verdict::CheckAt(20_000));
    // Caught mid-write at the deadline: one more read, which finds the new value.
    assert_eq!(
        watch.observe(Read::NoValue, 20_000),
        Verdict::CheckAt(21_000)
    );
    assert_eq!(watch.observe(value("15"), 21_000), Verdict::CheckAt(31_000));
    // Still nothing a second later: stale.
    assert_eq!(
        watch.observe(Read::NoValue, 31_000),
        Verdict::CheckAt(32_000)
    );
    assert!(matches!(
        watch.observe(Read::NoValue, 32_000),
        Verdict::Stale(_)
    ));
}

#[test]
fn a_wall_clock_jump_in_the_value_is_just_a_new_value() {
    // The child's clock jumps from 1970 to now: the value changed, the child is alive.
    let mut watch = HeartbeatWatch::new(0, 10_000);
    assert_eq!(watch.observe(value("12"), 10_000), Verdict::CheckAt(20_000));
    assert_eq!(
        watch.observe(value("1763700000"), 20_000),
        Verdict::CheckAt(30_000)
    );
    // A value that goes back in time is a change too.
    assert_eq!(watch.observe(value("13"), 30_000), Verdict::CheckAt(40_000));
}
