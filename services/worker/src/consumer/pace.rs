//! How long a short read lingers before its batch is applied: a multiple
//! (`--apply-linger-factor`) of how long applies take lately, at most
//! `--apply-linger`.
//!
//! Batching by demand rather than by clock (group commit): at light load
//! applies are short, so a batch waits about as long as one apply and the
//! pipeline adds little latency; as load grows applies take longer, each
//! batch gathers for longer and carries more events, and the store's cost
//! per event falls. Factor 0 applies what each read returns at once (the
//! next batch is what arrived while the previous apply ran).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A moving average of this process's apply durations (gate held to
/// reply), shared by every partition's read loop.
#[derive(Debug, Default)]
pub(crate) struct ApplyPace {
    /// Exponentially weighted mean, in nanoseconds (0: none yet).
    mean_ns: AtomicU64,
}

/// Weight of the newest apply in the mean: about the last eight count.
const NEWEST_SHARE: u64 = 8;

impl ApplyPace {
    /// Records one apply's duration.
    pub(crate) fn record(&self, took: Duration) {
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        // Lost updates between two partitions' applies only drop a sample.
        let mean = self.mean_ns.load(Ordering::Relaxed);
        let next = if mean == 0 {
            took
        } else {
            mean - mean / NEWEST_SHARE + took / NEWEST_SHARE
        };
        self.mean_ns.store(next.max(1), Ordering::Relaxed);
    }

    /// The mean apply duration so far (zero before the first).
    pub(crate) fn mean(&self) -> Duration {
        Duration::from_nanos(self.mean_ns.load(Ordering::Relaxed))
    }

    /// How long a short read lingers: `factor` times the mean apply, at
    /// most `cap`. Before any apply, `cap` (nothing is known yet, and the
    /// first batches of a backlog are full reads that do not linger).
    pub(crate) fn linger(&self, factor: f64, cap: Duration) -> Duration {
        let mean = self.mean();
        if mean.is_zero() {
            return cap;
        }
        mean.mul_f64(factor).min(cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn linger_is_the_factor_of_the_mean_within_the_cap() {
        let pace = ApplyPace::default();
        assert_eq!(pace.linger(1.0, 20 * MS), 20 * MS, "nothing known: the cap");
        pace.record(2 * MS);
        assert_eq!(pace.mean(), 2 * MS);
        assert_eq!(pace.linger(1.0, 20 * MS), 2 * MS);
        assert_eq!(pace.linger(2.5, 20 * MS), 5 * MS);
        assert_eq!(pace.linger(0.0, 20 * MS), Duration::ZERO);
        assert_eq!(pace.linger(100.0, 20 * MS), 20 * MS);
    }

    #[test]
    fn the_mean_follows_recent_applies() {
        let pace = ApplyPace::default();
        pace.record(80 * MS);
        for _ in 0..40 {
            pace.record(MS);
        }
        // 80 ms decayed by (7/8)^40 ≈ 0.5% toward 1 ms.
        let mean = pace.mean();
        assert!(mean > MS && mean < 2 * MS, "{mean:?}");
        pace.record(Duration::ZERO);
        assert!(!pace.mean().is_zero(), "a zero apply keeps a mean");
    }
}
