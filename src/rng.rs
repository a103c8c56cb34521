//! A small pseudo-random generator for jitter and identities, seeded from the
//! kernel. Not for cryptography beyond the UUID's 122 random bits, which come
//! straight from the kernel's generator.

use std::fs::File;
use std::io::Read;

/// splitmix64: tiny, fast, and good enough to spread retries apart.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn from_seed(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// Seeded from the kernel's generator, or from the time and pid when that fails.
    pub fn from_entropy() -> Self {
        let mut seed = [0u8; 8];
        if fill_random(&mut seed).is_err() {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            seed = (nanos ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
        }
        Rng::from_seed(u64::from_le_bytes(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=bound` (bound inclusive).
    pub fn below_incl(&mut self, bound: u64) -> u64 {
        match bound.checked_add(1) {
            Some(n) => self.next_u64() % n,
            None => self.next_u64(),
        }
    }

    /// `base` moved by a uniform amount within ± `pct` percent of it.
    pub fn jitter(&mut self, base: u64, pct: u64) -> u64 {
        let spread = base.saturating_mul(pct.min(100)) / 100;
        let offset = self.below_incl(spread.saturating_mul(2));
        base.saturating_sub(spread).saturating_add(offset)
    }
}

/// Fills `buf` from the kernel's random generator.
pub fn fill_random(buf: &mut [u8]) -> std::io::Result<()> {
    File::open("/dev/urandom")?.read_exact(buf)
}

/// A random UUID version 4, lowercase, from the kernel's generator.
pub fn uuid_v4() -> std::io::Result<String> {
    let mut b = [0u8; 16];
    fill_random(&mut b)?;
    Ok(format_uuid_v4(b))
}

fn format_uuid_v4(mut b: [u8; 16]) -> String {
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|byte| format!("{byte:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// True for a lowercase or uppercase UUID of the 8-4-4-4-12 hex form.
pub fn looks_like_uuid(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_v4_lowercase() {
        let id = format_uuid_v4([0xff; 16]);
        assert_eq!(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
        let id = uuid_v4().expect("urandom");
        assert!(looks_like_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"));
        assert_eq!(id, id.to_lowercase());
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut rng = Rng::from_seed(7);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..10_000 {
            let v = rng.jitter(600_000, 10);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        assert!(lo >= 540_000 && hi <= 660_000, "{lo}..{hi}");
        assert!(
            lo < 545_000 && hi > 655_000,
            "spread too narrow: {lo}..{hi}"
        );
        assert_eq!(rng.jitter(0, 50), 0);
        assert!(rng.jitter(u64::MAX, 50) >= u64::MAX / 2);
    }
}
