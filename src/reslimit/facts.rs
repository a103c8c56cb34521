//! What `/proc/self` says about mounts and BootAgent's own cgroups: the parsing of
//! `/proc/self/mountinfo` and `/proc/self/cgroup`, and where a cgroup is under its mount.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use super::shared::text;

/// What `/proc/self` says about mounts and BootAgent's own cgroups.
pub(super) struct Facts {
    pub(super) mounts: Vec<Mount>,
    pub(super) memberships: Vec<Membership>,
}

impl Facts {
    pub(super) fn read() -> Result<Facts, String> {
        Ok(Facts {
            mounts: parse_mountinfo(&text(Path::new("/proc/self/mountinfo"))?),
            memberships: parse_proc_cgroup(&text(Path::new("/proc/self/cgroup"))?),
        })
    }
}

/// One line of `/proc/self/mountinfo`, the fields that matter here.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Mount {
    /// The directory of the file system that is mounted (a cgroup path for cgroupfs).
    root: String,
    pub(super) point: PathBuf,
    pub(super) fstype: String,
    /// For cgroup v1, the controllers (`rw,cpu,cpuacct`).
    pub(super) super_options: String,
}

/// `36 35 98:0 /root /point rw,noatime [optional fields] - fstype source super,options`.
pub(super) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let dash = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            Some(Mount {
                root: String::from_utf8_lossy(&unescape_octal(fields.get(3)?)).into_owned(),
                point: PathBuf::from(OsString::from_vec(unescape_octal(fields.get(4)?))),
                fstype: (*fields.get(dash + 1)?).to_owned(),
                super_options: (*fields.get(dash + 3)?).to_owned(),
            })
        })
        .collect()
}

/// The kernel writes a space in a path as `\040`, and so on (three octal digits, at
/// most `\377`).
fn unescape_octal(field: &str) -> Vec<u8> {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match bytes.get(i + 1..i + 4) {
            Some(&[a @ b'0'..=b'3', b @ b'0'..=b'7', c @ b'0'..=b'7']) if byte == b'\\' => {
                out.push(((a - b'0') << 6) | ((b - b'0') << 3) | (c - b'0'));
                i += 4;
            }
            _ => {
                out.push(byte);
                i += 1;
            }
        }
    }
    out
}

/// One line of `/proc/self/cgroup`: `4:memory:/path`, `2:cpu,cpuacct:/`, `0::/path` (v2).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Membership {
    pub(super) hierarchy: String,
    pub(super) controllers: String,
    pub(super) path: String,
}

pub(super) fn parse_proc_cgroup(text: &str) -> Vec<Membership> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            Some(Membership {
                hierarchy: parts.next()?.to_owned(),
                controllers: parts.next()?.to_owned(),
                path: parts.next()?.to_owned(),
            })
        })
        .collect()
}

/// Where the cgroup `path` of a hierarchy is under `mount`; `None` when the mount does
/// not show it (it mounts a subtree that does not contain it).
pub(super) fn cgroup_dir(mount: &Mount, path: &str) -> Option<PathBuf> {
    let relative = if mount.root == "/" {
        path
    } else {
        let rest = path.strip_prefix(mount.root.as_str())?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None; // "/ab" is not under "/a"
        }
        rest
    };
    let relative = relative.trim_start_matches('/');
    if relative.split('/').any(|part| part == "..") {
        return None;
    }
    Some(if relative.is_empty() {
        mount.point.clone()
    } else {
        mount.point.join(relative)
    })
}

#[cfg(test)]
#[path = "facts_tests.rs"]
mod tests;
