//! The `limits` object of a child's `agent.json`, read into [`ResourceLimits`].

use std::fmt;

use serde_json::Value;

use super::shared::quoted;

pub(super) const KIB: u64 = 1024;
pub(super) const MIB: u64 = 1024 * KIB;
pub(super) const GIB: u64 = 1024 * MIB;

/// Smallest memory limit: below it not even a shell starts.
pub const MEMORY_BYTES_MIN: u64 = MIB;
/// Largest memory limit, 1 TiB: above any host BootAgent runs on, so a bigger value is
/// a mistake, not a wish.
pub const MEMORY_BYTES_MAX: u64 = 1024 * GIB;
/// Smallest CPU limit: 1 ms per 100 ms period is the kernel's smallest CFS quota.
pub const CPU_PCT_MIN: u32 = 1;
/// One whole CPU; the largest limit is this times the number of CPUs.
pub const CPU_PCT_PER_CPU: u32 = 100;
/// Keys of the `limits` object, as docs/protocol.md spells them (matched in any case).
const CPU_KEY: &str = "CPU";
const MEMORY_KEY: &str = "memory";

/// Parsed limits of one child.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    /// Percent of one CPU; up to 100 × the number of CPUs.
    pub cpu_pct: Option<u32>,
    pub memory_bytes: Option<u64>,
}

impl ResourceLimits {
    pub fn is_empty(&self) -> bool {
        self.cpu_pct.is_none() && self.memory_bytes.is_none()
    }
}

/// In the syntax of the `limits` object: `CPU 10%, memory 20M`, or `none`.
impl fmt::Display for ResourceLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut separator = "";
        if let Some(pct) = self.cpu_pct {
            write!(f, "{CPU_KEY} {pct}%")?;
            separator = ", ";
        }
        if let Some(bytes) = self.memory_bytes {
            write!(f, "{separator}{MEMORY_KEY} {}", Bytes(bytes))?;
        }
        Ok(())
    }
}

/// Parses a `limits` object; `cpus` is the number of CPUs (for the upper bound of the
/// CPU limit). The CPU limit is a string `"N%"`, N whole. The memory limit is a string
/// of digits with an optional `K`, `M` or `G` suffix (either case; powers of 1024), or a
/// JSON number of bytes (unambiguous, so accepted). Keys are case-insensitive; an
/// unknown key, a key given twice and a malformed or out-of-range value are errors,
/// each a one-line message. `{}` means no limits.
pub fn parse_limits(value: &Value, cpus: u32) -> Result<ResourceLimits, String> {
    let Value::Object(map) = value else {
        return Err(format!(
            "limits must be an object, not {}",
            crate::wire::kind(value)
        ));
    };
    let mut limits = ResourceLimits::default();
    for (key, value) in map {
        if key.eq_ignore_ascii_case(CPU_KEY) {
            if limits.cpu_pct.is_some() {
                return Err(format!("limit {CPU_KEY} is given twice"));
            }
            limits.cpu_pct = Some(parse_cpu(value, cpus)?);
        } else if key.eq_ignore_ascii_case(MEMORY_KEY) {
            if limits.memory_bytes.is_some() {
                return Err(format!("limit {MEMORY_KEY} is given twice"));
            }
            limits.memory_bytes = Some(parse_memory(value)?);
        } else {
            return Err(format!(
                "unknown limit {} (known: {CPU_KEY}, {MEMORY_KEY})",
                quoted(key)
            ));
        }
    }
    Ok(limits)
}

fn parse_cpu(value: &Value, cpus: u32) -> Result<u32, String> {
    let Value::String(text) = value else {
        return Err(format!(
            "{CPU_KEY} limit must be a string like \"10%\", not {}",
            crate::wire::kind(value)
        ));
    };
    let Some(pct) = text.strip_suffix('%').and_then(decimal) else {
        return Err(format!(
            "{CPU_KEY} limit {} must be a whole percentage like \"10%\"",
            quoted(text)
        ));
    };
    let cpus = cpus.max(1);
    let max = CPU_PCT_PER_CPU.saturating_mul(cpus);
    match u32::try_from(pct) {
        Ok(pct) if (CPU_PCT_MIN..=max).contains(&pct) => Ok(pct),
        _ => Err(format!(
            "{CPU_KEY} limit {} is out of range {CPU_PCT_MIN}%..{max}% ({cpus} CPUs)",
            quoted(text)
        )),
    }
}

fn parse_memory(value: &Value) -> Result<u64, String> {
    let (bytes, shown) = match value {
        Value::Number(number) => match number.as_u64() {
            Some(bytes) => (bytes, number.to_string()),
            None => return Err(format!("{MEMORY_KEY} limit {number} must be a whole number of bytes")),
        },
        Value::String(text) => match parse_size(text) {
            Some(bytes) => (bytes, quoted(text)),
            None => {
                return Err(format!(
                    "{MEMORY_KEY} limit {} must be digits with an optional K, M or G suffix, like \"20M\"",
                    quoted(text)
                ))
            }
        },
        other => {
            return Err(format!(
                "{MEMORY_KEY} limit must be a string like \"20M\" or a number of bytes, not {}",
                crate::wire::kind(other)
            ))
        }
    };
    if (MEMORY_BYTES_MIN..=MEMORY_BYTES_MAX).contains(&bytes) {
        return Ok(bytes);
    }
    let (min, max) = (Bytes(MEMORY_BYTES_MIN), Bytes(MEMORY_BYTES_MAX));
    Err(format!(
        "{MEMORY_KEY} limit {shown} is out of range {min}..{max}"
    ))
}

/// `"20M"` → 20 MiB; saturates, so that a huge value is out of range, not malformed.
fn parse_size(text: &str) -> Option<u64> {
    let (digits, unit) = if let Some(digits) = text.strip_suffix(['K', 'k']) {
        (digits, KIB)
    } else if let Some(digits) = text.strip_suffix(['M', 'm']) {
        (digits, MIB)
    } else if let Some(digits) = text.strip_suffix(['G', 'g']) {
        (digits, GIB)
    } else {
        (text, 1)
    };
    decimal(digits).map(|n| n.saturating_mul(unit))
}

/// ASCII digits only (no sign, no space); saturates at `u64::MAX`.
fn decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(text.parse().unwrap_or(u64::MAX)) // only overflow can fail here
}

/// A byte count in the syntax of the memory limit: the largest suffix that divides it.
struct Bytes(u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, suffix) in [(GIB, 'G'), (MIB, 'M'), (KIB, 'K')] {
            if self.0 >= unit && self.0.is_multiple_of(unit) {
                return write!(f, "{}{suffix}", self.0 / unit);
            }
        }
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
