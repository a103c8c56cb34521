//! Tests of the tar.gz format: entries that would land outside `dest`, permission
//! bits, bounds and gzip bombs, long names and pax headers, corrupt, random and
//! mangled archives.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::compress::GZIP_MAGIC;
use super::*;

#[test]
fn entries_landing_outside_dest_are_refused_and_nothing_is_left() {
    let scratch = Scratch::new("escape");
    let outside = scratch.root.join("outside");
    let outside_abs = format!("{}/evil", outside.display());
    let limits = UnpackLimits::default();
    let cases: Vec<(Vec<Item<'_>>, &str)> = vec![
        (vec![F("../evil", 0o644, b"e")], "`..`"),
        (vec![F("/abs/evil", 0o644, b"e")], "absolute"),
        (vec![F(&outside_abs, 0o644, b"e")], "absolute"),
        (vec![F("a/../../evil", 0o644, b"e")], "`..`"),
        (vec![Dir("a", 0o755), F("a/../evil", 0o644, b"e")], "`..`"),
        (
            vec![Symlink("link", "/etc"), F("link/passwd", 0o644, b"e")],
            "absolute",
        ),
        (
            vec![Symlink("link", "../outside"), F("link/evil", 0o644, b"e")],
            "outside",
        ),
        (
            vec![
                Dir("sub", 0o755),
                Symlink("link", "sub"),
                F("link/evil", 0o644, b"e"),
            ],
            "not a directory",
        ),
        (vec![Symlink("x", "../../x")], "outside"),
        (vec![Symlink("x", "..")], "outside"),
        (
            vec![
                Dir("a", 0o755),
                Symlink("a/up", ".."),
                Symlink("b", "a/up/.."),
            ],
            "after a name",
        ),
        (
            vec![
                Symlink("b", "a/up/.."),
                Dir("a", 0o755),
                Symlink("a/up", ".."),
            ],
            "after a name",
        ),
        (vec![HardLink("h", "/etc/passwd")], "absolute"),
        (vec![HardLink("h", "../outside/file")], "`..`"),
        (vec![HardLink("h", "missing")], "not a file extracted"),
        (
            vec![Symlink("s", "run"), HardLink("h", "s")],
            "not a file extracted",
        ),
        (
            vec![
                Dir("d", 0o755),
                Symlink("d2", "d"),
                F("d/f", 0o644, b"f"),
                HardLink("h", "d2/f"),
            ],
            "not a file extracted",
        ),
        (vec![Special("dev", tar::EntryType::Char)], "device"),
        (vec![Special("blk", tar::EntryType::Block)], "device"),
        (vec![Special("fifo", tar::EntryType::Fifo)], "FIFO"),
        (vec![Special("sparse", tar::EntryType::GNUSparse)], "sparse"),
        (
            vec![Special("vol", tar::EntryType::new(b'V'))],
            "unsupported",
        ),
        (
            vec![F("data", 0o644, b"1"), F("data", 0o644, b"2")],
            "twice",
        ),
        (
            vec![Symlink("data", "run"), F("data", 0o644, b"2")],
            "twice",
        ),
        (
            vec![F("data", 0o644, b"1"), Dir("data", 0o755)],
            "not as a directory",
        ),
    ];
    for (items, word) in cases {
        let mut all = vec![F("run", 0o755, SCRIPT)];
        all.extend(items);
        assert_refused(&scratch, &tgz(&all), &limits, ErrCode::BadPackage, word);
    }
    assert_eq!(fs::read(outside.join("file")).unwrap(), b"outside");
}

#[test]
fn special_bits_are_dropped_and_directories_stay_usable() {
    let scratch = Scratch::new("modes");
    let bytes = tgz(&[
        F("run", 0o4755, SCRIPT),
        F("tool", 0o6711, b"t"),
        Dir("sticky", 0o1777),
        Dir("ro", 0o500),
        F("ro/data", 0o444, b"d"),
        F("shared", 0o666, b"s"),
    ]);
    scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(mode_of(&dest.join("run")), 0o755);
    assert_eq!(mode_of(&dest.join("tool")), 0o711);
    assert_eq!(mode_of(&dest.join("sticky")), 0o755);
    assert_eq!(mode_of(&dest.join("shared")), 0o644);
    assert_eq!(mode_of(&dest.join("ro")), 0o700);
    assert_eq!(mode_of(&dest.join("ro/data")), 0o444);
}

#[test]
fn gzip_bomb_in_a_file_entry_stops_at_the_bound() {
    let scratch = Scratch::new("bomb1");
    let mut header = tar::Header::new_gnu();
    header.set_path("run").unwrap();
    header.set_size(2 << 30);
    header.set_mode(0o755);
    header.set_cksum();
    let bytes = gzip_bomb(header.as_bytes(), 2048);
    let limits = UnpackLimits {
        bytes_max: 10 * MIB as u64,
        ..UnpackLimits::default()
    };
    assert_refused(
        &scratch,
        &bytes,
        &limits,
        ErrCode::BadPackage,
        "more than 10485760 bytes",
    );
}

#[test]
fn gzip_bomb_after_the_archive_end_stops_at_the_stream_bound() {
    let scratch = Scratch::new("bomb2");
    let bytes = gzip_bomb(&tar_of(&[F("run", 0o755, SCRIPT)]), 2048);
    let limits = UnpackLimits {
        bytes_max: 10 * MIB as u64,
        entries_max: 8,
        ..UnpackLimits::default()
    };
    assert_refused(
        &scratch,
        &bytes,
        &limits,
        ErrCode::BadPackage,
        "decompresses to more than",
    );
}

#[test]
fn bounds_on_total_bytes_entries_and_paths() {
    let scratch = Scratch::new("bounds");
    let four_mib = vec![0u8; 4 * MIB];
    let limits = UnpackLimits {
        bytes_max: 10 * MIB as u64,
        entries_max: 4,
        path_bytes_max: 64,
        reserve_bytes: 0,
    };
    let big = tgz(&[
        F("run", 0o755, SCRIPT),
        F("a", 0o644, &four_mib),
        F("b", 0o644, &four_mib),
        F("c", 0o644, &four_mib),
    ]);
    assert_refused(
        &scratch,
        &big,
        &limits,
        ErrCode::BadPackage,
        "more than 10485760 bytes",
    );
    let many = tgz(&[
        F("run", 0o755, SCRIPT),
        F("a", 0o644, b""),
        F("b", 0o644, b""),
        F("c", 0o644, b""),
        F("d", 0o644, b""),
    ]);
    assert_refused(
        &scratch,
        &many,
        &limits,
        ErrCode::BadPackage,
        "more than 4 entries",
    );
    let long_path = "d/".repeat(40) + "f";
    let mut builder = tar::Builder::new(Vec::new());
    append_item(&mut builder, &F("run", 0o755, SCRIPT));
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &long_path, &b"x"[..])
        .unwrap();
    let long = gzip(&builder.into_inner().unwrap());
    assert_refused(
        &scratch,
        &long,
        &limits,
        ErrCode::BadPackage,
        "over 64 bytes",
    );
    let long_name = format!("run-{}", "n".repeat(NAME_BYTES_MAX));
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &long_name, &b"x"[..])
        .unwrap();
    let long = gzip(&builder.into_inner().unwrap());
    assert_refused(
        &scratch,
        &long,
        &UnpackLimits::default(),
        ErrCode::BadPackage,
        "name over 255",
    );
}

#[test]
fn long_names_pax_paths_and_global_headers_are_read() {
    let scratch = Scratch::new("long");
    let long_path = "dir/".repeat(40) + "file";
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(4);
    header.set_mode(0o644);
    builder
        .append_data(&mut header, &long_path, &b"long"[..])
        .unwrap();
    // A pax global header named as GNU tar names them, then a pax path.
    let mut global = tar::Header::new_ustar();
    global.set_path("pax_global_header").unwrap();
    global.as_old_mut().name[..20].copy_from_slice(b"/tmp/GlobalHead.0.0\0");
    global.set_entry_type(tar::EntryType::XGlobalHeader);
    global.set_size(0);
    global.set_cksum();
    builder.append(&global, &b""[..]).unwrap();
    builder
        .append_pax_extensions([("path", &b"from/pax/run"[..])])
        .unwrap();
    append_item(&mut builder, &F("ignored-name", 0o755, SCRIPT));
    // `run` is under from/pax, so a link gives the root its run.
    append_item(&mut builder, &Symlink("run", "from/pax/run"));
    let bytes = gzip(&builder.into_inner().unwrap());
    let unpacked = scratch.unpack(&bytes, &UnpackLimits::default()).unwrap();
    let dest = scratch.dest();
    assert_eq!(fs::read(dest.join(&long_path)).unwrap(), b"long");
    assert!(!dest.join("ignored-name").exists());
    assert_eq!(run_output(&dest), "hi\n");
    assert_eq!(unpacked.entries, 4);
}

#[test]
fn corrupt_or_truncated_archives_are_refused() {
    let scratch = Scratch::new("corrupt");
    let limits = UnpackLimits::default();
    let good = tgz(&[F("run", 0o755, SCRIPT), F("data", 0o644, &[7u8; 4000])]);
    assert_refused(
        &scratch,
        &good[..good.len() / 2],
        &limits,
        ErrCode::BadPackage,
        "not a valid package",
    );
    assert_refused(
        &scratch,
        &good[..good.len() - 4],
        &limits,
        ErrCode::BadPackage,
        "not a valid package",
    );
    let mut flipped = good.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x55;
    assert_refused(&scratch, &flipped, &limits, ErrCode::BadPackage, "");
    assert_refused(
        &scratch,
        &gzip(b"hello, not a tar"),
        &limits,
        ErrCode::BadPackage,
        "not a valid package",
    );
    assert_refused(
        &scratch,
        &[0x1f, 0x8b, 0, 1, 2, 3],
        &limits,
        ErrCode::BadPackage,
        "not a valid package",
    );
    let mut bad_sum = tar_of(&[F("run", 0o755, SCRIPT)]);
    bad_sum[0] = b'R';
    assert_refused(
        &scratch,
        &gzip(&bad_sum),
        &limits,
        ErrCode::BadPackage,
        "checksum",
    );
}

/// splitmix64, for reproducible random inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_and_mangled_inputs_never_panic_and_leave_nothing() {
    let scratch = Scratch::new("fuzz");
    let limits = UnpackLimits::default();
    let dest = scratch.dest();
    let mut rng = Rng(0x5EED);
    for _ in 0..300 {
        let len = (rng.next() % 2048) as usize;
        let mut bytes = GZIP_MAGIC.to_vec();
        bytes.extend(rng.bytes(len));
        let err = scratch.unpack(&bytes, &limits).unwrap_err();
        assert_eq!(err.errcode, ErrCode::BadPackage, "{err}");
        assert!(!dest.exists());
    }
    let good = tgz(&[
        F("run", 0o755, SCRIPT),
        F("VERSION", 0o644, b"3.1"),
        F("lib/data", 0o644, &b"data".repeat(100)),
        Symlink("lib/link", "data"),
    ]);
    // Lengths 0 (empty) and 1 (not the whole magic: a plain executable) aside.
    for len in GZIP_MAGIC.len()..good.len() {
        let err = scratch.unpack(&good[..len], &limits).unwrap_err();
        assert_eq!(
            err.errcode,
            ErrCode::BadPackage,
            "truncated to {len}: {err}"
        );
        assert!(!dest.exists());
    }
    // Mangled headers with their checksums made right again, so that the fields
    // themselves reach the checks. Whatever the outcome: no panic, a bad package
    // (never a host failure), and either a complete version or nothing.
    let plain_tar = tar_of(&[
        F("run", 0o755, SCRIPT),
        Dir("lib/", 0o755),
        F("lib/data", 0o644, &b"data".repeat(200)),
        Symlink("lib/link", "data"),
        HardLink("lib/hard", "lib/data"),
    ]);
    let mut headers = Vec::new();
    let mut archive = tar::Archive::new(&plain_tar[..]);
    for entry in archive.entries().unwrap() {
        headers.push(entry.unwrap().raw_header_position() as usize);
    }
    const HEADER_FIELDS_BYTES: u64 = 345;
    const TYPE_OFFSET: usize = 156;
    const TYPES: &[u8] = b"\x000123456789LKxgSVD";
    for _ in 0..200 {
        let mut mangled = plain_tar.clone();
        for _ in 0..1 + rng.next() % 3 {
            let header = headers[(rng.next() % headers.len() as u64) as usize];
            if rng.next().is_multiple_of(3) {
                mangled[header + TYPE_OFFSET] = TYPES[(rng.next() % TYPES.len() as u64) as usize];
            } else {
                mangled[header + (rng.next() % HEADER_FIELDS_BYTES) as usize] = rng.next() as u8;
            }
            let mut fixed = tar::Header::new_old();
            fixed
                .as_mut_bytes()
                .copy_from_slice(&mangled[header..header + 512]);
            fixed.set_cksum();
            mangled[header..header + 512].copy_from_slice(fixed.as_bytes());
        }
        let cut = mangled.len() - (rng.next() % 2 * (rng.next() % 1024)) as usize;
        match scratch.unpack(&gzip(&mangled[..cut]), &limits) {
            Ok(_) => {
                assert!(fs::metadata(dest.join("run")).unwrap().is_file());
                fs::remove_dir_all(&dest).unwrap();
            }
            Err(err) => {
                assert_eq!(err.errcode, ErrCode::BadPackage, "{err}");
                assert!(!dest.exists());
            }
        }
    }
    assert_eq!(
        fs::read(scratch.root.join("outside/file")).unwrap(),
        b"outside"
    );
}
