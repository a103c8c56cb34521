//! Facts about the host for the register request: name, kernel, CPUs, memory.
//! Read once at start; a fact that cannot be read is left empty or zero.

use crate::wire::HostInfo;
use std::fs;

/// Longest host name sent; a longer one is cut.
const HOSTNAME_BYTES_MAX: usize = 255;

/// The version string of the protocol: `bootagent-1.0.0-aarch64`.
pub fn version_string() -> String {
    format!(
        "bootagent-{}-{}",
        env!("BOOT_VERSION"),
        std::env::consts::ARCH
    )
}

pub fn hostname() -> String {
    let name = read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| uname_field(|u| &u.nodename))
        .unwrap_or_else(|| "localhost".to_string());
    name.chars().take(HOSTNAME_BYTES_MAX).collect()
}

const BOOT_ID_FILE: &str = "/proc/sys/kernel/random/boot_id";

pub fn host_info() -> HostInfo {
    HostInfo {
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        kernel: uname_field(|u| &u.release).unwrap_or_default(),
        cpus: std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1),
        mem_kb: mem_total_kb().unwrap_or(0),
        boot_id: boot_id(),
    }
}

/// The kernel's boot id: the same for every process of one boot of the host, new
/// at every boot; empty where the kernel does not have it.
pub fn boot_id() -> String {
    read_trimmed(BOOT_ID_FILE).unwrap_or_default()
}

fn read_trimmed(path: &str) -> Option<String> {
    let text = fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

fn mem_total_kb() -> Option<u64> {
    let meminfo = fs::read_to_string("/proc/meminfo").ok()?;
    meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

fn uname_field(pick: fn(&libc::utsname) -> &[libc::c_char; 65]) -> Option<String> {
    crate::sys::uname().map(|u| {
        let field = pick(&u);
        let bytes: Vec<u8> = field
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
