//! The fuzzer of `tests/fuzz.rs`: a seeded PRNG, mutators for bytes, JSON values and
//! tar archives, and the loop that runs one target. Plain Rust and deterministic (the
//! same seed gives the same inputs), so that it runs in `cargo test` on a stable
//! compiler. No coverage feedback (`tests/libfuzzer/` has that): structured mutations
//! of valid seeds, stacked a few at a time.
//! This file holds the PRNG, the loop and byte mutations; `json.rs` and `tar.rs` the
//! structured ones.
//!
//! Environment:
//! - `BOOT_FUZZ_SEED`: the seed (decimal or `0x` hex); default a fixed one.
//! - `BOOT_FUZZ_SECONDS`: run each target this long instead of its fixed iterations.
//! - `BOOT_FUZZ_ITERATIONS`: run each target this many iterations.
//! - `BOOT_FUZZ_REPLAY`: a saved input (`fuzz-failures/TARGET-N`, or a libFuzzer
//!   crash `target/libfuzzer/artifacts/TARGET/crash-…`): its target runs it
//!   alone, outside `catch_unwind`, so that a panic shows its backtrace.

use std::fmt::Write as _;
use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The seed of `cargo test`, so that CI runs the same inputs every time.
const SEED_DEFAULT: u64 = 0xB007_A6E7_F022_5EED;
/// Failures a target collects before it stops.
const FAILURES_MAX: usize = 3;
/// Largest generated input, BootAgent's bound on an answer body (1 MiB); bigger ones
/// are cut, which also keeps the iteration rate up.
const INPUT_BYTES_MAX: usize = 1 << 20;
/// Bytes of a failing input shown in the test's message.
const PREVIEW_BYTES: usize = 160;

/// splitmix64 (Steele, Lea and Flood, 2014): tiny, fast, and plenty for picking mutations.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; 0 when `n` is 0.
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A length up to `max`: mostly tiny, sometimes anything.
    pub fn size(&mut self, max: usize) -> usize {
        let cap = match self.below(8) {
            0..=4 => 8,
            5 | 6 => 64,
            _ => max,
        };
        self.below(cap.min(max) + 1)
    }
}

/// FNV-1a: a stable hash, to derive a target's seed from its name and an input's
/// settings (limits, previous copy) from its bytes, so that a saved input replays alike.
pub fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// A check's verdict on one input; `Err` is a broken invariant.
pub type Verdict = Result<Accepted, String>;

/// Whether the code under test accepted the input or refused it (both fine).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accepted {
    Yes,
    No,
}

enum Budget {
    Iterations(u64),
    Time(Duration),
}

/// Runs one target: its corpus as it is, then mutations of it, each input through
/// `check` inside `catch_unwind`. Failing inputs are saved under
/// `<target dir>/fuzz-failures/`, and the test fails naming them.
pub fn fuzz(
    target: &str,
    iterations: u64,
    corpus: &[Vec<u8>],
    generate: &mut dyn FnMut(&mut Rng) -> Vec<u8>,
    check: &dyn Fn(&[u8]) -> Verdict,
) {
    if let Some(path) = std::env::var_os("BOOT_FUZZ_REPLAY") {
        replay(target, Path::new(&path), check);
        return;
    }
    let seed = env_number("BOOT_FUZZ_SEED").unwrap_or(SEED_DEFAULT);
    let budget = match (
        std::env::var("BOOT_FUZZ_SECONDS").ok(),
        env_number("BOOT_FUZZ_ITERATIONS"),
    ) {
        (Some(seconds), _) => Budget::Time(Duration::from_secs_f64(
            seconds.parse().expect("BOOT_FUZZ_SECONDS is a number"),
        )),
        (None, Some(count)) => Budget::Iterations(count),
        (None, None) => Budget::Iterations(iterations),
    };
    let mut rng = Rng::new(seed ^ fnv(target.as_bytes()));
    let start = Instant::now();
    let (mut accepted, mut refused, mut done) = (0u64, 0u64, 0u64);
    let (mut input_bytes, mut checking) = (0u64, Duration::ZERO);
    let mut slowest = (Duration::ZERO, 0usize);
    let mut failures: Vec<String> = Vec::new();
    loop {
        let over = match budget {
            Budget::Iterations(count) => done >= count.max(corpus.len() as u64),
            Budget::Time(limit) => start.elapsed() >= limit && done >= corpus.len() as u64,
        };
        if over || failures.len() >= FAILURES_MAX {
            break;
        }
        let input = match corpus.get(done as usize) {
            Some(seed_input) => seed_input.clone(),
            None => {
                let mut input = generate(&mut rng);
                input.truncate(INPUT_BYTES_MAX);
                input
            }
        };
        let checked = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
        let took = checked.elapsed();
        checking += took;
        input_bytes += input.len() as u64;
        if took > slowest.0 {
            slowest = (took, input.len());
        }
        let problem = match outcome {
            Ok(Ok(Accepted::Yes)) => {
                accepted += 1;
                None
            }
            Ok(Ok(Accepted::No)) => {
                refused += 1;
                None
            }
            Ok(Err(why)) => Some(why),
            Err(payload) => Some(format!("panic: {}", panic_text(payload.as_ref()))),
        };
        if let Some(why) = problem {
            let saved = save_failure(target, done, &input);
            failures.push(format!(
                "{why}\n    input ({} bytes): {}\n    saved as {}",
                input.len(),
                preview(&input),
                saved.display()
            ));
        }
        done += 1;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!(
        "fuzz {target}: {done} inputs in {seconds:.2} s ({:.0}/s, {:.0} % checking), \
         {accepted} accepted, {refused} refused; {} bytes on average, slowest {:.1} ms \
         ({} bytes); seed {seed:#x}",
        done as f64 / seconds.max(1e-9),
        100.0 * checking.as_secs_f64() / seconds.max(1e-9),
        input_bytes / done.max(1),
        slowest.0.as_secs_f64() * 1000.0,
        slowest.1,
    );
    assert!(
        failures.is_empty(),
        "fuzz {target} (seed {seed:#x}): {} failure(s):\n  {}\nreplay one with \
         BOOT_FUZZ_REPLAY=<saved file> cargo test --test fuzz {target}",
        failures.len(),
        failures.join("\n  ")
    );
}

fn replay(target: &str, path: &Path, check: &dyn Fn(&[u8]) -> Verdict) {
    // `fuzz-failures/TARGET-N` from this fuzzer, or `artifacts/TARGET/crash-…` from
    // libFuzzer (tests/libfuzzer.sh).
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let dir_name = (path.parent().and_then(Path::file_name)).and_then(|n| n.to_str());
    let for_target = dir_name == Some(target)
        || file_name
            .rsplit_once('-')
            .is_some_and(|(prefix, _)| prefix == target);
    if !for_target {
        println!("fuzz {target}: BOOT_FUZZ_REPLAY names another target's input; skipped");
        return;
    }
    let input = fs::read(path).expect("BOOT_FUZZ_REPLAY is a readable file");
    let verdict = check(&input);
    println!("fuzz {target}: replayed {}: {verdict:?}", path.display());
    if let Err(why) = verdict {
        panic!("fuzz {target}: {why}");
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={text:?} is not a number")))
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "(a payload that is not text)".to_string()
    }
}

fn save_failure(target: &str, iteration: u64, input: &[u8]) -> PathBuf {
    // Cargo sets CARGO_TARGET_TMPDIR for integration tests only (not for the libFuzzer
    // crate, which shares this file and never calls this).
    let tmp = option_env!("CARGO_TARGET_TMPDIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tmp.parent().unwrap_or(Path::new(".")).join("fuzz-failures");
    let path = dir.join(format!("{target}-{iteration}"));
    if let Err(e) = fs::create_dir_all(&dir).and_then(|()| fs::write(&path, input)) {
        eprintln!("fuzz {target}: could not save {}: {e}", path.display());
    }
    path
}

/// The start of an input, printable on one line.
pub fn preview(input: &[u8]) -> String {
    let mut text = String::new();
    for byte in input.iter().take(PREVIEW_BYTES) {
        let _ = write!(text, "{}", std::ascii::escape_default(*byte));
    }
    if input.len() > PREVIEW_BYTES {
        text.push('…');
    }
    text
}

/// The files of `tests/fuzz/corpus/<target>/`, sorted by name.
pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    let mut paths: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|entry| entry.expect("corpus entry").path())
        .collect();
    paths.sort();
    let seeds: Vec<Vec<u8>> = paths
        .iter()
        .map(|path| fs::read(path).expect("corpus file"))
        .collect();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

/// One random change to `data`; `others` are spliced from.
pub fn mutate_bytes(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>], tokens: &[&[u8]]) {
    let len = data.len();
    match rng.below(11) {
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = *rng.pick(&[0, 0xff, 0x7f, 0x80, b'\n', b'"', b'\\', b'0', b'9', b'-'])
                ^ if rng.one_in(4) {
                    rng.next_u64() as u8
                } else {
                    0
                };
        }
        2 => {
            let at = rng.below(len + 1);
            let count = rng.size(32);
            let bytes: Vec<u8> = (0..count).map(|_| rng.next_u64() as u8).collect();
            data.splice(at..at, bytes);
        }
        3 if len > 0 => {
            let from = rng.below(len);
            let to = from + rng.size(len - from);
            data.drain(from..to);
        }
        4 if len > 0 => {
            let from = rng.below(len);
            let to = from + 1 + rng.size(len - from - 1);
            let chunk = data[from..to].to_vec();
            let times = if rng.one_in(8) && to - from <= 256 {
                1 + rng.below(64)
            } else {
                1
            };
            let at = rng.below(len + 1);
            let repeated: Vec<u8> = chunk.repeat(times);
            data.splice(at..at, repeated);
        }
        5 => data.truncate(rng.below(len + 1)),
        6 => {
            let at = rng.below(len + 1);
            let token = rng.pick(tokens);
            data.splice(at..at, token.iter().copied());
        }
        7 if !others.is_empty() => {
            let other = rng.pick(others);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        8 if len > 0 => {
            let token = rng.pick(tokens);
            let at = rng.below(len);
            let end = (at + token.len()).min(len);
            data.splice(at..end, token.iter().copied());
        }
        9 => {
            let byte = *rng.pick(b"[{\"\\0 ,");
            let count = if rng.one_in(32) {
                100_000
            } else {
                *rng.pick(&[2, 64, 127, 128, 129, 1000])
            };
            let at = rng.below(len + 1);
            data.splice(at..at, std::iter::repeat_n(byte, count));
        }
        _ => {
            // Swap two chunks' order by rotating a range.
            if len > 1 {
                let from = rng.below(len - 1);
                let to = from + 2 + rng.below(len - from - 1);
                let mid = rng.below(to - from);
                data[from..to].rotate_left(mid);
            }
        }
    }
}
