//! End to end: a child that writes as fast as it can (docs/protocol.md section 6). Its log
//! stays bounded, BootAgent keeps reporting, and what is over the output rate
//! (`child_log_bytes_per_s_max`) is dropped without a copy, the log saying how much, so
//! that relaying costs BootAgent less CPU than the child spends writing
//! (tests/bench_relay.sh prints both).

mod common;

use common::children::preinstall;
use common::*;
use std::fs;
use std::path::Path;

/// The text of `NAME.log` and its rotations.
fn log_text(data: &Path, name: &str) -> String {
    let logs = data.join("logs");
    let mut text = String::new();
    for file in [format!("{name}.log.1"), format!("{name}.log")] {
        text.push_str(&fs::read_to_string(logs.join(file)).unwrap_or_default());
    }
    text
}

#[test]
fn output_over_the_rate_is_dropped_and_the_log_says_how_much() {
    let server = start_server(Some(1));
    let scratch = Scratch::new("out-rate");
    preinstall(
        &scratch.data(),
        "noisy",
        "exec yes 'a line from a noisy child'",
        None,
    );
    let mut agent = Agent::start(
        &scratch,
        &[
            "-S",
            &server.addr(),
            "-o",
            "child_log_bytes_per_s_max=100000",
        ],
    );
    let said = |text: &str| {
        text.lines().any(|line| {
            line.starts_with("[bootagent: ")
                && line.ends_with(" bytes of output dropped, over 100000 bytes/s]")
        })
    };
    assert!(
        wait_until(DEADLINE, || said(&log_text(&scratch.data(), "noisy"))),
        "the log says what was dropped"
    );
    let before = server.requests_to("/agent/status").len();
    assert!(
        wait_until(DEADLINE, || server.requests_to("/agent/status").len()
            >= before + 2),
        "reports go on"
    );
    agent.stop();
    let logs = scratch.data().join("logs");
    for file in ["noisy.log", "noisy.log.1"] {
        let len = fs::metadata(logs.join(file)).map(|m| m.len()).unwrap_or(0);
        assert!(len <= 1024 * 1024 + 64 * 1024, "{file}: {len} bytes");
    }
    // Whole lines only, the notes aside: nothing was cut mid-line by the dropping.
    let text = log_text(&scratch.data(), "noisy");
    let odd: Vec<&str> = (text.lines())
        .filter(|l| *l != "a line from a noisy child" && !said(l))
        .take(3)
        .collect();
    assert!(odd.len() <= 2, "lines cut apart: {odd:?}");
}
