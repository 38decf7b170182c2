//! [`RecentKeys`]: what this process knows the store holds, remembered for
//! a while so that it need not ask or write again: ingest's admitted
//! devices (`--tracked-devices-cache`) and the worker's written index
//! memberships (`--index-cache`).
//!
//! A bounded memory, not a cache with eviction: each key keeps a value and
//! the time it was recorded, is trusted for a fixed time after it, and the
//! whole memory is cleared when it would pass its capacity (the next calls
//! then ask or write again, which is always correct, only slower). A
//! poisoned lock makes every key unknown, for the same reason.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Keys recorded lately, each with a value `V` and when it was recorded.
#[derive(Debug)]
pub struct RecentKeys<V> {
    keys: Mutex<HashMap<String, (V, Instant)>>,
    /// How long a record is trusted.
    fresh_for: Duration,
    /// Keys remembered at most; past it the memory is cleared.
    capacity: usize,
}

impl<V> RecentKeys<V> {
    /// Remembers up to `capacity` keys (0: none), each for `fresh_for`.
    pub fn new(capacity: usize, fresh_for: Duration) -> Self {
        Self {
            keys: Mutex::new(HashMap::new()),
            fresh_for,
            capacity,
        }
    }

    /// Whether `key` was recorded less than the trusted time before `now`
    /// with a value `matches` accepts.
    pub fn is_fresh(&self, key: &str, now: Instant, matches: impl FnOnce(&V) -> bool) -> bool {
        let Ok(keys) = self.keys.lock() else {
            return false;
        };
        keys.get(key)
            .is_some_and(|(value, at)| matches(value) && now.duration_since(*at) < self.fresh_for)
    }

    /// Of `keys`, those not recorded within the trusted time before `now`
    /// (whatever their value), under one lock.
    pub fn stale<'a>(&self, mut keys: Vec<&'a str>, now: Instant) -> Vec<&'a str> {
        let Ok(known) = self.keys.lock() else {
            return keys;
        };
        keys.retain(|key| {
            known
                .get(*key)
                .is_none_or(|(_, at)| now.duration_since(*at) >= self.fresh_for)
        });
        keys
    }

    /// Records `entries` at `at`, clearing the memory first if they would
    /// take it past its capacity.
    pub fn record<K: Into<String>>(
        &self,
        entries: impl ExactSizeIterator<Item = (K, V)>,
        at: Instant,
    ) {
        if self.capacity == 0 {
            return;
        }
        let Ok(mut keys) = self.keys.lock() else {
            return;
        };
        if keys.len() + entries.len() > self.capacity {
            keys.clear();
        }
        for (key, value) in entries {
            keys.insert(key.into(), (value, at));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key is fresh for the trusted time with a value that matches; a
    /// full memory is cleared; capacity 0 remembers nothing.
    #[test]
    fn fresh_for_the_trusted_time_and_cleared_when_full() {
        let recent = RecentKeys::new(2, Duration::from_secs(30));
        let t0 = Instant::now();
        recent.record([("a", 7)].into_iter(), t0);
        assert!(recent.is_fresh("a", t0 + Duration::from_secs(29), |v| *v == 7));
        assert!(!recent.is_fresh("a", t0, |v| *v == 8));
        assert!(!recent.is_fresh("a", t0 + Duration::from_secs(30), |_| true));
        assert_eq!(recent.stale(vec!["a", "b"], t0), ["b"]);
        recent.record([("b", 1), ("c", 1)].into_iter(), t0);
        assert_eq!(recent.stale(vec!["a", "b", "c"], t0), ["a"]);
        let off = RecentKeys::new(0, Duration::from_secs(30));
        off.record([("a", ())].into_iter(), t0);
        assert_eq!(off.stale(vec!["a"], t0), ["a"]);
    }
}
