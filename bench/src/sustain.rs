//! When a probe counts as sustained: the rate carried, every event
//! processed exactly once, the workers keeping up, and (optionally) a
//! bounded tail latency. See `bench/README.md` for why each criterion.

use serde::{Deserialize, Serialize};

use crate::results::ProbeResult;

/// When a probe counts as sustained.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Sustain {
    /// Achieved rate at least this share of the offered rate.
    pub min_ratio: f64,
    /// Backlog at the end of the schedule at most this many seconds of
    /// events at the offered rate…
    pub backlog_seconds: f64,
    /// …or this many events, whichever is larger.
    pub backlog_min: u64,
    /// Batch-ack p99 at most this, ms (none: not judged).
    pub max_p99_ms: Option<f64>,
}

/// Whether the backlog grew by more than half its limit over the second
/// half of the schedule: the workers fall behind, and a longer run would
/// cross the limit.
fn backlog_grew(mid: u64, end: u64, limit: u64) -> bool {
    end.saturating_sub(mid) > limit / 2
}

/// Whether a probe's backlog fails it (over the limit at the end, or
/// growing), as soon as the schedule ends.
pub fn backlog_fails(mid: u64, end: u64, limit: u64) -> bool {
    end > limit || backlog_grew(mid, end, limit)
}

/// Sets `sustained` and the reasons it is not.
pub fn judge(r: &mut ProbeResult, s: &Sustain, pipeline: bool) {
    if r.offered_rate > 0.0 && r.achieved_rate < s.min_ratio * r.offered_rate {
        r.reasons.push(format!(
            "achieved {:.0}/s < {:.0}% of {:.0}/s",
            r.achieved_rate,
            s.min_ratio * 100.0,
            r.offered_rate
        ));
    }
    if r.failed > 0 {
        r.reasons
            .push(format!("{} events never accepted", r.failed));
    }
    if pipeline {
        match r.verified {
            Some(true) => {}
            // Paused by the harness after the backlog check failed: that
            // failure (below) is the reason; the stalled count is expected.
            Some(false) if r.workers_paused => {}
            Some(false) => r
                .reasons
                .push(format!("verification failed: {}", r.verify_diff.join("; "))),
            None => r.reasons.push("not verified".into()),
        }
        match r.backlog_end {
            Some(b) if b > r.backlog_limit => r.reasons.push(format!(
                "backlog {b} > {} at the end of the schedule",
                r.backlog_limit
            )),
            Some(end) => {
                let mid = r.backlog_mid.unwrap_or(0);
                if backlog_grew(mid, end, r.backlog_limit) {
                    r.reasons.push(format!(
                        "backlog grew from {mid} to {end} over the second half of the schedule"
                    ));
                }
            }
            None => r.reasons.push("backlog never read".into()),
        }
    }
    if let Some(max) = s.max_p99_ms
        && r.ack_latency.p99_ms > max
    {
        r.reasons.push(format!(
            "ack p99 {:.1} ms > {max:.1} ms",
            r.ack_latency.p99_ms
        ));
    }
    r.sustained = r.reasons.is_empty();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::Latency;

    fn sustain() -> Sustain {
        Sustain {
            min_ratio: 0.98,
            backlog_seconds: 1.0,
            backlog_min: 1000,
            max_p99_ms: Some(1000.0),
        }
    }

    fn healthy() -> ProbeResult {
        ProbeResult {
            offered_rate: 10_000.0,
            achieved_rate: 9_990.0,
            verified: Some(true),
            backlog_mid: Some(4000),
            backlog_end: Some(5001),
            backlog_limit: 10_000,
            ack_latency: Latency {
                p99_ms: 3.0,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// A probe meeting every criterion sustains.
    #[test]
    fn healthy_probe_sustains() {
        let mut r = healthy();
        judge(&mut r, &sustain(), true);
        assert!(r.sustained, "{:?}", r.reasons);
    }

    /// Each criterion alone fails the probe, with its reason.
    #[test]
    fn each_criterion_fails_alone() {
        type Spoil = fn(&mut ProbeResult);
        let cases: [(Spoil, &str); 6] = [
            (|r| r.achieved_rate = 9_700.0, "achieved 9700/s"),
            (|r| r.verified = Some(false), "verification failed"),
            (|r| r.backlog_end = Some(10_001), "backlog 10001 > 10000"),
            (|r| r.ack_latency.p99_ms = 1500.0, "ack p99 1500.0 ms"),
            (|r| r.failed = 3, "3 events never accepted"),
            (
                |r| r.backlog_mid = Some(0),
                "backlog grew from 0 to 5001 over the second half",
            ),
        ];
        for (spoil, reason) in cases {
            let mut r = healthy();
            spoil(&mut r);
            judge(&mut r, &sustain(), true);
            assert!(!r.sustained);
            assert_eq!(r.reasons.len(), 1, "{:?}", r.reasons);
            assert!(r.reasons[0].starts_with(reason), "{:?}", r.reasons);
        }
    }

    /// A failed verification after the harness paused the workers is not
    /// a reason of its own: the backlog is.
    #[test]
    fn pause_leaves_the_backlog_as_the_reason() {
        let mut r = healthy();
        r.verified = Some(false);
        r.workers_paused = true;
        r.backlog_end = Some(20_000);
        judge(&mut r, &sustain(), true);
        assert_eq!(
            r.reasons,
            vec!["backlog 20000 > 10000 at the end of the schedule"]
        );
    }

    /// Against the stub there is nothing to verify and no backlog.
    #[test]
    fn stub_is_judged_on_rate_only() {
        let mut r = healthy();
        r.verified = None;
        r.backlog_end = None;
        judge(&mut r, &sustain(), false);
        assert!(r.sustained, "{:?}", r.reasons);
    }
}
