//! Tests of `unpack`: every archive is built in the test with the `tar` crate
//! (raw headers where the builder would refuse a hostile path) and flate2.
//!
//! This file: the helpers, the single executable, host failures and the version
//! names; the tar.gz entries, bounds and hostile input in `archive_tests.rs`, root
//! detection and the `run` and `VERSION` checks in `tree_tests.rs`.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

#[path = "archive_tests.rs"]
mod archive_tests;
#[path = "tree_tests.rs"]
mod tree_tests;

use super::archive::read_error;
use super::budget::StreamBound;
use super::entry::create_error;
use super::shared::*;
use super::*;
use crate::job_fields::{valid_version, ErrCode};
use flate2::write::GzEncoder;
use flate2::Compression;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
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
    errcode: ErrCode,
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
fn plain_executable_is_installed_as_run() {
    let scratch = Scratch::new("plain");
    let unpacked = scratch.unpack(SCRIPT, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(
        unpacked,
        Unpacked {
            version_file: None,
            package_version: None,
            scripts: Vec::new(),
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
        ErrCode::BadPackage,
        "more than 16 bytes",
    );
    assert_refused(&scratch, b"", &limits, ErrCode::BadPackage, "empty");
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
    assert_eq!(err.errcode, ErrCode::InstallFailed, "{err}");
    assert_eq!(fs::read(dest.join("keep")).unwrap(), b"k");
    let package = scratch.package(SCRIPT);
    let err = unpack(
        &package,
        &scratch.root.join("no/such/dir"),
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert_eq!(err.errcode, ErrCode::InstallFailed, "{err}");
    let err = unpack(
        &scratch.root.join("missing"),
        &scratch.root.join("x"),
        &UnpackLimits::default(),
    )
    .unwrap_err();
    assert_eq!(err.errcode, ErrCode::InstallFailed, "{err}");
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
            ErrCode::InstallFailed
        );
        assert_eq!(read_error(os(errno)).errcode, ErrCode::InstallFailed);
    }
    for errno in [libc::EEXIST, libc::ELOOP, libc::ENAMETOOLONG] {
        assert_eq!(
            create_error("\"x\"", path, os(errno)).errcode,
            ErrCode::BadPackage
        );
    }
    let corrupt = io::Error::new(io::ErrorKind::InvalidData, "corrupt deflate stream");
    assert_eq!(read_error(corrupt).errcode, ErrCode::BadPackage);
    let bound = io::Error::new(io::ErrorKind::InvalidData, StreamBound(7));
    assert_eq!(
        read_error(bound).to_string(),
        "package decompresses to more than 7 bytes"
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
