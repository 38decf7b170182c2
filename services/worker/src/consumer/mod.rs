//! The consumer: reads every partition, folds entries, applies them
//! exactly once, claims the entries of dead consumers, dead-letters poison.
//!
//! # Layout
//! - this file: [`Consumer`] (its state and accessors) and [`Consumer::run`],
//!   which starts a read loop per partition and the chores.
//! - `batching`: the read loop and how a batch is gathered.
//! - `pace`: how long a short read lingers (a multiple of recent applies).
//! - `apply`: processing a batch (the exactly-once apply, refusals); uses
//!   `poison` and `spans`.
//! - `poison`: injected failure faults, checking entries and
//!   dead-lettering the unprocessable (the checks themselves are the
//!   fold's: `fold::entry_check`, `fold::dead_letter_ops`).
//! - `retry`: entries whose processing failed, retried by this consumer
//!   with backoff (`--retry-initial-delay`, `--retry-max-delay`).
//! - `recovery`: when a read loop reads its own pending entries again
//!   (entries delivered with the reply lost: a timed-out read runs late).
//! - `takeover`: the entries of consumers known dead (heartbeat lapsed),
//!   claimed within about two heartbeat intervals.
//! - `chores`: claiming stale entries, pruning the device index, trimming.
//! - `spans`: tracing spans of applies and entries.
//!
//! `batching` hands batches to `apply`; nothing below `apply` calls back up.

mod apply;
mod batching;
mod chores;
mod pace;
mod poison;
mod recovery;
mod retry;
mod spans;
mod takeover;
#[cfg(test)]
mod tests;

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
use testbed_stream::aggregates::device_state;
use testbed_stream::{
    AnyLog, ApplyOutcome, Entry, EntryMeta, EventLog as _, Ops, Prune, StoreError,
};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::control::LocalControl;
use crate::control::faults::{expired, matches, sample_delay};
use crate::metrics::WorkerMetrics;
use crate::{QueueTraceMode, WorkerConfig};

// The steps' items, for the sibling modules (each `use super::*`).
#[allow(clippy::wildcard_imports)]
use self::chores::*;
#[allow(clippy::wildcard_imports)]
use self::retry::*;

pub use retry::{Failed, RetryReason, backoff, retry_budget};
pub use takeover::LAPSE_INTERVALS;

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
    /// Entries this worker delivered to itself again after a failure.
    pub retried_entries: AtomicU64,
    /// Entries this worker took over from consumers known dead.
    pub taken_over: AtomicU64,
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
    /// How long applies take lately: how long a short read lingers.
    pace: Arc<pace::ApplyPace>,
    /// Per partition, the entries this worker failed and retries.
    retries: Arc<[std::sync::Mutex<RetryQueue>]>,
    /// The consumers alive by their heartbeats, as the follower last saw.
    liveness: Arc<std::sync::Mutex<takeover::Liveness>>,
    /// Per partition, whether a read failed while a batch was gathered
    /// (its entries may be ours with the reply lost).
    lost_reads: Arc<[std::sync::atomic::AtomicBool]>,
    /// Devices whose index memberships this worker wrote lately
    /// (`--index-cache`), left out of later applies' writes.
    indexed: Arc<crate::indexed::Indexed>,
}

/// An entry ready to apply: its events checked (and kept apart from it),
/// with its processing span.
pub(super) struct Decoded {
    pub(super) entry: Entry,
    pub(super) events: Vec<Bytes>,
    pub(super) span: tracing::Span,
}

/// Backoff for store calls that failed: a few quick retries, then the
/// entries stay pending and are read again (or claimed) later.
pub(super) fn store_retry() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(5)
}

impl Consumer {
    /// A consumer named `name` reading `log`.
    pub fn new(log: AnyLog, config: WorkerConfig, name: String) -> Self {
        let local = Arc::new(LocalControl::new(config.concurrency));
        let retries = (0..log.partitions())
            .map(|_| std::sync::Mutex::default())
            .collect();
        let lost_reads = (0..log.partitions())
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect();
        let indexed = Arc::new(crate::indexed::Indexed::new(
            config.index_cache as usize,
            log.retention(),
        ));
        Self {
            retries,
            lost_reads,
            indexed,
            liveness: Arc::default(),
            log,
            config: Arc::new(config),
            name: name.into(),
            metrics: WorkerMetrics::new(local.clone()),
            local,
            figures: Arc::default(),
            apply_gate: Arc::new(tokio::sync::Semaphore::new(1)),
            pace: Arc::default(),
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
        for chore in [Chore::ClaimAndPrune, Chore::Trim, Chore::TakeOver] {
            tasks.spawn(self.clone().chore_loop(chore, shutdown.clone()));
        }
        while let Some(joined) = tasks.join_next().await {
            if let Err(err) = joined {
                tracing::error!(error = %err, "consumer task failed");
            }
        }
        tracing::info!(consumer = %self.name, "worker stopped consuming");
    }
}
