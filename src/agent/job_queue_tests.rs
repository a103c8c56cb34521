//! The jobs of the answers, driven through the core: the `config` job, a repeated id,
//! results kept until acknowledged, and a flood bounded by the queue and the journal.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::jobs::ErrCode;

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
fn a_flood_of_jobs_is_bounded_the_excess_answered_queue_full() {
    let mut sim = Sim::new(true, "a:1");
    sim.next_request();
    let jobs: Vec<Value> = (0..10_000)
        .map(|i| json!({"id": format!("j{i}"), "action": "stop", "name": "svc"}))
        .collect();
    sim.answer(ok(json!({"jobs": jobs})));
    let limits = Limits::default();
    assert_eq!(sim.core.queued_jobs(), limits.jobs_queue_max);
    assert!(
        sim.core.meta().jobs.len() <= limits.job_ids_remembered,
        "the journal stays bounded"
    );
    let full: Vec<_> = sim
        .core
        .meta()
        .jobs
        .iter()
        .filter(|r| r.errcode == ErrCode::Internal as u32)
        .collect();
    assert!(!full.is_empty() && full.iter().all(|r| r.message == "queue full"));
    let report = sim.next_request();
    let results = report.body["jobs"].as_array().map(Vec::len).unwrap_or(0);
    assert!(
        results > 0 && results <= limits.job_ids_remembered,
        "{results} results sent"
    );
    let mut effects = Vec::new();
    let (id, job) = sim
        .core
        .take_job(&mut effects)
        .expect("the first queued job");
    assert_eq!((id.as_str(), job), ("j0", Job::Stop { name: "svc".into() }));
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
        .jobs
        .iter()
        .filter(|r| r.id == "dup")
        .collect();
    assert_eq!(dup.len(), 1, "one result per id: {dup:?}");
    assert_eq!(dup[0].errcode, 0);
}
