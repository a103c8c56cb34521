//! The fields of a job that other modules check too, as pure functions: the
//! `errcode` values, agent names, `envs`, checksums (and hex) and versions
//! (docs/protocol.md section 7). Jobs, the supervisor (names and `envs` of
//! `agent.json`), the downloader (checksums) and the unpacker (versions) import
//! this module; it imports none of them.

use serde_json::Value;
use std::collections::BTreeMap;

/// `errcode` values of section 7.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum ErrCode {
    Success = 0,
    Invalid = 1,
    DownloadFailed = 2,
    ChecksumMismatch = 3,
    BadPackage = 4,
    InstallFailed = 5,
    StartFailed = 6,
    NoSuchAgent = 7,
    Internal = 9,
}

/// Most environment variables a child gets from its settings.
const ENVS_MAX: usize = 256;
/// Longest environment variable (name plus value).
const ENV_BYTES_MAX: usize = 32 * 1024;
/// Longest version string (section 7).
pub const VERSION_BYTES_MAX: usize = 64;
/// A version that would collide with the `current` symlink.
const RESERVED_VERSION: &str = "current";
/// Characters of a bad field shown in a message.
const SHOWN_CHARS_MAX: usize = 256;

/// Reads `envs`: names of letters, digits and `_`; `BOOT_AGENT_*` is reserved.
pub fn parse_envs(value: &Value) -> Result<BTreeMap<String, String>, String> {
    read_envs(value).map_err(|message| crate::message::one_line(&message))
}

fn read_envs(value: &Value) -> Result<BTreeMap<String, String>, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "envs is {}, not an object",
            crate::message::kind(value)
        ));
    };
    if map.len() > ENVS_MAX {
        return Err(format!(
            "envs has {} entries, more than {ENVS_MAX}",
            map.len()
        ));
    }
    let mut envs = BTreeMap::new();
    for (name, value) in map {
        let Value::String(value) = value else {
            return Err(format!("envs.{name} must be a string"));
        };
        let valid_name = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(format!("envs: {name:?} is not a valid variable name"));
        }
        if name.starts_with("BOOT_AGENT_") || name == "PATH" && value.is_empty() {
            return Err(format!(
                "envs: {name} is set by BootAgent and cannot be replaced"
            ));
        }
        if value.contains('\0') || name.len() + value.len() > ENV_BYTES_MAX {
            return Err(format!(
                "envs.{name}: NUL byte, or longer than {ENV_BYTES_MAX} bytes"
            ));
        }
        envs.insert(name.clone(), value.clone());
    }
    Ok(envs)
}

/// A child name (section 7): 1–64 of `A–Z a–z 0–9 . _ -`, not starting with `.`.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Parses `SHA256:` followed by 64 hex digits (either case; the prefix too).
pub fn parse_checksum(text: &str) -> Result<[u8; 32], String> {
    const PREFIX: &str = "SHA256:";
    const HEX_DIGITS: usize = 64;
    let digits = match text.get(..PREFIX.len()) {
        Some(prefix) if prefix.eq_ignore_ascii_case(PREFIX) => &text[PREFIX.len()..],
        _ => return Err(format!("checksum must start with {PREFIX}: {}", clip(text))),
    };
    if digits.len() != HEX_DIGITS {
        return Err(format!(
            "checksum needs {HEX_DIGITS} hex digits after {PREFIX}, got {} characters",
            digits.chars().count()
        ));
    }
    let mut sum = [0u8; 32];
    for (i, pair) in digits.as_bytes().chunks(2).enumerate() {
        match (hex_value(pair[0]), hex_value(pair[1])) {
            (Some(high), Some(low)) => sum[i] = high << 4 | low,
            _ => return Err(format!("checksum has a non-hex digit: {}", clip(text))),
        }
    }
    Ok(sum)
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// The value of one hexadecimal digit, either case.
pub fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// A version usable as a directory name: 1–64 of `A–Z a–z 0–9 . _ - + ~`, not
/// starting with `.`, not `current`, not ending in `.tmp`, `.json` or `.sha256` (names
/// BootAgent keeps beside the versions).
pub fn valid_version(version: &str) -> bool {
    (1..=VERSION_BYTES_MAX).contains(&version.len())
        && !version.starts_with('.')
        && version != RESERVED_VERSION
        && !version.ends_with(".tmp")
        && !version.ends_with(".json")
        && !version.ends_with(".sha256")
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~'))
}

/// The running binary's version (`BOOT_VERSION` at build time).
pub fn running_version() -> &'static str {
    env!("BOOT_VERSION")
}

/// At most `SHOWN_CHARS_MAX` characters of `text`, control characters as `?`.
fn clip(text: &str) -> String {
    crate::message::clip(text, SHOWN_CHARS_MAX)
}
