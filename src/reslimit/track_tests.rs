//! Where tracking cgroups go, on fake hierarchies.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::reslimit::facts::{parse_mountinfo, parse_proc_cgroup};

/// Removes a scratch directory tree, even when the test fails.
struct RemoveAll(PathBuf);

impl Drop for RemoveAll {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn scratch(tag: &str) -> (PathBuf, RemoveAll) {
    let root = std::env::temp_dir().join(format!("track-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).expect("scratch");
    (root.clone(), RemoveAll(root))
}

/// A fake cgroup directory: `cgroup.procs`, as the kernel would make it.
fn cgroup(dir: &Path) {
    fs::create_dir_all(dir).expect("scratch dir");
    fs::write(dir.join(PROCS_FILE), "").expect("procs");
}

/// cgroup v2 without any controller (this host's kind) still tracks: the parent goes
/// below BootAgent's own cgroup, or beside its leaf when an earlier start moved it.
#[test]
fn v2_without_controllers_tracks_below_own_cgroup() {
    let (root, _cleanup) = scratch("v2");
    let own = root.join("system.slice/bootagent.service");
    cgroup(&own);
    cgroup(&own.join(V2_PARENT_NAME));
    let facts = |path: &str| Facts {
        mounts: parse_mountinfo(&format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        )),
        memberships: parse_proc_cgroup(&format!("0::{path}\n")),
    };
    let expected = TrackParent {
        v2: true,
        dir: own.join(V2_PARENT_NAME),
    };
    let at_own = facts("/system.slice/bootagent.service");
    assert_eq!(find_tracking(&at_own), Ok(expected.clone()));
    let in_leaf = facts(&format!(
        "/system.slice/bootagent.service/{V2_SUPERVISOR_NAME}"
    ));
    cgroup(&own.join(V2_SUPERVISOR_NAME));
    assert_eq!(find_tracking(&in_leaf), Ok(expected));
}

/// On v1, `pids` is preferred to a named hierarchy, and that to a controller's.
#[test]
fn v1_tracks_in_pids_first_then_a_named_hierarchy() {
    let (root, _cleanup) = scratch("v1");
    for name in ["cpu", "systemd", "pids"] {
        cgroup(&root.join(name));
        cgroup(&root.join(name).join(V1_PARENT_NAME));
    }
    let mounts = |names: &[&str]| {
        let mut text = String::new();
        for (i, name) in names.iter().enumerate() {
            let option = if *name == "systemd" {
                "name=systemd".to_string()
            } else {
                (*name).to_string()
            };
            text.push_str(&format!(
                "{} 31 0:{} / {} rw - cgroup cgroup rw,{option}\n",
                40 + i,
                30 + i,
                root.join(name).display()
            ));
        }
        Facts {
            mounts: parse_mountinfo(&text),
            memberships: parse_proc_cgroup("3:cpu:/\n2:name=systemd:/\n1:pids:/\n"),
        }
    };
    let found = find_tracking(&mounts(&["cpu", "systemd", "pids"])).map(|t| t.dir);
    assert_eq!(found, Ok(root.join("pids").join(V1_PARENT_NAME)));
    let found = find_tracking(&mounts(&["cpu", "systemd"])).map(|t| t.dir);
    assert_eq!(found, Ok(root.join("systemd").join(V1_PARENT_NAME)));
    let found = find_tracking(&mounts(&["cpu"])).map(|t| t.dir);
    assert_eq!(found, Ok(root.join("cpu").join(V1_PARENT_NAME)));
    let none = find_tracking(&mounts(&[])).unwrap_err();
    assert!(
        none.contains("cgroup v1: no hierarchy is mounted"),
        "{none}"
    );
}

#[test]
fn leftovers_are_this_data_directory_s_child_cgroups_only() {
    let (root, _cleanup) = scratch("left");
    for name in [
        "agent-web-0000abcd",
        "agent-db-0000abcd",
        "agent-web-ffff0000",
        "other",
    ] {
        cgroup(&root.join(name));
    }
    fs::write(root.join("agent-x-0000abcd"), "").expect("a plain file");
    let found = leftover_cgroups(std::slice::from_ref(&root), |n| {
        n.starts_with("agent-") && n.ends_with("-0000abcd")
    });
    assert_eq!(
        found,
        [
            root.join("agent-db-0000abcd"),
            root.join("agent-web-0000abcd")
        ]
    );
}
