//! Packages built by the real tools, as fleets build them: `rpmbuild` (Debian's
//! `rpm`), `dpkg-deb`, GNU `tar`, `gzip`, `xz` and `zstd`. A missing tool fails the
//! test that needs it, with the package to install named.
//! Shared by the end-to-end tests and the unit tests of the unpacker.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A file of a package: its path from the package root, its content, its mode.
pub type PackageFile<'a> = (&'a str, &'a [u8], u32);

/// What to build.
pub struct Spec<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// rpm `Release`; part of a deb's `Version` when not empty.
    pub release: &'a str,
    /// `gzip`, `xz` or `zstd`.
    pub compression: &'a str,
    pub files: &'a [PackageFile<'a>],
    /// With a post-install script (rpm `%post`, deb `postinst`).
    pub script: bool,
}

fn run(command: &mut Command, package: &str) {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (apt-get install {package})"));
    assert!(
        output.status.success(),
        "{shown} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Writes `files` under `root`.
fn stage(root: &Path, files: &[PackageFile<'_>]) {
    for (path, body, mode) in files {
        let full = root.join(path);
        fs::create_dir_all(full.parent().expect("a parent")).expect("stage dir");
        fs::write(&full, body).expect("stage file");
        fs::set_permissions(&full, fs::Permissions::from_mode(*mode)).expect("stage mode");
    }
}

/// `NAME-VERSION-RELEASE.noarch.rpm` in `dir`, built by rpmbuild.
pub fn rpm(dir: &Path, spec: &Spec<'_>) -> PathBuf {
    let top = dir.join(format!(
        "rpmbuild-{}-{}-{}",
        spec.name, spec.version, spec.compression
    ));
    let _ = fs::remove_dir_all(&top);
    let staged = top.join("stage");
    stage(&staged, spec.files);
    fs::create_dir_all(top.join("SPECS")).expect("SPECS");
    let payload = match spec.compression {
        "gzip" => "w9.gzdio",
        "xz" => "w2.xzdio",
        "zstd" => "w3.zstdio",
        other => panic!("no rpm payload compression {other}"),
    };
    let files: Vec<String> = spec
        .files
        .iter()
        .map(|(p, _, _)| format!("\"/{p}\""))
        .collect();
    let script = if spec.script {
        "%post\necho installed\n"
    } else {
        ""
    };
    let text = format!(
        "Name: {name}\nVersion: {version}\nRelease: {release}\nSummary: test\nLicense: MIT\n\
         BuildArch: noarch\nAutoReqProv: no\n%define _binary_payload {payload}\n\
         %description\ntest\n%install\ncp -a {staged}/. %{{buildroot}}/\n{script}\
         %files\n{files}\n",
        name = spec.name,
        version = spec.version,
        release = spec.release,
        staged = staged.display(),
        files = files.join("\n"),
    );
    let spec_file = top.join("SPECS/package.spec");
    fs::write(&spec_file, text).expect("spec");
    run(
        Command::new("rpmbuild")
            .arg("--define")
            .arg(format!("_topdir {}", top.display()))
            .args(["--define", "_build_id_links none"])
            .args(["--define", "__os_install_post %{nil}"])
            .args(["--define", "_source_payload w9.gzdio"])
            .arg("-bb")
            .arg(&spec_file),
        "rpm",
    );
    let built = top.join(format!(
        "RPMS/noarch/{}-{}-{}.noarch.rpm",
        spec.name, spec.version, spec.release
    ));
    let out = dir.join(built.file_name().expect("a name"));
    fs::rename(&built, &out).expect("move the rpm");
    let _ = fs::remove_dir_all(&top);
    out
}

/// `NAME_VERSION_all.deb` in `dir`, built by dpkg-deb (`data.tar` and
/// `control.tar` compressed the same way).
pub fn deb(dir: &Path, spec: &Spec<'_>) -> PathBuf {
    let version = if spec.release.is_empty() {
        spec.version.to_string()
    } else {
        format!("{}-{}", spec.version, spec.release)
    };
    let root = dir.join(format!(
        "deb-{}-{}-{}",
        spec.name, spec.version, spec.compression
    ));
    let _ = fs::remove_dir_all(&root);
    stage(&root, spec.files);
    let control = format!(
        "Package: {}\nVersion: {version}\nArchitecture: all\nMaintainer: Test <t@example.org>\n\
         Description: test\n",
        spec.name.to_lowercase()
    );
    let mut meta: Vec<(&str, Vec<u8>, u32)> = vec![("DEBIAN/control", control.into_bytes(), 0o644)];
    if spec.script {
        meta.push((
            "DEBIAN/postinst",
            b"#!/bin/sh\necho installed\n".to_vec(),
            0o755,
        ));
    }
    let meta: Vec<PackageFile<'_>> = meta.iter().map(|(p, b, m)| (*p, &b[..], *m)).collect();
    stage(&root, &meta);
    // Debian's file names leave the epoch out.
    let file_version = version.split_once(':').map_or(version.as_str(), |(_, v)| v);
    let out = dir.join(format!("{}_{file_version}_all.deb", spec.name));
    run(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Z", spec.compression, "-b"])
            .arg(&root)
            .arg(&out),
        "dpkg",
    );
    let _ = fs::remove_dir_all(&root);
    out
}

/// A tar made by GNU tar of `files`, compressed with `compression` (`none`,
/// `gzip`, `xz`, `zstd`), as `dir/file_name`.
pub fn tar(dir: &Path, file_name: &str, compression: &str, files: &[PackageFile<'_>]) -> PathBuf {
    let root = dir.join(format!("tar-{file_name}"));
    let _ = fs::remove_dir_all(&root);
    stage(&root, files);
    let plain = dir.join(format!("{file_name}.plain"));
    let mut command = Command::new("tar");
    command.arg("-cf").arg(&plain).arg("-C").arg(&root);
    for (path, _, _) in files {
        command.arg(path);
    }
    run(&mut command, "tar");
    let out = dir.join(file_name);
    compress(&plain, &out, compression);
    let _ = fs::remove_dir_all(&root);
    out
}

/// `input` compressed with `compression` (`none` copies it) into `out`; `input` goes.
pub fn compress(input: &Path, out: &Path, compression: &str) {
    if compression == "none" {
        fs::rename(input, out).expect("rename");
        return;
    }
    let tool = match compression {
        "gzip" => "gzip",
        "xz" => "xz",
        "zstd" => "zstd",
        other => panic!("no compression {other}"),
    };
    let output = fs::File::create(out).expect("compressed file");
    run(
        Command::new(tool)
            .args(["-c", "-q"])
            .arg(input)
            .stdout(output),
        if tool == "zstd" { "zstd" } else { "xz-utils" },
    );
    fs::remove_file(input).expect("remove the plain file");
}

/// A stream of `bytes` zero bytes, compressed: no tar header at all, only a
/// decompressed size far beyond what it weighs.
pub fn zeros(dir: &Path, file_name: &str, compression: &str, bytes: u64) -> PathBuf {
    let plain = dir.join(format!("{file_name}.zeros"));
    let file = fs::File::create(&plain).expect("zeros");
    file.set_len(bytes).expect("sparse zeros");
    let out = dir.join(file_name);
    compress(&plain, &out, compression);
    out
}

/// A file of `bytes` zero bytes, to put in a bomb.
pub fn zero_file(bytes: usize) -> Vec<u8> {
    vec![0u8; bytes]
}
