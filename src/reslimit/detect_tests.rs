//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use crate::reslimit::facts::{parse_mountinfo, parse_proc_cgroup};
use crate::reslimit::parse::MIB;
use crate::reslimit::testing::read_trimmed;
use crate::reslimit::Cgroup;

#[test]
fn choice_from_str_and_back() {
    for choice in [
        Choice::Auto,
        Choice::CgroupV2,
        Choice::CgroupV1,
        Choice::Proc,
    ] {
        assert_eq!(choice.to_string().parse::<Choice>(), Ok(choice));
    }
    assert_eq!(
        "cgroups".parse::<Choice>(),
        Err(r#"limit_mechanism must be auto, cgroup2, cgroup1 or proc, not "cgroups""#.to_owned())
    );
}

#[test]
fn mechanism_display_and_fallback_limits() {
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: Some(20 * MIB),
    };
    let v1 = Mechanism::CgroupV1 {
        memory: Some(PathBuf::from("/sys/fs/cgroup/memory/bootagent")),
        cpu: None,
    };
    assert_eq!(
        v1.to_string(),
        "cgroup v1 (memory: /sys/fs/cgroup/memory/bootagent, cpu: none)"
    );
    assert_eq!(
        v1.fallback_limits(&limits),
        ResourceLimits {
            cpu_pct: Some(10),
            memory_bytes: None
        }
    );
    let v2 = Mechanism::CgroupV2 {
        dir: PathBuf::from("/sys/fs/cgroup/bootagent-children"),
    };
    assert_eq!(
        v2.to_string(),
        "cgroup v2 (/sys/fs/cgroup/bootagent-children)"
    );
    assert!(v2.fallback_limits(&limits).is_empty());
    assert_eq!(Mechanism::Proc.to_string(), "/proc sampling");
    assert_eq!(Mechanism::Proc.fallback_limits(&limits), limits);
}

#[test]
fn detect_and_describe_proc() {
    assert_eq!(detect(Choice::Proc), Mechanism::Proc);
    assert_eq!(describe(Choice::Proc), "/proc sampling");
    let mechanism = Mechanism::Proc;
    let err = Cgroup::create(&mechanism, "x", &ResourceLimits::default()).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::Unsupported);
}

#[test]
fn describe_auto_names_a_mechanism_and_creates_nothing() {
    let before = Facts::read().map(|f| f.mounts.len());
    let text = describe(Choice::Auto);
    assert!(
        ["cgroup v2 (", "cgroup v1 (", "/proc sampling"]
            .iter()
            .any(|p| text.starts_with(p)),
        "{text}"
    );
    let forced = describe(Choice::CgroupV2);
    assert!(
        forced.starts_with("cgroup v2 (") || forced.starts_with("/proc sampling; cgroup v2: "),
        "{forced}"
    );
    assert_eq!(Facts::read().map(|f| f.mounts.len()), before);
    println!("describe(auto): {text}");
}

/// Removes a scratch directory tree, even when the test fails.
struct RemoveAll(PathBuf);

impl Drop for RemoveAll {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// This host has no v2 controllers, so the v2 choice of a parent is checked on a
/// fake hierarchy of plain files.
#[test]
fn v2_parent_is_a_sibling_of_a_shared_own_cgroup() {
    let root = std::env::temp_dir().join(format!("reslimit-{}-v2", std::process::id()));
    let _cleanup = RemoveAll(root.clone());
    let base = root.join("system.slice");
    fs::create_dir_all(base.join("bootagent.service")).expect("scratch tree");
    let put =
        |dir: &Path, file: &str, text: &str| fs::write(dir.join(file), text).expect("scratch file");
    put(&base, "cgroup.controllers", "cpuset cpu io memory pids\n");
    put(&base, "cgroup.subtree_control", "cpu memory pids\n");
    put(&base, PROCS_FILE, "");
    let facts = |own: &str| Facts {
        mounts: parse_mountinfo(&format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        )),
        memberships: parse_proc_cgroup(&format!("0::{own}\n")),
    };
    let service = facts("/system.slice/bootagent.service");
    let sibling = base.join(V2_PARENT_NAME);
    assert_eq!(setup_v2(Mode::Check, &service), Ok(sibling.clone()));
    assert!(!sibling.exists(), "a check creates nothing");

    // Create, where the kernel would have made the interface files of the new directory.
    fs::create_dir(&sibling).expect("scratch dir");
    put(&sibling, "cgroup.subtree_control", "");
    assert_eq!(setup_v2(Mode::Create, &service), Ok(sibling.clone()));
    assert_eq!(
        read_trimmed(&sibling.join("cgroup.subtree_control")),
        "+memory +cpu"
    );

    put(&base, "cgroup.controllers", "cpu pids\n");
    let missing = format!("controllers memory not available in {}", base.display());
    let found = setup_v2(Mode::Check, &service).unwrap_err();
    assert!(found.ends_with(&missing), "{found}");
    assert!(
        found.contains("cgroup.procs"),
        "says why not inside: {found}"
    );

    put(&base, "cgroup.controllers", "cpu memory\n");
    put(&base, "cgroup.subtree_control", "\n");
    put(&base, PROCS_FILE, "1234\n");
    let busy = format!(
        "{} has processes, so it cannot enable memory, cpu for children",
        base.display()
    );
    let found = setup_v2(Mode::Check, &service).unwrap_err();
    assert!(found.ends_with(&busy), "{found}");

    // In the root cgroup, which may have processes, the parent is below it.
    put(&root, "cgroup.controllers", "cpu memory\n");
    put(&root, "cgroup.subtree_control", "\n");
    put(&root, PROCS_FILE, "1\n");
    assert_eq!(
        setup_v2(Mode::Check, &facts("/")),
        Ok(root.join(V2_PARENT_NAME))
    );
}

/// A service manager's delegated cgroup (systemd's `Delegate=yes`) holding BootAgent
/// alone: the children's parent goes inside it, so that stopping the service reaches
/// them, and BootAgent moves into a leaf of it. On a fake hierarchy of plain files, with
/// the interface files the kernel would make.
#[test]
fn v2_parent_is_inside_a_delegated_own_cgroup() {
    let root = std::env::temp_dir().join(format!("reslimit-{}-v2d", std::process::id()));
    let _cleanup = RemoveAll(root.clone());
    let own = root.join("system.slice/bootagent.service");
    let leaf = own.join(V2_SUPERVISOR_NAME);
    let parent = own.join(V2_PARENT_NAME);
    fs::create_dir_all(&own).expect("scratch tree");
    let put =
        |dir: &Path, file: &str, text: &str| fs::write(dir.join(file), text).expect("scratch file");
    let me = format!("{}\n", std::process::id());
    put(&own, "cgroup.controllers", "cpu io memory pids\n");
    put(&own, "cgroup.subtree_control", "");
    put(&own, PROCS_FILE, &me);
    let facts = |own: &str| Facts {
        mounts: parse_mountinfo(&format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        )),
        memberships: parse_proc_cgroup(&format!("0::{own}\n")),
    };
    let service = facts("/system.slice/bootagent.service");
    assert_eq!(setup_v2(Mode::Check, &service), Ok(parent.clone()));
    assert!(
        !leaf.exists() && !parent.exists(),
        "a check creates nothing"
    );
    assert_eq!(read_trimmed(&own.join("cgroup.subtree_control")), "");

    for dir in [&leaf, &parent] {
        fs::create_dir(dir).expect("scratch dir");
        put(dir, PROCS_FILE, "");
        put(dir, "cgroup.subtree_control", "");
    }
    assert_eq!(setup_v2(Mode::Create, &service), Ok(parent.clone()));
    assert_eq!(read_trimmed(&leaf.join(PROCS_FILE)), me.trim(), "moved");
    assert_eq!(
        read_trimmed(&own.join("cgroup.subtree_control")),
        "+memory +cpu"
    );
    assert_eq!(
        read_trimmed(&parent.join("cgroup.subtree_control")),
        "+memory +cpu"
    );

    // Started again in the leaf: the same parent, no deeper leaf.
    put(&own, PROCS_FILE, "");
    put(&own, "cgroup.subtree_control", "memory cpu\n");
    put(&parent, "cgroup.subtree_control", "memory cpu\n");
    let in_leaf = facts(&format!(
        "/system.slice/bootagent.service/{V2_SUPERVISOR_NAME}"
    ));
    assert_eq!(setup_v2(Mode::Create, &in_leaf), Ok(parent.clone()));
    assert!(!leaf.join(V2_SUPERVISOR_NAME).exists());

    // Shared with another process (a login shell): not inside, beside it.
    put(&own, PROCS_FILE, &format!("{me}1\n"));
    let system = root.join("system.slice");
    put(&system, "cgroup.controllers", "cpu memory\n");
    put(&system, "cgroup.subtree_control", "cpu memory\n");
    put(&system, PROCS_FILE, "");
    assert_eq!(
        setup_v2(Mode::Check, &service),
        Ok(system.join(V2_PARENT_NAME))
    );
}

/// The root of a cgroup namespace (a container's `/sys/fs/cgroup`) is not the root
/// cgroup: it has `cgroup.type` and obeys the "no internal processes" rule, so it is
/// treated as a delegated cgroup, and refused when shared.
#[test]
fn v2_namespace_root_is_treated_as_delegated() {
    let root = std::env::temp_dir().join(format!("reslimit-{}-v2ns", std::process::id()));
    let _cleanup = RemoveAll(root.clone());
    fs::create_dir_all(&root).expect("scratch tree");
    let put =
        |dir: &Path, file: &str, text: &str| fs::write(dir.join(file), text).expect("scratch file");
    let me = format!("{}\n", std::process::id());
    put(&root, "cgroup.type", "domain\n");
    put(&root, "cgroup.controllers", "cpu memory pids\n");
    put(&root, "cgroup.subtree_control", "");
    put(&root, PROCS_FILE, &me);
    let facts = Facts {
        mounts: parse_mountinfo(&format!(
            "41 31 0:38 / {} rw - cgroup2 cgroup2 rw\n",
            root.display()
        )),
        memberships: parse_proc_cgroup("0::/\n"),
    };
    assert_eq!(setup_v2(Mode::Check, &facts), Ok(root.join(V2_PARENT_NAME)));
    put(&root, PROCS_FILE, &format!("1\n{me}"));
    let found = setup_v2(Mode::Check, &facts).unwrap_err();
    assert!(found.contains("holds other processes"), "{found}");
    assert!(found.ends_with("(a cgroup namespace)"), "{found}");
}
