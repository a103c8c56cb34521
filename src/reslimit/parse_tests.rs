//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;

const CPUS: u32 = 4;

/// `input` is the JSON of a `limits` object, parsed for a host of `CPUS` CPUs.
fn check(input: &str, expected: Result<(Option<u32>, Option<u64>), &str>) {
    let value: Value = serde_json::from_str(input).expect("test input is JSON");
    let expected = expected
        .map(|(cpu_pct, memory_bytes)| ResourceLimits {
            cpu_pct,
            memory_bytes,
        })
        .map_err(str::to_owned);
    assert_eq!(parse_limits(&value, CPUS), expected, "input {input}");
}

#[test]
fn parse_limits_cpu() {
    check(r#"{"CPU": "10%"}"#, Ok((Some(10), None)));
    check(r#"{"CPU": "1%"}"#, Ok((Some(1), None)));
    check(r#"{"CPU": "100%"}"#, Ok((Some(100), None)));
    check(r#"{"CPU": "250%"}"#, Ok((Some(250), None)));
    check(r#"{"CPU": "400%"}"#, Ok((Some(400), None)));
    check(
        r#"{"CPU": "401%"}"#,
        Err(r#"CPU limit "401%" is out of range 1%..400% (4 CPUs)"#),
    );
    check(
        r#"{"CPU": "0%"}"#,
        Err(r#"CPU limit "0%" is out of range 1%..400% (4 CPUs)"#),
    );
    check(
        r#"{"CPU": "99999999999999999999999%"}"#,
        Err(r#"CPU limit "99999999999999999999999%" is out of range 1%..400% (4 CPUs)"#),
    );
    check(
        r#"{"CPU": "abc"}"#,
        Err(r#"CPU limit "abc" must be a whole percentage like "10%""#),
    );
    check(
        r#"{"CPU": "10"}"#,
        Err(r#"CPU limit "10" must be a whole percentage like "10%""#),
    );
    check(
        r#"{"CPU": "12.5%"}"#,
        Err(r#"CPU limit "12.5%" must be a whole percentage like "10%""#),
    );
    check(
        r#"{"CPU": "+10%"}"#,
        Err(r#"CPU limit "+10%" must be a whole percentage like "10%""#),
    );
    check(
        r#"{"CPU": " 10%"}"#,
        Err(r#"CPU limit " 10%" must be a whole percentage like "10%""#),
    );
    check(
        r#"{"CPU": "%"}"#,
        Err(r#"CPU limit "%" must be a whole percentage like "10%""#),
    );
    check(
        r#"{"CPU": 10}"#,
        Err(r#"CPU limit must be a string like "10%", not a number"#),
    );
    check(
        r#"{"CPU": null}"#,
        Err(r#"CPU limit must be a string like "10%", not null"#),
    );
}

#[test]
fn parse_limits_memory() {
    check(r#"{"memory": "20M"}"#, Ok((None, Some(20 * MIB))));
    check(r#"{"memory": "20m"}"#, Ok((None, Some(20 * MIB))));
    check(r#"{"memory": "1G"}"#, Ok((None, Some(GIB))));
    check(r#"{"memory": "1024K"}"#, Ok((None, Some(MIB))));
    check(r#"{"memory": "1048576"}"#, Ok((None, Some(MIB))));
    check(r#"{"memory": "1024G"}"#, Ok((None, Some(1024 * GIB))));
    check(r#"{"memory": 20971520}"#, Ok((None, Some(20 * MIB))));
    check(
        r#"{"memory": "512K"}"#,
        Err(r#"memory limit "512K" is out of range 1M..1024G"#),
    );
    check(
        r#"{"memory": "20"}"#,
        Err(r#"memory limit "20" is out of range 1M..1024G"#),
    );
    check(
        r#"{"memory": 20}"#,
        Err("memory limit 20 is out of range 1M..1024G"),
    );
    check(
        r#"{"memory": "1025G"}"#,
        Err(r#"memory limit "1025G" is out of range 1M..1024G"#),
    );
    check(
        r#"{"memory": "99999999999999999999G"}"#,
        Err(r#"memory limit "99999999999999999999G" is out of range 1M..1024G"#),
    );
    check(
        r#"{"memory": "20MB"}"#,
        Err(r#"memory limit "20MB" must be digits with an optional K, M or G suffix, like "20M""#),
    );
    check(
        r#"{"memory": "-1M"}"#,
        Err(r#"memory limit "-1M" must be digits with an optional K, M or G suffix, like "20M""#),
    );
    check(
        r#"{"memory": "1T"}"#,
        Err(r#"memory limit "1T" must be digits with an optional K, M or G suffix, like "20M""#),
    );
    check(
        r#"{"memory": ""}"#,
        Err(r#"memory limit "" must be digits with an optional K, M or G suffix, like "20M""#),
    );
    check(
        r#"{"memory": -1}"#,
        Err("memory limit -1 must be a whole number of bytes"),
    );
    check(
        r#"{"memory": 2.5e7}"#,
        Err("memory limit 25000000.0 must be a whole number of bytes"),
    );
    check(
        r#"{"memory": ["20M"]}"#,
        Err(r#"memory limit must be a string like "20M" or a number of bytes, not an array"#),
    );
}

#[test]
fn parse_limits_keys_and_shape() {
    check("{}", Ok((None, None)));
    check(
        r#"{"cpu": "10%", "Memory": "20M"}"#,
        Ok((Some(10), Some(20 * MIB))),
    );
    check(
        r#"{"CPU": "10%", "MEMORY": "20M"}"#,
        Ok((Some(10), Some(20 * MIB))),
    );
    check(r#"{"cPu": "10%"}"#, Ok((Some(10), None)));
    check(
        r#"{"CPU": "10%", "cpu": "20%"}"#,
        Err("limit CPU is given twice"),
    );
    check(
        r#"{"memory": "20M", "MEMORY": "30M"}"#,
        Err("limit memory is given twice"),
    );
    check(
        r#"{"disk": "1G"}"#,
        Err(r#"unknown limit "disk" (known: CPU, memory)"#),
    );
    check(
        r#"{"a\nvery long key that goes on and on and on": 1}"#,
        Err(r#"unknown limit "a\nvery long key that goes on and"… (known: CPU, memory)"#),
    );
    check(r#""20M""#, Err("limits must be an object, not a string"));
    check("null", Err("limits must be an object, not null"));
    // Zero CPUs (unknown) still allows one whole CPU.
    let value = serde_json::json!({"CPU": "100%"});
    assert_eq!(parse_limits(&value, 0).map(|l| l.cpu_pct), Ok(Some(100)));
}

#[test]
fn limits_display_in_their_own_syntax() {
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: Some(20 * MIB),
    };
    assert_eq!(limits.to_string(), "CPU 10%, memory 20M");
    assert_eq!(ResourceLimits::default().to_string(), "none");
    assert!(ResourceLimits::default().is_empty());
    assert!(!limits.is_empty());
    let odd = ResourceLimits {
        cpu_pct: None,
        memory_bytes: Some(MIB + 1),
    };
    assert_eq!(odd.to_string(), "memory 1048577");
}
