//! The reference server's own checks: the huge fault body, file paths, the handle's
//! thread safety and job ids.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::faults::HugeBody;
use super::files::file_path;
use super::*;

#[test]
fn huge_body_is_exact_json() {
    let mut body = Vec::new();
    HugeBody::new(1000).read_to_end(&mut body).unwrap();
    assert_eq!(body.len(), 1000);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], 0);
}

#[test]
fn file_paths_stay_inside() {
    let root = Path::new("/srv");
    assert_eq!(
        file_path(root, "/files/a/b.tgz"),
        Some(PathBuf::from("/srv/a/b.tgz"))
    );
    assert_eq!(
        file_path(root, "/files/a%20b"),
        Some(PathBuf::from("/srv/a b"))
    );
    assert_eq!(file_path(root, "/files/../etc/passwd"), None);
    assert_eq!(file_path(root, "/files/a/%2e%2e/b"), None);
    assert_eq!(file_path(root, "/files/"), None);
}

#[test]
fn server_handle_is_thread_safe() {
    fn check<T: Send + Sync>() {}
    check::<RefServer>();
}

#[test]
fn uuid_shape() {
    let u = new_uuid();
    assert_eq!(u.len(), 36);
    assert_eq!(&u[14..15], "4");
    assert_ne!(u, new_uuid());
}
