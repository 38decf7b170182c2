//! Devices this worker wrote to the device indexes lately (the id index
//! and their label postings), so that an apply does not send them again.
//!
//! Index memberships are sorted-set members of score 0: once written they
//! stay until the device is pruned, so writing them on every apply only
//! makes Redis look them up again (the merged apply reads every value it
//! writes). At a million devices, each apply touching a few hundred of
//! them, those reads tripled the ack latency of appends waiting behind
//! them (measured by hand, 20 000 events/s, see the README's "What each
//! read costs"). A device is left out of an apply's index writes while
//! this worker wrote them, with the same labels, within half of
//! `--retention`: pruning removes only devices not seen for the whole
//! retention, so a device written that recently is still indexed. The
//! memberships are recorded only once the apply that wrote them has been
//! applied; an apply that failed or raced writes them again next time.

use std::time::{Duration, Instant};

use testbed_stream::recent::RecentKeys;

/// Which devices' index memberships are known written, with which labels.
#[derive(Debug)]
pub struct Indexed {
    /// Device → the hash of the labels written, trusted for half the
    /// retention; past `--index-cache` devices the memory is cleared and
    /// the next applies write their devices again.
    written: RecentKeys<u64>,
}

impl Indexed {
    /// Remembers up to `capacity` devices, each for half of `retention`.
    pub fn new(capacity: usize, retention: Duration) -> Self {
        Self {
            written: RecentKeys::new(capacity, retention / 2),
        }
    }

    /// Whether `device`'s memberships were written with labels `labels`
    /// (a hash of them; `None`: any) within the trusted time.
    pub fn is_fresh(&self, device: &str, labels: Option<u64>, now: Instant) -> bool {
        self.written
            .is_fresh(device, now, |hash| labels.is_none_or(|l| l == *hash))
    }

    /// Records the memberships an applied apply wrote: (device, labels hash).
    pub fn record(&self, devices: Vec<(String, u64)>, at: Instant) {
        self.written.record(devices.into_iter(), at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device is fresh with its labels, for half the retention, once
    /// recorded; other labels, later times and a full memory are not.
    #[test]
    fn fresh_with_the_same_labels_for_half_the_retention() {
        let cache = Indexed::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert!(!cache.is_fresh("d1", Some(7), t0));
        cache.record(vec![("d1".into(), 7)], t0);
        assert!(cache.is_fresh("d1", Some(7), t0 + Duration::from_secs(29)));
        assert!(cache.is_fresh("d1", None, t0));
        assert!(!cache.is_fresh("d1", Some(8), t0), "labels changed");
        assert!(!cache.is_fresh("d1", Some(7), t0 + Duration::from_secs(30)));
        cache.record(vec![("d2".into(), 1), ("d3".into(), 1)], t0);
        assert!(!cache.is_fresh("d1", Some(7), t0), "cleared when full");
        assert!(cache.is_fresh("d3", Some(1), t0));
        let off = Indexed::new(0, Duration::from_secs(60));
        off.record(vec![("d1".into(), 7)], t0);
        assert!(!off.is_fresh("d1", Some(7), t0));
    }
}
