//! End to end: unpacking is bounded (docs/protocol.md section 9). A compression bomb
//! fails with errcode 4 and leaves nothing, whether `unpack_bytes_max` or the free
//! space stops it; setuid, setgid and group/other write bits are dropped; a small
//! package installs on a nearly full file system.

mod common;

use common::host::{sha256, tgz, Host};
use common::*;
use serde_json::json;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

const RUN: &[u8] = b"#!/bin/sh\nexec sleep 1000\n";
const MIB: usize = 1024 * 1024;

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|err| panic!("{}: {err}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

/// The package is gone from the data directory: no version, no staging left.
fn nothing_left(data: &Path, name: &str) {
    assert!(
        !data.join("agents").join(name).exists(),
        "agents/{name} left behind"
    );
    let tmp: Vec<_> = fs::read_dir(data.join("tmp"))
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(tmp.is_empty(), "tmp/ not empty: {tmp:?}");
}

fn install(host: &Host, id: &str, name: &str, package: &Path) -> serde_json::Value {
    host.send(json!({"id": id, "action": "install", "name": name,
                     "url": host.url(package), "checksum": sha256(package)}));
    host.result(id, DEADLINE)
}

#[test]
fn a_gzip_bomb_over_unpack_bytes_max_fails_with_errcode_4_and_leaves_nothing() {
    let host = Host::new("bomb", &["-o", "unpack_bytes_max=8388608"]);
    let zeros = vec![0u8; 32 * MIB];
    let bomb = tgz(
        &host.files.join("bomb-1.tgz"),
        &[("run", 0o755, RUN), ("zeros", 0o644, &zeros)],
    );
    assert!(fs::metadata(&bomb).expect("bomb").len() < (MIB as u64));
    let result = install(&host, "b1", "bomb", &bomb);
    assert_eq!(result["errcode"], 4, "{result}");
    let message = result["message"].as_str().unwrap_or_default();
    assert!(message.contains("unpack_bytes_max"), "{message}");
    nothing_left(&host.data(), "bomb");

    // Below the bound, the same package installs.
    let small = tgz(
        &host.files.join("small-1.tgz"),
        &[("run", 0o755, RUN), ("zeros", 0o644, &zeros[..MIB])],
    );
    assert_eq!(install(&host, "b2", "small", &small)["errcode"], 0);
    host.wait_status("small", "running");
}

#[test]
fn too_many_entries_fail_with_errcode_4() {
    let host = Host::new("entries", &["-o", "unpack_entries_max=10"]);
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let mut entries = vec![("run", 0o755, RUN)];
    entries.extend(names.iter().map(|n| (n.as_str(), 0o644, &b"x"[..])));
    let package = tgz(&host.files.join("many-1.tgz"), &entries);
    let result = install(&host, "e1", "many", &package);
    assert_eq!(result["errcode"], 4, "{result}");
    assert!(result["message"]
        .as_str()
        .is_some_and(|m| m.contains("more than 10 entries")));
    nothing_left(&host.data(), "many");
}

#[test]
fn setuid_setgid_and_group_other_write_bits_are_dropped() {
    let host = Host::new("modes", &[]);
    let package = tgz(
        &host.files.join("modes-1.tgz"),
        &[
            ("run", 0o4777, RUN),
            ("tool", 0o2775, b"t"),
            ("shared", 0o666, b"s"),
            ("dir/", 0o3777, b""),
        ],
    );
    let result = install(&host, "m1", "modes", &package);
    assert_eq!(result["errcode"], 0, "{result}");
    let dir = host.data().join("agents/modes/1");
    assert_eq!(mode(&dir.join("run")), 0o755);
    assert_eq!(mode(&dir.join("tool")), 0o755);
    assert_eq!(mode(&dir.join("shared")), 0o644);
    assert_eq!(mode(&dir.join("dir")), 0o755);
}

#[test]
fn the_unpack_limits_are_shown_by_dash_t() {
    let scratch = Scratch::new("limits-t");
    let output = bootagent()
        .arg("-D")
        .arg(scratch.data())
        .args(["-S", "127.0.0.1:9", "-o", "unpack_entries_max=7", "-T"])
        .output()
        .expect("bootagent -T");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("unpack_bytes_max"), "{text}");
    assert!(text.contains("unpack_entries_max"), "{text}");
    assert!(text.contains("disk_reserve_bytes"), "{text}");
    let bad = bootagent()
        .args(["-o", "unpack_entries_max=0", "-T"])
        .output()
        .expect("bootagent -T");
    assert!(!bad.status.success());
}

/// A tmpfs of `size` mounted on the scratch's data directory, unmounted on drop.
/// `None` (with the reason printed) when this test cannot mount one.
struct SmallDisk {
    path: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(scratch: &Scratch, size: &str) -> Option<SmallDisk> {
        // SAFETY: geteuid has no memory effects.
        if unsafe { libc::geteuid() } != 0 {
            skip("mounting a tmpfs needs root");
            return None;
        }
        let path = scratch.data();
        fs::create_dir_all(&path).expect("data dir");
        let mounted = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            skip("cannot mount a tmpfs here");
            return None;
        }
        Some(SmallDisk { path })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

#[test]
fn on_a_small_disk_a_tiny_package_installs_and_a_bomb_is_stopped_by_the_free_space() {
    let scratch = Scratch::new("smalldisk");
    let Some(_disk) = SmallDisk::mount(&scratch, "6m") else {
        return;
    };
    // Declared after the disk: the agent is killed before the disk is unmounted.
    let host = Host::in_scratch(scratch, &[]);
    let tiny = tgz(&host.files.join("tiny-1.tgz"), &[("run", 0o755, RUN)]);
    assert!(fs::metadata(&tiny).expect("tiny").len() < 1024);
    let result = install(&host, "t1", "tiny", &tiny);
    assert_eq!(result["errcode"], 0, "{result}");
    host.wait_status("tiny", "running");

    // 64 MiB of zeros on a 6 MiB disk: stopped by the free space, not by ENOSPC.
    let zeros = vec![0u8; 64 * MIB];
    let bomb = tgz(
        &host.files.join("bomb-1.tgz"),
        &[("run", 0o755, RUN), ("zeros", 0o644, &zeros)],
    );
    let result = install(&host, "t2", "bomb", &bomb);
    assert_eq!(result["errcode"], 4, "{result}");
    assert!(
        result["message"]
            .as_str()
            .is_some_and(|m| m.contains("bytes free")),
        "{result}"
    );
    nothing_left(&host.data(), "bomb");
    // The metafile is still written: the job was remembered.
    let remembered = wait_until(DEADLINE, || {
        fs::read_to_string(host.data().join("meta.json")).is_ok_and(|t| t.contains("\"t2\""))
    });
    assert!(remembered, "the metafile was not written after the bomb");
}
