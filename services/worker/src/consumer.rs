//! The consumer: reads every partition, folds entries, applies them
//! exactly once, claims the entries of dead consumers, dead-letters poison.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable as _};
use prost::Message as _;
use rand::Rng as _;
use testbed_proto::prost::bytes::Bytes;
use testbed_proto::v1::fault::Effect;
use testbed_server::CancellationToken;
use testbed_stream::AggregateStore as _;
use testbed_stream::{AnyLog, ApplyOutcome, Entry, EntryMeta, EventLog as _, Ops, StoreError};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::control::LocalControl;
use crate::control::faults::{expired, matches, sample_delay};
use crate::metrics::WorkerMetrics;
use crate::{QueueTraceMode, WorkerConfig};

/// Figures of this worker process (the cluster-wide ones live in the store).
#[derive(Debug, Default)]
pub struct WorkerFigures {
    /// Events applied by this worker.
    pub processed: AtomicU64,
    /// Entries found already acked by someone else (claimed meanwhile).
    pub already_acked: AtomicU64,
    /// Events dead-lettered by this worker.
    pub dead_lettered: AtomicU64,
    /// Entries failed on purpose by an injected fault (left pending, retried).
    pub fault_failures: AtomicU64,
}

/// One worker: a consumer-group member over every partition.
#[derive(Debug, Clone)]
pub struct Consumer {
    log: AnyLog,
    config: Arc<WorkerConfig>,
    name: Arc<str>,
    local: Arc<LocalControl>,
    figures: Arc<WorkerFigures>,
    metrics: WorkerMetrics,
    /// One apply at a time per process, whatever the partition: Redis runs
    /// scripts one after another anyway, and applies pipelined on the
    /// shared connection would run back to back, holding up every append
    /// queued behind them (ack p99 at 100k/s: 109 → 55 ms with the gate).
    apply_gate: Arc<tokio::sync::Semaphore>,
}

impl Consumer {
    /// A consumer named `name` reading `log`.
    pub fn new(log: AnyLog, config: WorkerConfig, name: String) -> Self {
        let local = Arc::new(LocalControl::new(config.concurrency));
        Self {
            log,
            config: Arc::new(config),
            name: name.into(),
            metrics: WorkerMetrics::new(local.clone()),
            local,
            figures: Arc::default(),
            apply_gate: Arc::new(tokio::sync::Semaphore::new(1)),
        }
    }

    /// This worker's consumer name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The control state this worker applies (pause, concurrency, faults).
    pub fn local(&self) -> &Arc<LocalControl> {
        &self.local
    }

    /// The log this worker consumes.
    pub fn log(&self) -> &AnyLog {
        &self.log
    }

    /// This worker's instruments.
    pub fn metrics(&self) -> &WorkerMetrics {
        &self.metrics
    }

    /// This worker's own figures.
    pub fn figures(&self) -> &WorkerFigures {
        &self.figures
    }

    /// Runs until `shutdown`: one reader per partition plus maintenance
    /// (claiming stale entries, trimming). On shutdown, readers stop reading
    /// and finish (apply and ack) the entries they hold.
    pub async fn run(self, shutdown: CancellationToken) {
        // The group must exist before reading; retry until the store answers.
        let ensure = || async { self.log.ensure_group().await };
        let created = ensure
            .retry(ExponentialBuilder::default().with_max_delay(Duration::from_secs(2)).without_max_times())
            .notify(|err: &StoreError, after| tracing::warn!(error = %err, ?after, "cannot create consumer group yet"));
        tokio::select! {
            () = shutdown.cancelled() => return,
            result = created => if let Err(err) = result {
                tracing::error!(error = %err, "consumer group unavailable");
                return;
            },
        }
        tracing::info!(consumer = %self.name, partitions = self.log.partitions(), "worker consuming");
        let mut tasks = JoinSet::new();
        for partition in 0..self.log.partitions() {
            tasks.spawn(self.clone().read_loop(partition, shutdown.clone()));
        }
        for chore in [Chore::ClaimAndPrune, Chore::Trim] {
            tasks.spawn(self.clone().chore_loop(chore, shutdown.clone()));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "consumer task failed");
            }
        }
        tracing::info!(consumer = %self.name, "worker stopped consuming");
    }

    async fn read_loop(self, partition: u32, shutdown: CancellationToken) {
        let mut failures = 0u32;
        // Events per entry seen lately: reads ask for about
        // --apply-max-events events, so a read of large entries stays small.
        let mut per_entry = 100u64;
        // Own pending entries first: at start (a restart under the same
        // name) and after a failed read, whose entries may have been
        // delivered to us with the reply lost (a timeout). Otherwise they
        // would wait --claim-idle for someone to claim them.
        let mut recover = true;
        let mut paused = self.local.watch_paused();
        while !shutdown.is_cancelled() {
            if *paused.borrow_and_update() {
                // Paused: read nothing new; what was read is already done.
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    _ = paused.changed() => continue,
                }
            }
            if recover {
                let count = self.read_size(per_entry);
                // One pass: an entry an injected fault fails stays pending
                // and waits for --claim-idle like any failed entry.
                recover = false;
                if let Ok(entries) = self
                    .log
                    .read_own_pending(partition, &self.name, count)
                    .await
                    && !entries.is_empty()
                {
                    tracing::info!(
                        partition,
                        entries = entries.len(),
                        "resuming own pending entries"
                    );
                    recover = self.process(partition, entries).await;
                }
            }
            let Some(read) = self.read_batch(partition, per_entry, &shutdown).await else {
                break;
            };
            match read {
                Ok(entries) => {
                    failures = 0;
                    if !entries.is_empty() {
                        let events: usize = entries.iter().map(|e| e.events.len()).sum();
                        per_entry = (events / entries.len()).max(1) as u64;
                    }
                    // Entries already read are finished even during
                    // shutdown: they are ours until acked. A store error
                    // leaves some pending: read them again next.
                    recover |= self.process(partition, entries).await;
                }
                Err(err) => {
                    recover = true;
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

    /// Entries to ask for in one read: about `--apply-max-events` events
    /// at `per_entry` events per entry, within `--read-count`.
    fn read_size(&self, per_entry: u64) -> usize {
        (self.config.apply_max_events / per_entry.max(1))
            .clamp(1, u64::from(self.config.read_count)) as usize
    }

    /// One read, then, if it found entries, more for up to
    /// `--apply-linger` (or until shutdown), so that one apply carries more
    /// events; every read asks for at most `--read-chunk` entries. `None`
    /// when shutdown came first.
    async fn read_batch(
        &self,
        partition: u32,
        per_entry: u64,
        shutdown: &CancellationToken,
    ) -> Option<Result<Vec<Entry>, StoreError>> {
        let count = self.read_size(per_entry);
        let chunk = (self.config.read_chunk as usize).clamp(1, count);
        let first = tokio::select! {
            () = shutdown.cancelled() => return None,
            read = self.log.read(partition, &self.name, chunk, self.config.read_block) => read,
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
        if self.config.apply_linger.is_zero() {
            return Some(Ok(entries));
        }
        // Gather for the linger, then take what arrived meanwhile (fewer
        // reads for the store than a read per new entry).
        tokio::select! {
            () = shutdown.cancelled() => return Some(Ok(entries)),
            () = tokio::time::sleep(self.config.apply_linger) => {}
        }
        self.read_more(partition, count, chunk, &mut entries).await;
        Some(Ok(entries))
    }

    /// Reads `chunk` entries at a time into `entries` until a read
    /// comes back short or the batch is full (`count` entries or
    /// `--apply-max-events` events); whether it is full. What was read is
    /// ours whatever happens: a failed read here stops, and is reported by
    /// the next read of the partition.
    async fn read_more(
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
            let Ok(more) = self
                .log
                .read(partition, &self.name, ask, Duration::from_millis(1))
                .await
            else {
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

    /// Runs `chore` on every partition at its interval, until shutdown.
    async fn chore_loop(self, chore: Chore, shutdown: CancellationToken) {
        let interval = match chore {
            Chore::ClaimAndPrune => self.config.maintenance_interval,
            Chore::Trim => self.config.trim_interval,
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            for partition in 0..self.log.partitions() {
                if shutdown.is_cancelled() {
                    return;
                }
                match chore {
                    Chore::ClaimAndPrune => self.claim_and_prune(partition).await,
                    Chore::Trim => self.trim(partition).await,
                }
            }
        }
    }

    /// Trims `partition`'s stream of what the group has acknowledged
    /// (every `--trim-interval`: a second's worth of entries at a time).
    async fn trim(&self, partition: u32) {
        if self.local.is_paused() {
            return;
        }
        if let Err(err) = self.log.trim(partition).await {
            tracing::warn!(partition, error = %err, "trimming failed");
        }
    }

    /// Claims entries of dead consumers in `partition` and processes them,
    /// then prunes devices idle past the retention from its index.
    pub async fn claim_and_prune(&self, partition: u32) {
        if self.local.is_paused() {
            return;
        }
        match self
            .log
            .claim_stale(
                partition,
                &self.name,
                self.config.claim_idle,
                self.config.read_count as usize,
            )
            .await
        {
            Ok(entries) => {
                if !entries.is_empty() {
                    tracing::info!(partition, entries = entries.len(), "claimed stale entries");
                }
                self.process(partition, entries).await;
            }
            Err(err) => tracing::warn!(partition, error = %err, "claiming stale entries failed"),
        }
        // Devices not seen within the retention leave the device index, and
        // their states with them.
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let oldest = now_ms.saturating_sub(self.log.retention().as_millis()) as f64;
        let keys = self.log.keys();
        let (devices, states) = (keys.devices(partition), keys.device_states(partition));
        if let Err(err) = self.log.prune_index(&devices, oldest, &states).await {
            tracing::warn!(partition, error = %err, "pruning the device index failed");
        }
    }

    /// Applies the active faults that match `events`: sleeps for delays,
    /// and returns true when a failure fault decides this entry fails.
    async fn injected_failure(&self, events: &[Bytes]) -> bool {
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

    /// Processes entries read together from `partition`: poison entries
    /// are dead-lettered one by one, entries an injected fault fails stay
    /// pending, and the rest are folded and applied together, in batches
    /// of at most `--apply-max-events` events, each one atomic step.
    /// Returns true when a store error left some of them pending.
    pub async fn process(&self, partition: u32, entries: Vec<Entry>) -> bool {
        if entries.is_empty() {
            return false;
        }
        let Ok(_permit) = self.local.permits().acquire().await else {
            return false;
        };
        let mut store_failed = false;
        let mut batch: Vec<Decoded> = Vec::new();
        let mut batch_events = 0u64;
        for entry in entries {
            let span = self.entry_span(&entry);
            let Some((entry, events)) = self.prepare(entry).instrument(span.clone()).await else {
                continue;
            };
            batch_events += events.len() as u64;
            batch.push(Decoded {
                entry,
                events,
                span,
            });
            if batch_events >= self.config.apply_max_events {
                store_failed |= self
                    .apply_batch(partition, std::mem::take(&mut batch))
                    .await;
                batch_events = 0;
            }
        }
        store_failed | self.apply_batch(partition, batch).await
    }

    /// Dead-letters `entry` if it is poison (empty, or delivered too
    /// often), and leaves it pending if an injected fault fails it. `Some`
    /// when it is to be applied: the entry without its events, and its
    /// events (so that the batch's list of entries is cheap to clone).
    /// Its events are checked as they are folded ([`Self::apply_batch`]),
    /// which reads each once.
    async fn prepare(&self, mut entry: Entry) -> Option<(Entry, Vec<Bytes>)> {
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
            // Left pending on purpose: claimed again after --claim-idle and
            // dead-lettered past --max-deliveries, like a real failure.
            self.figures.fault_failures.fetch_add(1, Ordering::Relaxed);
            self.metrics.retried.add(events, &[]);
            return None;
        }
        let events = std::mem::take(&mut entry.events);
        Some((entry, events))
    }

    /// Dead-letters `entry`; when its events are `readable`, they also
    /// count in their runs' ledgers.
    async fn dead_letter(&self, entry: &Entry, readable: bool, reason: &str) {
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

    /// Folds `batch` and applies it in one atomic step. Entries found
    /// already acked (another consumer claimed and applied them) leave the
    /// batch and the rest is folded again, so nothing counts twice. Store
    /// errors are retried with backoff a few times; past that the entries
    /// stay pending (true is returned: the read loop reads its own pending
    /// entries again next), so nothing is lost.
    async fn apply_batch(&self, partition: u32, mut batch: Vec<Decoded>) -> bool {
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
            let ops = folder.finish();
            let span = self.apply_span(&batch, events);
            let apply = || async {
                let _gate = self.apply_gate.acquire().await;
                self.log.apply(partition, &entries, events, &ops).await
            };
            let outcome = apply.retry(store_retry()).instrument(span).await;
            match outcome {
                Ok(ApplyOutcome::Applied) => {
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
                    return false;
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
                    self.metrics.retried.add(events, &[]);
                    tracing::warn!(partition, entries = batch.len(), error = %err, "apply failed; entries stay pending");
                    return true;
                }
            }
        }
        false
    }

    /// The span of one batch apply: linked to every entry's processing
    /// span; in `parent` mode a batch of one entry is its child, so a
    /// lightly loaded pipeline shows one unbroken trace.
    fn apply_span(&self, batch: &[Decoded], events: u64) -> tracing::Span {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let parent = match (self.config.queue_trace_mode, batch) {
            (QueueTraceMode::Parent, [one]) => one.span.id(),
            _ => None,
        };
        let span = tracing::info_span!(
            parent: parent,
            "apply batch",
            otel.kind = "internal",
            messaging.system = "redis",
            messaging.batch.message_count = batch.len(),
            testbed.events = events,
        );
        for d in batch {
            let context = d.span.context().span().span_context().clone();
            if context.is_valid() {
                span.add_link(context);
            }
        }
        span
    }

    /// The processing span of `entry`, continuing (or linking to) the
    /// ingest span stored with it, per `--queue-trace-mode`.
    fn entry_span(&self, entry: &Entry) -> tracing::Span {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::info_span!(
            "process entry",
            otel.kind = "consumer",
            messaging.system = "redis",
            messaging.operation.type = "process",
            messaging.destination.partition.id = entry.partition,
            messaging.message.id = %entry.id,
            messaging.batch.message_count = entry.events.len(),
        );
        let meta = EntryMeta::decode(entry.meta.as_slice()).unwrap_or_default();
        let upstream =
            testbed_telemetry::propagation::from_strings(&meta.traceparent, &meta.tracestate);
        let upstream_span = upstream.span().span_context().clone();
        if upstream_span.is_valid() {
            match self.config.queue_trace_mode {
                QueueTraceMode::Parent => {
                    let _ = span.set_parent(upstream);
                }
                QueueTraceMode::Link => span.add_link(upstream_span),
            }
        }
        span
    }
}

/// The periodic work of a worker besides reading.
#[derive(Debug, Clone, Copy)]
enum Chore {
    /// Claim stale entries, prune idle devices (`--maintenance-interval`).
    ClaimAndPrune,
    /// Trim acknowledged entries (`--trim-interval`).
    Trim,
}

/// An entry ready to apply: its events checked (and kept apart from it),
/// with its processing span.
struct Decoded {
    entry: Entry,
    events: Vec<Bytes>,
    span: tracing::Span,
}

/// Backoff for store calls that failed: a few quick retries, then the
/// entries stay pending and are read again (or claimed) later.
fn store_retry() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(5)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use testbed_stream::{AppendEvent, MemoryLog, StoreArgs};

    use super::*;

    /// A consumer lingering an hour after a read, gathering at most two
    /// entries, on an embedded log holding `entries` one-event entries in
    /// partition 0.
    async fn lingering_consumer(entries: usize) -> Consumer {
        consumer_with(entries, 2, 2).await
    }

    /// [`lingering_consumer`] gathering `count` entries in reads of `chunk`.
    async fn consumer_with(entries: usize, count: u32, chunk: u32) -> Consumer {
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
        log.ensure_group().await.unwrap();
        for i in 0..entries {
            let id = format!("e{i}");
            let event = AppendEvent {
                run_id: "",
                event_id: &id,
                bytes: Vec::new().into(),
            };
            log.append(0, &EntryMeta::default(), &[event])
                .await
                .unwrap();
        }
        let config = WorkerConfig {
            apply_linger: Duration::from_secs(3600),
            read_count: count,
            read_chunk: chunk,
            ..WorkerConfig::default()
        };
        Consumer::new(log, config, "c".to_owned())
    }

    /// A backlog is read batch after batch without waiting for the linger.
    #[tokio::test]
    async fn a_read_that_fills_its_batch_does_not_linger() {
        let consumer = lingering_consumer(5).await;
        let shutdown = CancellationToken::new();
        for _ in 0..2 {
            let read = tokio::time::timeout(
                Duration::from_secs(30),
                consumer.read_batch(0, 1, &shutdown),
            )
            .await
            .expect("a full read waited for the linger");
            assert_eq!(read.unwrap().unwrap().len(), 2);
        }
    }

    /// A batch is gathered in reads of `--read-chunk` entries: a backlog
    /// fills it without waiting for the linger, in order, and the rest
    /// stays for the next batch.
    #[tokio::test]
    async fn a_batch_is_gathered_in_chunks() {
        let consumer = consumer_with(7, 5, 2).await;
        let shutdown = CancellationToken::new();
        let first = tokio::time::timeout(
            Duration::from_secs(30),
            consumer.read_batch(0, 1, &shutdown),
        )
        .await
        .expect("a backlog waited for the linger")
        .unwrap()
        .unwrap();
        let ids: Vec<&str> = first.iter().map(|e| e.id.as_str()).collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(ids.len(), 5);
        assert_eq!(ids, sorted, "read in order");
        // The two left are short of a batch: read, then the linger (an
        // hour here).
        let rest = tokio::time::timeout(
            Duration::from_millis(300),
            consumer.read_batch(0, 1, &shutdown),
        )
        .await;
        assert!(rest.is_err(), "returned before the linger: {rest:?}");
        assert_eq!(consumer.log.pending(0).await.unwrap().entries, 7);
    }

    /// A read short of a batch waits for the linger to gather more.
    #[tokio::test]
    async fn a_read_short_of_its_batch_lingers() {
        let consumer = lingering_consumer(1).await;
        let shutdown = CancellationToken::new();
        let read = tokio::time::timeout(
            Duration::from_millis(300),
            consumer.read_batch(0, 1, &shutdown),
        )
        .await;
        assert!(read.is_err(), "returned before the linger: {read:?}");
    }
}
