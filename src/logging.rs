//! Logging: to stderr, or to a file (`-L FILE`) rotated by size, with a bounded
//! number of files. `SIGHUP` reopens the file, for external rotation tools.

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A log file that rotates itself: `FILE` → `FILE.1` → … → `FILE.(files_max-1)`.
struct Rotating {
    path: PathBuf,
    /// Line-buffered: one write(2) per log line.
    file: Option<io::LineWriter<File>>,
    written_bytes: u64,
    bytes_max: u64,
    files_max: u32,
}

impl Rotating {
    fn open(path: &Path, bytes_max: u64, files_max: u32) -> io::Result<Self> {
        let mut log = Rotating {
            path: path.to_path_buf(),
            file: None,
            written_bytes: 0,
            bytes_max: bytes_max.max(1024),
            files_max: files_max.max(1),
        };
        log.reopen()?;
        Ok(log)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&self.path)?;
        self.written_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(io::LineWriter::new(file));
        Ok(())
    }

    fn numbered(&self, n: u32) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        if self.files_max == 1 {
            fs::remove_file(&self.path).ok();
        } else {
            for n in (1..self.files_max - 1).rev() {
                fs::rename(self.numbered(n), self.numbered(n + 1)).ok();
            }
            fs::rename(&self.path, self.numbered(1)).ok();
        }
        self.reopen()
    }
}

impl Write for Rotating {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(buf.len());
        };
        let n = file.write(buf)?;
        self.written_bytes = self.written_bytes.saturating_add(n as u64);
        // Rotate between lines only, so that no line is split over two files.
        if self.written_bytes >= self.bytes_max && buf[..n].ends_with(b"\n") {
            self.rotate()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().map_or(Ok(()), Write::flush)
    }
}

/// A handle on the log file, for `SIGHUP`.
#[derive(Clone)]
pub struct LogHandle(Option<Arc<Mutex<Rotating>>>);

impl LogHandle {
    /// Reopens the log file (after an external tool moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        match &self.0 {
            Some(shared) => shared.lock().unwrap_or_else(|e| e.into_inner()).reopen(),
            None => Ok(()),
        }
    }
}

struct SharedWriter(Arc<Mutex<Rotating>>);

impl Write for SharedWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).flush()
    }
}

/// The log level for `-v` (positive) and `-q` (negative) counts.
pub fn level(verbosity: i8) -> LevelFilter {
    match verbosity {
        i8::MIN..=-2 => LevelFilter::Error,
        -1 => LevelFilter::Warn,
        0 => LevelFilter::Info,
        1 => LevelFilter::Debug,
        _ => LevelFilter::Trace,
    }
}

/// Installs the logger, to `file` if given, else to stderr.
pub fn init(
    level: LevelFilter,
    file: Option<&Path>,
    bytes_max: u64,
    files_max: u32,
) -> io::Result<LogHandle> {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .add_filter_allow_str("bootagent")
        .build();
    let (handle, result) = match file {
        Some(path) => {
            let shared = Arc::new(Mutex::new(Rotating::open(path, bytes_max, files_max)?));
            let writer = SharedWriter(Arc::clone(&shared));
            (
                LogHandle(Some(shared)),
                WriteLogger::init(level, config, writer),
            )
        }
        None => (
            LogHandle(None),
            WriteLogger::init(level, config, io::stderr()),
        ),
    };
    // A second init (only possible in tests) keeps the first logger.
    let _ = result;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_bounds_size_and_count() {
        let dir = std::env::temp_dir().join(format!("bootagent-log-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agent.log");
        let mut log = Rotating::open(&path, 1024, 3).expect("open");
        let line = [b'x'; 99];
        for _ in 0..200 {
            log.write_all(&line).expect("write");
            log.write_all(b"\n").expect("write");
        }
        let mut names: Vec<String> = fs::read_dir(&dir)
            .expect("list")
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        assert_eq!(names, ["agent.log", "agent.log.1", "agent.log.2"]);
        for name in names {
            let len = fs::metadata(dir.join(&name)).expect("stat").len();
            assert!(len <= 1024 + 100, "{name} is {len} bytes");
            assert_eq!(len % 100, 0, "{name}: lines are never split");
        }
        fs::remove_dir_all(&dir).ok();
    }
}
