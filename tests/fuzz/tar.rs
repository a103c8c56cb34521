//! Tar mutations for the fuzzer: header fields rewritten (checksum recomputed, so the
//! entries reach the unpacker's checks), entries inserted, duplicated or removed, GNU
//! long names and links and pax headers inserted, the archive cut or padded.

use crate::gen::{mutate_bytes, Rng};

const BLOCK: usize = 512;

/// The header fields of a ustar/GNU header, as byte ranges.
const FIELDS: &[(&str, usize, usize)] = &[
    ("name", 0, 100),
    ("mode", 100, 108),
    ("uid", 108, 116),
    ("gid", 116, 124),
    ("size", 124, 136),
    ("mtime", 136, 148),
    ("chksum", 148, 156),
    ("typeflag", 156, 157),
    ("linkname", 157, 257),
    ("magic", 257, 263),
    ("version", 263, 265),
    ("uname", 265, 297),
    ("gname", 297, 329),
    ("devmajor", 329, 337),
    ("devminor", 337, 345),
    ("prefix", 345, 500),
];

/// Entry types, known and not.
const TYPEFLAGS: &[u8] = b"0\x00123456 7LKxgSDVMNAZ?";

/// Paths and link targets that test the unpacker's rules.
const TAR_PATHS: &[&[u8]] = &[
    b"run",
    b"./run",
    b"/run",
    b"../run",
    b"a/../../run",
    b"pkg/run",
    b"pkg/",
    b"pkg",
    b"pkg/sub/x",
    b"run/x",
    b"real",
    b"bin/tool",
    b"VERSION",
    b"pkg/VERSION",
    b"..",
    b".",
    b"./",
    b"",
    b"a\nb",
    b"a//b",
    b"\x00run",
    b"current",
    b".unpack-root-0",
    b"pkg/pkg",
    b"../../outside/file",
    b"../outside",
    b"/etc/passwd",
    b"../real",
    b"../../real",
    b"bin/../real",
    b"./.",
    b"x/../..",
    b"share/copy",
    b"share/tool",
];

fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c: char| c == '\0' || c == ' ');
    u64::from_str_radix(text, 8).ok()
}

/// (offset, length with data and padding) of each entry before the end blocks.
pub fn entries(tar: &[u8]) -> Vec<(usize, usize)> {
    let mut entries = Vec::new();
    let mut at = 0;
    while at + BLOCK <= tar.len() {
        let header = &tar[at..at + BLOCK];
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let size = octal(&header[124..136]).unwrap_or(0).min(tar.len() as u64) as usize;
        let data = size.div_ceil(BLOCK) * BLOCK;
        let length = (BLOCK + data).min(tar.len() - at);
        entries.push((at, length));
        at += length;
    }
    entries
}

pub fn fix_checksum(header: &mut [u8]) {
    header[148..156].fill(b' ');
    let sum: u32 = header[..BLOCK].iter().map(|b| u32::from(*b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}

fn set_field(header: &mut [u8], (from, to): (usize, usize), value: &[u8]) {
    let field = &mut header[from..to];
    field.fill(0);
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value[..n]);
}

/// A ustar header with a correct checksum.
pub fn header(name: &[u8], link: &[u8], typeflag: u8, mode: u32, size: u64) -> Vec<u8> {
    let mut header = vec![0u8; BLOCK];
    set_field(&mut header, (0, 100), name);
    set_field(&mut header, (100, 108), format!("{mode:07o}").as_bytes());
    set_field(&mut header, (108, 116), b"0000000");
    set_field(&mut header, (116, 124), b"0000000");
    set_field(&mut header, (124, 136), format!("{size:011o}").as_bytes());
    set_field(&mut header, (136, 148), b"14524210400");
    header[156] = typeflag;
    set_field(&mut header, (157, 257), link);
    set_field(&mut header, (257, 263), b"ustar\0");
    set_field(&mut header, (263, 265), b"00");
    fix_checksum(&mut header);
    header
}

/// An entry: its header and its data padded to whole blocks.
fn tar_entry(name: &[u8], link: &[u8], typeflag: u8, mode: u32, data: &[u8]) -> Vec<u8> {
    let mut entry = header(name, link, typeflag, mode, data.len() as u64);
    entry.extend_from_slice(data);
    entry.resize(BLOCK + data.len().div_ceil(BLOCK) * BLOCK, 0);
    entry
}

/// One pax record, `LEN key=value\n`, with LEN counting itself.
fn pax_record(key: &[u8], value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut length = body + 1;
    while length.to_string().len() + body > length {
        length += 1;
    }
    let mut record = format!("{length} ").into_bytes();
    record.extend_from_slice(key);
    record.push(b'=');
    record.extend_from_slice(value);
    record.push(b'\n');
    record
}

fn tar_path(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0..=2 => rng.pick(TAR_PATHS).to_vec(),
        3 => {
            // Long: many components, some near NAME_MAX, to reach PATH_MAX.
            let component = *rng.pick(&[1usize, 100, 254, 255, 256]);
            let count = *rng.pick(&[2usize, 16, 17, 20, 40]);
            let mut path = Vec::new();
            for index in 0..count {
                if index > 0 {
                    path.push(b'/');
                }
                path.extend(std::iter::repeat_n(b'd', component));
            }
            if rng.one_in(2) {
                path.extend_from_slice(b"/a\nb");
            }
            path
        }
        4 => {
            let mut path = rng.pick(TAR_PATHS).to_vec();
            let suffixes: [&[u8]; 6] = [b"/", b"/..", b"\n", b"\x00", b"/x", b"\xff"];
            let suffix = *rng.pick(&suffixes);
            path.extend_from_slice(suffix);
            path
        }
        _ => (0..rng.size(12))
            .map(|_| *rng.pick(b"ab/.\n\x00\xff-_"))
            .collect(),
    }
}

fn numeric_field(rng: &mut Rng, width: usize) -> Vec<u8> {
    const VALUES: &[u64] = &[
        0,
        1,
        17,
        18,
        19,
        0o644,
        0o755,
        0o4755,
        0o7777,
        511,
        512,
        513,
        65_536,
        1 << 20,
        1 << 30,
        (1 << 30) + 1,
        0o77_777_777_777,
    ];
    match rng.below(6) {
        0..=2 => {
            let value = *rng.pick(VALUES);
            format!("{value:0w$o}", w = width - 1).into_bytes()
        }
        3 => {
            // GNU base-256: high bit set, big-endian value.
            let mut field = vec![0u8; width];
            field[0] = if rng.one_in(3) { 0xff } else { 0x80 };
            let value = if rng.one_in(2) {
                u64::MAX
            } else {
                rng.next_u64() >> rng.below(64)
            };
            let bytes = value.to_be_bytes();
            let n = bytes.len().min(width - 1);
            field[width - n..].copy_from_slice(&bytes[bytes.len() - n..]);
            field
        }
        4 => rng
            .pick(&[
                &b""[..],
                b"       ",
                b"8",
                b"-1",
                b"0x10",
                b"9999999",
                b"\xff\xff",
            ])
            .to_vec(),
        _ => (0..width).map(|_| rng.next_u64() as u8).collect(),
    }
}

fn field_value(rng: &mut Rng, name: &str, width: usize) -> Vec<u8> {
    match name {
        "name" | "linkname" | "prefix" => tar_path(rng),
        "typeflag" => vec![*rng.pick(TYPEFLAGS)],
        "magic" => rng
            .pick(&[&b"ustar\0"[..], b"ustar ", b"USTAR\0", b""])
            .to_vec(),
        "version" => rng.pick(&[&b"00"[..], b" \0", b"xx"]).to_vec(),
        "uname" | "gname" => tar_path(rng),
        _ => numeric_field(rng, width),
    }
}

fn extension_entry(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 | 1 => {
            let typeflag = if rng.one_in(2) { b'L' } else { b'K' };
            let mut data = tar_path(rng);
            if rng.one_in(3) {
                let length = *rng.pick(&[4095usize, 4096, 4097, 5000]);
                data.resize(length, b'n');
            }
            if !rng.one_in(4) {
                data.push(0);
            }
            tar_entry(b"././@LongLink", b"", typeflag, 0o644, &data)
        }
        _ => {
            let typeflag = if rng.one_in(4) { b'g' } else { b'x' };
            let mut data = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let keys: [&[u8]; 8] = [
                    b"path",
                    b"linkpath",
                    b"size",
                    b"uid",
                    b"mtime",
                    b"GNU.sparse.size",
                    b"SCHILY.xattr.user.x",
                    b"comment",
                ];
                let key = *rng.pick(&keys);
                let value = match rng.below(3) {
                    0 => tar_path(rng),
                    1 => rng
                        .pick(&[
                            &b"0"[..],
                            b"18",
                            b"19",
                            b"-1",
                            b"",
                            b"18446744073709551616",
                            b"1073741825",
                            b"x",
                        ])
                        .to_vec(),
                    _ => vec![b'v'; *rng.pick(&[1usize, 1000, 70_000])],
                };
                let mut record = pax_record(key, &value);
                match rng.below(8) {
                    0 => record.truncate(rng.below(record.len())),
                    1 => record.insert(0, b'9'),
                    2 => record = [&b"99999999999999999999"[..], &record].concat(),
                    _ => {}
                }
                data.extend_from_slice(&record);
            }
            tar_entry(b"PaxHeader/x", b"", typeflag, 0o644, &data)
        }
    }
}

fn new_entry(rng: &mut Rng) -> Vec<u8> {
    let typeflag = *rng.pick(b"0000555221134 6?S");
    let name = tar_path(rng);
    let link = if matches!(typeflag, b'1' | b'2') {
        tar_path(rng)
    } else {
        Vec::new()
    };
    let mode = *rng.pick(&[0o755, 0o644, 0o4755, 0o7777, 0o000, 0o600]);
    let data: Vec<u8> = match typeflag {
        b'0' => match rng.below(4) {
            0 => b"#!/bin/sh\necho hi\n".to_vec(),
            1 => b"1.2.3\n".to_vec(),
            2 => vec![0u8; *rng.pick(&[0usize, 511, 512, 513, 70_000])],
            _ => (0..rng.size(64)).map(|_| rng.next_u64() as u8).collect(),
        },
        _ => Vec::new(),
    };
    tar_entry(&name, &link, typeflag, mode, &data)
}

/// One change to a raw (uncompressed) tar archive. Header changes recompute the
/// checksum (most of the time), so that the entries reach the unpacker's checks.
pub fn mutate(rng: &mut Rng, tar: &mut Vec<u8>, others: &[Vec<u8>]) {
    let entries = entries(tar);
    let end = entries.last().map_or(0, |(at, length)| at + length);
    let boundary = |rng: &mut Rng| {
        if entries.is_empty() || rng.one_in(entries.len() + 1) {
            end
        } else {
            rng.pick(&entries).0
        }
    };
    match rng.below(12) {
        0..=3 if !entries.is_empty() => {
            let (at, _) = *rng.pick(&entries);
            let &(name, from, to) = rng.pick(FIELDS);
            let value = field_value(rng, name, to - from);
            let header = &mut tar[at..at + BLOCK];
            set_field(header, (from, to), &value);
            if name != "chksum" && !rng.one_in(10) {
                fix_checksum(header);
            }
        }
        4 | 5 => {
            let at = boundary(rng);
            let entry = new_entry(rng);
            tar.splice(at..at, entry);
        }
        6 | 7 => {
            let at = boundary(rng);
            let entry = extension_entry(rng);
            tar.splice(at..at, entry);
        }
        8 if !entries.is_empty() => {
            let (from, length) = *rng.pick(&entries);
            let copy = tar[from..from + length].to_vec();
            let at = boundary(rng);
            tar.splice(at..at, copy);
        }
        9 if !entries.is_empty() => {
            let (from, length) = *rng.pick(&entries);
            tar.drain(from..from + length);
        }
        10 => match rng.below(3) {
            0 => tar.truncate(rng.below(tar.len() + 1)),
            1 => tar.truncate(end),
            _ => tar.extend((0..rng.size(1024)).map(|_| rng.next_u64() as u8)),
        },
        _ => mutate_bytes(rng, tar, others, &[b"\0", b"/", b"..", b"ustar"]),
    }
}

/// Gzip at the fastest level (the unpacker does not care how well it was packed).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

pub fn gunzip(data: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(data)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}
