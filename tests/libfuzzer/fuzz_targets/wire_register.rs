//! libFuzzer target: the register answer parser (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_register, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_register, input));
