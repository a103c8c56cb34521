//! Bakes the compiled-in server list (`BOOT_SERVER_ADDR`, docs/protocol.md section 5),
//! the fleet's CA bundle (`BOOT_CA_FILE`, a PEM file, optional), the directories
//! `file://` URLs may point into (`BOOT_FILE_URL_ROOTS`, `:`-separated), the version the
//! binary reports (`BOOT_VERSION`, default the one in `Cargo.toml`) and the target
//! triple into the binary. A bad entry, an unreadable CA file or a bad version fails
//! the build, naming it.

#[allow(dead_code)]
#[path = "src/addr.rs"]
mod addr;

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=BOOT_SERVER_ADDR");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/addr.rs");

    let raw = env::var("BOOT_SERVER_ADDR").unwrap_or_default();
    let list = match addr::parse_list(&raw) {
        Ok(list) => list,
        Err(err) => {
            eprintln!("error: BOOT_SERVER_ADDR: {err}");
            std::process::exit(1);
        }
    };
    let baked = addr::format_list(&list);

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_default());
    println!("cargo:rerun-if-env-changed=BOOT_CA_FILE");
    let ca = match env::var_os("BOOT_CA_FILE").filter(|v| !v.is_empty()) {
        None => Vec::new(),
        Some(path) => {
            println!("cargo:rerun-if-changed={}", PathBuf::from(&path).display());
            match fs::read(&path) {
                Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => pem,
                Ok(_) => fail(&format!("BOOT_CA_FILE {path:?} holds no PEM certificate")),
                Err(err) => fail(&format!("BOOT_CA_FILE {path:?}: {err}")),
            }
        }
    };
    if let Err(err) = fs::write(out_dir.join("ca.pem"), &ca) {
        fail(&format!("cannot write ca.pem into OUT_DIR: {err}"));
    }
    println!("cargo:rerun-if-env-changed=BOOT_FILE_URL_ROOTS");
    let roots = env::var("BOOT_FILE_URL_ROOTS").unwrap_or_default();
    for root in roots.split(':').filter(|root| !root.is_empty()) {
        if !root.starts_with('/') {
            fail(&format!(
                "BOOT_FILE_URL_ROOTS: {root:?} is not an absolute path"
            ));
        }
    }
    let source = format!(
        "/// The compiled-in server list, validated and normalised at build time.\n\
         pub const BAKED_SERVERS: &str = {baked:?};\n\
         /// The compiled-in roots of `file://` URLs, `:`-separated absolute paths.\n\
         pub const BAKED_FILE_URL_ROOTS: &str = {roots:?};\n\
         /// The compiled-in CA bundle (PEM), empty when none was given.\n\
         pub const BAKED_CA: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/ca.pem\"));\n"
    );
    if let Err(err) = fs::write(out_dir.join("baked.rs"), source) {
        eprintln!("error: cannot write baked.rs into OUT_DIR: {err}");
        std::process::exit(1);
    }
    let target = env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=BOOT_TARGET={target}");

    println!("cargo:rerun-if-env-changed=BOOT_VERSION");
    let version = env::var("BOOT_VERSION")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| env::var("CARGO_PKG_VERSION").unwrap_or_default());
    if !valid_version(&version) {
        fail(&format!(
            "BOOT_VERSION {version:?}: 1 to 64 of A-Z a-z 0-9 . _ - + ~, not starting with '.'"
        ));
    }
    println!("cargo:rustc-env=BOOT_VERSION={version}");
}

/// The versions a binary may report: they name `bin/VERSION/` after a self-upgrade,
/// so they follow the rule for package versions (docs/protocol.md section 9).
fn valid_version(version: &str) -> bool {
    (1..=64).contains(&version.len())
        && !version.starts_with('.')
        && version
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+' | b'~'))
}

fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}
