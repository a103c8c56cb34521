//! libFuzzer target: the `limits` object parser (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_limits, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_limits, input));
