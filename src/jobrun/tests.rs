//! The job runner decides from what the supervisor returned: the child as it was
//! when the job commanded it, then every `Change` of it, never by asking again.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::limits::Limits;
use crate::reslimit::Mechanism;
use crate::supervisor::{ChildFacts, Supervisor};
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bootagent-jobrun-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn change(name: &str, child: ChildFacts) -> Change {
    Change {
        name: name.into(),
        old: Status::Stopped,
        new: child.status.unwrap_or(Status::Stopped),
        event: None,
        child,
    }
}

#[test]
fn a_start_job_is_decided_by_the_changes_of_its_child() {
    let dir = scratch("start");
    // An agent whose `run` cannot be executed: no process ever starts, whatever
    // the supervisor tries.
    fs::create_dir_all(dir.join("agents/a/1")).expect("version directory");
    fs::write(dir.join("agents/a/1/run"), "not a program").expect("run");
    std::os::unix::fs::symlink("1", dir.join("agents/a/current")).expect("current");
    let mechanism = Mechanism::CgroupV2 {
        dir: dir.join("no-cgroups"),
    };
    let mut supervisor = Supervisor::new(&dir, mechanism, None, None, 1);
    let stopped = ["a".to_string()].into_iter().collect();
    assert_eq!(supervisor.discover(&stopped, 0, 0), Vec::<String>::new());
    let limits = Limits::default();
    let (events, _keep) = std::sync::mpsc::sync_channel(1);
    let mut jobs = JobRunner::start(
        &dir,
        DownloadLimits::new(&limits),
        UnpackLimits::new(&limits),
        events,
    )
    .expect("job runner");
    let mut stopped = Vec::new();
    let mut ctx = Ctx {
        supervisor: &mut supervisor,
        now: 0,
        wall_s: 0,
        stopped: &mut stopped,
    };
    let start = Job::Start { name: "a".into() };
    assert_eq!(jobs.begin("j".into(), start, &mut ctx), None, "not up yet");
    // What the supervisor returns carries the child as it is: not running.
    let changes = ctx.supervisor.take_changes();
    assert!(!changes.is_empty());
    let now = ctx.supervisor.facts("a");
    assert!(now.pid.is_none() && now.last_exit.is_some(), "{now:?}");
    for change in &changes {
        assert_eq!(change.child, now);
        assert!(jobs.on_change(change));
    }
    assert_eq!(jobs.look(&mut ctx), None);
    assert!(
        !jobs.on_change(&change("b", ChildFacts::default())),
        "not its child"
    );
    let waiting = ChildFacts {
        status: Some(Status::Restarting),
        last_exit: Some("no run".into()),
        ..ChildFacts::default()
    };
    assert!(jobs.on_change(&change("a", waiting.clone())));
    assert_eq!(jobs.look(&mut ctx), None);
    // The process the change names, which the supervisor never had: the runner
    // believes the change, not a second look at the supervisor.
    let running = ChildFacts {
        status: Some(Status::Running),
        pid: Some(424_242),
        ..ChildFacts::default()
    };
    assert!(jobs.on_change(&change("a", running)));
    let done = (ErrCode::Success, "a running, pid 424242".to_string());
    assert_eq!(jobs.look(&mut ctx), Some(("j".into(), done)));
    assert!(!jobs.busy());
    // At the deadline, the status of the last change is the reason.
    let start = Job::Start { name: "a".into() };
    assert_eq!(jobs.begin("k".into(), start, &mut ctx), None);
    assert!(jobs.on_change(&change("a", waiting)));
    ctx.now = START_WAIT_MS;
    let failed = (
        ErrCode::StartFailed,
        "a did not start: restarting".to_string(),
    );
    assert_eq!(jobs.look(&mut ctx), Some(("k".into(), failed)));
    supervisor.kill_all();
    let _ = fs::remove_dir_all(&dir);
}
