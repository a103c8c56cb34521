//! Fuzz targets for everything BootAgent reads from outside: server answers, jobs, the
//! `limits` and `restart` objects, server lists, `-o` assignments, the metafile and
//! packages. Each target starts from its corpus (`tests/fuzz/corpus/TARGET/`, valid
//! inputs) and feeds mutations of it to the library, asserting that nothing panics
//! and that what is accepted is sound (names valid, values in range, nothing written
//! outside the version directory) and what is refused says why in one line.
//!
//! `cargo test` runs a fixed number of inputs per target with a fixed seed;
//! `tests/fuzz.sh [SECONDS]` runs each target for a time with a fresh seed. The
//! fuzzer itself is in `tests/fuzz/`: the PRNG, the loop and byte mutations in
//! `gen.rs`, JSON and tar mutations in `json.rs` and `tar.rs`; the checks in
//! `checks.rs`, and those that go through the disk (metafile, packages) in `disk.rs`,
//! shared with the libFuzzer targets of `tests/libfuzzer/`.
//!
//! The seeds are real inputs: answers and jobs as docs/protocol.md shows them, metafiles
//! written by `MetaStore::save`, and packages made by GNU tar 1.34 in its gnu, ustar
//! and pax formats (`tar --sort=name --mtime=@1700000000 --owner=0 --group=0
//! --numeric-owner`, then `gzip -n9`), plus a plain script. Any valid input may be
//! added to a target's directory; `every_seed_is_accepted_by_its_target` checks it.

#[path = "fuzz/checks.rs"]
mod checks;
#[path = "fuzz/disk.rs"]
mod disk;
#[path = "fuzz/gen.rs"]
mod gen;
#[path = "fuzz/json.rs"]
mod json;
#[path = "fuzz/tar.rs"]
mod tar;

use bootagent::limits::Limits;
use checks::{
    check_addr, check_job_text, check_limits, check_limits_set, check_register, check_restart,
    check_status,
};
use disk::{check_meta, check_meta_with, check_package, check_unpack, MetaSetup, Scratch};
use gen::{Accepted, Rng, Verdict};

// ---------------------------------------------------------------------------------
// Targets. Iterations keep `cargo test --test fuzz` near 10 s in a debug build (2 CPUs).

#[test]
fn fuzz_wire_register() {
    let corpus = gen::corpus("wire_register");
    let seeds = json::seeds(&corpus);
    gen::fuzz(
        "wire_register",
        9_000,
        &corpus,
        &mut |rng| json::input(rng, &seeds, &corpus),
        &check_register,
    );
}

#[test]
fn fuzz_wire_status() {
    let corpus = gen::corpus("wire_status");
    let mut seeds = json::seeds(&corpus);
    // Jobs of the jobs corpus too, as answers: more material to splice from.
    for job in json::seeds(&gen::corpus("jobs")) {
        seeds.push(serde_json::json!({"status": 0, "jobs": [job]}));
    }
    gen::fuzz(
        "wire_status",
        9_000,
        &corpus,
        &mut |rng| json::input(rng, &seeds, &corpus),
        &check_status,
    );
}

#[test]
fn fuzz_jobs() {
    let corpus = gen::corpus("jobs");
    let seeds = json::seeds(&corpus);
    gen::fuzz(
        "jobs",
        12_000,
        &corpus,
        &mut |rng| json::input(rng, &seeds, &corpus),
        &check_job_text,
    );
}

#[test]
fn fuzz_limits() {
    let corpus = gen::corpus("limits");
    let seeds = json::seeds(&corpus);
    gen::fuzz(
        "limits",
        8_000,
        &corpus,
        &mut |rng| json::input(rng, &seeds, &corpus),
        &check_limits,
    );
}

#[test]
fn fuzz_restart() {
    let corpus = gen::corpus("restart");
    let seeds = json::seeds(&corpus);
    gen::fuzz(
        "restart",
        8_000,
        &corpus,
        &mut |rng| json::input(rng, &seeds, &corpus),
        &check_restart,
    );
}

/// Pieces of server addresses, spliced into lists.
const ADDR_TOKENS: &[&[u8]] = &[
    b",",
    b":",
    b"[",
    b"]",
    b"::1",
    b"::ffff:1.2.3.4",
    b"fe80::1%eth0",
    b"http://",
    b"https://",
    b"ftp://",
    b"/",
    b"?",
    b"#",
    b"@",
    b"65535",
    b"65536",
    b"0",
    b"080",
    b" ",
    b"\t",
    b"\xc3\xa9",
    b"\xff",
    b"\0",
    b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t,u,v,w,x,y,z,",
];

#[test]
fn fuzz_addr() {
    let corpus = gen::corpus("addr");
    gen::fuzz(
        "addr",
        30_000,
        &corpus,
        &mut |rng| text_input(rng, &corpus, ADDR_TOKENS),
        &check_addr,
    );
}

#[test]
fn fuzz_limits_set() {
    let corpus = gen::corpus("limits_set");
    let names: Vec<&'static str> = Limits::default()
        .entries()
        .iter()
        .map(|(name, _)| *name)
        .chain(["limit_mechanism"])
        .collect();
    let mut tokens: Vec<&[u8]> = names.iter().map(|name| name.as_bytes()).collect();
    tokens.extend_from_slice(&[
        b"=",
        b"0",
        b"1",
        b"-1",
        b"18446744073709551615",
        b"18446744073709551616",
        b"1073741824",
        b"auto",
        b"proc",
        b"v1",
        b"v2",
        b" ",
    ]);
    gen::fuzz(
        "limits_set",
        30_000,
        &corpus,
        &mut |rng| text_input(rng, &corpus, &tokens),
        &check_limits_set,
    );
}

#[test]
fn fuzz_meta() {
    let corpus = gen::corpus("meta");
    let seeds = json::seeds(&corpus);
    let scratch = Scratch::new("meta");
    gen::fuzz(
        "meta",
        4_000,
        &corpus,
        &mut |rng| json::input(rng, &seeds, &corpus),
        &|input| check_meta(&scratch.0, input),
    );
}

#[test]
fn fuzz_unpack() {
    let corpus = gen::corpus("unpack");
    let tars: Vec<Vec<u8>> = corpus.iter().filter_map(|seed| tar::gunzip(seed)).collect();
    assert!(!tars.is_empty(), "the unpack corpus has tar.gz seeds");
    let scratch = Scratch::new("unpack");
    let root = scratch.unpack_root();
    gen::fuzz(
        "unpack",
        6_000,
        &corpus,
        &mut |rng| package_input(rng, &corpus, &tars),
        &|input| check_unpack(&root, input),
    );
}

/// The package formats beyond tar.gz: rpm (lead, headers, cpio payload), deb (ar,
/// control.tar, data.tar) and tar plain, xz or zstd. Their corpora hold valid
/// packages made by rpmbuild 4.18 (payload uncompressed, gzip, xz and zstd),
/// dpkg-deb 1.21 (`-Z none|gzip|xz|zstd`), GNU tar 1.34, xz and zstd, and hostile
/// ones named `bad-*` (rpm headers with huge counts or data past the end, cpio
/// entries with bad sizes, names and digits, ar members overlapping or past the
/// end, xz and zstd bombs, a 4 GiB xz dictionary, a 2 GiB zstd window), which
/// `every_seed_is_accepted_by_its_target` requires to be refused instead.
const FORMAT_TARGETS: [(&str, &[&[u8]]); 3] = [
    (
        "rpm",
        &[
            b"\xff\xff\xff\xff",
            b"\x8e\xad\xe8\x01",
            b"070701",
            b"TRAILER!!!",
            b"FFFFFFFF",
            b"\0\0\x03\xe9",
        ],
    ),
    (
        "deb",
        &[
            b"!<arch>\n",
            b"`\n",
            b"9999999999",
            b"data.tar.xz     ",
            b"control.tar     ",
            b"./control",
        ],
    ),
    (
        "compressed",
        &[
            b"\xfd7zXZ\0",
            b"\x28\xb5\x2f\xfd",
            b"ustar",
            b"\xff\xff\xff\xff",
            b"\0",
        ],
    ),
];

#[test]
fn fuzz_rpm_deb_and_compressed_tar() {
    let scratch = Scratch::new("formats");
    let root = scratch.unpack_root();
    for (target, tokens) in FORMAT_TARGETS {
        let corpus = gen::corpus(target);
        gen::fuzz(
            target,
            800,
            &corpus,
            &mut |rng| format_input(rng, &corpus, tokens),
            &|input| check_package(&root, input, "demo"),
        );
    }
}

/// A seed with a few byte changes, mostly in its first 4 KiB (headers).
fn format_input(rng: &mut Rng, corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut data = rng.pick(corpus).clone();
    for _ in 0..1 + rng.below(3) {
        if rng.one_in(2) && data.len() > 4096 {
            let mut head = data[..4096].to_vec();
            gen::mutate_bytes(rng, &mut head, corpus, tokens);
            data.splice(..4096, head);
        } else {
            gen::mutate_bytes(rng, &mut data, corpus, tokens);
        }
    }
    data.truncate(1 << 20);
    data
}

type Check<'a> = &'a dyn Fn(&[u8]) -> Verdict;

/// Every seed is a valid input that its target accepts: a corpus that rots into
/// refused inputs would leave the mutations far from the code they should reach.
#[test]
fn every_seed_is_accepted_by_its_target() {
    let meta = Scratch::new("seeds-meta");
    let unpack = Scratch::new("seeds-unpack");
    let unpack_root = unpack.unpack_root();
    let targets: [(&str, Check); 9] = [
        ("wire_register", &check_register),
        ("wire_status", &check_status),
        ("jobs", &check_job_text),
        ("limits", &check_limits),
        ("restart", &check_restart),
        ("addr", &check_addr),
        ("limits_set", &check_limits_set),
        ("meta", &|input| {
            let defaults = MetaSetup {
                previous: None,
                bytes_max: Limits::default().meta_bytes_max,
            };
            check_meta_with(&meta.0, input, &defaults)
        }),
        ("unpack", &|input| check_unpack(&unpack_root, input)),
    ];
    for (target, check) in targets {
        for (index, seed) in gen::corpus(target).iter().enumerate() {
            assert_eq!(
                check(seed),
                Ok(Accepted::Yes),
                "seed {index} of tests/fuzz/corpus/{target}/ (sorted by name): {}",
                gen::preview(seed)
            );
        }
    }
    for (target, _) in FORMAT_TARGETS {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fuzz/corpus")
            .join(target);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .expect("corpus")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert!(
            names.iter().any(|n| n.starts_with("bad-")),
            "{target} has hostile seeds"
        );
        for name in names {
            let seed = std::fs::read(dir.join(&name)).expect("seed");
            let expected = if name.starts_with("bad-") {
                Accepted::No
            } else {
                Accepted::Yes
            };
            assert_eq!(
                check_package(&unpack_root, &seed, "demo"),
                Ok(expected),
                "tests/fuzz/corpus/{target}/{name}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Generators that are not plain JSON.

fn text_input(rng: &mut Rng, corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut text = rng.pick(corpus).clone();
    for _ in 0..1 + rng.below(4) {
        gen::mutate_bytes(rng, &mut text, corpus, tokens);
    }
    text
}

/// A package: mostly a seed archive changed as tar, gzip'd again; sometimes a
/// damaged gzip stream or a file that is not gzip at all.
fn package_input(rng: &mut Rng, corpus: &[Vec<u8>], tars: &[Vec<u8>]) -> Vec<u8> {
    if rng.one_in(16) {
        let mut data = rng.pick(corpus).clone();
        gen::mutate_bytes(rng, &mut data, corpus, &[b"\x1f\x8b", b"\x1f", b"\0"]);
        return data;
    }
    let mut tar = rng.pick(tars).clone();
    for _ in 0..1 + rng.below(4) {
        tar::mutate(rng, &mut tar, tars);
    }
    tar.truncate(1 << 20);
    let mut package = tar::gzip(&tar);
    if rng.one_in(12) {
        gen::mutate_bytes(rng, &mut package, corpus, &[b"\x1f\x8b\x08", b"\0\0\0\0"]);
    }
    package
}
