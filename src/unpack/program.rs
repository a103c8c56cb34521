//! The program of an rpm or a deb (or of any archive given the job's `exec`):
//! `run` at the version root becomes a relative symlink to it, so that the layout
//! of an installed agent is the same whatever the format, and a restart of
//! BootAgent finds it. Chosen in order: the job's `exec` (a path inside the
//! package, checked like an entry's), `run` at the root, `usr/bin/NAME`,
//! `usr/sbin/NAME`, `opt/NAME/bin/NAME`.

use super::archive::Extractor;
use super::shared::{bad, checking, failed, quote, Program, UnpackError, RUN_FILE};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Makes `run` at the root of `dest` point to the program chosen, or says what
/// was looked for.
pub(super) fn link_run(
    extractor: &Extractor<'_>,
    program: &Program<'_>,
) -> Result<(), UnpackError> {
    let dest = extractor.dest;
    let has_run = exists(&dest.join(RUN_FILE))?;
    let target = match program.exec {
        Some(exec) => {
            let shown = quote(exec.as_bytes());
            let rel = extractor
                .entry_path(exec.as_bytes(), &shown)
                .map_err(|e| bad(format!("exec: {}", e.message)))?;
            if rel.as_os_str().is_empty() {
                return Err(bad("exec names no file".to_string()));
            }
            if rel == Path::new(RUN_FILE) {
                return if has_run {
                    Ok(())
                } else {
                    Err(bad(format!("exec {shown} is not in the package")))
                };
            }
            if has_run {
                return Err(bad(format!(
                    "exec is {shown} but the package has its own run at its root"
                )));
            }
            if !exists(&dest.join(&rel))? {
                return Err(bad(format!("exec {shown} is not in the package")));
            }
            rel
        }
        None if has_run => return Ok(()),
        None => {
            let candidates = candidates(program.name);
            let mut found = None;
            for candidate in &candidates {
                if exists(&dest.join(candidate))? {
                    found = Some(candidate.clone());
                    break;
                }
            }
            found.ok_or_else(|| {
                let looked: Vec<String> = candidates
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect();
                bad(format!(
                    "package has no program to run: looked for run{}{} (the job's exec names another)",
                    if looked.is_empty() { "" } else { ", " },
                    looked.join(", ")
                ))
            })?
        }
    };
    let run = dest.join(RUN_FILE);
    std::os::unix::fs::symlink(&target, &run)
        .map_err(|e| failed(format!("creating {}: {e}", run.display())))
}

/// `usr/bin/NAME`, `usr/sbin/NAME`, `opt/NAME/bin/NAME`; none without a name.
fn candidates(name: &str) -> Vec<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Vec::new();
    }
    vec![
        Path::new("usr/bin").join(name),
        Path::new("usr/sbin").join(name),
        Path::new("opt").join(name).join("bin").join(name),
    ]
}

/// Whether something (a symlink included) is at `path`; a path that goes through a
/// file is not there.
fn exists(path: &Path) -> Result<bool, UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(false),
        Err(e) => Err(checking(path, e)),
    }
}
