//! The jobs of the answers, driven through the core: the `config` job, a repeated id,
//! results kept until acknowledged, and a flood bounded by the queue and the journal.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::child::{EventKind, Exit};
use crate::jobs::{ErrCode, Job};
use crate::report_event::{ChildEvent, Origin};

#[test]
fn config_job_sets_step_and_servers_and_its_result_is_sent_until_acknowledged() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    let effects = sim.answer(ok(json!({"status": 0, "jobs": [
        {"id": "j1", "action": "config", "step": 30, "svrlist": "n:9"},
        {"id": "j2", "action": "install", "name": "x"},
        {"action": "config"},
    ]})));
    assert!(effects.contains(&Effect::SaveMeta));
    assert_eq!(sim.core.meta().step_s, 30);
    assert_eq!(sim.core.meta().servers_server, "http://n:9");

    let prompt = sim.next_request();
    assert!(prompt.at <= 1_000, "a result is reported within a second");
    assert_eq!(prompt.host, "n", "a new server list starts from the top");
    assert_eq!(
        prompt.body["jobs"],
        json!([
            {"id": "j1", "errcode": 0, "message": "success"},
            {"id": "j2", "errcode": 1, "message": "job has no url"},
        ])
    );
    sim.answer(http(500));
    let retry = sim.next_request();
    assert_eq!(
        retry.body["jobs"].as_array().map(Vec::len),
        Some(2),
        "kept until a 200"
    );
    sim.answer(ok(json!({})));
    let later = sim.next_request();
    assert_eq!(later.body["jobs"], json!([]), "dropped once acknowledged");
    assert!(
        (15_000..=45_000).contains(&(later.at - retry.at)),
        "new step 30 s"
    );
    let phase = super::pacing::phase_ms(SN, 30_000) as i64;
    assert_eq!(
        (sim.wall_ms() - phase).rem_euclid(30_000),
        0,
        "at the phase of the new step"
    );
}

#[test]
fn a_repeated_job_id_is_not_run_again_but_its_result_is_reported_again() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    sim.answer(ok(
        json!({"jobs": [{"id": "j1", "action": "config", "step": 30}]}),
    ));
    sim.next_request();
    sim.answer(ok(json!({})));
    sim.core.meta.step_s = 45; // if j1 ran again, step would go back to 30
    sim.next_request();
    sim.answer(ok(
        json!({"jobs": [{"id": "j1", "action": "config", "step": 30}]}),
    ));
    assert_eq!(sim.core.meta().step_s, 45);
    let again = sim.next_request();
    assert_eq!(again.body["jobs"][0]["id"], "j1");
}

#[test]
fn a_flood_of_jobs_gets_a_result_for_each_or_one_dropped_event_counting_the_rest() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    let jobs: Vec<Value> = (0..10_000)
        .map(|i| json!({"id": format!("j{i}"), "action": "stop", "name": "svc"}))
        .collect();
    sim.answer(ok(json!({"jobs": jobs})));
    let limits = Limits::default();
    assert_eq!(sim.core.queued_jobs(), limits.jobs_queue_max);
    assert_eq!(
        sim.core.meta().journal.undelivered(),
        limits.pending_results_max,
        "results kept are bounded by pending_results_max"
    );
    let report = sim.next_request();
    let results = report.body["jobs"].as_array().cloned().unwrap_or_default();
    assert!(results
        .iter()
        .all(|r| r["errcode"] == 9 && r["message"] == "queue full"));
    let dropped: Vec<&Value> = report.body["events"]
        .as_array()
        .map(|e| e.iter().filter(|e| e["event"] == "dropped").collect())
        .unwrap_or_default();
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0]["what"], "results");
    assert!(dropped[0].get("name").is_none());
    let count = dropped[0]["count"].as_u64().unwrap_or(0) as usize;
    assert_eq!(
        results.len() + limits.jobs_queue_max + count,
        10_000,
        "every job is answered, queued or counted"
    );
    sim.answer(ok(json!({})));
    let next = sim.next_request();
    assert_eq!(next.body["events"], json!([]), "acknowledged once");
    assert_eq!(next.body["jobs"], json!([]));
    // A refused id sent again is not taken for a repeat: it is queued behind.
    let mut effects = Vec::new();
    let (id, job) = sim
        .core
        .take_job(&mut effects)
        .expect("the first queued job");
    assert_eq!((id.as_str(), job), ("j0", Job::Stop { name: "svc".into() }));
    sim.answer(ok(
        json!({"jobs": [{"id": "j9999", "action": "stop", "name": "svc"}]}),
    ));
    assert!(sim.core.meta().journal.is_queued("j9999"));
}

#[test]
fn a_job_whose_receipt_cannot_be_written_is_refused_with_errcode_5_and_may_run_later() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    let jobs = json!({"jobs": [
        {"id": "s1", "action": "stop", "name": "svc"},
        {"id": "c1", "action": "config", "step": 30},
    ]});
    let mut effects = Vec::new();
    sim.core.on_outcome(sim.now, ok(jobs.clone()), &mut effects);
    assert!(effects.contains(&Effect::SaveMeta));
    assert!(
        sim.core.take_job(&mut effects).is_none(),
        "not before its receipt is on disk"
    );
    sim.core
        .save_failed(sim.now, "No space left on device (os error 28)");
    assert_eq!(sim.core.meta().step_s, 600, "the config job did not run");
    assert_eq!(sim.core.queued_jobs(), 0);
    let report = sim.next_request();
    let results = report.body["jobs"].as_array().cloned().unwrap_or_default();
    assert_eq!(results.len(), 2, "{results:?}");
    for r in &results {
        assert_eq!(r["errcode"], 5);
        assert!(r["message"]
            .as_str()
            .is_some_and(|m| m.contains("No space left")));
    }
    sim.answer(ok(jobs));
    assert_eq!(sim.core.meta().step_s, 30, "sent again, it runs");
    assert!(sim.core.take_job(&mut Vec::new()).is_some());
}

#[test]
fn a_result_is_reported_only_once_it_is_on_disk() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    sim.answer(ok(
        json!({"jobs": [{"id": "s1", "action": "stop", "name": "svc"}]}),
    ));
    let mut effects = Vec::new();
    sim.core.take_job(&mut effects).expect("the job");
    sim.core.job_done(
        sim.now,
        "s1",
        ErrCode::Success,
        "svc stopped".into(),
        &mut effects,
    );
    sim.core.save_failed(sim.now, "disk full");
    sim.answer(ok(json!({})));
    let report = sim.next_request();
    assert_eq!(report.body["jobs"], json!([]), "not on disk: not told");
    sim.answer(ok(json!({})));
    sim.saved(&[Effect::SaveMeta]);
    let report = sim.next_request();
    assert_eq!(report.body["jobs"][0]["id"], "s1");
}

#[test]
fn a_repeated_id_past_the_per_answer_limit_keeps_its_one_result() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    sim.answer(ok(
        json!({"jobs": [{"id": "dup", "action": "config", "step": 30}]}),
    ));
    sim.next_request();
    let mut jobs: Vec<Value> = (0..300)
        .map(|i| json!({"id": format!("x{i}"), "action": "config", "step": 30}))
        .collect();
    jobs.push(json!({"id": "dup", "action": "config", "step": 30}));
    sim.answer(ok(json!({"jobs": jobs})));
    let dup: Vec<_> = sim
        .core
        .meta()
        .journal
        .records
        .iter()
        .filter(|r| r.id == "dup")
        .collect();
    assert_eq!(dup.len(), 1, "one result per id: {dup:?}");
    assert_eq!(dup[0].errcode, 0);
}

#[test]
fn the_event_bound_holds_exactly_with_one_dropped_event_while_another_is_in_flight() {
    let mut sim = Sim::new(true, "a:1");
    sim.settle();
    let max = Limits::default().pending_events_max;
    let event = |i: usize| {
        let mut event = ChildEvent::new(1, "svc", EventKind::Exited, format!("exit {i}"));
        event.exit = Some(Exit::Code(i as i32));
        event
    };
    let mut effects = Vec::new();
    for i in 0..max + 10 {
        sim.core.push_event(sim.now, event(i), &mut effects);
    }
    let first = sim.next_request(); // in flight, carrying a `dropped` event
    let events = first.body["events"].as_array().cloned().unwrap_or_default();
    assert_eq!(events.len(), max, "the bound, exactly");
    let count = |events: &[Value]| -> Vec<u64> {
        events
            .iter()
            .filter(|e| e["event"] == "dropped")
            .map(|e| {
                assert_eq!(e["what"], "events");
                assert!(e.get("name").is_none(), "{e}");
                e["count"].as_u64().unwrap_or(0)
            })
            .collect()
    };
    let first_dropped = count(&events);
    assert_eq!(first_dropped.len(), 1);
    assert_eq!(first_dropped[0] as usize + max - 1, max + 10);
    for i in 0..20 {
        sim.core.push_event(sim.now, event(i), &mut effects);
    }
    assert!(sim.core.meta().events.len() <= max);
    sim.answer(http(500));
    let second = sim.next_request();
    let events = second.body["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(events.len(), max, "still the bound, never one more");
    let dropped = count(&events);
    assert_eq!(dropped.len(), 1, "one `dropped` event counting all");
    assert_eq!(dropped[0], first_dropped[0] + 20);
    sim.answer(ok(json!({})));
    let third = sim.next_request();
    assert_eq!(third.body["events"], json!([]));
}

#[test]
fn events_go_out_in_the_form_reports_always_had() {
    let mut sim = Sim::new(true, "a:1");
    sim.settle();
    let mut effects = Vec::new();
    let mut exited = ChildEvent::new(100, "svc", EventKind::Exited, "exited with code 3".into());
    exited.exit = Some(Exit::Code(3));
    sim.core.push_event(sim.now, exited, &mut effects);
    let kill = |time, count| ChildEvent::worker_kills(time, "svc", "worker 7 (awk) killed", count);
    sim.core.push_event(sim.now, kill(101, 1), &mut effects);
    sim.core.push_event(sim.now, kill(102, 2), &mut effects);
    let mut local = ChildEvent::new(
        103,
        "web",
        EventKind::Stopped,
        "stop from the console".into(),
    );
    local.origin = Origin::Local;
    sim.core.push_event(sim.now, local, &mut effects);
    let report = sim.next_request();
    let text = String::from_utf8(report.raw.clone()).unwrap_or_default();
    let events = text.split_once(r#""events":"#).map_or("", |(_, e)| e);
    assert_eq!(
        events,
        concat!(
            r#"[{"code":3,"event":"exited","message":"exited with code 3","name":"svc","time":100},"#,
            r#"{"count":3,"event":"killed","message":"worker 7 (awk) killed (3 times)","name":"svc","signal":9,"time":102},"#,
            r#"{"event":"stopped","message":"stop from the console","name":"web","origin":"local","time":103}]}"#
        ),
        "worker kills coalesced; every field as before"
    );
}
