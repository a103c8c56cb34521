//! libFuzzer target: the package unpacker (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_unpack, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_unpack, input));
