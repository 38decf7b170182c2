//! Reading a partition: the read loop, and a batch gathered in chunks
//! (`--read-chunk`) for a linger that follows the applies' pace (`pace`),
//! at most `--apply-linger`.

use super::recovery::Recovery;
#[allow(clippy::wildcard_imports)]
use super::*;

impl Consumer {
    pub(super) async fn read_loop(self, partition: u32, shutdown: CancellationToken) {
        let mut failures = 0u32;
        // Events per entry seen lately: reads ask for about
        // --apply-max-events events, so a read of large entries stays small.
        let mut per_entry = 100u64;
        // When to read our own pending entries again (`recovery`): at start
        // (a restart under the same name) and after failed reads, whose
        // entries may be ours with the reply lost.
        let mut recovery = Recovery::at_start();
        let mut paused = self.local.watch_paused();
        while !shutdown.is_cancelled() {
            if *paused.borrow_and_update() {
                // Paused: read nothing new; what was read is already done.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = paused.changed() => continue,
                }
            }
            if self.take_lost_read(partition) {
                recovery.failed();
            }
            if recovery.take_due() {
                self.recover_own_pending(partition, per_entry, &mut recovery)
                    .await;
            }
            // Entries that failed are retried first, once due.
            self.retry_due(partition).await;
            let Some(read) = self.read_batch(partition, per_entry, &shutdown).await else {
                break;
            };
            match read {
                Ok(entries) => {
                    failures = 0;
                    recovery.read_succeeded();
                    // A read that was blocked when the pause came returns
                    // what was appended after it: held until resumed, so a
                    // confirmed pause processes nothing new. (On shutdown
                    // they stay pending, taken over once this consumer's
                    // heartbeat lapses.)
                    if !entries.is_empty()
                        && *paused.borrow_and_update()
                        && !wait_resumed(&mut paused, &shutdown).await
                    {
                        break;
                    }
                    if !entries.is_empty() {
                        let events: usize = entries.iter().map(|e| e.events.len()).sum();
                        per_entry = (events / entries.len()).max(1) as u64;
                    }
                    // Entries already read are finished even during
                    // shutdown: they are ours until acked. Those that fail
                    // stay pending and are retried.
                    let failed = self.process(partition, entries).await;
                    self.schedule_retries(partition, failed);
                }
                Err(err) => {
                    recovery.failed();
                    failures = failures.saturating_add(1);
                    let delay = Duration::from_millis(50u64 << failures.min(5));
                    if failures == 1 {
                        tracing::warn!(partition, error = %err, "read failed; retrying");
                    }
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// One pass over this consumer's own pending entries of `partition`:
    /// processes those not awaiting a scheduled retry. A failed pass stays
    /// due; a full one leaves the next pass due (more may be waiting).
    async fn recover_own_pending(&self, partition: u32, per_entry: u64, recovery: &mut Recovery) {
        let count = self.read_size(per_entry);
        let entries = match self
            .log
            .read_own_pending(partition, &self.name, count)
            .await
        {
            Ok(entries) => entries,
            Err(err) => {
                tracing::debug!(partition, error = %err, "reading own pending entries failed; again later");
                recovery.failed();
                return;
            }
        };
        if entries.is_empty() {
            return;
        }
        tracing::info!(
            partition,
            entries = entries.len(),
            "resuming own pending entries"
        );
        // Entries awaiting their retry keep their schedule.
        let read = entries.len();
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| !self.retry_scheduled(partition, &e.id))
            .collect();
        // More may be waiting: read on while every read is full of
        // entries not scheduled.
        if read >= count && entries.len() == read {
            recovery.more_pending();
        }
        let failed = self.process(partition, entries).await;
        self.schedule_retries(partition, failed);
    }

    /// How long a read of `partition` may wait for new entries:
    /// `--read-block`, or less when a retry falls due sooner.
    pub(super) fn read_block(&self, partition: u32) -> Duration {
        let block = self.config.read_block;
        match self.next_retry(partition) {
            Some(at) => at
                .saturating_duration_since(std::time::Instant::now())
                .clamp(Duration::from_millis(1), block),
            None => block,
        }
    }

    /// Entries to ask for in one read: about `--apply-max-events` events
    /// at `per_entry` events per entry, within `--read-count`.
    pub(super) fn read_size(&self, per_entry: u64) -> usize {
        (self.config.apply_max_events / per_entry.max(1))
            .clamp(1, u64::from(self.config.read_count)) as usize
    }

    /// One read, then, if it found entries, more for a linger (the factor
    /// of recent applies, at most `--apply-linger`; or until shutdown), so that one apply carries more
    /// events; every read asks for at most `--read-chunk` entries. `None`
    /// when shutdown came first.
    pub(super) async fn read_batch(
        &self,
        partition: u32,
        per_entry: u64,
        shutdown: &CancellationToken,
    ) -> Option<Result<Vec<Entry>, StoreError>> {
        let count = self.read_size(per_entry);
        let chunk = (self.config.read_chunk as usize).clamp(1, count);
        let first = tokio::select! {
            () = shutdown.cancelled() => return None,
            read = self.log.read(partition, &self.name, chunk, self.read_block(partition)) => read,
        };
        let mut entries = match first {
            Ok(entries) if !entries.is_empty() => entries,
            other => return Some(other),
        };
        // A full chunk means more is waiting (a backlog): read on at once.
        // A read that fills its batch is applied at once: a backlog drains
        // at the speed of the applies, not one batch per linger.
        if entries.len() == chunk && self.read_more(partition, count, chunk, &mut entries).await {
            return Some(Ok(entries));
        }
        let linger = self
            .pace
            .linger(self.config.apply_linger_factor, self.config.apply_linger);
        if linger.is_zero() {
            return Some(Ok(entries));
        }
        // Gather for the linger, then take what arrived meanwhile (fewer
        // reads for the store than a read per new entry).
        tokio::select! {
            () = shutdown.cancelled() => return Some(Ok(entries)),
            () = tokio::time::sleep(linger) => {}
        }
        self.read_more(partition, count, chunk, &mut entries).await;
        Some(Ok(entries))
    }

    /// Reads `chunk` entries at a time into `entries` until a read
    /// comes back short or the batch is full (`count` entries or
    /// `--apply-max-events` events); whether it is full. What was read is
    /// ours whatever happens: a failed read here stops, and marks the
    /// partition for its read loop to read its own pending entries (the
    /// failed read's may have been delivered with the reply lost).
    pub(super) async fn read_more(
        &self,
        partition: u32,
        count: usize,
        chunk: usize,
        entries: &mut Vec<Entry>,
    ) -> bool {
        let mut events: u64 = entries.iter().map(|e| e.events.len() as u64).sum();
        loop {
            if entries.len() >= count || events >= self.config.apply_max_events {
                return true;
            }
            let ask = (count - entries.len()).min(chunk);
            // What is there now, without waiting: the linger was the wait.
            let Ok(more) = self
                .log
                .read(partition, &self.name, ask, Duration::ZERO)
                .await
            else {
                // Its entries may have been delivered with the reply lost
                // (a timeout): the read loop reads its own pending next.
                self.mark_lost_read(partition);
                return false;
            };
            let short = more.len() < ask;
            events += more.iter().map(|e| e.events.len() as u64).sum::<u64>();
            entries.extend(more);
            if short {
                return entries.len() >= count || events >= self.config.apply_max_events;
            }
        }
    }
}

impl Consumer {
    /// Marks that a read or claim of `partition` failed where its loop
    /// cannot see it (while gathering a batch, taking over, claiming):
    /// its entries may be ours with the reply lost.
    pub(super) fn mark_lost_read(&self, partition: u32) {
        if let Some(flag) = self.lost_reads.get(partition as usize) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    /// Whether a read of `partition` failed unseen since last asked.
    fn take_lost_read(&self, partition: u32) -> bool {
        self.lost_reads
            .get(partition as usize)
            .is_some_and(|flag| flag.swap(false, Ordering::Relaxed))
    }
}

/// Waits until consumption is resumed (true) or the process shuts down
/// (false).
async fn wait_resumed(
    paused: &mut tokio::sync::watch::Receiver<bool>,
    shutdown: &CancellationToken,
) -> bool {
    loop {
        if !*paused.borrow_and_update() {
            return true;
        }
        tokio::select! {
            () = shutdown.cancelled() => return false,
            changed = paused.changed() => if changed.is_err() {
                // The sender is gone with the worker: nothing will resume.
                return false;
            },
        }
    }
}
