//! Is a file a BootAgent for this machine? An ELF executable of this architecture
//! that answers `-V` within `VERSION_PROBE_MS` with `bootagent VERSION (…)` on its
//! first line, VERSION valid (it names `bin/VERSION`). Anything else is errcode 4.

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the candidate may take to answer `-V`.
pub const VERSION_PROBE_MS: u64 = 5_000;
/// Most output of `-V` read; the rest is not looked at.
const VERSION_OUTPUT_BYTES_MAX: u64 = 4096;
/// Pause between two looks at the probed process.
const PROBE_POLL_MS: u64 = 10;
/// Bytes of the ELF header looked at.
const ELF_HEADER_BYTES: usize = 20;

const ET_EXEC: u16 = 2;
const ET_DYN: u16 = 3;

/// `e_machine` of the architecture this binary was built for.
const fn this_machine() -> u16 {
    if cfg!(target_arch = "x86_64") {
        62
    } else if cfg!(target_arch = "aarch64") {
        183
    } else if cfg!(target_arch = "arm") {
        40
    } else if cfg!(target_arch = "x86") {
        3
    } else if cfg!(target_arch = "riscv64") {
        243
    } else if cfg!(any(target_arch = "mips", target_arch = "mips64")) {
        8
    } else if cfg!(target_arch = "powerpc64") {
        21
    } else {
        0
    }
}

/// Checks an ELF header against this machine: class, byte order, type, machine.
pub fn elf_machine_ok(header: &[u8]) -> Result<(), String> {
    let Some(head) = header.get(..ELF_HEADER_BYTES) else {
        return Err(format!("not an ELF executable ({} bytes)", header.len()));
    };
    if head.get(..4) != Some(b"\x7fELF".as_slice()) {
        return Err("not an ELF executable (no ELF magic)".to_string());
    }
    let class = if cfg!(target_pointer_width = "64") {
        2
    } else {
        1
    };
    let data = if cfg!(target_endian = "little") { 1 } else { 2 };
    if head[4] != class || head[5] != data {
        return Err(format!(
            "an ELF for another machine (class {}, byte order {})",
            head[4], head[5]
        ));
    }
    let read16 = |at: usize| {
        let bytes = [head[at], head[at + 1]];
        if data == 1 {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    let kind = read16(16);
    if kind != ET_EXEC && kind != ET_DYN {
        return Err(format!(
            "an ELF file that is not an executable (type {kind})"
        ));
    }
    let machine = read16(18);
    if machine != this_machine() {
        return Err(format!(
            "an ELF executable for another architecture (machine {machine}, this is {} {})",
            std::env::consts::ARCH,
            this_machine()
        ));
    }
    Ok(())
}

/// The version of `-V`'s output: the second word of the first line, whose first
/// word is `bootagent`, valid as a version.
pub fn parse_version_output(output: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(output);
    let first = text.lines().next().unwrap_or("");
    let mut words = first.split_whitespace();
    let shown: String = first.chars().take(80).collect();
    if words.next() != Some("bootagent") {
        return Err(format!("-V printed {shown:?}, not \"bootagent VERSION\""));
    }
    match words.next() {
        Some(version) if crate::unpack::valid_version(version) => Ok(version.to_string()),
        Some(_) => Err(format!("-V printed {shown:?}: not a valid version")),
        None => Err(format!("-V printed {shown:?}: no version")),
    }
}

/// The line of `-V` by which a binary says it takes the children's sd_notify
/// sockets over in an exec hand-over (`CarriedSlot::notify_fd`). A binary without it
/// (an older BootAgent) is handed no socket: it could not bind the names again while
/// an inherited descriptor it does not know of holds them.
pub const NOTIFY_SOCKETS_LINE: &str = "hand-over: notify-sockets";

/// True when `-V`'s output has [`NOTIFY_SOCKETS_LINE`].
pub fn takes_notify_sockets(output: &[u8]) -> bool {
    String::from_utf8_lossy(output)
        .lines()
        .any(|line| line.trim_end() == NOTIFY_SOCKETS_LINE)
}

/// What the check of a new binary found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub version: String,
    /// It takes the notify sockets over (see [`NOTIFY_SOCKETS_LINE`]).
    pub notify_sockets: bool,
}

/// Checks the file at `path` (already executable): its machine, and its version.
pub fn check_binary(path: &Path) -> Result<Checked, String> {
    let mut header = Vec::with_capacity(ELF_HEADER_BYTES);
    File::open(path)
        .and_then(|f| f.take(ELF_HEADER_BYTES as u64).read_to_end(&mut header))
        .map_err(|err| format!("cannot read the new binary: {err}"))?;
    elf_machine_ok(&header)?;
    let output = probe_version(path)?;
    Ok(Checked {
        version: parse_version_output(&output)?,
        notify_sockets: takes_notify_sockets(&output),
    })
}

/// Runs `path -V` in its own process group, with an empty environment, for at most
/// `VERSION_PROBE_MS`; returns at most `VERSION_OUTPUT_BYTES_MAX` of its output.
fn probe_version(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(path)
        .arg("-V")
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot run the new binary: {err}"))?;
    let pid = child.id() as i32;
    let (tx, rx) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        let reader = std::thread::Builder::new()
            .name("probe".to_string())
            .spawn(move || {
                let mut out = Vec::new();
                let _ = stdout.take(VERSION_OUTPUT_BYTES_MAX).read_to_end(&mut out);
                let _ = tx.send(out);
            });
        if reader.is_err() {
            let _ = crate::sys::signal_group(pid, libc::SIGKILL);
            let _ = child.wait();
            return Err("cannot start a thread to read -V".to_string());
        }
    }
    let deadline = Instant::now() + Duration::from_millis(VERSION_PROBE_MS);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(PROBE_POLL_MS))
            }
            Ok(None) | Err(_) => break None,
        }
    };
    // Whatever it left behind in its group goes too.
    let _ = crate::sys::signal_group(pid, libc::SIGKILL);
    let Some(status) = status else {
        let _ = child.wait();
        return Err(format!(
            "the new binary did not answer -V within {} s",
            VERSION_PROBE_MS / 1000
        ));
    };
    let output = rx
        .recv_timeout(Duration::from_millis(VERSION_PROBE_MS))
        .unwrap_or_default();
    if !status.success() {
        return Err(format!("the new binary's -V failed: {status}"));
    }
    Ok(output)
}
