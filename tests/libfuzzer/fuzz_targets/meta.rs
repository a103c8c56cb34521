//! libFuzzer target: the metafile loader (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_meta, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_meta, input));
