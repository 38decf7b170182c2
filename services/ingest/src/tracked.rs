//! The cap on tracked devices (`--max-tracked-devices`): a client inventing
//! device ids without end cannot grow Redis without end.
//!
//! Every device costs Redis memory for a whole `--retention` (its state,
//! its per-minute aggregates, its index entries). Ingest admits devices per
//! partition through the store (`EventLog::admit_devices`, atomic, so any
//! number of ingest processes share one count): a device already tracked is
//! admitted, a new one while the partition tracks fewer than its share of
//! the cap; the events of a refused device are rejected one by one, naming
//! `device_id`, and counted as `ingest_events_rejected_total{reason=
//! "device_cap"}`. Devices leave the count a retention after they were last
//! admitted.
//!
//! Asking the store for every event would add a round trip to every batch,
//! so this process remembers the devices it had admitted (up to
//! `--tracked-devices-cache`, for half the retention: the store keeps an
//! admission for a whole one) and asks only about the others.
//!
//! One edge stays: a batch re-sent by an idempotent producer after a lost
//! answer is deduplicated by its sequence as a whole; if the cap refused
//! one of its devices the first time and admits it the second (a device
//! expired meanwhile), that device's events are acknowledged without being
//! appended. It takes a full cap, a lost answer and an expiry in the same
//! moment; README's "Limits" says so.

use std::time::{Duration, Instant};

use testbed_stream::recent::RecentKeys;

/// Devices this process had admitted lately.
#[derive(Debug)]
pub struct Admitted {
    /// Admissions, trusted for half the retention; cleared past the
    /// capacity.
    devices: RecentKeys<()>,
}

impl Admitted {
    /// Remembers up to `capacity` devices, each for half of `retention`.
    pub fn new(capacity: usize, retention: Duration) -> Self {
        Self {
            devices: RecentKeys::new(capacity, retention / 2),
        }
    }

    /// Of `devices`, those not admitted within the trusted time, under one
    /// lock (a batch's devices at once, not a lock per event).
    pub fn unknown<'a>(&self, devices: Vec<&'a str>, now: Instant) -> Vec<&'a str> {
        self.devices.stale(devices, now)
    }

    /// Records devices the store admitted at `at`.
    pub fn record<'a>(&self, admitted: impl ExactSizeIterator<Item = &'a str>, at: Instant) {
        self.devices.record(admitted.map(|device| (device, ())), at);
    }
}

/// A partition's share of a cap of `cap` devices over `partitions`
/// (devices spread over partitions by a hash of their id).
pub fn per_partition(cap: u64, partitions: u32) -> u64 {
    cap.div_ceil(u64::from(partitions.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(cache: &Admitted, device: &str, now: Instant) -> bool {
        cache.unknown(vec![device], now).is_empty()
    }

    /// An admission is trusted for half the retention, and forgotten when
    /// the memory is full.
    #[test]
    fn admissions_are_trusted_for_half_the_retention() {
        let cache = Admitted::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!fresh(&cache, "d1", t0));
        cache.record(["d1"].into_iter(), t0);
        assert!(fresh(&cache, "d1", t0 + Duration::from_secs(29)));
        assert!(!fresh(&cache, "d1", t0 + Duration::from_secs(30)));
        assert_eq!(
            cache.unknown(vec!["d1", "d2"], t0),
            ["d2"],
            "one lock, the unknown ones"
        );
        cache.record(["d2", "d3"].into_iter(), t0);
        assert!(!fresh(&cache, "d1", t0), "cleared when full");
        assert!(fresh(&cache, "d3", t0));
        let off = Admitted::new(0, Duration::from_secs(60));
        off.record(["d1"].into_iter(), t0);
        assert!(!fresh(&off, "d1", t0));
    }

    /// The cap is shared out rounding up, so the whole is at least the cap.
    #[test]
    fn the_cap_is_shared_over_partitions() {
        assert_eq!(per_partition(1_000_000, 4), 250_000);
        assert_eq!(per_partition(10, 4), 3);
        assert_eq!(per_partition(10, 0), 10);
    }
}
