//! The parsing of `/proc/self/mountinfo` and `/proc/self/cgroup`, and where a cgroup
//! is under its mount.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;

#[test]
fn mountinfo_is_parsed_with_escapes_and_optional_fields() {
    let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/my\\040unified rw master:1 shared:2 - cgroup2 cgroup2 rw
bad line
";
    let mounts = parse_mountinfo(text);
    assert_eq!(mounts.len(), 4);
    assert_eq!(mounts[1].point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
    assert_eq!(mounts[1].super_options, "rw,cpu,cpuacct");
    assert_eq!(mounts[2].root, "/docker/abc");
    assert_eq!(mounts[3].point, PathBuf::from("/sys/fs/cgroup/my unified"));
    assert_eq!(mounts[3].fstype, "cgroup2");
    assert_eq!(unescape_octal(r"a\134b\0"), b"a\\b\\0".to_vec());
}

#[test]
fn own_cgroup_is_found_under_its_mount() {
    let memberships = parse_proc_cgroup("4:memory:/docker/abc/app\n2:cpu,cpuacct:/\n0::/a/b:c\n");
    assert_eq!(memberships.len(), 3);
    assert_eq!(memberships[1].controllers, "cpu,cpuacct");
    assert_eq!(memberships[2].path, "/a/b:c");
    let mount = |root: &str| Mount {
        root: root.to_owned(),
        point: PathBuf::from("/sys/fs/cgroup/memory"),
        fstype: "cgroup".to_owned(),
        super_options: "rw,memory".to_owned(),
    };
    let cases = [
        ("/", "/", Some("/sys/fs/cgroup/memory")),
        ("/", "/x/y", Some("/sys/fs/cgroup/memory/x/y")),
        (
            "/docker/abc",
            "/docker/abc/app",
            Some("/sys/fs/cgroup/memory/app"),
        ),
        ("/docker/abc", "/docker/abc", Some("/sys/fs/cgroup/memory")),
        ("/docker/abc", "/docker/abcd", None),
        ("/docker/abc", "/other", None),
        ("/", "/x/../../etc", None),
    ];
    for (root, path, expected) in cases {
        assert_eq!(
            cgroup_dir(&mount(root), path),
            expected.map(PathBuf::from),
            "{root} {path}"
        );
    }
}
