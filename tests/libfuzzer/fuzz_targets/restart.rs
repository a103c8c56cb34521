//! libFuzzer target: the `restart` policy settings parser (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_restart, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_restart, input));
