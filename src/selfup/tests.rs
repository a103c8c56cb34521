//! Unit tests of the self-upgrade's pure parts: the checks of a candidate, the
//! settling of a pending upgrade against the journal, the start hand-over's choice.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::start::decide_for_tests as decide;
use super::*;
use crate::meta::{JobRecord, JobState, Meta};

fn header(class: u8, data: u8, kind: u16, machine: u16) -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = class;
    h[5] = data;
    h[16..18].copy_from_slice(&kind.to_le_bytes());
    h[18..20].copy_from_slice(&machine.to_le_bytes());
    h
}

#[test]
fn elf_checks_name_what_is_wrong() {
    let own = std::fs::read("/proc/self/exe").expect("own binary");
    assert_eq!(elf_machine_ok(&own), Ok(()));
    let other = if cfg!(target_arch = "aarch64") {
        62
    } else {
        183
    };
    let err = elf_machine_ok(&header(2, 1, 2, other)).expect_err("foreign");
    assert!(err.contains("another architecture"), "{err}");
    assert!(elf_machine_ok(b"")
        .expect_err("empty")
        .contains("not an ELF"));
    assert!(elf_machine_ok(b"#!/bin/sh\necho bootagent 1 x\n")
        .expect_err("script")
        .contains("no ELF magic"));
    let mut relocatable = own[..64].to_vec();
    relocatable[16] = 1; // ET_REL
    assert!(elf_machine_ok(&relocatable)
        .expect_err("object file")
        .contains("not an executable"));
}

#[test]
fn version_is_the_second_word_of_the_first_line() {
    assert_eq!(
        parse_version_output(b"bootagent 1.2.0 (aarch64-unknown-linux-musl)\ntls: no\n"),
        Ok("1.2.0".to_string())
    );
    for bad in [
        &b""[..],
        b"bootagent\n",
        b"busybox 1.2.0\n",
        b"bootagent ../etc (x)\n",
        b"bootagent .hidden\n",
        b"bootagent current\n",
    ] {
        assert!(parse_version_output(bad).is_err(), "{bad:?}");
    }
}

fn meta_with(id: &str, state: JobState, errcode: u32) -> Meta {
    let mut meta = Meta::new("sn".into(), String::new(), 60);
    meta.journal.records.push(JobRecord {
        id: id.into(),
        errcode,
        message: "m".into(),
        delivered: false,
        state,
        refused: false,
        unsaved: false,
        action: Some("self_upgrade".into()),
    });
    meta
}

fn pending(phase: Phase, version: &str) -> State {
    State {
        pending: Some(Pending {
            job: "j".into(),
            phase,
            version: version.into(),
            from_version: "0.1".into(),
            from_bin: None,
            probation_s: 5,
            since: 1,
            failure: None,
        }),
        ..State::default()
    }
}

#[test]
fn an_upgrade_interrupted_before_the_switch_ends_rolled_back() {
    let mut meta = meta_with("j", JobState::Running, 0);
    let settled = settle(pending(Phase::Preparing, ""), &mut meta, None, 10);
    assert!(settled.changed_meta);
    assert_eq!(meta.journal.records[0].state, JobState::Finished);
    assert_eq!(meta.journal.records[0].errcode, 6);
    assert!(settled.state.pending.is_none());
    assert!(settled.state.failed.is_some());
    assert!(settled.probation.is_none());
}

#[test]
fn a_result_in_the_journal_decides_and_is_not_given_twice() {
    let mut meta = meta_with("j", JobState::Finished, 0);
    let settled = settle(
        pending(Phase::Switched, running_version()),
        &mut meta,
        None,
        10,
    );
    assert!(!settled.changed_meta, "the result is not reported again");
    assert_eq!(settled.state.confirmed.as_deref(), Some(running_version()));
    assert!(settled.state.pending.is_none());

    let mut meta = meta_with("j", JobState::Finished, 6);
    let settled = settle(pending(Phase::Switched, "9.9.9"), &mut meta, None, 10);
    assert!(!settled.changed_meta);
    assert_eq!(settled.state.confirmed, None);
    assert_eq!(meta.journal.records[0].errcode, 6);
}

#[test]
fn a_switched_upgrade_without_the_exec_marker_failed() {
    // Init started BootAgent again: the new version's process ended.
    let mut meta = meta_with("j", JobState::Running, 0);
    let mut state = pending(Phase::Switched, "9.9.9");
    if let Some(p) = state.pending.as_mut() {
        p.failure = Some("crashed".into());
    }
    let settled = settle(state, &mut meta, None, 10);
    assert_eq!(meta.journal.records[0].errcode, 6);
    assert!(
        meta.journal.records[0].message.contains("crashed"),
        "{}",
        meta.journal.records[0].message
    );
    assert!(settled.probation.is_none());
}

#[test]
fn start_hands_over_to_the_confirmed_version_until_it_keeps_failing() {
    let exe = std::path::PathBuf::from("/proc/self/exe")
        .canonicalize()
        .expect("own path");
    let mut state = State {
        installed: Some(Identity::of(&exe).expect("identity")),
        confirmed: Some("9.9.9".into()),
        ..State::default()
    };
    for now in [100, 200, 300] {
        assert_eq!(decide(&mut state, &exe, now), Some("9.9.9".into()));
    }
    // A fourth start within ten minutes: abandoned, with a notice.
    assert_eq!(decide(&mut state, &exe, 400), None);
    assert_eq!(state.confirmed, None);
    assert!(state
        .notice
        .as_deref()
        .is_some_and(|n| n.contains("3 times")));

    // Starts spread over more than ten minutes are not a failure streak.
    let mut state = State {
        installed: Some(Identity::of(&exe).expect("identity")),
        confirmed: Some("9.9.9".into()),
        ..State::default()
    };
    for now in [0, 700, 1400, 2100] {
        assert_eq!(decide(&mut state, &exe, now), Some("9.9.9".into()));
    }
}

#[test]
fn a_changed_installed_binary_wins() {
    let exe = std::path::PathBuf::from("/proc/self/exe")
        .canonicalize()
        .expect("own path");
    let mut identity = Identity::of(&exe).expect("identity");
    identity.sha256 = "0".repeat(64);
    let mut state = State {
        installed: Some(identity),
        confirmed: Some("9.9.9".into()),
        ..State::default()
    };
    assert_eq!(decide(&mut state, &exe, 100), None);
    assert_eq!(state.confirmed, None);
    assert!(state
        .notice
        .as_deref()
        .is_some_and(|n| n.contains("changed")));
}

#[test]
fn a_confirmation_cut_before_its_result_ends_confirmed() {
    let mut meta = meta_with("j", JobState::Running, 0);
    let mut state = pending(Phase::Confirming, running_version());
    state.confirmed = Some(running_version().to_string());
    let settled = settle(state, &mut meta, None, 10);
    assert!(settled.changed_meta);
    assert_eq!(meta.journal.records[0].errcode, 0);
    assert_eq!(meta.journal.records[0].state, JobState::Finished);
    assert_eq!(settled.state.confirmed.as_deref(), Some(running_version()));
    assert!(settled.state.pending.is_none());

    // The installed binary does not count such a start as a crash during probation.
    let exe = std::path::PathBuf::from("/proc/self/exe")
        .canonicalize()
        .expect("own path");
    let mut state = pending(Phase::Confirming, "9.9.9");
    state.confirmed = Some("9.9.9".into());
    assert_eq!(decide(&mut state, &exe, 100), Some("9.9.9".into()));
    assert!(state.pending.as_ref().is_some_and(|p| p.failure.is_none()));
}

#[test]
fn a_binary_takes_the_notify_sockets_only_when_its_version_output_says_so() {
    assert!(takes_notify_sockets(crate::app::version_text().as_bytes()));
    assert!(takes_notify_sockets(
        b"bootagent 2.0.0 (x)\ntls: no\nhand-over: notify-sockets\n"
    ));
    for older in [
        &b"bootagent 1.0.0 (x86_64-unknown-linux-musl)\ncompiled-in servers: none\ntls: no\n"[..],
        b"bootagent 2.0.0 (x)\nhand-over: notify-sockets-v2\n",
        b"",
    ] {
        assert!(!takes_notify_sockets(older), "{older:?}");
    }
}

#[test]
fn the_mark_of_a_prepared_binary_says_whether_it_takes_the_notify_sockets() {
    let data = std::env::temp_dir().join(format!("bootagent-selfup-mark-{}", std::process::id()));
    let store = Store::new(&data);
    let _ = std::fs::remove_dir_all(&data);
    for version in ["2.0.0", "1.0.0"] {
        std::fs::create_dir_all(store.bin_dir().join(version)).expect("bin/VERSION");
    }
    std::fs::write(store.bin_dir().join("2.0.0").join(NOTIFY_SOCKETS_MARK), b"").expect("mark");
    assert!(store.takes_notify_sockets("2.0.0"));
    assert!(
        !store.takes_notify_sockets("1.0.0"),
        "kept from before: no mark"
    );
    assert!(!store.takes_notify_sockets("3.0.0"), "not there at all");
    let _ = std::fs::remove_dir_all(&data);
}
