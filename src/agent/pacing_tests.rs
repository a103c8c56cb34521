//! The rule and the waits of `pacing`, checked over their inputs.
//! (Compiled only under `#[cfg(test)]`, as a child module of its parent.)

use super::*;

#[test]
fn the_rule_takes_the_earliest_ask_then_applies_not_before_and_the_gap() {
    let asks = Asks {
        scheduled: Some(10_000),
        prompt: Some(5_000),
        is_report: true,
        last_answered: Some(4_500),
        ..Asks::default()
    };
    assert_eq!(
        next_request_at(&asks, 1_000),
        Some(5_500),
        "gap from the last answered"
    );
    let exempt = Asks {
        exempt: true,
        ..asks
    };
    assert_eq!(next_request_at(&exempt, 1_000), Some(5_000));
    let register = Asks {
        is_report: false,
        ..asks
    };
    assert_eq!(
        next_request_at(&register, 1_000),
        Some(5_000),
        "no gap for registrations"
    );
    let retry = Asks {
        retry: Some(20_000),
        ..asks
    };
    assert_eq!(
        next_request_at(&retry, 1_000),
        Some(20_000),
        "a retry overrides"
    );
    let throttled = Asks {
        not_before: Some(30_000),
        ..asks
    };
    assert_eq!(next_request_at(&throttled, 1_000), Some(30_000));
    assert_eq!(next_request_at(&Asks::default(), 1_000), None);
}

#[test]
fn phases_spread_over_the_step_and_small_steps_too() {
    // 10 000 UUID-like SNs over a 60 s step, in 60 buckets of a second.
    let mut buckets = [0u32; 60];
    let mut small = std::collections::BTreeSet::new();
    for i in 0..10_000u32 {
        let sn = format!(
            "{:08x}-b6b9-4725-9c47-37fd93dba5b6",
            i.wrapping_mul(2_654_435_761)
        );
        buckets[(phase_ms(&sn, 60_000) / 1000) as usize] += 1;
        small.insert(phase_ms(&sn, 2_000) / 100);
    }
    let (lo, hi) = (buckets.iter().min(), buckets.iter().max());
    assert!(lo >= Some(&120) && hi <= Some(&215), "{buckets:?}");
    assert_eq!(
        small.len(),
        20,
        "a 2 s step spreads over its 100 ms buckets too"
    );
    assert!(phase_ms("x", 1) == 0 && phase_ms("x", 600_000) < 600_000);
}

#[test]
fn slots_follow_the_phase_on_the_wall_clock() {
    assert_eq!(next_slot_wall_ms(0, 250, 1_000), 250);
    assert_eq!(next_slot_wall_ms(250, 250, 1_000), 1_250, "strictly after");
    assert_eq!(next_slot_wall_ms(-10, 250, 1_000), 250, "before 1970 too");
    assert_eq!(next_slot_wall_ms(-800, 250, 1_000), -750);
    // The next report: the first slot more than half a step after the last one sent.
    assert_eq!(next_report_deadline(5_000, 250, 5_000, 250, 1_000), 6_000);
    assert_eq!(next_report_deadline(5_000, 700, 5_000, 250, 1_000), 5_550);
    assert_eq!(next_report_deadline(5_000, 800, 5_000, 250, 1_000), 6_450);
    // A slow exchange: slots already past are skipped whole.
    assert_eq!(next_report_deadline(5_000, 250, 9_100, 250, 1_000), 10_000);
}

#[test]
fn a_wall_clock_jump_gives_at_most_one_odd_interval() {
    let step = 60_000u64;
    let phase = 12_345u64;
    for jump in [
        -3_600_000i64,
        -45_000,
        -1,
        1,
        29_000,
        31_000,
        59_999,
        86_400_000,
    ] {
        // Starts on a slot: wall = mono + offset.
        let (mut mono, mut offset) = (0u64, (phase + step * 28_333_333) as i64);
        let mut sent = Vec::new();
        for i in 0..6 {
            let wall = mono as i64 + offset;
            sent.push(mono);
            let next = next_report_deadline(mono, wall, mono, phase, step);
            if i == 2 {
                offset += jump; // the jump happens while waiting
            }
            mono = next;
            if i >= 3 {
                let wall = mono as i64 + offset;
                assert!(
                    i == 3 || (wall - phase as i64).rem_euclid(step as i64) == 0,
                    "jump {jump}: report {i} back at the phase"
                );
            }
        }
        let gaps: Vec<u64> = sent.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter().all(|g| *g > step / 2 && *g <= step * 3 / 2),
            "jump {jump}: no burst, no stall: {gaps:?}"
        );
        assert!(
            gaps.iter().filter(|g| **g != step).count() <= 1,
            "{jump}: {gaps:?}"
        );
    }
}

#[test]
fn backoff_caps_first_then_draws_from_half_to_all_of_it() {
    let mut rng = Rng::from_seed(3);
    for round in 1..40 {
        let capped = (1_000u64 << (round - 1).min(30)).min(60_000);
        let mut seen = Vec::new();
        for _ in 0..200 {
            let wait = backoff_wait_ms(round, 1_000, 60_000, 50, &mut rng);
            assert!(
                wait >= capped / 2 && wait <= capped,
                "round {round}: {wait}"
            );
            seen.push(wait);
        }
        let at_cap = seen.iter().filter(|w| **w == capped).count();
        assert!(at_cap < 10, "round {round}: {at_cap} of 200 on the cap");
    }
    assert_eq!(backoff_wait_ms(u32::MAX, u64::MAX, 5, 0, &mut rng), 5);
}

#[test]
fn retry_after_is_capped_at_step_at_least_a_second_plus_up_to_half() {
    let mut rng = Rng::from_seed(4);
    let mut distinct = std::collections::BTreeSet::new();
    for _ in 0..1_000 {
        let wait = retry_after_wait_ms(30, 600_000, 1_000, 50, &mut rng);
        assert!((30_000..=45_000).contains(&wait), "{wait}");
        distinct.insert(wait / 1000);
    }
    assert!(
        distinct.len() >= 15,
        "spread over the 15 s of extra: {distinct:?}"
    );
    for _ in 0..100 {
        let zero = retry_after_wait_ms(0, 600_000, 1_000, 50, &mut rng);
        assert!((1_000..=1_500).contains(&zero), "Retry-After: 0 → {zero}");
        let huge = retry_after_wait_ms(u64::MAX, 60_000, 1_000, 50, &mut rng);
        assert!((60_000..=90_000).contains(&huge), "{huge}");
    }
}

#[test]
fn retry_after_reads_seconds_and_http_dates() {
    let now = 784_111_777; // Sun, 06 Nov 1994 08:49:37 GMT
    assert_eq!(parse_retry_after("120", now), Some(120));
    assert_eq!(parse_retry_after(" 0 ", now), Some(0));
    assert_eq!(
        parse_retry_after("99999999999999999999999", now),
        Some(u64::MAX)
    );
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", now),
        Some(30)
    );
    assert_eq!(
        parse_retry_after("Sunday, 06-Nov-94 08:50:07 GMT", now),
        Some(30)
    );
    assert_eq!(parse_retry_after("Sun Nov  6 08:50:07 1994", now), Some(30));
    assert_eq!(
        parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now),
        Some(0),
        "past"
    );
    for bad in [
        "",
        "-5",
        "1.5",
        "soon",
        "Sun, 32 Nov 1994 08:50:07 GMT",
        "3 0",
    ] {
        assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
    }
}

#[test]
fn first_report_delay_is_up_to_min_of_step_and_the_limit() {
    let mut rng = Rng::from_seed(5);
    let (mut lo, mut hi) = (u64::MAX, 0);
    for _ in 0..10_000 {
        let d = first_report_delay_ms(600_000, 10_000, &mut rng);
        lo = lo.min(d);
        hi = hi.max(d);
        assert!(first_report_delay_ms(3_000, 10_000, &mut rng) <= 3_000);
    }
    assert!(lo < 100 && hi > 9_900 && hi <= 10_000, "{lo}..{hi}");
    assert_eq!(first_report_delay_ms(600_000, 0, &mut rng), 0);
}
