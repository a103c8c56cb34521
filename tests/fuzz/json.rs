//! JSON mutations for the fuzzer: a node anywhere in a seed replaced by a value of
//! another type, tweaked within its type (numbers at the bounds, strings long, odd or
//! near-valid), nested past serde_json's limit, multiplied, or spliced from another
//! seed; then written out, and sometimes damaged as text.

use crate::gen::{mutate_bytes, Rng};
use serde_json::{Map, Number, Value};

/// Tokens that matter to JSON parsers, spliced into text.
pub const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udc00\\ud800",
    b"\\u00e9",
    b"1e999",
    b"-0",
    b"-",
    b"0.5e-400",
    b"null",
    b"true",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"\xff",
    b"\xc3(",
    b"\xf0\x9f\x98",
    b" ",
    b"\n",
    b"\"a\":1,",
    b"\"id\":\"1\",",
    b"\"jobs\":",
    b"\"status\":0,",
    b"{\"id\":\"z\",\"action\":\"stop\",\"name\":\"a\"},",
];

/// Keys of every JSON form BootAgent reads: answers, jobs, settings, the metafile.
pub const JSON_KEYS: &[&str] = &[
    "id",
    "action",
    "name",
    "url",
    "checksum",
    "version",
    "probation",
    "envs",
    "limits",
    "restart",
    "svrlist",
    "step",
    "status",
    "agentsn",
    "tags",
    "key",
    "secret",
    "jobs",
    "CPU",
    "cpu",
    "memory",
    "MEMORY",
    "delay_s",
    "delay_max_s",
    "window_s",
    "grace_s",
    "failures_max",
    "schema",
    "registered",
    "servers_cli",
    "servers_server",
    "step_s",
    "events",
    "event_seq",
    "stopped",
    "seq",
    "event",
    "errcode",
    "message",
    "delivered",
    "state",
    "MODE",
    "PATH",
    "BOOT_AGENT_DIR",
    "",
];

/// Values that mean something to the validators, and near misses.
pub const JSON_STRINGS: &[&str] = &[
    "config",
    "install",
    "upgrade",
    "uninstall",
    "restart",
    "stop",
    "start",
    "reboot",
    "INSTALL",
    "BasicAgent",
    "a",
    "../../etc",
    "..",
    ".hidden",
    "a/b",
    "current",
    "http://booter/p/BasicAgent-1.0.tgz",
    "https://h:8443/p-1.0.tar.gz?x=1#y",
    "file:///var/tmp/p.tgz",
    "ftp://u:pw@h:21/p.tgz",
    "gopher://x",
    "http://",
    "SHA256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "sha256:9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08",
    "SHA256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0",
    "SHA256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00aé",
    "SHA256:",
    "MD5:00",
    "10%",
    "0%",
    "1%",
    "100%",
    "101%",
    "-1%",
    "10.5%",
    "%",
    "20M",
    "1g",
    "1K",
    "1T",
    "0",
    "1048576",
    "1099511627776",
    "99999999999999999999999G",
    "20 M",
    "a:1",
    "[::1]:8080",
    "https://h:8443/",
    "a:99999",
    "a:0",
    "http://u@a",
    "a,b,c",
    "1.2.3",
    "1.0+build",
    "BOOT_AGENT_NAME",
    "PATH",
    "MODE",
    "finished",
    "running",
    "received",
    "bfdcc18c-b6b9-4725-9c47-37fd93dba5b6",
    "",
];

/// Characters that break naive code: controls, separators, surrogates' neighbours.
const ODD_CHARS: &[char] = &[
    '\0',
    '\n',
    '\r',
    '\t',
    '\u{7f}',
    '\u{85}',
    '\u{2028}',
    '\u{202e}',
    '\u{feff}',
    '\u{fffd}',
    'é',
    '日',
    '😀',
    '\u{10ffff}',
    '/',
    '.',
    '%',
    '"',
    '\\',
    ',',
    ':',
    '@',
    ' ',
];

fn number(rng: &mut Rng) -> Value {
    const INTEGERS: &[i64] = &[
        0,
        1,
        -1,
        2,
        5,
        59,
        60,
        64,
        65,
        99,
        100,
        101,
        127,
        128,
        255,
        256,
        1000,
        1001,
        1023,
        1024,
        3600,
        3601,
        86_399,
        86_400,
        86_401,
        1_048_575,
        1_048_576,
        i32::MAX as i64,
        i32::MIN as i64,
        u32::MAX as i64,
        u32::MAX as i64 + 1,
        1 << 40,
        (1 << 40) + 1,
        1 << 53,
        (1 << 53) + 1,
        i64::MAX,
        i64::MIN,
    ];
    const FLOATS: &[f64] = &[0.5, -0.0, 1.5, 60.0, 1e308, -1e308, 5e-324, 1e-7, 86400.5];
    match rng.below(6) {
        0..=2 => Value::from(*rng.pick(INTEGERS)),
        3 => Value::from(u64::MAX - rng.below(2) as u64),
        4 => Number::from_f64(*rng.pick(FLOATS)).map_or(Value::Null, Value::Number),
        _ => Value::from(rng.next_u64() as i64 >> rng.below(64)),
    }
}

fn string(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=2 => rng.pick(JSON_STRINGS).to_string(),
        3 => (0..rng.size(24))
            .map(|_| char::from(b' ' + rng.below(95) as u8))
            .collect(),
        4 => (0..1 + rng.size(12))
            .map(|_| *rng.pick(ODD_CHARS))
            .collect(),
        5 => {
            let c = if rng.one_in(2) {
                'a'
            } else {
                *rng.pick(ODD_CHARS)
            };
            let count = match rng.below(1024) {
                0 => 1 << 20,
                1..=8 => 1 << 16,
                _ => *rng.pick(&[
                    63, 64, 65, 127, 128, 129, 253, 254, 255, 256, 4095, 4096, 4097,
                ]),
            };
            std::iter::repeat_n(c, count).collect()
        }
        6 => {
            let mut text = rng.pick(JSON_STRINGS).to_string();
            let at = rng.below(text.len() + 1);
            if text.is_char_boundary(at) {
                text.insert(at, *rng.pick(ODD_CHARS));
            } else {
                text.push(*rng.pick(ODD_CHARS));
            }
            text
        }
        7 => rng
            .pick(&[
                "60",
                "-1",
                "1e3",
                "0x10",
                " 1",
                "1 ",
                "+1",
                "٣",
                "18446744073709551616",
                "18446744073709551616G",
                "4294967296%",
                "00000000000000000000001%",
            ])
            .to_string(),
        8 => rng
            .pick(&[
                "/etc/passwd",
                "../x",
                "a/../../b",
                "./run",
                "run/",
                "a\0b",
                "a b",
                "-rf",
                "CON",
            ])
            .to_string(),
        _ => String::new(),
    }
}

/// A random JSON value, at most `depth` containers deep.
pub fn random_value(rng: &mut Rng, depth: usize) -> Value {
    let kinds = if depth == 0 { 4 } else { 6 };
    match rng.below(kinds) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 => number(rng),
        3 => Value::String(string(rng)),
        4 => Value::Array(
            (0..rng.size(6))
                .map(|_| random_value(rng, depth - 1))
                .collect(),
        ),
        _ => {
            let mut map = Map::new();
            for _ in 0..rng.size(6) {
                let key = if rng.one_in(4) {
                    string(rng)
                } else {
                    rng.pick(JSON_KEYS).to_string()
                };
                map.insert(key, random_value(rng, depth - 1));
            }
            Value::Object(map)
        }
    }
}

/// A random node of `value` (any depth), cloned.
fn random_subtree(rng: &mut Rng, value: &Value) -> Value {
    let mut node = value;
    loop {
        let next = match node {
            Value::Array(items) if !items.is_empty() && !rng.one_in(3) => {
                &items[rng.below(items.len())]
            }
            Value::Object(map) if !map.is_empty() && !rng.one_in(3) => {
                map.values().nth(rng.below(map.len())).unwrap_or(node)
            }
            _ => return node.clone(),
        };
        node = next;
    }
}

/// One structural change somewhere in `value`; `pool` lends subtrees.
pub fn mutate(rng: &mut Rng, value: &mut Value, pool: &[Value]) {
    let descend = match value {
        Value::Array(items) => !items.is_empty() && !rng.one_in(3),
        Value::Object(map) => !map.is_empty() && !rng.one_in(3),
        _ => false,
    };
    if descend {
        match value {
            Value::Array(items) => {
                let at = rng.below(items.len());
                mutate(rng, &mut items[at], pool);
            }
            Value::Object(map) => {
                let at = rng.below(map.len());
                if let Some(child) = map.values_mut().nth(at) {
                    mutate(rng, child, pool);
                }
            }
            _ => {}
        }
        return;
    }
    match rng.below(9) {
        0 | 1 => *value = random_value(rng, 2),
        2..=4 => tweak(rng, value),
        5 => {
            // Nesting around the node, near and past serde_json's limit of 128.
            let levels = *rng.pick(&[1, 2, 10, 100, 126, 127, 128, 129, 200]);
            let in_object = rng.one_in(2);
            for _ in 0..levels {
                let inner = value.take();
                *value = if in_object {
                    let mut map = Map::new();
                    map.insert("a".to_string(), inner);
                    Value::Object(map)
                } else {
                    Value::Array(vec![inner])
                };
            }
        }
        6 if !pool.is_empty() => {
            let source = rng.pick(pool);
            *value = random_subtree(rng, source);
        }
        7 => {
            // Many of the same: long arrays, many keys.
            let count = if rng.one_in(16) {
                *rng.pick(&[1000, 5000])
            } else {
                *rng.pick(&[2, 33, 100, 257])
            };
            let grown = match &*value {
                Value::Object(map) => {
                    let mut bigger = map.clone();
                    for index in 0..count {
                        bigger.insert(format!("K{index}"), Value::from(index));
                    }
                    Value::Object(bigger)
                }
                // Copies of a small value only, so that inputs stay near the body bound.
                other if serde_json::to_vec(other).map_or(0, |text| text.len()) <= 1024 => {
                    Value::Array(vec![other.clone(); count])
                }
                other => Value::Array(vec![other.clone(); 2]),
            };
            *value = grown;
        }
        _ => *value = Value::String(string(rng)),
    }
}

/// A change that keeps the node's type, mostly.
fn tweak(rng: &mut Rng, value: &mut Value) {
    match value {
        Value::Null => *value = random_value(rng, 1),
        Value::Bool(b) => *b = !*b,
        Value::Number(n) => {
            *value = match (n.as_i64(), rng.below(3)) {
                (Some(i), 0) => Value::from(i.wrapping_neg()),
                (Some(i), 1) => Value::from(i.wrapping_add(rng.below(3) as i64 - 1)),
                _ => number(rng),
            }
        }
        Value::String(text) => {
            *text = match rng.below(6) {
                0 => text.to_uppercase(),
                1 => text.repeat(1 + rng.below(4)),
                2 => {
                    let mut bytes = text.clone().into_bytes();
                    for _ in 0..1 + rng.below(3) {
                        mutate_bytes(rng, &mut bytes, &[], JSON_TOKENS);
                    }
                    String::from_utf8_lossy(&bytes).into_owned()
                }
                3 => {
                    let mut more = text.clone();
                    more.push(*rng.pick(ODD_CHARS));
                    more
                }
                4 => text.chars().take(rng.below(text.len() + 1)).collect(),
                _ => string(rng),
            }
        }
        Value::Array(items) => match rng.below(3) {
            0 if !items.is_empty() => {
                items.remove(rng.below(items.len()));
            }
            1 if !items.is_empty() => {
                let copy = items[rng.below(items.len())].clone();
                items.insert(rng.below(items.len() + 1), copy);
            }
            _ => items.push(random_value(rng, 2)),
        },
        Value::Object(map) => match rng.below(4) {
            0 if !map.is_empty() => {
                let key = map.keys().nth(rng.below(map.len())).cloned();
                if let Some(key) = key {
                    map.remove(&key);
                }
            }
            1 if !map.is_empty() => {
                // Rename a key: another case, an odd character, another known key.
                let key = map.keys().nth(rng.below(map.len())).cloned();
                if let Some(key) = key {
                    let renamed = match rng.below(3) {
                        0 => key.to_uppercase(),
                        1 => format!("{key}{}", rng.pick(ODD_CHARS)),
                        _ => rng.pick(JSON_KEYS).to_string(),
                    };
                    if let Some(moved) = map.remove(&key) {
                        map.insert(renamed, moved);
                    }
                }
            }
            _ => {
                let key = if rng.one_in(5) {
                    string(rng)
                } else {
                    rng.pick(JSON_KEYS).to_string()
                };
                map.insert(key, random_value(rng, 2));
            }
        },
    }
}

/// A JSON input: a seed changed structurally one to four times, written out,
/// and sometimes changed again as text (duplicate keys, broken syntax, deep nesting).
pub fn input(rng: &mut Rng, seeds: &[Value], seed_texts: &[Vec<u8>]) -> Vec<u8> {
    let mut value = rng.pick(seeds).clone();
    for _ in 0..1 + rng.below(4) {
        mutate(rng, &mut value, seeds);
    }
    let mut text = serde_json::to_vec(&value).expect("a Value serialises");
    // Pretty, as servers may write it, when that does not blow up deep nesting.
    if text.len() < 16 * 1024 && rng.one_in(4) {
        text = serde_json::to_vec_pretty(&value).expect("a Value serialises");
    }
    if rng.one_in(4) {
        for _ in 0..1 + rng.below(3) {
            mutate_bytes(rng, &mut text, seed_texts, JSON_TOKENS);
        }
    }
    text
}

/// Parses each seed as JSON.
pub fn seeds(corpus: &[Vec<u8>]) -> Vec<Value> {
    corpus
        .iter()
        .map(|text| serde_json::from_slice(text).expect("a JSON seed parses"))
        .collect()
}
