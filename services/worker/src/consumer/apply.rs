//! Processing a batch: the exactly-once apply, and what
//! follows a refusal (entries acked by someone else are dropped and the
//! rest folded again).

#[allow(clippy::wildcard_imports)]
use super::*;

impl Consumer {
    /// Processes entries read together from `partition`: poison entries
    /// are dead-lettered one by one, entries an injected fault fails stay
    /// pending, and the rest are folded and applied together, in batches
    /// of at most `--apply-max-events` events, each one atomic step.
    /// Returns the entries that failed and stay pending (with their
    /// events' count), for the caller to retry.
    pub async fn process(&self, partition: u32, entries: Vec<Entry>) -> Vec<(Failed, u64)> {
        let mut failed = Vec::new();
        if entries.is_empty() {
            return failed;
        }
        let Ok(_permit) = self.local.permits().acquire().await else {
            return failed;
        };
        let mut batch: Vec<Decoded> = Vec::new();
        let mut batch_events = 0u64;
        for entry in entries {
            let span = self.entry_span(&entry);
            let Some((entry, events)) = self
                .prepare(entry, &mut failed)
                .instrument(span.clone())
                .await
            else {
                continue;
            };
            batch_events += events.len() as u64;
            batch.push(Decoded {
                entry,
                events,
                span,
            });
            if batch_events >= self.config.apply_max_events {
                failed.extend(
                    self.apply_batch(partition, std::mem::take(&mut batch))
                        .await,
                );
                batch_events = 0;
            }
        }
        failed.extend(self.apply_batch(partition, batch).await);
        failed
    }

    /// Folds `batch` and applies it in one atomic step. Entries found
    /// already acked (another consumer claimed and applied them) leave the
    /// batch and the rest is folded again, so nothing counts twice. Store
    /// errors are retried with backoff a few times; past that the entries
    /// stay pending and are returned, to be retried later, so nothing is
    /// lost.
    pub(super) async fn apply_batch(
        &self,
        partition: u32,
        mut batch: Vec<Decoded>,
    ) -> Vec<(Failed, u64)> {
        while !batch.is_empty() {
            let entries: Vec<Entry> = batch.iter().map(|d| d.entry.clone()).collect();
            let events: u64 = batch.iter().map(|d| d.events.len() as u64).sum();
            let mut folder =
                crate::fold::Folder::new(partition, self.log.keys(), self.log.retention());
            let mut poison: Vec<(usize, String)> = Vec::new();
            for (i, d) in batch.iter().enumerate() {
                if let Err(reason) = folder.add_checked(i as u32, &d.entry, &d.events) {
                    poison.push((i, reason));
                }
                crate::cpu::yield_to_waiting_threads();
            }
            if !poison.is_empty() {
                // Dead-lettered one by one; the rest is folded again
                // without them (their positions moved).
                drop(folder);
                for (i, reason) in poison.into_iter().rev() {
                    let d = batch.remove(i);
                    let mut entry = d.entry;
                    entry.events = d.events;
                    self.dead_letter(&entry, false, &reason)
                        .instrument(d.span)
                        .await;
                }
                continue;
            }
            let folded_at = std::time::Instant::now();
            let (ops, indexed) = folder.finish_with(Some(&self.indexed));
            let span = self.apply_span(&batch, events);
            let apply = || async {
                let _gate = self.apply_gate.acquire().await;
                let started = std::time::Instant::now();
                let outcome = self.log.apply(partition, &entries, events, &ops).await;
                self.pace.record(started.elapsed());
                outcome
            };
            let outcome = apply.retry(store_retry()).instrument(span).await;
            match outcome {
                Ok(ApplyOutcome::Applied) => {
                    self.indexed.record(indexed, folded_at);
                    self.figures.processed.fetch_add(events, Ordering::Relaxed);
                    self.metrics.processed.add(events, &[]);
                    let now_ms = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    for d in &batch {
                        let latency = now_ms.saturating_sub(d.entry.appended_ms()) as f64 / 1000.0;
                        // One observation per entry: its events share the
                        // append time. Recorded in the entry's span, so an
                        // exemplar points at the entry's trace.
                        d.span.in_scope(|| self.metrics.e2e.record(latency, &[]));
                    }
                    return Vec::new();
                }
                Ok(ApplyOutcome::NotPending(gone)) => {
                    self.figures
                        .already_acked
                        .fetch_add(gone.len() as u64, Ordering::Relaxed);
                    self.metrics.already_acked.add(gone.len() as u64, &[]);
                    tracing::debug!(
                        partition,
                        entries = gone.len(),
                        "already acked by another consumer"
                    );
                    let mut i = 0;
                    batch.retain(|_| {
                        i += 1;
                        !gone.contains(&(i - 1))
                    });
                }
                Err(err) => {
                    tracing::warn!(partition, entries = batch.len(), error = %err, "apply failed; entries stay pending, to be retried");
                    return batch
                        .into_iter()
                        .map(|d| {
                            let failed = Failed {
                                id: d.entry.id,
                                deliveries: d.entry.deliveries,
                                reason: RetryReason::StoreError,
                            };
                            (failed, d.events.len() as u64)
                        })
                        .collect();
                }
            }
        }
        Vec::new()
    }
}
