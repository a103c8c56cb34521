//! libFuzzer target: the server list parser (`-S`, `svrlist`, `BOOT_SERVER_ADDR`) (checks in `tests/fuzz/`).
#![no_main]

use bootagent_fuzz::{check_addr, run};

libfuzzer_sys::fuzz_target!(|input: &[u8]| run(check_addr, input));
