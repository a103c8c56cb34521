//! Tests of `unpack.rs`: every archive is built in the test with the `tar` crate
//! (raw headers where the builder would refuse a hostile path) and flate2.

use super::*;
use flate2::write::GzEncoder;
use flate2::Compression;
use std::os::unix::fs::MetadataExt;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

const MIB: usize = 1024 * 1024;
const SCRIPT: &[u8] = b"#!/bin/sh\necho hi\n";

/// A scratch directory, removed on drop: `package` is the download, `dest()` the
/// version directory under `agents/`, and `outside/` a directory a hostile
/// archive might try to reach.
struct Scratch {
    root: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "bootagent-unpack-{}-{test}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("agents")).unwrap();
        fs::create_dir_all(root.join("outside")).unwrap();
        fs::write(root.join("outside/file"), b"outside").unwrap();
        Scratch { root }
    }

    fn package(&self, bytes: &[u8]) -> PathBuf {
        let path = self.root.join("package");
        fs::write(&path, bytes).unwrap();
        path
    }

    fn dest(&self) -> PathBuf {
        self.root.join("agents/1.0")
    }

    fn unpack(&self, bytes: &[u8], limits: &UnpackLimits) -> Result<Unpacked, UnpackError> {
        unpack(&self.package(bytes), &self.dest(), limits)
    }

    /// Every path under the scratch root with its type, mode and size.
    fn listing(&self) -> Vec<(PathBuf, u32, u64)> {
        let mut all = Vec::new();
        let mut dirs = vec![self.root.clone()];
        while let Some(dir) = dirs.pop() {
            for item in fs::read_dir(&dir).unwrap() {
                let path = item.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                if meta.is_dir() {
                    dirs.push(path.clone());
                }
                all.push((path, meta.mode(), meta.len()));
            }
        }
        all.sort();
        all
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// One archive entry, with raw bytes for names so that hostile ones can be written.
enum Item<'a> {
    File(&'a str, u32, &'a [u8]),
    Dir(&'a str, u32),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Special(&'a str, tar::EntryType),
}

use Item::{Dir, File as F, HardLink, Special, Symlink};

fn append_raw(
    builder: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    link: Option<&str>,
    data: &[u8],
) {
    let mut header = tar::Header::new_gnu();
    let name = &mut header.as_old_mut().name;
    assert!(path.len() < name.len(), "raw names are short: {path}");
    name[..path.len()].copy_from_slice(path.as_bytes());
    if let Some(link) = link {
        header.set_link_name_literal(link).unwrap();
    }
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_size(data.len() as u64);
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

fn append_item(builder: &mut tar::Builder<Vec<u8>>, item: &Item<'_>) {
    match *item {
        F(path, mode, data) => append_raw(builder, path, tar::EntryType::Regular, mode, None, data),
        Dir(path, mode) => append_raw(builder, path, tar::EntryType::Directory, mode, None, b""),
        Symlink(path, target) => append_raw(
            builder,
            path,
            tar::EntryType::Symlink,
            0o777,
            Some(target),
            b"",
        ),
        HardLink(path, target) => append_raw(
            builder,
            path,
            tar::EntryType::Link,
            0o644,
            Some(target),
            b"",
        ),
        Special(path, kind) => append_raw(builder, path, kind, 0o644, None, b""),
    }
}

fn tar_of(items: &[Item<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for item in items {
        append_item(&mut builder, item);
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn tgz(items: &[Item<'_>]) -> Vec<u8> {
    gzip(&tar_of(items))
}

/// A gzip stream of `prefix` then `zeros_mib` MiB of zeros, without its trailer
/// (the reader must stop long before the end). Compressing 2 GiB in a debug build
/// takes half a minute, so once the encoder's output for one MiB of zeros repeats
/// (a sync flush after each MiB, and the window holds only zeros), that output
/// is repeated: the stream stays a valid deflate stream of the same content.
fn gzip_bomb(prefix: &[u8], zeros_mib: usize) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
    encoder.write_all(prefix).unwrap();
    encoder.flush().unwrap();
    let chunk = vec![0u8; MIB];
    let mut previous = Vec::new();
    let mut done = 0;
    while done < zeros_mib {
        let before = encoder.get_ref().len();
        encoder.write_all(&chunk).unwrap();
        encoder.flush().unwrap();
        done += 1;
        let output = encoder.get_ref()[before..].to_vec();
        if output == previous {
            break;
        }
        previous = output;
    }
    let mut bytes = encoder.get_ref().clone();
    for _ in done..zeros_mib {
        bytes.extend_from_slice(&previous);
    }
    bytes
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

fn run_output(dest: &Path) -> String {
    // Through sh rather than exec: a test thread forking elsewhere may hold the
    // file open for a moment (ETXTBSY); the mode is asserted on its own.
    let output = Command::new("/bin/sh")
        .arg(dest.join("run"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Asserts a failed unpack: the errcode, a word of the message, and that nothing
/// was left anywhere under the scratch root.
fn assert_refused(
    scratch: &Scratch,
    bytes: &[u8],
    limits: &UnpackLimits,
    errcode: u32,
    word: &str,
) {
    let package = scratch.package(bytes);
    let before = scratch.listing();
    let err = unpack(&package, &scratch.dest(), limits).unwrap_err();
    assert_eq!(err.errcode, errcode, "{word}: got {err}");
    assert!(
        err.to_string().contains(word),
        "expected {word:?} in {err:?}"
    );
    assert!(!scratch.dest().exists(), "{word}: dest left behind");
    assert_eq!(
        scratch.listing(),
        before,
        "{word}: something changed outside dest"
    );
}

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
        assert_refused(&scratch, &tgz(items), &limits, ERRCODE_BAD_PACKAGE, word);
    }
    assert_refused(&scratch, &gzip(b""), &limits, ERRCODE_BAD_PACKAGE, "no run");
}

#[test]
fn entries_landing_outside_dest_are_refused_and_nothing_is_left() {
    let scratch = Scratch::new("escape");
    let outside = scratch.root.join("outside");
    let outside_abs = format!("{}/evil", outside.display());
    let limits = UnpackLimits::default();
    let cases: Vec<(Vec<Item<'_>>, &str)> = vec![
        (vec![F("../evil", 0o644, b"e")], "`..`"),
        (vec![F("/abs/evil", 0o644, b"e")], "absolute"),
        (vec![F(&outside_abs, 0o644, b"e")], "absolute"),
        (vec![F("a/../../evil", 0o644, b"e")], "`..`"),
        (vec![Dir("a", 0o755), F("a/../evil", 0o644, b"e")], "`..`"),
        (
            vec![Symlink("link", "/etc"), F("link/passwd", 0o644, b"e")],
            "absolute",
        ),
        (
            vec![Symlink("link", "../outside"), F("link/evil", 0o644, b"e")],
            "outside",
        ),
        (
            vec![
                Dir("sub", 0o755),
                Symlink("link", "sub"),
                F("link/evil", 0o644, b"e"),
            ],
            "not a directory",
        ),
        (vec![Symlink("x", "../../x")], "outside"),
        (vec![Symlink("x", "..")], "outside"),
        (
            vec![
                Dir("a", 0o755),
                Symlink("a/up", ".."),
                Symlink("b", "a/up/.."),
            ],
            "after a name",
        ),
        (
            vec![
                Symlink("b", "a/up/.."),
                Dir("a", 0o755),
                Symlink("a/up", ".."),
            ],
            "after a name",
        ),
        (vec![HardLink("h", "/etc/passwd")], "absolute"),
        (vec![HardLink("h", "../outside/file")], "`..`"),
        (vec![HardLink("h", "missing")], "not a file extracted"),
        (
            vec![Symlink("s", "run"), HardLink("h", "s")],
            "not a file extracted",
        ),
        (
            vec![
                Dir("d", 0o755),
                Symlink("d2", "d"),
                F("d/f", 0o644, b"f"),
                HardLink("h", "d2/f"),
            ],
            "not a file extracted",
        ),
        (vec![Special("dev", tar::EntryType::Char)], "device"),
        (vec![Special("blk", tar::EntryType::Block)], "device"),
        (vec![Special("fifo", tar::EntryType::Fifo)], "FIFO"),
        (vec![Special("sparse", tar::EntryType::GNUSparse)], "sparse"),
        (
            vec![Special("vol", tar::EntryType::new(b'V'))],
            "unsupported",
        ),
        (
            vec![F("data", 0o644, b"1"), F("data", 0o644, b"2")],
            "twice",
        ),
        (
            vec![Symlink("data", "run"), F("data", 0o644, b"2")],
            "twice",
        ),
        (
            vec![F("data", 0o644, b"1"), Dir("data", 0o755)],
            "not as a directory",
        ),
    ];
    for (items, word) in cases {
        let mut all = vec![F("run", 0o755, SCRIPT)];
        all.extend(items);
        assert_refused(&scratch, &tgz(&all), &limits, ERRCODE_BAD_PACKAGE, word);
    }
    assert_eq!(fs::read(outside.join("file")).unwrap(), b"outside");
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
        ERRCODE_BAD_PACKAGE,
        "once",
    );
    scratch
        .unpack(&bytes_with_root_run, &UnpackLimits::default())
        .unwrap();
}

#[test]
fn special_bits_are_dropped_and_directories_stay_usable() {
    let scratch = Scratch::new("modes");
    let bytes = tgz(&[
        F("run", 0o4755, SCRIPT),
        F("tool", 0o6711, b"t"),
        Dir("sticky", 0o1777),
        Dir("ro", 0o500),
        F("ro/data", 0o444, b"d"),
    ]);
    scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(mode_of(&dest.join("run")), 0o755);
    assert_eq!(mode_of(&dest.join("tool")), 0o711);
    assert_eq!(mode_of(&dest.join("sticky")), 0o777);
    assert_eq!(mode_of(&dest.join("ro")), 0o700);
    assert_eq!(mode_of(&dest.join("ro/data")), 0o444);
}

#[test]
fn gzip_bomb_in_a_file_entry_stops_at_the_bound() {
    let scratch = Scratch::new("bomb1");
    let mut header = tar::Header::new_gnu();
    header.set_path("run").unwrap();
    header.set_size(2 << 30);
    header.set_mode(0o755);
    header.set_cksum();
    let bytes = gzip_bomb(header.as_bytes(), 2048);
    let limits = UnpackLimits {
        bytes_max: 10 * MIB as u64,
        ..UnpackLimits::default()
    };
    assert_refused(
        &scratch,
        &bytes,
        &limits,
        ERRCODE_BAD_PACKAGE,
        "more than 10485760 bytes",
    );
}

#[test]
fn gzip_bomb_after_the_archive_end_stops_at_the_stream_bound() {
    let scratch = Scratch::new("bomb2");
    let bytes = gzip_bomb(&tar_of(&[F("run", 0o755, SCRIPT)]), 2048);
    let limits = UnpackLimits {
        bytes_max: 10 * MIB as u64,
        entries_max: 8,
        ..UnpackLimits::default()
    };
    assert_refused(
        &scratch,
        &bytes,
        &limits,
        ERRCODE_BAD_PACKAGE,
        "decompresses to more than",
    );
}

#[test]
fn bounds_on_total_bytes_entries_and_paths() {
    let scratch = Scratch::new("bounds");
    let four_mib = vec![0u8; 4 * MIB];
    let limits = UnpackLimits {
        bytes_max: 10 * MIB as u64,
        entries_max: 4,
        path_bytes_max: 64,
    };
    let big = tgz(&[
        F("run", 0o755, SCRIPT),
        F("a", 0o644, &four_mib),
        F("b", 0o644, &four_mib),
        F("c", 0o644, &four_mib),
    ]);
    assert_refused(
        &scratch,
        &big,
        &limits,
        ERRCODE_BAD_PACKAGE,
        "more than 10485760 bytes",
    );
    let many = tgz(&[
        F("run", 0o755, SCRIPT),
        F("a", 0o644, b""),
        F("b", 0o644, b""),
        F("c", 0o644, b""),
        F("d", 0o644, b""),
    ]);
    assert_refused(
        &scratch,
        &many,
        &limits,
        ERRCODE_BAD_PACKAGE,
        "more than 4 entries",
    );
    let long_path = "d/".repeat(40) + "f";
    let mut builder = tar::Builder::new(Vec::new());
    append_item(&mut builder, &F("run", 0o755, SCRIPT));
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &long_path, &b"x"[..])
        .unwrap();
    let long = gzip(&builder.into_inner().unwrap());
    assert_refused(
        &scratch,
        &long,
        &limits,
        ERRCODE_BAD_PACKAGE,
        "over 64 bytes",
    );
    let long_name = format!("run-{}", "n".repeat(NAME_BYTES_MAX));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &long_name, &b"x"[..])
        .unwrap();
    let long = gzip(&builder.into_inner().unwrap());
    assert_refused(
        &scratch,
        &long,
        &UnpackLimits::default(),
        ERRCODE_BAD_PACKAGE,
        "name over 255",
    );
}

#[test]
fn long_names_pax_paths_and_global_headers_are_read() {
    let scratch = Scratch::new("long");
    let long_path = "dir/".repeat(40) + "file";
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &long_path, &b"long"[..])
        .unwrap();
    // A pax global header named as GNU tar names them, then a pax path.
    let mut global = tar::Header::new_ustar();
    global.set_path("pax_global_header").unwrap();
    global.as_old_mut().name[..20].copy_from_slice(b"/tmp/GlobalHead.0.0\0");
    global.set_entry_type(tar::EntryType::XGlobalHeader);
    global.set_size(0);
    global.set_cksum();
    builder.append(&global, &b""[..]).unwrap();
    builder
        .append_pax_extensions([("path", &b"from/pax/run"[..])])
        .unwrap();
    append_item(&mut builder, &F("ignored-name", 0o755, SCRIPT));
    // `run` is under from/pax, so a link gives the root its run.
    append_item(&mut builder, &Symlink("run", "from/pax/run"));
    let bytes = gzip(&builder.into_inner().unwrap());
    let unpacked = scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(fs::read(dest.join(&long_path)).unwrap(), b"long");
    assert!(!dest.join("ignored-name").exists());
    assert_eq!(run_output(&dest), "hi\n");
    assert_eq!(unpacked.entries, 4);
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

#[test]
fn corrupt_or_truncated_archives_are_refused() {
    let scratch = Scratch::new("corrupt");
    let limits = UnpackLimits::default();
    let good = tgz(&[F("run", 0o755, SCRIPT), F("data", 0o644, &[7u8; 4000])]);
    assert_refused(
        &scratch,
        &good[..good.len() / 2],
        &limits,
        ERRCODE_BAD_PACKAGE,
        "tar.gz",
    );
    assert_refused(
        &scratch,
        &good[..good.len() - 4],
        &limits,
        ERRCODE_BAD_PACKAGE,
        "tar.gz",
    );
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    assert_refused(&scratch, &flipped, &limits, ERRCODE_BAD_PACKAGE, "");
    assert_refused(
        &scratch,
        &gzip(b"hello, not a tar"),
        &limits,
        ERRCODE_BAD_PACKAGE,
        "tar.gz",
    );
    assert_refused(
        &scratch,
        &[0x1f, 0x8b, 0, 1, 2, 3],
        &limits,
        ERRCODE_BAD_PACKAGE,
        "tar.gz",
    );
    let mut bad_sum = tar_of(&[F("run", 0o755, SCRIPT)]);
    bad_sum[0] = b'R';
    assert_refused(
        &scratch,
        &gzip(&bad_sum),
        &limits,
        ERRCODE_BAD_PACKAGE,
        "checksum",
    );
}

#[test]
fn plain_executable_is_installed_as_run() {
    let scratch = Scratch::new("plain");
    let unpacked = scratch.unpack(SCRIPT, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(
        unpacked,
        Unpacked {
            version_file: None,
            bytes: SCRIPT.len() as u64,
            entries: 1
        }
    );
    assert_eq!(mode_of(&dest.join("run")), 0o755);
    assert_eq!(fs::read(dest.join("run")).unwrap(), SCRIPT);
    assert_eq!(run_output(&dest), "hi\n");
    fs::remove_dir_all(&dest).unwrap();
    // One byte of the gzip magic is not gzip.
    scratch.unpack(&[0x1f], &UnpackLimits::default()).unwrap();
}

#[test]
fn plain_executable_bounds_and_empty_package() {
    let scratch = Scratch::new("plainbounds");
    let limits = UnpackLimits {
        bytes_max: 16,
        ..UnpackLimits::default()
    };
    assert_refused(
        &scratch,
        &[b'x'; 17],
        &limits,
        ERRCODE_BAD_PACKAGE,
        "over 16 bytes",
    );
    assert_refused(&scratch, b"", &limits, ERRCODE_BAD_PACKAGE, "empty");
    scratch.unpack(&[b'x'; 16], &limits).unwrap();
}

#[test]
fn existing_dest_or_missing_parent_is_an_install_failure_and_kept() {
    let scratch = Scratch::new("dest");
    let dest = scratch.dest();
    fs::create_dir(&dest).unwrap();
    fs::write(dest.join("keep"), b"k").unwrap();
    let err = scratch
        .unpack(SCRIPT, &UnpackLimits::default())
        .unwrap_err();
    assert_eq!(err.errcode, ERRCODE_INSTALL_FAILED, "{err}");
    assert_eq!(fs::read(dest.join("keep")).unwrap(), b"k");
    let package = scratch.package(SCRIPT);
    let err = unpack(
        &package,
        &scratch.root.join("no/such/dir"),
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert_eq!(err.errcode, ERRCODE_INSTALL_FAILED, "{err}");
    let err = unpack(
        &scratch.root.join("missing"),
        &scratch.root.join("x"),
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert_eq!(err.errcode, ERRCODE_INSTALL_FAILED, "{err}");
    assert!(!scratch.root.join("x").exists());
}

#[test]
fn disk_errors_are_install_failures_and_format_errors_bad_packages() {
    let path = Path::new("/d/x");
    let os = io::Error::from_raw_os_error;
    for errno in [
        libc::ENOSPC,
        libc::EACCES,
        libc::EDQUOT,
        libc::EROFS,
        libc::EIO,
    ] {
        assert_eq!(
            create_error("\"x\"", path, os(errno)).errcode,
            ERRCODE_INSTALL_FAILED
        );
        assert_eq!(read_error(os(errno)).errcode, ERRCODE_INSTALL_FAILED);
    }
    for errno in [libc::EEXIST, libc::ELOOP, libc::ENAMETOOLONG] {
        assert_eq!(
            create_error("\"x\"", path, os(errno)).errcode,
            ERRCODE_BAD_PACKAGE
        );
    }
    let corrupt = io::Error::new(io::ErrorKind::InvalidData, "corrupt deflate stream");
    assert_eq!(read_error(corrupt).errcode, ERRCODE_BAD_PACKAGE);
    let bound = io::Error::new(io::ErrorKind::InvalidData, StreamBound(7));
    assert_eq!(
        read_error(bound).to_string(),
        "package decompresses to more than 7 bytes"
    );
}

/// splitmix64, for reproducible random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_and_mangled_inputs_never_panic_and_leave_nothing() {
    let scratch = Scratch::new("fuzz");
    let limits = UnpackLimits::default();
    let dest = scratch.dest();
    let mut rng = Rng(0x5EED);
    for _ in 0..300 {
        let len = (rng.next() % 2048) as usize;
        let mut bytes = GZIP_MAGIC.to_vec();
        bytes.extend(rng.bytes(len));
        let err = scratch.unpack(&bytes, &limits).unwrap_err();
        assert_eq!(err.errcode, ERRCODE_BAD_PACKAGE, "{err}");
        assert!(!dest.exists());
    }
    let good = tgz(&[
        F("run", 0o755, SCRIPT),
        F("VERSION", 0o644, b"3.1"),
        F("lib/data", 0o644, &b"data".repeat(100)),
        Symlink("lib/link", "data"),
    ]);
    // Lengths 0 (empty) and 1 (not the whole magic: a plain executable) aside.
    for len in GZIP_MAGIC.len()..good.len() {
        let err = scratch.unpack(&good[..len], &limits).unwrap_err();
        assert_eq!(
            err.errcode, ERRCODE_BAD_PACKAGE,
            "truncated to {len}: {err}"
        );
        assert!(!dest.exists());
    }
    // Mangled headers with their checksums made right again, so that the fields
    // themselves reach the checks. Whatever the outcome: no panic, a bad package
    // (never a host failure), and either a complete version or nothing.
    let plain_tar = tar_of(&[
        F("run", 0o755, SCRIPT),
        Dir("lib/", 0o755),
        F("lib/data", 0o644, &b"data".repeat(200)),
        Symlink("lib/link", "data"),
        HardLink("lib/hard", "lib/data"),
    ]);
    let mut headers = Vec::new();
    let mut archive = tar::Archive::new(&plain_tar[..]);
    for entry in archive.entries().unwrap() {
        headers.push(entry.unwrap().raw_header_position() as usize);
    }
    const HEADER_FIELDS_BYTES: u64 = 345;
    const TYPE_OFFSET: usize = 156;
    const TYPES: &[u8] = b"\x000123456789LKxgSVD";
    for _ in 0..200 {
        let mut mangled = plain_tar.clone();
        for _ in 0..1 + rng.next() % 3 {
            let header = headers[(rng.next() % headers.len() as u64) as usize];
            if rng.next().is_multiple_of(3) {
                mangled[header + TYPE_OFFSET] = TYPES[(rng.next() % TYPES.len() as u64) as usize];
            } else {
                mangled[header + (rng.next() % HEADER_FIELDS_BYTES) as usize] = rng.next() as u8;
            }
            let mut fixed = tar::Header::new_old();
            fixed
                .as_mut_bytes()
                .copy_from_slice(&mangled[header..header + 512]);
            fixed.set_cksum();
            mangled[header..header + 512].copy_from_slice(fixed.as_bytes());
        }
        let cut = mangled.len() - (rng.next() % 2 * (rng.next() % 1024)) as usize;
        match scratch.unpack(&gzip(&mangled[..cut]), &limits) {
            Ok(_) => {
                assert!(fs::metadata(dest.join("run")).unwrap().is_file());
                fs::remove_dir_all(&dest).unwrap();
            }
            Err(err) => {
                assert_eq!(err.errcode, ERRCODE_BAD_PACKAGE, "{err}");
                assert!(!dest.exists());
            }
        }
    }
    assert_eq!(
        fs::read(scratch.root.join("outside/file")).unwrap(),
        b"outside"
    );
}

#[test]
fn version_from_url_table() {
    let check = |url: &str, expected: Option<&str>| {
        assert_eq!(
            version_from_url(url, "BasicAgent").as_deref(),
            expected,
            "{url}"
        );
    };
    check("http://h/BasicAgent-1.2.3.tar.gz", Some("1.2.3"));
    check("https://h/a/b/BasicAgent-1.2.3.tgz", Some("1.2.3"));
    check(
        "http://h/BasicAgent-1.2.3.tgz?token=a/b.tgz#frag",
        Some("1.2.3"),
    );
    check(
        "http://h/BasicAgent-2.0+build_7.tar.gz#x",
        Some("2.0+build_7"),
    );
    check("file:///x/BasicAgent-2.0.tgz", Some("2.0"));
    check("ftp://u:p@h/pub/BasicAgent-0.9-rc1.tgz", Some("0.9-rc1"));
    check("http://h/OtherAgent-1.2.3.tar.gz", None);
    check("http://h/basicagent-1.2.3.tar.gz", None);
    check("http://h/BasicAgent1.2.3.tar.gz", None);
    check("http://h/BasicAgent-.tar.gz", None);
    check("http://h/BasicAgent-1.2.3.zip", None);
    check("http://h/BasicAgent-1.2.3.tar.gz/", None);
    check("http://h/dl?file=BasicAgent-1.2.3.tgz", None);
    check("http://h/BasicAgent-.hidden.tgz", None);
    check("http://h/BasicAgent-current.tgz", None);
    check("http://h/BasicAgent-1 2.tgz", None);
    check("http://h/BasicAgent-1%2F2.tgz", None);
    check("", None);
    assert_eq!(version_from_url("http://h/-1.0.tgz", ""), None);
}

#[test]
fn valid_version_table() {
    for good in [
        "1",
        "1.2.3",
        "v2",
        "1.0-rc1",
        "1.0_b",
        "2.0+build.7",
        "A-Z",
        &"9".repeat(64),
    ] {
        assert!(valid_version(good), "{good:?}");
    }
    for bad in [
        "",
        ".",
        "..",
        ".1",
        "current",
        "1/2",
        "1 2",
        "1\n",
        "é",
        "a*",
        "a:b",
        &"9".repeat(65),
    ] {
        assert!(!valid_version(bad), "{bad:?}");
    }
}
