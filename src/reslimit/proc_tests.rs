//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;
use std::time::{Duration, Instant};

use crate::reslimit::parse::MIB;
use crate::reslimit::testing::{wait_until, Group, ALLOCATE_50M};

#[test]
fn stat_is_split_at_the_last_parenthesis() {
    // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt
    // cmajflt utime stime cutime cstime priority nice threads itrealvalue starttime
    // vsize rss …
    let tail = "S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 20 -1 20 0 1 0 100 1000000 250 18446744073709551615";
    for comm in ["sh", "a b", "x) S 1 99 (", ")", "(("] {
        let text = format!("4243 ({comm}) {tail}\n");
        assert_eq!(
            parse_stat(&text),
            Some(Stat {
                pgrp: 4242,
                cpu_ticks: 7 + 3 + 20,
                rss_pages: 250
            }),
            "comm {comm:?}"
        );
    }
    assert_eq!(parse_stat("4243 (sh) S 1"), None);
    assert_eq!(parse_stat("no parenthesis"), None);
}

const TICK_MS: u64 = 10; // /proc counts CPU time in ticks of 10 ms (USER_HZ 100)

/// A group of `spinning` busy CPUs under `throttle`, driven by a caller that obeys
/// the verdicts (stopped from a `Stop` until `resume_at`, sampled an interval after
/// that), for `duration_ms`. Returns the CPU time used and the count of stops.
fn simulate(throttle: &mut Throttle, spinning: u64, duration_ms: u64) -> (u64, u32) {
    let (mut cpu_ms, mut stops) = (0, 0);
    let mut running_since = 0;
    let mut next_sample = throttle.interval_ms();
    while next_sample <= duration_ms {
        let now = next_sample;
        cpu_ms += (now - running_since) * spinning;
        let seen = GroupUsage {
            rss_bytes: MIB,
            cpu_ms: cpu_ms / TICK_MS * TICK_MS,
            processes: 1,
        };
        match throttle.sample(now, seen) {
            Verdict::Ok => {
                running_since = now;
                next_sample = now + throttle.interval_ms();
            }
            Verdict::Stop { resume_at } => {
                assert!(resume_at > now);
                stops += 1;
                running_since = resume_at;
                next_sample = resume_at + throttle.interval_ms();
            }
            Verdict::KillMemory { .. } => panic!("no memory limit here"),
        }
    }
    (cpu_ms, stops)
}

#[test]
fn throttle_stops_a_group_that_used_a_whole_interval_for_900_ms() {
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: None,
    };
    let mut throttle = Throttle::new(limits, 1_000);
    assert_eq!(throttle.interval_ms(), CPU_SAMPLE_INTERVAL_MS);
    let spun = GroupUsage {
        rss_bytes: 0,
        cpu_ms: 100,
        processes: 1,
    };
    assert_eq!(
        throttle.sample(1_100, spun),
        Verdict::Stop { resume_at: 2_000 }
    );
    // A sample while stopped repeats the same resume time.
    assert_eq!(
        throttle.sample(1_500, spun),
        Verdict::Stop { resume_at: 2_000 }
    );
    // Stopped for 900 ms, the debt is paid: the next 100 ms of spinning costs 900 again.
    let again = GroupUsage {
        cpu_ms: 200,
        ..spun
    };
    assert_eq!(
        throttle.sample(2_100, again),
        Verdict::Stop { resume_at: 3_000 }
    );
}

#[test]
fn throttle_holds_a_spinning_group_at_its_limit_over_a_minute() {
    const MINUTE_MS: u64 = 60_000;
    for (pct, spinning) in [(10, 1), (10, 2), (25, 1), (50, 2), (150, 2)] {
        let limits = ResourceLimits {
            cpu_pct: Some(pct),
            memory_bytes: None,
        };
        let mut throttle = Throttle::new(limits, 0);
        let (cpu_ms, stops) = simulate(&mut throttle, spinning, MINUTE_MS);
        let average_pct = cpu_ms as f64 * 100.0 / MINUTE_MS as f64;
        assert!(
            (average_pct - f64::from(pct)).abs() <= 2.0,
            "limit {pct}%, {spinning} CPUs spinning: average {average_pct:.2}%"
        );
        assert!(stops > 0);
    }
}

#[test]
fn throttle_never_stops_a_group_under_its_limit() {
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: None,
    };
    let mut throttle = Throttle::new(limits, 0);
    // 9 % steadily, seen in whole ticks, for a minute.
    for now in (100..=60_000).step_by(100) {
        let cpu_ms = now * 9 / 100 / TICK_MS * TICK_MS;
        let usage = GroupUsage {
            rss_bytes: MIB,
            cpu_ms,
            processes: 2,
        };
        assert_eq!(throttle.sample(now, usage), Verdict::Ok, "at {now} ms");
    }
    // A burst within what it saved is allowed too; savings are capped at 1 s.
    let mut idle = Throttle::new(limits, 0);
    assert_eq!(idle.sample(3_600_000, GroupUsage::default()), Verdict::Ok);
    let burst = GroupUsage {
        cpu_ms: 100,
        ..GroupUsage::default()
    };
    assert_eq!(idle.sample(3_600_100, burst), Verdict::Ok);
    let more = GroupUsage {
        cpu_ms: 300,
        ..GroupUsage::default()
    };
    assert!(matches!(idle.sample(3_600_200, more), Verdict::Stop { .. }));
}

#[test]
fn throttle_survives_a_falling_cpu_sum_and_caps_a_stop() {
    let limits = ResourceLimits {
        cpu_pct: Some(1),
        memory_bytes: None,
    };
    let mut throttle = Throttle::new(limits, 0);
    // 8 CPUs spinning for a 10 s gap would owe 800 s; a stop lasts 30 s at most.
    let usage = GroupUsage {
        cpu_ms: 80_000,
        ..GroupUsage::default()
    };
    assert_eq!(
        throttle.sample(10_000, usage),
        Verdict::Stop { resume_at: 40_000 }
    );
    // A member reaped elsewhere: the sum falls; that is no use, and no panic.
    let fell = GroupUsage {
        cpu_ms: 5_000,
        ..GroupUsage::default()
    };
    assert_eq!(throttle.sample(40_000, fell), Verdict::Ok);
}

#[test]
fn throttle_kills_once_over_memory() {
    let limits = ResourceLimits {
        cpu_pct: None,
        memory_bytes: Some(20 * MIB),
    };
    let mut throttle = Throttle::new(limits, 0);
    assert_eq!(throttle.interval_ms(), MEMORY_SAMPLE_INTERVAL_MS);
    let under = GroupUsage {
        rss_bytes: 20 * MIB,
        cpu_ms: 50_000,
        processes: 3,
    };
    assert_eq!(throttle.sample(1_000, under), Verdict::Ok);
    let over = GroupUsage {
        rss_bytes: 20 * MIB + 1,
        ..under
    };
    let kill = Verdict::KillMemory {
        rss_bytes: 20 * MIB + 1,
        limit_bytes: 20 * MIB,
    };
    assert_eq!(throttle.sample(2_000, over), kill);
    assert_eq!(throttle.sample(3_000, over), Verdict::Ok);
}

#[test]
fn group_usage_sums_a_real_process_group() {
    let group = Group::spawn("sleep 30 & while :; do :; done", None);
    let mut usage = GroupUsage::default();
    let seen = wait_until(5_000, || {
        usage = group_usage(group.pgid()).expect("scan /proc");
        usage.processes >= 2 && usage.cpu_ms > 0
    });
    assert!(seen, "{usage:?}");
    assert!(usage.rss_bytes > 0, "{usage:?}");
    drop(group);
    assert!(group_usage(-1).is_err());
}

#[test]
fn proc_fallback_sees_a_group_over_its_memory_limit() {
    let group = Group::spawn(ALLOCATE_50M, None);
    let limits = ResourceLimits {
        cpu_pct: None,
        memory_bytes: Some(20 * MIB),
    };
    let mut throttle = Throttle::new(limits, 0);
    let mut verdict = Verdict::Ok;
    let killed = wait_until(20_000, || {
        let usage = group_usage(group.pgid()).expect("scan /proc");
        verdict = throttle.sample(0, usage);
        verdict != Verdict::Ok
    });
    assert!(killed, "never over 20M");
    let Verdict::KillMemory {
        rss_bytes,
        limit_bytes,
    } = verdict
    else {
        panic!("{verdict:?}");
    };
    assert!(rss_bytes > limit_bytes);
    println!("/proc fallback: {} MiB over a 20M limit", rss_bytes / MIB);
}

#[test]
fn proc_fallback_throttles_a_real_spinning_group() {
    const RUN_MS: u64 = 5_000;
    let start = Instant::now();
    let clock = || u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let group = Group::spawn("while :; do :; done", None);
    let limits = ResourceLimits {
        cpu_pct: Some(10),
        memory_bytes: None,
    };
    let mut throttle = Throttle::new(limits, clock());
    let mut stopped_until: Option<Millis> = None;
    let mut next_sample = clock() + throttle.interval_ms();
    let (mut stops, mut max_stop_ms) = (0, 0);
    while clock() < RUN_MS {
        let now = clock();
        if stopped_until.is_some_and(|until| now >= until) {
            group.signal(libc::SIGCONT);
            stopped_until = None;
        }
        if now >= next_sample {
            let usage = group_usage(group.pgid()).expect("scan /proc");
            match throttle.sample(now, usage) {
                Verdict::Ok => next_sample = now + throttle.interval_ms(),
                Verdict::Stop { resume_at } => {
                    if stopped_until.is_none() {
                        group.signal(libc::SIGSTOP);
                        stops += 1;
                        max_stop_ms = max_stop_ms.max(resume_at - now);
                    }
                    stopped_until = Some(resume_at);
                    next_sample = resume_at + throttle.interval_ms();
                }
                other => panic!("{other:?}"),
            }
        }
        let wake = stopped_until.map_or(next_sample, |until| until.min(next_sample));
        std::thread::sleep(Duration::from_millis(wake.saturating_sub(clock()).max(1)));
    }
    group.signal(libc::SIGCONT);
    let elapsed_ms = clock();
    let used_ms = group_usage(group.pgid()).expect("scan /proc").cpu_ms;
    let pct = used_ms * 100 / elapsed_ms;
    println!("/proc fallback at 10%: {used_ms} ms of CPU in {elapsed_ms} ms ({pct}%), {stops} stops, longest {max_stop_ms} ms");
    assert!(stops >= 2, "{stops} stops");
    assert!(pct <= 15, "{pct}% of a CPU under a 10% limit");
    assert!(used_ms > 0);
}
