//! Tests of the formats beyond tar.gz: tar plain, xz and zstd, rpm and deb, built
//! by the real tools (`tests/common/packages.rs`), the choice of the program, the
//! package's own version, and hostile input of each format.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

#[path = "../../tests/common/packages.rs"]
mod packages;

use super::shared::*;
use super::*;
use crate::job_fields::{valid_version, ErrCode};
use packages::{PackageFile, Spec};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

const SCRIPT: &[u8] = b"#!/bin/sh\necho hi\n";

struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let root = std::env::temp_dir().join(format!(
            "bootagent-formats-{}-{test}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("agents")).unwrap();
        Scratch(root)
    }

    fn dest(&self) -> PathBuf {
        self.0.join("agents/v")
    }

    fn unpack(
        &self,
        package: &Path,
        name: &str,
        exec: Option<&str>,
    ) -> Result<Unpacked, UnpackError> {
        self.unpack_with(package, name, exec, &UnpackLimits::default())
    }

    fn unpack_with(
        &self,
        package: &Path,
        name: &str,
        exec: Option<&str>,
        limits: &UnpackLimits,
    ) -> Result<Unpacked, UnpackError> {
        let _ = fs::remove_dir_all(self.dest());
        unpack_package(package, &self.dest(), limits, &Program { name, exec })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

const FILES: &[PackageFile<'static>] = &[
    ("usr/bin/demo", SCRIPT, 0o4777),
    ("usr/lib/demo/data", b"data", 0o644),
];

fn spec<'a>(compression: &'a str, files: &'a [PackageFile<'a>], script: bool) -> Spec<'a> {
    Spec {
        name: "demo",
        version: "1.2.3",
        release: "4",
        compression,
        files,
        script,
    }
}

fn assert_runs_demo(dest: &Path) {
    let run = dest.join("run");
    assert_eq!(fs::read_link(&run).unwrap(), Path::new("usr/bin/demo"));
    assert_eq!(fs::read(&run).unwrap(), SCRIPT);
    let mode = fs::metadata(&run).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode & 0o7000, 0, "no setuid/setgid/sticky: {mode:o}");
    assert_eq!(fs::read(dest.join("usr/lib/demo/data")).unwrap(), b"data");
}

#[test]
fn rpm_of_each_compression_is_relocated_with_run_linked_to_usr_bin_name() {
    let scratch = Scratch::new("rpm");
    for compression in ["gzip", "xz", "zstd"] {
        let package = packages::rpm(&scratch.0, &spec(compression, FILES, true));
        let unpacked = scratch.unpack(&package, "demo", None).unwrap();
        assert_runs_demo(&scratch.dest());
        assert_eq!(unpacked.package_version.as_deref(), Some("1.2.3-4"));
        assert_eq!(unpacked.scripts, ["%post"], "{compression}");
    }
    let package = packages::rpm(&scratch.0, &spec("gzip", FILES, false));
    assert!(scratch
        .unpack(&package, "demo", None)
        .unwrap()
        .scripts
        .is_empty());
}

#[test]
fn deb_of_each_compression_is_relocated_and_its_epoch_becomes_an_underscore() {
    let scratch = Scratch::new("deb");
    for compression in ["gzip", "xz", "zstd"] {
        let mut spec = spec(compression, FILES, true);
        spec.version = "2:1.0~rc1+b1";
        spec.release = "3";
        let package = packages::deb(&scratch.0, &spec);
        let unpacked = scratch.unpack(&package, "demo", None).unwrap();
        assert_runs_demo(&scratch.dest());
        assert_eq!(unpacked.package_version.as_deref(), Some("2_1.0~rc1+b1-3"));
        assert_eq!(unpacked.scripts, ["postinst"], "{compression}");
    }
}

#[test]
fn tar_plain_xz_and_zstd_unpack_like_tar_gz() {
    let scratch = Scratch::new("tar");
    let files: &[PackageFile<'_>] = &[("app/run", SCRIPT, 0o755), ("app/VERSION", b"7.1\n", 0o644)];
    for compression in ["none", "gzip", "xz", "zstd"] {
        let package = packages::tar(&scratch.0, "app.pkg", compression, files);
        let unpacked = scratch.unpack(&package, "app", None).unwrap();
        assert_eq!(
            fs::read(scratch.dest().join("run")).unwrap(),
            SCRIPT,
            "{compression}"
        );
        assert_eq!(unpacked.version_file.as_deref(), Some("7.1"));
        assert_eq!(unpacked.package_version, None);
    }
}

#[test]
fn the_program_is_exec_else_run_else_usr_sbin_or_opt_and_none_is_errcode_4() {
    let scratch = Scratch::new("program");
    let opt: &[PackageFile<'_>] = &[("opt/demo/bin/demo", SCRIPT, 0o755)];
    let package = packages::deb(&scratch.0, &spec("xz", opt, false));
    scratch.unpack(&package, "demo", None).unwrap();
    assert_eq!(
        fs::read_link(scratch.dest().join("run")).unwrap(),
        Path::new("opt/demo/bin/demo")
    );

    let sbin: &[PackageFile<'_>] = &[
        ("usr/sbin/demo", SCRIPT, 0o755),
        ("srv/tool", SCRIPT, 0o755),
    ];
    let package = packages::rpm(&scratch.0, &spec("zstd", sbin, false));
    scratch.unpack(&package, "demo", None).unwrap();
    assert_eq!(
        fs::read_link(scratch.dest().join("run")).unwrap(),
        Path::new("usr/sbin/demo")
    );
    scratch.unpack(&package, "demo", Some("srv/tool")).unwrap();
    assert_eq!(
        fs::read_link(scratch.dest().join("run")).unwrap(),
        Path::new("srv/tool")
    );

    for (exec, why) in [
        (Some("../etc/passwd"), "`..`"),
        (Some("/srv/tool"), "absolute"),
        (Some("srv/missing"), "not in the package"),
    ] {
        let err = scratch.unpack(&package, "demo", exec).unwrap_err();
        assert_eq!(err.errcode, ErrCode::BadPackage, "{exec:?}");
        assert!(err.message.contains(why), "{exec:?}: {}", err.message);
        assert!(!scratch.dest().exists(), "nothing left for {exec:?}");
    }
    let err = scratch.unpack(&package, "other", None).unwrap_err();
    assert_eq!(err.errcode, ErrCode::BadPackage);
    assert!(
        err.message
            .contains("looked for run, usr/bin/other, usr/sbin/other, opt/other/bin/other"),
        "{}",
        err.message
    );
    assert!(!scratch.dest().exists());
}

#[test]
fn an_absolute_symlink_of_an_rpm_is_relocated_under_the_version_root() {
    let scratch = Scratch::new("links");
    let root = scratch.0.join("tree");
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::create_dir_all(root.join("opt/demo")).unwrap();
    fs::write(root.join("opt/demo/demo"), SCRIPT).unwrap();
    fs::set_permissions(root.join("opt/demo/demo"), Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("/opt/demo/demo", root.join("usr/bin/demo")).unwrap();
    fs::write(root.join("opt/demo/a"), b"same").unwrap();
    fs::hard_link(root.join("opt/demo/a"), root.join("opt/demo/b")).unwrap();
    // rpmbuild takes the staged tree as it is: the link, and two names of one file.
    let files: &[PackageFile<'_>] = &[];
    let mut spec = spec("xz", files, false);
    spec.files = files;
    let package = rpm_of_tree(&scratch.0, &root, &spec);
    scratch.unpack(&package, "demo", None).unwrap();
    let dest = scratch.dest();
    assert_eq!(
        fs::read_link(dest.join("usr/bin/demo")).unwrap(),
        Path::new("../../opt/demo/demo")
    );
    assert_eq!(fs::read(dest.join("run")).unwrap(), SCRIPT);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(dest.join("opt/demo/a")).unwrap().ino(),
        fs::metadata(dest.join("opt/demo/b")).unwrap().ino(),
        "hard links stay links"
    );
    assert_eq!(fs::read(dest.join("opt/demo/b")).unwrap(), b"same");
}

/// An rpm of a staged tree as it is (symlinks and hard links kept).
fn rpm_of_tree(dir: &Path, root: &Path, spec: &Spec<'_>) -> PathBuf {
    let top = dir.join("rpmtree");
    fs::create_dir_all(top.join("SPECS")).unwrap();
    let text = format!(
        "Name: {}\nVersion: 1\nRelease: 1\nSummary: t\nLicense: MIT\nBuildArch: noarch\n\
         AutoReqProv: no\n%define _binary_payload w2.xzdio\n%description\nt\n\
         %install\ncp -a {}/. %{{buildroot}}/\n%files\n/usr/bin/demo\n/opt/demo\n",
        spec.name,
        root.display()
    );
    fs::write(top.join("SPECS/t.spec"), text).unwrap();
    let status = std::process::Command::new("rpmbuild")
        .arg("--define")
        .arg(format!("_topdir {}", top.display()))
        .args([
            "--define",
            "_build_id_links none",
            "--define",
            "__os_install_post %{nil}",
        ])
        .args(["--quiet", "-bb"])
        .arg(top.join("SPECS/t.spec"))
        .status()
        .expect("rpmbuild (apt-get install rpm)");
    assert!(status.success());
    top.join(format!("RPMS/noarch/{}-1-1.noarch.rpm", spec.name))
}

#[test]
fn bombs_of_each_compression_and_format_fail_with_errcode_4_and_leave_nothing() {
    let scratch = Scratch::new("bombs");
    let limits = UnpackLimits {
        bytes_max: 1 << 20,
        entries_max: 16,
        ..UnpackLimits::default()
    };
    // No header at all: only the stream's cap stops it.
    for compression in ["gzip", "xz", "zstd"] {
        let package = packages::zeros(&scratch.0, "zeros", compression, 64 << 20);
        assert!(fs::metadata(&package).unwrap().len() < 1 << 20);
        let err = scratch
            .unpack_with(&package, "demo", None, &limits)
            .unwrap_err();
        assert_eq!(
            err.errcode,
            ErrCode::BadPackage,
            "{compression}: {}",
            err.message
        );
        assert!(
            err.message.contains("decompresses to more than"),
            "{}",
            err.message
        );
        assert!(!scratch.dest().exists());
    }
    // Headers that declare more than the bound.
    let big = packages::zero_file(8 << 20);
    let files: &[PackageFile<'_>] = &[
        ("usr/bin/demo", SCRIPT, 0o755),
        ("usr/lib/big", &big, 0o644),
    ];
    let built = [
        packages::rpm(&scratch.0, &spec("zstd", files, false)),
        packages::rpm(&scratch.0, &spec("xz", files, false)),
        packages::deb(&scratch.0, &spec("zstd", files, false)),
        packages::tar(&scratch.0, "big.tar.xz", "xz", files),
    ];
    for package in built {
        let err = scratch
            .unpack_with(&package, "demo", None, &limits)
            .unwrap_err();
        assert_eq!(
            err.errcode,
            ErrCode::BadPackage,
            "{package:?}: {}",
            err.message
        );
        assert!(err.message.contains("more than"), "{}", err.message);
        assert!(!scratch.dest().exists());
    }
}

#[test]
fn hostile_rpm_deb_and_cpio_headers_are_errcode_4() {
    let scratch = Scratch::new("hostile");
    let good = packages::rpm(&scratch.0, &spec("gzip", FILES, false));
    let bytes = fs::read(&good).unwrap();
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    // The signature header claims 0xffffffff tags.
    let mut huge = bytes.clone();
    huge[96 + 8..96 + 12].copy_from_slice(&[0xff; 4]);
    cases.push(("tags", huge));
    // Data past the end of the file.
    let mut past = bytes.clone();
    past[96 + 12..96 + 16].copy_from_slice(&0x0fff_0000u32.to_be_bytes());
    cases.push(("past the end", past));
    cases.push(("truncated", bytes[..bytes.len() / 2].to_vec()));
    // A deb whose second member runs past the end.
    let deb = fs::read(packages::deb(&scratch.0, &spec("gzip", FILES, false))).unwrap();
    let mut long = deb.clone();
    let at = 8 + 60 + 4 + 48; // size field of the second member
    long[at..at + 10].copy_from_slice(b"9999999999");
    cases.push(("past the end", long));
    cases.push(("ar member", b"!<arch>\nnot a header".to_vec()));
    for (why, bytes) in cases {
        let package = scratch.0.join("hostile");
        fs::write(&package, &bytes).unwrap();
        let err = scratch.unpack(&package, "demo", None).unwrap_err();
        assert_eq!(err.errcode, ErrCode::BadPackage, "{why}: {}", err.message);
        assert!(!scratch.dest().exists());
    }
}

#[test]
fn versions_hold_plus_and_tilde_and_come_from_xz_zst_and_tar_file_names() {
    assert!(valid_version("1.0~rc1+b2"));
    assert!(valid_version("2_1.0-3"));
    assert!(!valid_version("2:1.0"));
    for (url, version) in [
        ("http://h/a/svc-1.2.tar.xz", Some("1.2")),
        ("http://h/svc-1.2~rc1.txz", Some("1.2~rc1")),
        ("ftp://h/svc-3.tar.zst?x=1", Some("3")),
        ("file:///f/svc-4+b1.tar", Some("4+b1")),
        ("http://h/svc-5.tar.gz", Some("5")),
        ("http://h/svc-5.rpm", None),
    ] {
        assert_eq!(version_from_url(url, "svc").as_deref(), version, "{url}");
    }
}
