//! The checks that go through the disk: the metafile loader and the unpacker, each in
//! a scratch directory of its own.

use crate::checks::one_line;
use crate::gen::{fnv, Accepted, Verdict};
use bootagent::jobs::ErrCode;
use bootagent::meta::{Loaded, MetaStore, META_SCHEMA, SN_BYTES_MAX};
use bootagent::unpack::{self, UnpackLimits};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The metafile seed that serves as a good previous copy (251 bytes).
const GOOD_PREVIOUS: &[u8] = include_bytes!("corpus/meta/fresh.json");

/// How a metafile input is loaded.
pub struct MetaSetup<'a> {
    pub previous: Option<&'a [u8]>,
    pub bytes_max: u64,
}

impl<'a> MetaSetup<'a> {
    /// Chosen by the input's hash: no previous copy, a good one, the same bytes, or
    /// half of them; the default bound, a smaller one, or the input's size or one less.
    fn of(input: &'a [u8]) -> Self {
        let hash = fnv(input);
        let previous = match hash % 4 {
            0 => None,
            1 => Some(GOOD_PREVIOUS),
            2 => Some(input),
            _ => Some(&input[..input.len() / 2]),
        };
        let size = input.len() as u64;
        let bytes_max =
            [8 << 20, 1 << 20, size, size.saturating_sub(1)][((hash >> 8) % 4) as usize];
        MetaSetup {
            previous,
            bytes_max,
        }
    }
}

pub fn check_meta(scratch: &Path, input: &[u8]) -> Verdict {
    check_meta_with(scratch, input, &MetaSetup::of(input))
}

pub fn check_meta_with(scratch: &Path, input: &[u8], setup: &MetaSetup) -> Verdict {
    let data = scratch.join("data");
    let _ = fs::remove_dir_all(&data);
    fs::create_dir_all(&data).map_err(|e| format!("scratch: {e}"))?;
    fs::write(data.join("meta.json"), input).map_err(|e| format!("scratch: {e}"))?;
    if let Some(bytes) = setup.previous {
        fs::write(data.join("meta.json.prev"), bytes).map_err(|e| format!("scratch: {e}"))?;
    }
    match MetaStore::new(&data, setup.bytes_max).load() {
        Ok(Loaded::FirstStart) => {
            Err("meta.json exists, yet loading says first start (a second identity)".to_string())
        }
        Ok(Loaded::Found { meta, recovered }) => {
            if meta.schema > META_SCHEMA
                || meta.agentsn.is_empty()
                || meta.agentsn.len() > SN_BYTES_MAX
            {
                return Err(format!(
                    "loaded schema {} with agentsn {:?}",
                    meta.schema, meta.agentsn
                ));
            }
            if let Some(reason) = &recovered {
                one_line("the reason for a recovery", reason)?;
            }
            // What was loaded is saved and loaded again unchanged.
            let again = scratch.join("again");
            let _ = fs::remove_dir_all(&again);
            let store = MetaStore::new(&again, 1 << 30);
            store
                .create_dir()
                .and_then(|()| store.save(&meta))
                .map_err(|e| format!("saving what was loaded: {e}"))?;
            match store.load() {
                Ok(Loaded::Found {
                    meta: reloaded,
                    recovered: None,
                }) if reloaded == meta => Ok(Accepted::Yes),
                other => Err(format!("{meta:?} saved and loaded again is {other:?}")),
            }
        }
        Err(e) => {
            let good_previous = setup.previous == Some(GOOD_PREVIOUS)
                && GOOD_PREVIOUS.len() as u64 <= setup.bytes_max;
            if good_previous {
                return Err(format!("refused although meta.json.prev is good: {e}"));
            }
            one_line("a metafile error", &e.to_string())?;
            Ok(Accepted::No)
        }
    }
}

/// Bounds of an unpacking, chosen by the input's hash: the defaults, or small ones
/// that the fuzzer's archives can reach.
fn unpack_limits(input: &[u8]) -> UnpackLimits {
    match fnv(input) % 4 {
        0 => UnpackLimits {
            bytes_max: 4096,
            entries_max: 8,
            path_bytes_max: 255,
            reserve_bytes: 0,
        },
        1 => UnpackLimits {
            bytes_max: 1 << 20,
            entries_max: 64,
            path_bytes_max: 1024,
            reserve_bytes: 0,
        },
        _ => UnpackLimits::default(),
    }
}

/// `input` as a package unpacked to `root/agents/a/1.0`. Beside it, `root/outside/file`
/// is what an escaping archive would reach; `root/package` is the download.
pub fn check_unpack(root: &Path, input: &[u8]) -> Verdict {
    check_package(root, input, "")
}

/// The unpacker on `input` as the package of an agent `name` (rpm and deb find
/// their program by it): as [`check_unpack`].
pub fn check_package(root: &Path, input: &[u8], name: &str) -> Verdict {
    let package = root.join("package");
    let dest = root.join("agents/a/1.0");
    fs::write(&package, input).map_err(|e| format!("scratch: {e}"))?;
    let program = unpack::Program { name, exec: None };
    let result = unpack::unpack_package(&package, &dest, &unpack_limits(input), &program);
    let verdict = match &result {
        Ok(_) => check_unpacked(&dest).map(|()| Accepted::Yes),
        Err(e) => {
            if fs::symlink_metadata(&dest).is_ok() {
                Err(format!("refused ({e}) but left {} behind", dest.display()))
            } else if e.errcode != ErrCode::BadPackage {
                // The scratch host is healthy: every refusal is the package's fault.
                Err(format!(
                    "errcode {:?} for a package on a healthy host: {e}",
                    e.errcode
                ))
            } else {
                one_line("an unpack error", &e.message).map(|()| Accepted::No)
            }
        }
    };
    let untouched = check_only_dest_changed(root, result.is_ok());
    let _ = fs::remove_dir_all(&dest);
    verdict.and_then(|accepted| untouched.map(|()| accepted))
}

fn check_unpacked(dest: &Path) -> Result<(), String> {
    let run = dest.join("run");
    match fs::metadata(&run) {
        Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o100 != 0 => {}
        other => return Err(format!("unpacked, but run is {other:?}")),
    }
    let dest_real = fs::canonicalize(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut dirs = vec![dest.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for item in fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let path = item.map_err(|e| format!("{}: {e}", dir.display()))?.path();
            let meta = fs::symlink_metadata(&path).map_err(|e| format!("{e}"))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                if let Ok(target) = fs::canonicalize(&path) {
                    if !target.starts_with(&dest_real) {
                        return Err(format!(
                            "{} resolves outside: {}",
                            path.display(),
                            target.display()
                        ));
                    }
                }
            } else if kind.is_dir() || kind.is_file() {
                if meta.permissions().mode() & 0o7022 != 0 {
                    return Err(format!(
                        "{} has mode {:o}",
                        path.display(),
                        meta.permissions().mode()
                    ));
                }
                if kind.is_dir() {
                    dirs.push(path);
                }
            } else {
                return Err(format!("{} is a {kind:?}", path.display()));
            }
        }
    }
    Ok(())
}

fn check_only_dest_changed(root: &Path, unpacked: bool) -> Result<(), String> {
    let names = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .map(|items| {
                items
                    .filter_map(Result::ok)
                    .map(|item| item.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    };
    let expect = |dir: &Path, want: &[&str]| {
        let got = names(dir);
        if got == want {
            Ok(())
        } else {
            Err(format!("{} holds {got:?}, not {want:?}", dir.display()))
        }
    };
    expect(root, &["agents", "outside", "package"])?;
    expect(&root.join("agents"), &["a"])?;
    expect(
        &root.join("agents/a"),
        if unpacked { &["1.0"] } else { &[] },
    )?;
    expect(&root.join("outside"), &["file"])?;
    match fs::read(root.join("outside/file")) {
        Ok(content) if content == b"outside" => Ok(()),
        other => Err(format!("outside/file changed: {other:?}")),
    }
}

/// A directory for one target's files, on tmpfs when there is one (unpacking fsyncs
/// every file and directory), removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        // A fixed-width pid: path lengths (PATH_MAX!) must not vary from run to run.
        let leaf = format!("bootagent-fuzz-{name}-{:010}", std::process::id());
        let shm = Path::new("/dev/shm").join(&leaf);
        let dir = match fs::create_dir_all(&shm) {
            Ok(()) => shm,
            Err(_) => std::env::temp_dir().join(&leaf),
        };
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("scratch directory");
        Scratch(dir)
    }

    /// The layout `check_unpack` expects.
    pub fn unpack_root(&self) -> PathBuf {
        let root = self.0.join("root");
        fs::create_dir_all(root.join("agents/a")).expect("scratch agents/a");
        fs::create_dir_all(root.join("outside")).expect("scratch outside");
        fs::write(root.join("outside/file"), b"outside").expect("scratch outside/file");
        fs::write(root.join("package"), b"").expect("scratch package");
        root
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
