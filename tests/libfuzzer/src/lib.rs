//! The libFuzzer targets' side of the fuzz checks: the same checks as the plain-Rust
//! fuzzer of `tests/fuzz.rs` (`tests/fuzz/checks.rs`, `tests/fuzz/disk.rs`), turned into
//! what libFuzzer understands: an input that breaks an invariant panics, and libFuzzer
//! saves it as a crash. Inputs that are refused with a good message are fine.
//!
//! The metafile and package checks write: they use scratch directories of this process,
//! under `TMPDIR` (`tests/libfuzzer.sh` points it at a directory it removes).

// The shared files carry the plain fuzzer's loop and generators too, unused here.
#![allow(dead_code)]

#[path = "../../fuzz/checks.rs"]
mod checks;
#[path = "../../fuzz/disk.rs"]
mod disk;
#[path = "../../fuzz/gen.rs"]
mod gen;

use std::path::PathBuf;
use std::sync::OnceLock;

pub use checks::{
    check_addr, check_job_text, check_limits, check_limits_set, check_register, check_restart,
    check_status,
};
use disk::Scratch;
use gen::Verdict;

/// Runs `check` on `input`; panics, for libFuzzer to report, when an invariant broke.
pub fn run(check: impl Fn(&[u8]) -> Verdict, input: &[u8]) {
    if let Err(broken) = check(input) {
        panic!("invariant broken: {broken}");
    }
}

/// The metafile loader on `input` as `meta.json` (with a previous copy and a size bound
/// chosen from the input, as in the plain fuzzer).
pub fn check_meta(input: &[u8]) -> Verdict {
    static SCRATCH: OnceLock<Scratch> = OnceLock::new();
    let scratch = SCRATCH.get_or_init(|| Scratch::new("libfuzzer-meta"));
    disk::check_meta(&scratch.0, input)
}

/// The unpacker on `input` as a package; nothing may be written outside the version
/// directory.
pub fn check_unpack(input: &[u8]) -> Verdict {
    static ROOT: OnceLock<(Scratch, PathBuf)> = OnceLock::new();
    let (_, root) = ROOT.get_or_init(|| {
        let scratch = Scratch::new("libfuzzer-unpack");
        let root = scratch.unpack_root();
        (scratch, root)
    });
    disk::check_unpack(root, input)
}

/// The unpacker on `input` as the package of an agent named `demo` (rpm and deb
/// find their program by the name), as in the plain fuzzer's format targets.
pub fn check_package(input: &[u8]) -> Verdict {
    static ROOT: OnceLock<(Scratch, PathBuf)> = OnceLock::new();
    let (_, root) = ROOT.get_or_init(|| {
        let scratch = Scratch::new("libfuzzer-package");
        let root = scratch.unpack_root();
        (scratch, root)
    });
    disk::check_package(root, input, "demo")
}
