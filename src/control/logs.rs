//! `bootagent logs NAME [-f] [-n LINES]`: the last lines of a child's output from
//! `logs/NAME.log.N` … `logs/NAME.log` (oldest first), then, with `-f`, what it
//! writes next, across rotations, until `SIGINT` or `SIGTERM`. Reads files only: no
//! agent is needed.
//!
//! Memory is bounded by one buffer of `CHUNK_BYTES`, whatever the files hold or
//! `LINES` asks: the start of the last lines is found by reading backwards, and the
//! output is copied in chunks.
//!
//! Following: the open file is read to its end, then the path is looked at every
//! `FOLLOW_POLL_MS`. When `NAME.log` is another file (rotated: the open one became
//! `NAME.log.1`), the open one is read to its end, then the new one from its start;
//! when it shrank (truncated), it is read again from its start. A file that rotates
//! twice within one poll loses the middle file's lines to the follower (not to disk).

use crate::console::{EXIT_DONE, EXIT_FAILED, EXIT_NO_SUCH_CHILD};
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The one buffer: backwards scans and copies go through it.
const CHUNK_BYTES: usize = 64 * 1024;
/// How often `-f` looks for more output and for a rotation.
const FOLLOW_POLL_MS: u64 = 200;
/// Numbered files looked for (`NAME.log.1` …), as many as the agent may keep.
const NUMBERED_FILES_MAX: u32 = 100;
/// Lines shown without `-n`.
pub const LINES_DEFAULT: u64 = 10;

/// What `bootagent logs` was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogsRequest {
    pub name: String,
    pub follow: bool,
    pub lines: u64,
}

/// Runs `bootagent logs`; returns the exit code.
pub fn run(data_dir: &Path, request: &LogsRequest, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let logs_dir = data_dir.join("logs");
    let newest = logs_dir.join(format!("{}.log", request.name));
    let known = data_dir.join("agents").join(&request.name).is_dir() || newest.exists();
    if !known {
        let _ = writeln!(
            err,
            "no such child: {} (in {})",
            request.name,
            data_dir.display()
        );
        return EXIT_NO_SUCH_CHILD;
    }
    let stop = Arc::new(AtomicBool::new(false));
    if request.follow {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
                let _ = writeln!(err, "cannot handle signal {signal}: {e}");
                return EXIT_FAILED;
            }
        }
    }
    let mut buf = vec![0u8; CHUNK_BYTES];
    let result = tail(&newest, request.lines, &mut buf, out).and_then(|open| {
        if request.follow {
            follow(&newest, open, &stop, &mut buf, out)
        } else {
            Ok(())
        }
    });
    match result {
        Ok(()) => EXIT_DONE,
        // The reader went away (`| head`): not a failure of ours.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => EXIT_DONE,
        Err(e) => {
            let _ = writeln!(err, "logs of {}: {e}", request.name);
            EXIT_FAILED
        }
    }
}

/// The files of one child, oldest first, `newest` last (only those that exist).
fn files(newest: &Path) -> Vec<PathBuf> {
    let mut older = Vec::new();
    for n in 1..=NUMBERED_FILES_MAX {
        let mut name = newest.as_os_str().to_owned();
        name.push(format!(".{n}"));
        let path = PathBuf::from(name);
        if !path.exists() {
            break;
        }
        older.push(path);
    }
    older.reverse();
    older.push(newest.to_path_buf());
    older
}

/// Prints the last `lines` lines; returns the newest file, open and read to its
/// end (`None` when it does not exist yet).
fn tail(
    newest: &Path,
    lines: u64,
    buf: &mut [u8],
    out: &mut dyn Write,
) -> io::Result<Option<File>> {
    let mut opened: Vec<File> = Vec::new();
    for path in files(newest) {
        match open_log(&path) {
            Ok(file) => opened.push(file),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
    // Walk back from the end until `lines` line ends are behind the start.
    let mut start = (opened.len(), 0u64); // (file index, offset): nothing to print
    let mut wanted = lines;
    let mut skip_final_newline = true;
    'files: for (i, file) in opened.iter_mut().enumerate().rev() {
        let len = file.metadata()?.len();
        let mut end = len;
        start = (i, 0);
        while end > 0 && wanted > 0 {
            let from = end.saturating_sub(buf.len() as u64);
            let n = (end - from) as usize;
            file.seek(SeekFrom::Start(from))?;
            file.read_exact(&mut buf[..n])?;
            for (k, &b) in buf[..n].iter().enumerate().rev() {
                if skip_final_newline {
                    skip_final_newline = false;
                    if b == b'\n' {
                        continue;
                    }
                }
                if b == b'\n' {
                    wanted -= 1;
                    if wanted == 0 {
                        start = (i, from + k as u64 + 1);
                        break 'files;
                    }
                }
            }
            end = from;
        }
        if len > 0 {
            skip_final_newline = false;
        }
        if wanted == 0 {
            start = (i, len);
            break;
        }
    }
    let (first, offset) = start;
    let count = opened.len();
    let mut newest_open = None;
    for (i, mut file) in opened.into_iter().enumerate() {
        if i >= first {
            file.seek(SeekFrom::Start(if i == first { offset } else { 0 }))?;
            copy(&mut file, buf, out)?;
        } else if i + 1 == count {
            file.seek(SeekFrom::End(0))?;
        }
        if i + 1 == count {
            newest_open = Some(file);
        }
    }
    out.flush()?;
    // The newest file exists only if it was opened last under its own name.
    let newest_exists = newest.exists();
    Ok(newest_open.filter(|_| newest_exists))
}

/// Opens a log file for reading: a regular file only (a FIFO put in its place must not
/// hold the command: it is opened without waiting, then refused).
fn open_log(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// Copies the rest of `file` to `out`, one chunk at a time.
fn copy(file: &mut File, buf: &mut [u8], out: &mut dyn Write) -> io::Result<u64> {
    let mut total = 0u64;
    loop {
        let n = match file.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// `-f`: copies what is appended, across rotations, until `stop` is set.
fn follow(
    newest: &Path,
    mut open: Option<File>,
    stop: &AtomicBool,
    buf: &mut [u8],
    out: &mut dyn Write,
) -> io::Result<()> {
    while !stop.load(Ordering::SeqCst) {
        if let Some(file) = open.as_mut() {
            copy(file, buf, out)?;
        }
        let on_disk = fs::metadata(newest).ok();
        let replaced = match (&open, &on_disk) {
            (Some(file), Some(disk)) => {
                let held = file.metadata()?;
                held.ino() != disk.ino() || held.dev() != disk.dev()
            }
            (None, Some(_)) => true,
            (_, None) => false,
        };
        if replaced {
            // Rotated: what the old file got last, then the new one from its start.
            if let Some(mut old) = open.take() {
                copy(&mut old, buf, out)?;
            }
            open = open_log(newest).ok();
            continue;
        }
        if let Some(file) = open.as_mut() {
            let position = file.stream_position()?;
            if file.metadata()?.len() < position {
                file.seek(SeekFrom::Start(0))?; // truncated in place
                continue;
            }
        }
        out.flush()?;
        std::thread::sleep(Duration::from_millis(FOLLOW_POLL_MS));
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("bootagent-logs-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("logs")).expect("dir");
        dir
    }

    fn tail_text(newest: &Path, lines: u64, chunk: usize) -> String {
        let mut out = Vec::new();
        let mut buf = vec![0u8; chunk];
        tail(newest, lines, &mut buf, &mut out).expect("tail");
        String::from_utf8_lossy(&out).into_owned()
    }

    #[test]
    fn the_last_lines_span_rotated_files_with_any_chunk_size() {
        let dir = scratch("tail");
        let newest = dir.join("logs/a.log");
        fs::write(dir.join("logs/a.log.1"), "1\n2\n3\n").expect("write");
        fs::write(&newest, "4\n5\n").expect("write");
        for chunk in [1, 2, 3, 64] {
            assert_eq!(tail_text(&newest, 1, chunk), "5\n", "chunk {chunk}");
            assert_eq!(tail_text(&newest, 2, chunk), "4\n5\n", "chunk {chunk}");
            assert_eq!(tail_text(&newest, 3, chunk), "3\n4\n5\n", "chunk {chunk}");
            assert_eq!(tail_text(&newest, 100, chunk), "1\n2\n3\n4\n5\n");
            assert_eq!(tail_text(&newest, 0, chunk), "");
        }
        fs::write(&newest, "4\n5").expect("no final newline");
        assert_eq!(tail_text(&newest, 1, 2), "5");
        assert_eq!(tail_text(&newest, 2, 2), "4\n5");
        fs::write(&newest, "").expect("empty newest");
        assert_eq!(tail_text(&newest, 2, 2), "2\n3\n");
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_known_child_without_output_prints_nothing_and_an_unknown_one_is_3() {
        let dir = scratch("known");
        fs::create_dir_all(dir.join("agents/quiet")).expect("agent dir");
        let request = |name: &str| LogsRequest {
            name: name.into(),
            follow: false,
            lines: 10,
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        assert_eq!(run(&dir, &request("quiet"), &mut out, &mut err), 0);
        assert!(out.is_empty() && err.is_empty());
        assert_eq!(run(&dir, &request("other"), &mut out, &mut err), 3);
        assert!(String::from_utf8_lossy(&err).contains("no such child: other"));
        fs::remove_dir_all(&dir).ok();
    }
}
