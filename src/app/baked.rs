//! What `build.rs` baked into the binary (`BOOT_SERVER_ADDR`, `BOOT_FILE_URL_ROOTS`,
//! `BOOT_CA_FILE`), and the compiled-in server list it makes.

use crate::addr::{self, ServerAddr};

include!(concat!(env!("OUT_DIR"), "/baked.rs"));

/// The compiled-in server list.
pub fn compiled_in_servers() -> Vec<ServerAddr> {
    // Validated by build.rs with the same parser; an error here cannot happen.
    addr::parse_list(BAKED_SERVERS).unwrap_or_default()
}
