//! Logging: to stderr, or to a file (`-L FILE`) rotated by size, with a bounded
//! number of files. `SIGHUP` reopens the file, for external rotation tools.
//!
//! A line: `2026-12-06T04:49:00.123456Z [INFO] message` (the UTC time in RFC 3339, its
//! fraction without trailing zeros), written with one `write(2)`; only BootAgent's own
//! records (target `bootagent…`), not those of the libraries.

use log::{LevelFilter, Log, Metadata, Record};
use std::fmt::{self, Write as _};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

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
    /// A handle with no log file behind it (the simulation's).
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        LogHandle(None)
    }

    /// Reopens the log file (after an external tool moved it away).
    pub fn reopen(&self) -> io::Result<()> {
        match &self.0 {
            Some(shared) => shared.lock().unwrap_or_else(|e| e.into_inner()).reopen(),
            None => Ok(()),
        }
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
    let file = match file {
        Some(path) => Some(Arc::new(Mutex::new(Rotating::open(
            path, bytes_max, files_max,
        )?))),
        None => None,
    };
    log::set_max_level(level);
    // A second init (only possible in tests) keeps the first logger.
    let _ = log::set_boxed_logger(Box::new(Logger {
        level,
        file: file.clone(),
    }));
    Ok(LogHandle(file))
}

/// The logger: BootAgent's records at `level` or more urgent, to the file or to stderr.
struct Logger {
    level: LevelFilter,
    file: Option<Arc<Mutex<Rotating>>>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) || !record.target().starts_with("bootagent") {
            return;
        }
        let mut line = String::with_capacity(128);
        // Writing into a String cannot fail.
        let _ = writeln!(
            line,
            "{} [{}] {}",
            Rfc3339(SystemTime::now()),
            record.level(),
            record.args()
        );
        // A log line that cannot be written has nowhere else to go.
        let _ = match &self.file {
            Some(shared) => shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write_all(line.as_bytes()),
            None => io::stderr().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {
        let _ = match &self.file {
            Some(shared) => shared.lock().unwrap_or_else(|e| e.into_inner()).flush(),
            None => io::stderr().flush(),
        };
    }
}

/// A wall-clock time as RFC 3339 in UTC: `YYYY-MM-DDTHH:MM:SS[.fraction]Z`.
struct Rfc3339(SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Seconds since the epoch, rounded down, and the nanoseconds past them (a clock
        // set before 1970 gives negative seconds).
        let (secs, mut nanos) = match self.0.duration_since(UNIX_EPOCH) {
            Ok(since) => (since.as_secs() as i64, since.subsec_nanos()),
            Err(err) => {
                let before = err.duration();
                let secs = -(before.as_secs() as i64);
                match before.subsec_nanos() {
                    0 => (secs, 0),
                    n => (secs - 1, 1_000_000_000 - n),
                }
            }
        };
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let second_of_day = secs.rem_euclid(86_400);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
            second_of_day / 3600,
            second_of_day / 60 % 60,
            second_of_day % 60
        )?;
        if nanos != 0 {
            let mut digits = 9;
            while nanos % 10 == 0 {
                nanos /= 10;
                digits -= 1;
            }
            write!(f, ".{nanos:0digits$}")?;
        }
        f.write_str("Z")
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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

    fn at(secs: i64, nanos: u32) -> String {
        let time = if secs >= 0 {
            UNIX_EPOCH + std::time::Duration::new(secs as u64, nanos)
        } else {
            UNIX_EPOCH - std::time::Duration::from_secs(secs.unsigned_abs())
                + std::time::Duration::from_nanos(u64::from(nanos))
        };
        Rfc3339(time).to_string()
    }

    #[test]
    fn times_are_rfc3339_in_utc() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_763_700_000, 0), "2025-11-21T04:40:00Z");
        assert_eq!(at(1_763_700_000, 500_000_000), "2025-11-21T04:40:00.5Z");
        assert_eq!(
            at(1_763_700_000, 123_456_789),
            "2025-11-21T04:40:00.123456789Z"
        );
        assert_eq!(at(1_763_700_000, 1_000), "2025-11-21T04:40:00.000001Z");
        // Leap days, the end of a century that is not a leap year, and one that is.
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399, 0), "2100-02-28T23:59:59Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00Z");
        assert_eq!(at(253_402_300_799, 0), "9999-12-31T23:59:59Z");
        // A clock set before 1970.
        assert_eq!(at(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(at(-1, 250_000_000), "1969-12-31T23:59:59.25Z");
    }

    #[test]
    fn lines_name_the_level_after_the_time() {
        let dir = std::env::temp_dir().join(format!("bootagent-logline-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("agent.log");
        let logger = Logger {
            level: LevelFilter::Info,
            file: Some(Arc::new(Mutex::new(
                Rotating::open(&path, 1 << 20, 2).expect("open"),
            ))),
        };
        let record = |level, target, text| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .target(target)
                    .args(format_args!("{text}"))
                    .build(),
            );
        };
        record(log::Level::Warn, "bootagent::agent", "server said no");
        record(log::Level::Debug, "bootagent::agent", "too detailed");
        record(log::Level::Info, "ureq::unversioned", "a library's record");
        record(log::Level::Error, "bootagent", "cannot write");
        let log = fs::read_to_string(&path).expect("read");
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 2, "{log}");
        for (line, rest) in lines
            .iter()
            .zip(["[WARN] server said no", "[ERROR] cannot write"])
        {
            let (time, text) = line.split_once(' ').expect("a time first");
            assert_eq!(text, rest);
            assert!(time.starts_with("20") && time.ends_with('Z'), "{time}");
            assert_eq!(&time[10..11], "T", "{time}");
        }
        fs::remove_dir_all(&dir).ok();
    }
}
