//! The journal's rules: its bounds and the drops counted, receipts on disk before
//! a job runs, acknowledgement, a failed write of the metafile (the `config` undo
//! included), jobs interrupted by a stop.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::jobs::SelfUpgrade;

const OK: (u32, &str) = (0, "success");

fn bounds(results_max: usize, ids_remembered: usize) -> Bounds {
    Bounds {
        queue_max: 2,
        results_max,
        ids_remembered,
    }
}

fn stop(name: &str) -> Job {
    Job::Stop { name: name.into() }
}

fn ids(records: &[JobRecord]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

fn carried(journal: &Journal) -> Vec<(String, u32, String)> {
    (journal.to_deliver())
        .map(|r| (r.id.clone(), r.errcode, r.message.clone()))
        .collect()
}

#[test]
fn journal_forgets_the_oldest_delivered_first_and_never_an_undelivered_one() {
    let mut journal = Journal::default();
    let wide = bounds(8, usize::MAX);
    for i in 0..5 {
        assert!(journal.enter(format!("d{i}"), JobState::Finished, OK, false, wide));
    }
    // Delivered in the order d3, d0 (two reports): d3 goes first.
    let carried = |id: &str| vec![(id.to_string(), 0, "success".to_string())];
    assert!(journal.acknowledge(&carried("d3"), 100));
    assert!(journal.acknowledge(&carried("d0"), 100));
    journal.forget_delivered(4);
    assert_eq!(ids(&journal.records), ["d0", "d1", "d2", "d4"]);
    journal.forget_delivered(1);
    assert_eq!(
        journal.records.len(),
        3,
        "undelivered ones stay past the bound"
    );
    // The bound of results waiting for delivery: past it, nothing is entered.
    for i in 0..5 {
        journal.enter(format!("u{i}"), JobState::Received, OK, false, wide);
    }
    assert_eq!(journal.undelivered(), 8);
    assert!(!journal.enter("late".into(), JobState::Finished, OK, true, wide));
    assert!(journal.find("late").is_none());
    assert_eq!(
        journal.dropped(),
        1,
        "the job not entered is counted dropped"
    );
    assert!(!journal.enqueue("later".into(), stop("svc"), wide));
    assert_eq!((journal.dropped(), journal.queued()), (2, 0));
    // Refusals do not push executed ids out.
    let mut journal = Journal::default();
    let wide = bounds(100, usize::MAX);
    journal.enter("done".into(), JobState::Finished, OK, false, wide);
    journal.acknowledge(&carried("done"), 2);
    for i in 0..5 {
        let full = (9, "queue full");
        journal.enter(format!("q{i}"), JobState::Finished, full, true, wide);
    }
    journal.forget_delivered(2);
    assert!(journal.find("done").is_some(), "still remembered");
}

#[test]
fn entering_a_job_forgets_delivered_ids_past_the_bound() {
    let mut journal = Journal::default();
    let two = bounds(100, 2);
    for id in ["a", "b", "c"] {
        assert!(journal.enter(id.into(), JobState::Finished, OK, false, two));
        journal.saved();
        journal.acknowledge(&carried(&journal), 2);
    }
    assert_eq!(
        ids(&journal.records),
        ["b", "c"],
        "the oldest delivered went"
    );
    // Undelivered results are never forgotten, whatever the bound.
    for id in ["d", "e", "f"] {
        assert!(journal.enter(id.into(), JobState::Received, OK, false, bounds(100, 1)));
    }
    assert_eq!(ids(&journal.records), ["d", "e", "f"]);
}

#[test]
fn a_job_goes_to_the_edge_only_once_its_receipt_is_on_disk() {
    let mut journal = Journal::default();
    let wide = bounds(100, 100);
    assert!(journal.enqueue("a".into(), stop("svc"), wide));
    assert!(!journal.queue_full(wide));
    let upgrade = SelfUpgrade {
        url: "http://h/b".into(),
        checksum: [0; 32],
        version: None,
        probation_s: 2,
    };
    assert!(journal.enqueue("b".into(), Job::SelfUpgrade(Box::new(upgrade)), wide));
    assert!(journal.queue_full(wide), "two wait: the bound");
    assert_eq!(journal.take(), None, "receipt not on disk yet");
    journal.saved();
    assert_eq!(journal.take(), Some(("a".to_string(), stop("svc"))));
    let a = journal.find("a").expect("entered");
    assert_eq!((a.state, a.unsaved), (JobState::Running, true));
    let b = journal.find("b").expect("entered");
    assert_eq!(b.action.as_deref(), Some(SELF_UPGRADE_ACTION));
    assert_eq!(journal.queued(), 1);
    // Sent again, a received job is not run twice; its result goes again.
    assert_eq!(journal.received_again("a"), Some(false), "no result yet");
    journal.finish("a", 0, "done");
    journal.saved();
    journal.acknowledge(&carried(&journal), 100);
    assert_eq!(carried(&journal), []);
    assert_eq!(journal.received_again("a"), Some(true));
    assert_eq!(carried(&journal).len(), 1, "reported again");
    assert_eq!(journal.received_again("new"), None);
}

#[test]
fn a_result_is_reported_once_on_disk_and_acknowledged_exactly_as_carried() {
    let mut journal = Journal::default();
    let wide = bounds(100, 100);
    journal.enter("a".into(), JobState::Received, OK, false, wide);
    journal.finish("a", 3, "failed\nbadly");
    assert_eq!(carried(&journal), [], "not on disk yet");
    let refusal = (9, "queue full");
    journal.enter("r".into(), JobState::Finished, refusal, true, wide);
    assert_eq!(ids_of(&carried(&journal)), ["r"], "a refusal goes at once");
    journal.saved();
    let report = carried(&journal);
    assert_eq!(ids_of(&report), ["a", "r"]);
    assert_eq!(report[0].2, "failed\\nbadly", "one line");
    // While the report is on its way: a new result, and `r` refused again with
    // another message (the same id and errcode): not what the report carried.
    journal.enter("b".into(), JobState::Finished, OK, false, wide);
    let refusal = (9, "queue still full");
    journal.enter("r".into(), JobState::Finished, refusal, true, wide);
    journal.saved();
    assert!(journal.acknowledge(&report, 100));
    assert_eq!(
        ids_of(&carried(&journal)),
        ["b", "r"],
        "what came since stays"
    );
    assert!(journal.find("a").is_some_and(|a| a.delivered));
    assert!(!journal.acknowledge(&report, 100), "nothing left to change");
}

fn ids_of(carried: &[(String, u32, String)]) -> Vec<&str> {
    carried.iter().map(|c| c.0.as_str()).collect()
}

#[test]
fn a_failed_write_refuses_what_is_not_on_disk_and_undoes_config_jobs() {
    let mut journal = Journal::default();
    let wide = bounds(100, 100);
    journal.enqueue("on-disk".into(), stop("a"), wide);
    journal.saved();
    journal.enqueue("new".into(), stop("b"), wide);
    for (id, servers, step) in [("c1", "a:1", 60), ("c2", "b:2", 30)] {
        journal.enter(id.into(), JobState::Received, OK, false, wide);
        journal.config_run(id, servers, step);
        journal.finish(id, 0, "success");
    }
    let refused = journal.refuse_unsaved("not run: cannot write the metafile: disk full");
    assert_eq!(refused.ids, ["new", "c1", "c2"]);
    assert_eq!(
        refused.config,
        Some(("a:1".to_string(), 60)),
        "what was on disk before the first"
    );
    assert_eq!(journal.queued(), 1, "only the job on disk waits");
    assert_eq!(ids_of(&carried(&journal)), ["new", "c1", "c2"]);
    assert!(carried(&journal).iter().all(|c| c.1 == 5));
    assert!(
        journal.find("new").is_none(),
        "not remembered: sent again, it runs"
    );
    // Once on disk, a `config` job is not undone.
    journal.config_run("c3", "c:3", 10);
    journal.saved();
    assert_eq!(journal.refuse_unsaved("x"), Refused::default());
}

#[test]
fn jobs_interrupted_by_a_stop_are_failed_at_start() {
    let mut journal = Journal::default();
    let wide = bounds(100, 100);
    for (id, state) in [
        ("queued", JobState::Received),
        ("running", JobState::Running),
        ("self", JobState::Running),
        ("probation", JobState::Running),
        ("done", JobState::Finished),
    ] {
        journal.enter(id.into(), state, OK, false, wide);
    }
    for id in ["self", "probation"] {
        journal.find(id).expect("entered").action = Some(SELF_UPGRADE_ACTION.into());
    }
    assert_eq!(journal.fail_interrupted(Some("probation")), 3);
    let get = |journal: &mut Journal, id| {
        let r = journal.find(id).expect("kept");
        (r.state, r.errcode, r.message.clone())
    };
    let (state, code, message) = get(&mut journal, "queued");
    assert_eq!((state, code), (JobState::Finished, 9));
    assert!(message.contains("before the job started"), "{message}");
    let (_, code, message) = get(&mut journal, "running");
    assert_eq!(code, 9);
    assert!(message.contains("while the job was running"), "{message}");
    let (_, code, message) = get(&mut journal, "self");
    assert_eq!(code, 6, "a self-upgrade never switched is rolled back");
    assert!(message.contains("before the switch"), "{message}");
    assert_eq!(get(&mut journal, "probation").0, JobState::Running);
    assert_eq!(
        get(&mut journal, "done"),
        (JobState::Finished, 0, "success".into())
    );
    assert_eq!(
        journal.fail_interrupted(None),
        1,
        "only the one kept is left"
    );
}

#[test]
fn a_refusal_is_not_remembered_and_gives_way_to_a_later_result() {
    let mut journal = Journal::default();
    let wide = bounds(8, 100);
    let full = (9, "queue full");
    assert!(journal.enter("j".into(), JobState::Finished, full, true, wide));
    assert!(journal.find("j").is_none(), "not remembered as executed");
    assert!(journal.enter("j".into(), JobState::Received, (0, ""), false, wide));
    assert_eq!(journal.records.len(), 1, "the refusal gave way");
    journal.finish("j", 0, "success");
    assert_eq!(journal.find("j").map(|r| r.errcode), Some(0));
    // A delivered refusal is forgotten at once.
    let mut journal = Journal::default();
    journal.enter("r".into(), JobState::Finished, (5, "disk"), true, wide);
    assert!(journal.acknowledge(&[("r".into(), 5, "disk".into())], 100));
    assert!(journal.records.is_empty());
}
