//! libFuzzer target: the compressed package format (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_package, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_package, input));
