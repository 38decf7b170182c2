//! Entries that cannot be processed: an injected failure fault (left
//! pending, retried), entries checked before the fold, and
//! dead-lettered with the reason (and their run ledgers' counts) when
//! undecodable or over `--max-deliveries`.

#[allow(clippy::wildcard_imports)]
use super::*;

impl Consumer {
    /// Applies the active faults that match `events`: sleeps for delays,
    /// and returns true when a failure fault decides this entry fails.
    pub(super) async fn injected_failure(&self, events: &[Bytes]) -> bool {
        let faults = self.local.faults();
        if faults.is_empty() {
            return false;
        }
        let now = SystemTime::now();
        let mut delay = Duration::ZERO;
        let mut fail = false;
        {
            let mut rng = rand::rng();
            for fault in faults
                .iter()
                .filter(|f| !expired(f, now) && matches(f, events))
            {
                match &fault.effect {
                    Some(Effect::Delay(d)) => delay += sample_delay(d, &mut rng),
                    Some(Effect::Failure(f)) => fail |= rng.random::<f64>() < f.ratio,
                    None => {}
                }
            }
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        fail
    }

    /// Dead-letters `entry` if it is poison (empty, or delivered too
    /// often), and leaves it pending if an injected fault fails it (added
    /// to `failed`, to be retried). `Some`
    /// when it is to be applied: the entry without its events, and its
    /// events (so that the batch's list of entries is cheap to clone).
    /// Its events are checked as they are folded ([`Self::apply_batch`]),
    /// which reads each once.
    pub(super) async fn prepare(
        &self,
        mut entry: Entry,
        failed: &mut Vec<(Failed, u64)>,
    ) -> Option<(Entry, Vec<Bytes>)> {
        let events = entry.events.len() as u64;
        let poison = if entry.events.is_empty() {
            Some(("entry has no events".to_owned(), true))
        } else if entry.deliveries > self.config.max_deliveries {
            // An undecodable entry says so, as it would have in the fold.
            Some(match crate::fold::entry_check(&entry.events) {
                Err(reason) => (reason, false),
                Ok(()) => (
                    format!(
                        "delivered {} times, over --max-deliveries {}",
                        entry.deliveries, self.config.max_deliveries
                    ),
                    true,
                ),
            })
        } else {
            None
        };
        if let Some((reason, readable)) = poison {
            self.dead_letter(&entry, readable, &reason).await;
            return None;
        }
        if self.injected_failure(&entry.events).await {
            // Left pending on purpose and retried with backoff, then
            // dead-lettered past --max-deliveries, like a real failure.
            self.figures.fault_failures.fetch_add(1, Ordering::Relaxed);
            let f = Failed {
                id: entry.id,
                deliveries: entry.deliveries,
                reason: RetryReason::InjectedFault,
            };
            failed.push((f, events));
            return None;
        }
        let events = std::mem::take(&mut entry.events);
        Some((entry, events))
    }

    /// Dead-letters `entry`; when its events are `readable`, they also
    /// count in their runs' ledgers.
    pub(super) async fn dead_letter(&self, entry: &Entry, readable: bool, reason: &str) {
        let count = entry.events.len() as u64;
        let ops = if readable {
            crate::fold::dead_letter_ops(
                entry,
                &entry.events,
                self.log.keys(),
                self.log.retention(),
            )
        } else {
            Ops::default()
        };
        let dead = || async { self.log.dead_letter(entry, count, reason, &ops).await };
        match dead.retry(store_retry()).await {
            Ok(ApplyOutcome::Applied) => {
                tracing::warn!(entry = %entry.id, partition = entry.partition, %reason, "dead-lettered");
                self.figures
                    .dead_lettered
                    .fetch_add(count, Ordering::Relaxed);
                self.metrics.dead_lettered.add(count, &[]);
            }
            Ok(ApplyOutcome::NotPending(_)) => {}
            Err(err) => {
                tracing::warn!(entry = %entry.id, error = %err, "dead-letter failed; entry stays pending")
            }
        }
    }
}
