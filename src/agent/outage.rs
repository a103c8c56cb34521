//! The log of a failure that repeats (docs/protocol.md section 4): the first failure,
//! then at most one line per `interval_ms` with the count since the last line, then
//! one line when a server answers again, saying how long it lasted. Throttled
//! periods (HTTP 429 or 503) are told the same way. Pure: it returns the lines and
//! the core logs them, so a test can count them over a simulated day.
//!
//! ```text
//!   Healthy ── failure ──► Outage{since, counts} ── answer ──► Healthy
//!     (line: the first)      │  ▲ failure: counted;             (line: how long,
//!                            └──┘ a line if the last one          how many)
//!                                 is `interval_ms` old
//! ```

use crate::wheel::Millis;

/// What went wrong with one exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trouble {
    /// No usable answer, or one that counts as a failure (5xx, garbage, rejected).
    Failed,
    /// HTTP 429 or 503: the server asks to come back later.
    Throttled,
}

struct Outage {
    since: Millis,
    last_line_at: Millis,
    /// Since the last line.
    failed: u64,
    throttled: u64,
    /// Over the whole outage.
    failed_total: u64,
    throttled_total: u64,
}

/// The state of the log: healthy, or in an outage since some time.
#[derive(Default)]
pub struct OutageLog {
    outage: Option<Outage>,
}

/// A line to log, and whether it is a warning (the start and the reminders) or
/// news (the recovery).
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    Warn(String),
    Info(String),
}

impl OutageLog {
    /// One exchange failed (`detail` names the server and the reason).
    pub fn trouble(
        &mut self,
        now: Millis,
        trouble: Trouble,
        detail: &str,
        interval_ms: u64,
    ) -> Option<Line> {
        let Some(outage) = self.outage.as_mut() else {
            let (failed, throttled) = match trouble {
                Trouble::Failed => (1, 0),
                Trouble::Throttled => (0, 1),
            };
            self.outage = Some(Outage {
                since: now,
                last_line_at: now,
                failed: 0,
                throttled: 0,
                failed_total: failed,
                throttled_total: throttled,
            });
            let minutes = interval_ms / 60_000;
            return Some(Line::Warn(match trouble {
                Trouble::Failed => format!(
                    "{detail}; retrying with backoff (repeated failures are summarised every {minutes} min)"
                ),
                Trouble::Throttled => format!(
                    "{detail}: the server is throttling, waiting as asked (summarised every {minutes} min)"
                ),
            }));
        };
        match trouble {
            Trouble::Failed => {
                outage.failed += 1;
                outage.failed_total += 1;
            }
            Trouble::Throttled => {
                outage.throttled += 1;
                outage.throttled_total += 1;
            }
        }
        if now.saturating_sub(outage.last_line_at) < interval_ms {
            return None;
        }
        let line = format!(
            "still no answer after {}: {} since the last line (last: {detail})",
            duration(now.saturating_sub(outage.since)),
            counts(outage.failed, outage.throttled),
        );
        outage.last_line_at = now;
        outage.failed = 0;
        outage.throttled = 0;
        Some(Line::Warn(line))
    }

    /// An exchange succeeded with `server`: the end of an outage, if one was going on.
    pub fn recovered(&mut self, now: Millis, server: &str) -> Option<Line> {
        let outage = self.outage.take()?;
        Some(Line::Info(format!(
            "{server} answered again after {}: {} in all",
            duration(now.saturating_sub(outage.since)),
            counts(outage.failed_total, outage.throttled_total),
        )))
    }
}

fn counts(failed: u64, throttled: u64) -> String {
    match (failed, throttled) {
        (f, 0) => format!("{f} failed attempt(s)"),
        (0, t) => format!("{t} throttled answer(s)"),
        (f, t) => format!("{f} failed attempt(s), {t} throttled answer(s)"),
    }
}

/// `1 h 2 min`, `3 min 4 s`, `5.6 s`.
fn duration(ms: Millis) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{} min {} s", s / 60, s % 60),
        _ => format!("{} h {} min", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_then_one_per_interval_then_recovery() {
        let mut log = OutageLog::default();
        let mut lines = Vec::new();
        let mut now = 0;
        while now < 30 * 60_000 {
            let trouble = if now % 7_000 == 0 {
                Trouble::Throttled
            } else {
                Trouble::Failed
            };
            lines.extend(log.trouble(now, trouble, "a:1: connection refused", 600_000));
            now += 1_000;
        }
        lines.extend(log.recovered(now, "a:1"));
        assert_eq!(lines.len(), 4, "{lines:#?}");
        assert!(matches!(&lines[0], Line::Warn(l) if l.contains("throttling")));
        assert!(matches!(&lines[1], Line::Warn(l) if l.contains("after 10 min 0 s")));
        assert!(
            matches!(&lines[3], Line::Info(l) if l.contains("after 30 min 0 s") && l.contains("throttled answer(s)")),
            "{lines:#?}"
        );
        assert_eq!(log.recovered(now, "a:1"), None, "healthy: nothing to say");
    }
}
