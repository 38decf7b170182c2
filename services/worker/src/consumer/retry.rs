//! Entries this consumer failed to process, retried by it with backoff.
//!
//! An entry whose processing failed (an injected failure fault, or an
//! apply whose store retries ran out) stays pending in the group, and its
//! consumer delivers it to itself again after a backoff
//! (`--retry-initial-delay`, doubling per delivery up to
//! `--retry-max-delay`, with jitter), counting a delivery each time, until
//! it is applied or, past `--max-deliveries`, dead-lettered. `--claim-idle`
//! is left for the entries of consumers that died.
//!
//! The schedule is this process's: an entry left in it when the worker
//! stops is pending all the same, and whoever takes over the dead
//! consumer's entries processes it.
//!
//! The backoff is computed here rather than with `backon` (which the
//! worker uses for its store calls): `backon` drives one retried call,
//! while each pending entry needs a due time computed from its delivery
//! count, which survives a restart or a claim (Redis keeps it).

#[allow(clippy::wildcard_imports)]
use super::*;

use std::collections::BTreeMap;
use std::time::Instant;

/// Why an entry is retried (the `reason` of `worker_events_retried_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// An injected failure fault failed it.
    InjectedFault,
    /// The store refused or timed out its apply (after the quick retries).
    StoreError,
}

impl RetryReason {
    /// The metric attribute's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InjectedFault => "injected_fault",
            Self::StoreError => "store_error",
        }
    }
}

/// An entry whose processing failed: it stays pending, to be retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The entry's id.
    pub id: String,
    /// Its deliveries so far, the failed one included.
    pub deliveries: u64,
    /// Why it failed.
    pub reason: RetryReason,
}

/// The delay before delivery `deliveries + 1` of an entry: `initial`
/// doubled for each delivery after the first, at most `max`, then
/// shortened at random by up to half ("equal jitter": retries of entries
/// that failed together spread out, and none comes later than the
/// schedule).
pub fn backoff(
    deliveries: u64,
    initial: Duration,
    max: Duration,
    rng: &mut impl rand::Rng,
) -> Duration {
    let doublings = deliveries.saturating_sub(1).min(32) as u32;
    let nominal = initial.saturating_mul(1u32 << doublings.min(31)).min(max);
    nominal.mul_f64(rng.random_range(0.5..=1.0))
}

/// The longest a failure can last and leave an entry pending (not
/// dead-lettered) with these settings: the time from its first delivery
/// to its `max_deliveries`-th with no jitter. An entry failing every
/// delivery is dead-lettered at the next one, at most one more
/// `--retry-max-delay` later; jitter can shorten every delay by up to half.
pub fn retry_budget(max_deliveries: u64, initial: Duration, max: Duration) -> Duration {
    (1..max_deliveries)
        .map(|d| {
            let doublings = (d - 1).min(31) as u32;
            initial.saturating_mul(1u32 << doublings).min(max)
        })
        .sum()
}

/// One partition's entries awaiting their retry, by id.
#[derive(Debug, Default)]
pub(super) struct RetryQueue {
    /// Due time and deliveries so far, by entry id.
    due: BTreeMap<String, (Instant, u64)>,
}

impl RetryQueue {
    /// The earliest due time.
    fn next(&self) -> Option<Instant> {
        self.due.values().map(|(at, _)| *at).min()
    }
}

impl Consumer {
    /// Schedules the retry of each of `failed` (entries of `partition`),
    /// and counts their events as retried, by reason.
    pub(super) fn schedule_retries(&self, partition: u32, failed: Vec<(Failed, u64)>) {
        if failed.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut rng = rand::rng();
        let Some(queue) = self.retries.get(partition as usize) else {
            return;
        };
        let Ok(mut queue) = queue.lock() else { return };
        for (f, events) in failed {
            let delay = backoff(
                f.deliveries,
                self.config.retry_initial_delay,
                self.config.retry_max_delay,
                &mut rng,
            );
            self.metrics.retried.add(
                events,
                &[opentelemetry::KeyValue::new("reason", f.reason.as_str())],
            );
            queue.due.insert(f.id, (now + delay, f.deliveries));
        }
    }

    /// When the next retry of `partition` is due, if one is scheduled.
    pub(super) fn next_retry(&self, partition: u32) -> Option<Instant> {
        self.retries.get(partition as usize)?.lock().ok()?.next()
    }

    /// Whether entry `id` of `partition` awaits its retry.
    pub(super) fn retry_scheduled(&self, partition: u32, id: &str) -> bool {
        self.retries
            .get(partition as usize)
            .and_then(|q| q.lock().ok().map(|q| q.due.contains_key(id)))
            .unwrap_or(false)
    }

    /// Takes out the entries of `partition` due by `now` (ids and
    /// deliveries so far), oldest first, at most `limit`.
    fn take_due(&self, partition: u32, now: Instant, limit: usize) -> Vec<(String, u64)> {
        let Some(Ok(mut queue)) = self.retries.get(partition as usize).map(|q| q.lock()) else {
            return Vec::new();
        };
        let due: Vec<(String, u64)> = queue
            .due
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .take(limit)
            .map(|(id, (_, deliveries))| (id.clone(), *deliveries))
            .collect();
        for (id, _) in &due {
            queue.due.remove(id);
        }
        due
    }

    /// Delivers the due entries of `partition` to this consumer again and
    /// processes them; those failing again are scheduled once more. When
    /// the store cannot claim them, they are put back a backoff later (the
    /// entries are pending in the store whatever happens here).
    pub(super) async fn retry_due(&self, partition: u32) {
        let due = self.take_due(partition, Instant::now(), self.config.read_count as usize);
        if due.is_empty() {
            return;
        }
        let ids: Vec<String> = due.iter().map(|(id, _)| id.clone()).collect();
        match self.log.claim(partition, &self.name, &ids).await {
            Ok(entries) => {
                self.figures
                    .retried_entries
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                tracing::debug!(
                    partition,
                    entries = entries.len(),
                    "retrying failed entries"
                );
                let failed = self.process(partition, entries).await;
                self.schedule_retries(partition, failed);
            }
            Err(err) => {
                tracing::warn!(partition, entries = due.len(), error = %err, "cannot claim entries to retry; later");
                // Not delivered: counted as no events retried, and the
                // backoff goes on from where it was.
                let failed = due
                    .into_iter()
                    .map(|(id, deliveries)| {
                        let f = Failed {
                            id,
                            deliveries,
                            reason: RetryReason::StoreError,
                        };
                        (f, 0)
                    })
                    .collect();
                self.schedule_retries(partition, failed);
            }
        }
    }
}
