//! Latency histograms (counts per [`testbed_stream::latency_bucket`]) and
//! their percentiles.
//!
//! A percentile is the upper bound of the bucket holding the value of that
//! rank, so it never understates a latency and is at most one bucket
//! (about 19%) above the true value.

use std::collections::BTreeMap;
use std::time::Duration;

use testbed_proto::v1::LatencyPercentiles;
use testbed_stream::latency_bucket_upper;

use crate::time::proto_duration;

/// Counts by latency bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    buckets: BTreeMap<u32, u64>,
}

impl Histogram {
    /// Adds `count` measurements to `bucket`.
    pub fn add(&mut self, bucket: u32, count: u64) {
        if count > 0 {
            *self.buckets.entry(bucket).or_default() += count;
        }
    }

    /// Number of measurements.
    pub fn total(&self) -> u64 {
        self.buckets.values().sum()
    }

    /// The upper bound of the bucket holding the measurement of rank
    /// `ceil(permille / 1000 * total)` (at least 1); `None` when empty.
    /// Integer ranks so that, say, p50 of 2 values is exactly the first.
    pub fn quantile(&self, permille: u64) -> Option<Duration> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (permille.min(1000) * total).div_ceil(1000).max(1);
        let mut seen = 0;
        for (&bucket, &count) in &self.buckets {
            seen += count;
            if seen >= rank {
                return Some(latency_bucket_upper(bucket));
            }
        }
        self.max()
    }

    /// The upper bound of the highest non-empty bucket.
    pub fn max(&self) -> Option<Duration> {
        self.buckets
            .keys()
            .next_back()
            .map(|&b| latency_bucket_upper(b))
    }

    /// p50, p90, p99 and max; all zero when empty.
    pub fn percentiles(&self) -> LatencyPercentiles {
        let at = |d: Option<Duration>| Some(proto_duration(d.unwrap_or_default()));
        LatencyPercentiles {
            p50: at(self.quantile(500)),
            p90: at(self.quantile(900)),
            p99: at(self.quantile(990)),
            max: at(self.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use testbed_stream::latency_bucket;

    use super::*;

    fn hist(pairs: &[(u32, u64)]) -> Histogram {
        let mut h = Histogram::default();
        for &(b, c) in pairs {
            h.add(b, c);
        }
        h
    }

    /// Bucket 3's upper bound is 2^(4/4) - 1 = 1 ms, bucket 7's 3 ms,
    /// bucket 11's 7 ms.
    #[test]
    fn bucket_bounds_used_are_exact() {
        let ms = |d: Duration| (d.as_secs_f64() * 1000.0 * 1e6).round() / 1e6;
        assert_eq!(ms(latency_bucket_upper(3)), 1.0);
        assert_eq!(ms(latency_bucket_upper(7)), 3.0);
        assert_eq!(ms(latency_bucket_upper(11)), 7.0);
    }

    /// 100 values: 50 in bucket 3, 40 in 7, 9 in 11, 1 in 15.
    /// Ranks 50, 90, 99 and the max land in each bucket in turn.
    #[test]
    fn percentiles_by_rank() {
        let h = hist(&[(7, 40), (3, 50), (11, 9), (15, 1)]);
        assert_eq!(h.total(), 100);
        assert_eq!(h.quantile(500), Some(latency_bucket_upper(3)));
        assert_eq!(h.quantile(900), Some(latency_bucket_upper(7)));
        assert_eq!(h.quantile(990), Some(latency_bucket_upper(11)));
        assert_eq!(h.max(), Some(latency_bucket_upper(15)));
        // One more in bucket 3 moves rank 51 (p50 of 101) no further.
        let mut h2 = h.clone();
        h2.add(3, 1);
        assert_eq!(h2.quantile(500), Some(latency_bucket_upper(3)));
    }

    /// Ranks round up: p50 of two values is the first, p99 of two the second.
    #[test]
    fn ranks_round_up() {
        let h = hist(&[(3, 1), (7, 1)]);
        assert_eq!(h.quantile(500), Some(latency_bucket_upper(3)));
        assert_eq!(h.quantile(990), Some(latency_bucket_upper(7)));
        assert_eq!(h.quantile(0), Some(latency_bucket_upper(3)));
    }

    /// An empty histogram gives zeros, not missing fields.
    #[test]
    fn empty_is_zero() {
        let p = Histogram::default().percentiles();
        let zero = Some(proto_duration(Duration::ZERO));
        assert_eq!((p.p50, p.p90, p.p99, p.max), (zero, zero, zero, zero));
        assert_eq!(hist(&[(3, 0)]).total(), 0);
    }

    /// A 20 ms latency's p50 is its bucket's bound: about 21.6 ms.
    #[test]
    fn single_value_is_its_bucket_bound() {
        let b = latency_bucket(20);
        assert_eq!(b, 17);
        let p = hist(&[(b, 5)]).percentiles();
        let bound = latency_bucket_upper(17);
        assert_eq!(p.p50, Some(proto_duration(bound)));
        assert_eq!(p.max, Some(proto_duration(bound)));
        assert_eq!(bound.as_micros(), 21_627); // 2^(18/4) - 1 ms
    }

    /// Adding to a bucket twice counts both.
    #[test]
    fn adds_accumulate() {
        let mut a = hist(&[(3, 2)]);
        a.add(3, 1);
        a.add(7, 4);
        assert_eq!(a, hist(&[(3, 3), (7, 4)]));
    }
}
