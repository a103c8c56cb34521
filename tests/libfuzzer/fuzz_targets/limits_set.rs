//! libFuzzer target: the `-o NAME=VALUE` parser (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_limits_set, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_limits_set, input));
