//! Tests of the unpacked tree: root detection, the `run` and `VERSION` checks.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;

#[test]
fn normal_package_unpacks_with_run_version_and_subdir() {
    let scratch = Scratch::new("normal");
    let bytes = tgz(&[
        F("run", 0o755, SCRIPT),
        F("VERSION", 0o644, b" 1.2.3\n"),
        Dir("bin/", 0o755),
        F("bin/tool", 0o700, b"tool"),
        F("lib/deep/data", 0o644, b"data"),
        Symlink("bin/link", "../lib/deep/data"),
        HardLink("bin/tool2", "bin/tool"),
    ]);
    let unpacked = scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(unpacked.version_file.as_deref(), Some("1.2.3"));
    assert_eq!(unpacked.entries, 7);
    assert_eq!(unpacked.bytes, (SCRIPT.len() + 7 + 4 + 4) as u64);
    assert_eq!(mode_of(&dest), 0o755);
    assert_eq!(mode_of(&dest.join("run")), 0o755);
    assert_eq!(mode_of(&dest.join("bin/tool")), 0o700);
    assert_eq!(mode_of(&dest.join("lib")), 0o755);
    assert_eq!(fs::read(dest.join("bin/link")).unwrap(), b"data");
    let tool = fs::metadata(dest.join("bin/tool")).unwrap();
    assert_eq!(
        fs::metadata(dest.join("bin/tool2")).unwrap().ino(),
        tool.ino()
    );
    assert_eq!(run_output(&dest), "hi\n");
}

#[test]
fn single_top_level_directory_becomes_the_root() {
    let scratch = Scratch::new("top");
    let bytes = tgz(&[
        Dir("pkg-1.2/", 0o755),
        F("pkg-1.2/run", 0o755, SCRIPT),
        F("pkg-1.2/VERSION", 0o644, b"1.2"),
        F("pkg-1.2/lib/x", 0o644, b"x"),
        Symlink("pkg-1.2/lib/y", "../lib/x"),
    ]);
    let unpacked = scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(unpacked.version_file.as_deref(), Some("1.2"));
    assert!(!dest.join("pkg-1.2").exists());
    assert_eq!(fs::read(dest.join("lib/y")).unwrap(), b"x");
    assert_eq!(run_output(&dest), "hi\n");
}

#[test]
fn top_level_directory_holding_its_own_name_moves_up() {
    let scratch = Scratch::new("topself");
    let bytes = tgz(&[F("pkg/run", 0o755, SCRIPT), F("pkg/pkg/data", 0o644, b"d")]);
    scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(fs::read(dest.join("pkg/data")).unwrap(), b"d");
    let mut names: Vec<_> = fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["pkg", "run"]);
}

#[test]
fn dot_slash_entries_are_at_the_root() {
    let scratch = Scratch::new("dot");
    let bytes = tgz(&[
        Dir("./", 0o755),
        F("./run", 0o755, SCRIPT),
        F("./a/./b", 0o644, b"b"),
    ]);
    scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    assert_eq!(fs::read(scratch.dest().join("a/b")).unwrap(), b"b");
}

#[test]
fn run_may_be_a_symlink_to_an_executable_inside() {
    let scratch = Scratch::new("runlink");
    let bytes = tgz(&[F("bin/agent", 0o755, SCRIPT), Symlink("run", "bin/agent")]);
    scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    assert_eq!(run_output(&scratch.dest()), "hi\n");
}

#[test]
fn package_without_a_usable_run_is_refused() {
    let scratch = Scratch::new("norun");
    let limits = UnpackLimits::default();
    let cases: [(&[Item<'_>], &str); 6] = [
        (&[F("bin/tool", 0o755, SCRIPT)], "no run"),
        (
            &[F("a/run", 0o755, SCRIPT), F("b/run", 0o755, SCRIPT)],
            "no run",
        ),
        (
            &[F("a/run", 0o755, SCRIPT), F("README", 0o644, b"r")],
            "no run",
        ),
        (&[F("run", 0o644, SCRIPT)], "not executable"),
        (&[Dir("run", 0o755)], "not a file"),
        (&[Symlink("run", "missing")], "to nothing"),
    ];
    for (items, word) in cases {
        assert_refused(&scratch, &tgz(items), &limits, ErrCode::BadPackage, word);
    }
    assert_refused(&scratch, &gzip(b""), &limits, ErrCode::BadPackage, "no run");
}

#[test]
fn link_to_the_archive_root_is_refused_when_the_top_directory_moves_up() {
    let scratch = Scratch::new("toplink");
    let bytes = tgz(&[
        F("pkg/run", 0o755, SCRIPT),
        Symlink("pkg/lib/x", "../../pkg/run"),
    ]);
    // Same archive, valid when the top directory stays: the link is at depth 2.
    let bytes_with_root_run = tgz(&[
        F("run", 0o755, SCRIPT),
        F("pkg/run", 0o755, SCRIPT),
        Symlink("pkg/lib/x", "../../pkg/run"),
    ]);
    assert_refused(
        &scratch,
        &bytes,
        &UnpackLimits::default(),
        ErrCode::BadPackage,
        "once",
    );
    scratch
        .unpack(&bytes_with_root_run, &UnpackLimits::default())
        .unwrap();
}

#[test]
fn unusable_version_file_is_ignored() {
    let scratch = Scratch::new("version");
    for content in [
        &b"bad version!"[..],
        b"",
        b"current",
        &[b'1'; 300][..],
        b"\xff\xfe",
    ] {
        let bytes = tgz(&[F("run", 0o755, SCRIPT), F("VERSION", 0o644, content)]);
        let unpacked = scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
        assert_eq!(unpacked.version_file, None, "{content:?}");
        fs::remove_dir_all(scratch.dest()).unwrap();
    }
}
