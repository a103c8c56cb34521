//! libFuzzer target: the status answer parser, with the jobs it carries (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_status, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_status, input));
