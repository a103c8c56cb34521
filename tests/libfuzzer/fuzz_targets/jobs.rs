//! libFuzzer target: the job validator (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_job_text, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_job_text, input));
