//! The metafile: its bytes, loading, the previous copy, damage, older files.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use std::os::unix::fs::PermissionsExt;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bootagent-meta-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    dir
}

fn sample() -> Meta {
    Meta::new(
        "bfdcc18c-b6b9-4725-9c47-37fd93dba5b6".into(),
        String::new(),
        600,
    )
}

#[test]
fn fatal_holds_within_a_boot_and_is_forgotten_after_a_reboot() {
    let mut meta = sample();
    assert!(meta.fatal_this_boot("boot-a").is_empty());
    meta.fatal.insert("crasher".into());
    assert_eq!(meta.fatal_this_boot("boot-a").len(), 1);
    assert!(meta.fatal_this_boot("boot-b").is_empty());
    assert_eq!(meta.boot_id, "boot-b");
    meta.fatal.insert("crasher".into());
    assert!(
        meta.fatal_this_boot("").is_empty(),
        "an unknown boot is a new one"
    );
    // A metafile of an older BootAgent has neither field.
    let old = r#"{"schema":1,"agentsn":"x","step_s":600}"#;
    let parsed: Meta = serde_json::from_str(old).expect("old metafile");
    assert!(parsed.fatal.is_empty() && parsed.boot_id.is_empty());
}

#[test]
fn events_of_an_older_metafile_are_read_typed_and_written_back_the_same() {
    use crate::child::{EventKind, Exit};
    use crate::report_event::Origin;
    // The events as an earlier BootAgent kept them: JSON objects in report form.
    let old = r#"{"schema":1,"agentsn":"x","step_s":600,"event_seq":3,"events":[
        {"seq":1,"event":{"code":3,"event":"exited","message":"exited with code 3","name":"svc","time":100}},
        {"seq":2,"event":{"count":4,"event":"killed","message":"worker killed (4 times)","name":"svc","signal":9,"time":101}},
        {"seq":3,"event":{"event":"stopped","message":"stop from the console (uid 0): svc stopped","name":"svc","origin":"local","time":102}}]}"#;
    let meta: Meta = serde_json::from_str(old).expect("older metafile");
    let events: Vec<_> = meta.events.events.iter().map(|e| &e.event).collect();
    assert_eq!(events[0].kind, EventKind::Exited);
    assert_eq!(events[0].exit, Some(Exit::Code(3)));
    assert_eq!(events[1].exit, Some(Exit::Signal(9)));
    assert_eq!(events[1].count, Some(4));
    assert_eq!(events[2].origin, Origin::Local);
    let again: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&meta).expect("ser")).expect("json");
    let before: serde_json::Value = serde_json::from_str(old).expect("json");
    assert_eq!(again["events"], before["events"]);
}

#[test]
fn first_start_then_round_trip_with_modes() {
    let dir = scratch("roundtrip");
    let store = MetaStore::new(&dir.join("data"), 1 << 20);
    assert!(matches!(store.load(), Ok(Loaded::FirstStart)));
    store.create_dir().expect("create dir");
    let mut meta = sample();
    store.save(&meta).expect("save");
    meta.tags = "svc=ecs".into();
    store.save(&meta).expect("save again");
    match store.load() {
        Ok(Loaded::Found {
            meta: got,
            recovered: None,
        }) => assert_eq!(*got, meta),
        other => panic!("unexpected {other:?}"),
    }
    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("data")), 0o700);
    assert_eq!(mode(&store.path()), 0o600);
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_metafile_falls_back_to_previous_copy() {
    let dir = scratch("fallback");
    let store = MetaStore::new(&dir, 1 << 20);
    store.create_dir().expect("create dir");
    let meta = sample();
    store.save(&meta).expect("save");
    store
        .save(&meta)
        .expect("save twice, so a previous copy exists");
    fs::write(store.path(), b"{\"schema\":1,\"agen").expect("truncate");
    match store.load() {
        Ok(Loaded::Found {
            meta: got,
            recovered: Some(_),
        }) => assert_eq!(*got, meta),
        other => panic!("unexpected {other:?}"),
    }
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn damaged_metafile_without_copy_is_never_a_first_start() {
    let dir = scratch("corrupt");
    let store = MetaStore::new(&dir, 1 << 20);
    store.create_dir().expect("create dir");
    for junk in [
        &b""[..],
        b"garbage",
        b"{\"schema\":1}",
        b"{\"schema\":99,\"agentsn\":\"x\",\"step_s\":1}",
    ] {
        fs::write(store.path(), junk).expect("write junk");
        let err = store.load().expect_err("damaged metafile must not load");
        assert!(err.to_string().contains("refusing to start"), "{err}");
    }
    fs::write(store.path(), vec![b' '; 2 << 20]).expect("write big");
    assert!(store.load().is_err());
    fs::remove_dir_all(&dir).ok();
}

#[test]
fn missing_metafile_with_previous_copy_recovers() {
    let dir = scratch("missing");
    let store = MetaStore::new(&dir, 1 << 20);
    store.create_dir().expect("create dir");
    store.save(&sample()).expect("save");
    store.save(&sample()).expect("save");
    fs::remove_file(store.path()).expect("remove");
    assert!(matches!(
        store.load(),
        Ok(Loaded::Found {
            recovered: Some(_),
            ..
        })
    ));
    fs::remove_dir_all(&dir).ok();
}

/// The metafile's bytes, as every BootAgent since the first wrote them: the
/// journal and the event queue flattened in their places.
#[test]
fn the_metafile_is_written_byte_for_byte_as_before() {
    use crate::child::EventKind;
    use crate::report_event::ChildEvent;
    let mut meta = Meta::new("sn-1".into(), "a:1".into(), 600);
    meta.registered = true;
    meta.key = Some("k".into());
    meta.report_lazy = true;
    let record = |id: &str, errcode, message: &str, state, action: Option<&str>| JobRecord {
        id: id.into(),
        errcode,
        message: message.into(),
        delivered: false,
        state,
        refused: false,
        unsaved: true,
        action: action.map(str::to_string),
    };
    let records = &mut meta.journal.records;
    records.push(JobRecord {
        delivered: true,
        ..record("j1", 0, "success", JobState::Finished, None)
    });
    records.push(JobRecord {
        refused: true,
        ..record("j2", 5, "full", JobState::Finished, None)
    });
    records.push(record("j3", 0, "", JobState::Running, Some("self_upgrade")));
    let started = ChildEvent::new(7, "svc", EventKind::Started, "started".into());
    meta.events.push(started, 0, 10);
    meta.events.drop_results(2, 9, 10);
    meta.stopped.insert("svc".into());
    meta.child_upgrade = Some(ChildUpgrade {
        id: "j3".into(),
        name: "svc".into(),
        old_version: Some("1.0".into()),
        old_settings: None,
    });
    meta.boot_id = "b".into();
    meta.fatal.insert("x".into());
    let dir = scratch("bytes");
    let store = MetaStore::new(&dir, 1 << 20);
    store.create_dir().expect("create dir");
    store.save(&meta).expect("save");
    let written = fs::read_to_string(store.path()).expect("read");
    assert_eq!(written, GOLDEN);
    match store.load() {
        Ok(Loaded::Found { meta: got, .. }) => {
            assert_eq!(got.journal.records.len(), 3);
            assert_eq!(
                got.journal.records[2].action.as_deref(),
                Some("self_upgrade")
            );
            assert!(got.journal.records.iter().all(|r| !r.unsaved));
        }
        other => panic!("unexpected {other:?}"),
    }
    fs::remove_dir_all(&dir).ok();
}

const GOLDEN: &str = r#"{
  "schema": 1,
  "agentsn": "sn-1",
  "registered": true,
  "tags": "",
  "key": "k",
  "servers_cli": "a:1",
  "servers_server": "",
  "step_s": 600,
  "report_lazy": true,
  "jobs": [
    {
      "id": "j1",
      "errcode": 0,
      "message": "success",
      "delivered": true,
      "state": "finished"
    },
    {
      "id": "j2",
      "errcode": 5,
      "message": "full",
      "delivered": false,
      "state": "finished",
      "refused": true
    },
    {
      "id": "j3",
      "errcode": 0,
      "message": "",
      "delivered": false,
      "state": "running",
      "action": "self_upgrade"
    }
  ],
  "events": [
    {
      "seq": 1,
      "event": {
        "time": 7,
        "name": "svc",
        "event": "started",
        "message": "started"
      }
    }
  ],
  "event_seq": 1,
  "dropped": {
    "events": 0,
    "events_time": 0,
    "results": 2,
    "results_time": 9
  },
  "stopped": [
    "svc"
  ],
  "child_upgrade": {
    "id": "j3",
    "name": "svc",
    "old_version": "1.0",
    "old_settings": null
  },
  "boot_id": "b",
  "fatal": [
    "x"
  ]
}
"#;
