//! The local status view: a state file that the running agent keeps current
//! (`state.json` in the data directory), and `bootagent status`, which prints it
//! as a table for a person at the console.
//!
//! Exit codes of `bootagent status`: 0 every child is fine (or there is none: an empty
//! table), 1 a child is `fatal` or `killed`, 3 no state to show (BootAgent never ran
//! with this data directory).

use crate::supervisor::ChildView;
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

pub const STATE_FILE: &str = "state.json";
/// Largest state file read.
const STATE_BYTES_MAX: u64 = 4 * 1024 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateFile {
    /// The agent that wrote it.
    pub pid: u32,
    /// Wall-clock Unix seconds of the last write.
    pub updated: i64,
    pub children: Vec<ChildView>,
    /// The running BootAgent's version and the binary it runs from.
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub exe: String,
}

impl StateFile {
    /// Replaces the file atomically and durably; mode 0600, as it shows the
    /// children's envs.
    pub fn write(&self, path: &Path) -> io::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        bytes.push(b'\n');
        crate::atomic_file::replace(path, &bytes, 0o600) // envs may carry secrets
    }

    pub fn read(path: &Path) -> io::Result<StateFile> {
        let file = File::open(path)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut io::Read::take(file, STATE_BYTES_MAX), &mut bytes)?;
        serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// `bootagent status [NAME]`: prints the table (of one child with `name`); returns
/// the exit code.
pub fn print(
    data_dir: &Path,
    running: bool,
    now_wall: i64,
    name: Option<&str>,
    out: &mut dyn Write,
) -> io::Result<u8> {
    let path = data_dir.join(STATE_FILE);
    let mut state = match StateFile::read(&path) {
        Ok(state) => state,
        // The agent writes its view when a child changes: one that never had a child
        // has none yet, but it has an identity. Its table is empty.
        Err(err) if err.kind() == io::ErrorKind::NotFound => match meta_written(data_dir) {
            Some(updated) => StateFile {
                pid: 0,
                updated,
                children: Vec::new(),
                version: String::new(),
                exe: String::new(),
            },
            None => {
                writeln!(
                    out,
                    "no status: BootAgent has not run with the data directory {}",
                    data_dir.display()
                )?;
                return Ok(3);
            }
        },
        Err(err) => {
            writeln!(out, "no status: {}: {err}", path.display())?;
            return Ok(3);
        }
    };
    if let Some(name) = name {
        state.children.retain(|c| c.name == name);
        if state.children.is_empty() {
            writeln!(out, "no such child: {name}")?;
            return Ok(3);
        }
    }
    if !running {
        writeln!(
            out,
            "bootagent is not running; last known state, {} ago:",
            duration(now_wall.saturating_sub(state.updated))
        )?;
    }
    let rows: Vec<[String; 8]> = state
        .children
        .iter()
        .map(|c| {
            let up = match (c.status.as_str(), c.started) {
                ("running", Some(started)) if running => duration(now_wall.saturating_sub(started)),
                _ => "-".to_string(),
            };
            [
                c.name.clone(),
                c.version.clone(),
                c.status.clone(),
                if c.pid == 0 {
                    "-".into()
                } else {
                    c.pid.to_string()
                },
                up,
                c.restarts.to_string(),
                health_cell(c),
                c.last_exit.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = [
        "NAME",
        "VERSION",
        "STATE",
        "PID",
        "UPTIME",
        "RESTARTS",
        "HEALTH",
        "LAST EXIT",
    ]
    .map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    for c in &state.children {
        if let Some(text) = &c.status_text {
            writeln!(out, "{}: {text}", c.name)?;
        }
    }
    let unhealthy = state.children.iter().any(|c| {
        c.status == "fatal" || c.status == "killed" || c.health.as_deref() == Some("unhealthy")
    });
    self_upgrade_lines(data_dir, &state, out)?;
    Ok(u8::from(unhealthy))
}

/// "ok", "unhealthy", "not ready" (with `notify`, before `READY=1`), or "-"
/// without a health check.
fn health_cell(c: &ChildView) -> String {
    match (c.health.as_deref(), c.ready) {
        (Some("ok"), Some(false)) if c.status == "running" => "not ready".into(),
        (Some(word), _) => word.into(),
        (None, _) => "-".into(),
    }
}

/// The running version, where it came from, and a self-upgrade pending or failed.
fn self_upgrade_lines(data_dir: &Path, state: &StateFile, out: &mut dyn Write) -> io::Result<()> {
    if state.version.is_empty() {
        return Ok(());
    }
    let exe = (!state.exe.is_empty()).then(|| Path::new(&state.exe));
    let lines = match crate::selfup::Store::new(data_dir).load() {
        Ok(selfup) => crate::selfup::describe(&selfup, &state.version, exe),
        Err(err) => vec![format!("self-upgrade state: {err}")],
    };
    writeln!(out)?;
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(())
}

/// When the metafile was last written (wall-clock Unix seconds), if there is one.
fn meta_written(data_dir: &Path) -> Option<i64> {
    let modified = std::fs::metadata(data_dir.join(crate::meta::META_FILE))
        .ok()?
        .modified()
        .ok()?;
    let since_epoch = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    Some(i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX))
}

/// "2d03h", "5m07s", "42s".
fn duration(secs: i64) -> String {
    let s = secs.max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn view(name: &str, status: &str) -> ChildView {
        ChildView {
            name: name.into(),
            version: "1.2.3".into(),
            status: status.into(),
            pid: if status == "running" { 4242 } else { 0 },
            started: Some(1_000),
            restarts: 2,
            last_exit: (status != "running").then(|| "exited with code 1 after 3 s".into()),
            limits: "CPU 10%, memory 20M".into(),
            envs: vec!["LEVEL=debug".into()],
            ready: None,
            health: None,
            status_text: None,
        }
    }

    #[test]
    fn table_and_exit_codes() {
        let dir = std::env::temp_dir().join(format!("bootagent-status-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let state = StateFile {
            pid: 1,
            updated: 1_000,
            children: vec![view("BasicAgent", "running"), view("other", "stoped")],
            version: String::new(),
            exe: String::new(),
        };
        state.write(&dir.join(STATE_FILE)).expect("write");
        let mut out = Vec::new();
        assert_eq!(print(&dir, true, 1_125, None, &mut out).expect("print"), 0);
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("NAME        VERSION  STATE"), "{text}");
        assert!(
            text.contains("BasicAgent  1.2.3    running  4242  2m05s   2"),
            "{text}"
        );
        assert!(
            text.contains(
                "other       1.2.3    stoped   -     -       2         -       exited with code 1"
            ),
            "{text}"
        );

        let state = StateFile {
            children: vec![view("a", "running"), view("b", "fatal")],
            ..state
        };
        state.write(&dir.join(STATE_FILE)).expect("write");
        let mut out = Vec::new();
        assert_eq!(print(&dir, false, 1_000, None, &mut out).expect("print"), 1);
        assert!(String::from_utf8_lossy(&out).contains("not running"));
        let mut out = Vec::new();
        assert_eq!(
            print(&dir, true, 1_000, Some("a"), &mut out).expect("print"),
            0
        );
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains("a ") && !text.contains("b "), "{text}");
        let mut out = Vec::new();
        assert_eq!(
            print(&dir, true, 1_000, Some("zz"), &mut out).expect("print"),
            3
        );
        assert!(String::from_utf8_lossy(&out).contains("no such child: zz"));

        // Health: a child not yet ready, one hung (exit code 1), the STATUS= text.
        let state = StateFile {
            children: vec![
                ChildView {
                    ready: Some(false),
                    health: Some("ok".into()),
                    status_text: Some("loading 3 of 9".into()),
                    ..view("web", "running")
                },
                ChildView {
                    health: Some("unhealthy".into()),
                    ..view("db", "restarting")
                },
            ],
            ..state
        };
        state.write(&dir.join(STATE_FILE)).expect("write");
        let mut out = Vec::new();
        assert_eq!(print(&dir, true, 1_000, None, &mut out).expect("print"), 1);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("not ready") && text.contains("unhealthy"),
            "{text}"
        );
        assert!(text.contains("\nweb: loading 3 of 9\n"), "{text}");

        // No view yet, but an identity: an agent without children, an empty table.
        fs::remove_file(dir.join(STATE_FILE)).expect("remove the view");
        fs::write(dir.join(crate::meta::META_FILE), "{}").expect("write a metafile");
        let mut out = Vec::new();
        assert_eq!(print(&dir, true, 0, None, &mut out).expect("print"), 0);
        let text = String::from_utf8_lossy(&out);
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            ["NAME  VERSION  STATE  PID  UPTIME  RESTARTS  HEALTH  LAST EXIT"],
            "{text}"
        );

        fs::remove_dir_all(&dir).ok();
        let mut out = Vec::new();
        assert_eq!(print(&dir, true, 0, None, &mut out).expect("print"), 3);
        assert!(String::from_utf8_lossy(&out).contains("has not run"));
    }
}
