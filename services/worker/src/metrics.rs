//! The worker's instruments (exported at `/metrics` and over OTLP).
//!
//! `worker_events_processed_total` is the one the original Python system
//! never managed to export; it is recorded in the same step that counts an
//! entry as applied.

use std::sync::{Arc, Mutex};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, ObservableGauge};
use testbed_telemetry::ExemplarHistogram;

use crate::control::LocalControl;

/// Backlog figures of one partition, refreshed by the follower.
#[derive(Debug, Clone, Copy, Default)]
pub struct PartitionGauge {
    /// The partition.
    pub partition: u32,
    /// Events appended and not processed (consumer-group lag).
    pub backlog: u64,
    /// Entries delivered and not acknowledged.
    pub pending: u64,
    /// Age of the oldest pending entry, seconds.
    pub oldest_pending_age: f64,
}

/// Worker counters, the end-to-end latency histogram, and gauges.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// `worker_events_processed_total`.
    pub processed: Counter<u64>,
    /// `worker_events_dead_lettered_total`.
    pub dead_lettered: Counter<u64>,
    /// `worker_events_retried_total{reason}`: events of entries that
    /// failed and are retried (`injected_fault`, `store_error`).
    pub retried: Counter<u64>,
    /// `worker_entries_already_acked_total`.
    pub already_acked: Counter<u64>,
    /// `worker_entries_taken_over_total`: entries claimed from consumers
    /// known dead (heartbeat lapsed).
    pub taken_over: Counter<u64>,
    /// `pipeline_e2e_latency_seconds`: append to applied, on this worker's
    /// clock, one observation per entry (the query API's figures, weighted
    /// by events and on Redis' clock, are the exact ones). Recorded inside
    /// the entry's "process entry" span, which continues the ingest trace,
    /// so its exemplars on `/metrics` lead from a slow bucket to the trace.
    pub e2e: ExemplarHistogram,
    /// Latest per-partition figures, read by the gauges.
    pub partitions: Arc<Mutex<Vec<PartitionGauge>>>,
    _gauges: Arc<Vec<ObservableGauge<f64>>>,
}

impl WorkerMetrics {
    /// Instruments of a worker whose control state is `local`.
    pub fn new(local: Arc<LocalControl>) -> Self {
        let meter = opentelemetry::global::meter("testbed-worker");
        let partitions: Arc<Mutex<Vec<PartitionGauge>>> = Arc::default();
        let (l1, l2, l3) = (local.clone(), local.clone(), local);
        let gauge = |name: &'static str, help: &'static str| {
            meter.f64_observable_gauge(name).with_description(help)
        };
        let per_partition =
            |name: &'static str, help: &'static str, pick: fn(&PartitionGauge) -> f64| {
                let partitions = partitions.clone();
                gauge(name, help)
                    .with_callback(move |observer| {
                        let Ok(list) = partitions.lock() else { return };
                        for p in list.iter() {
                            observer.observe(
                                pick(p),
                                &[KeyValue::new("partition", i64::from(p.partition))],
                            );
                        }
                    })
                    .build()
            };
        let gauges = vec![
            gauge(
                "worker.paused",
                "1 while consumption is paused by the control API",
            )
            .with_callback(move |o| o.observe(if l1.is_paused() { 1.0 } else { 0.0 }, &[]))
            .build(),
            gauge("worker.concurrency", "Entries this worker applies at once")
                .with_callback(move |o| o.observe(f64::from(l2.concurrency()), &[]))
                .build(),
            gauge("worker.faults.active", "Injected faults in force")
                .with_callback(move |o| o.observe(l3.faults().len() as f64, &[]))
                .build(),
            per_partition(
                "pipeline.backlog.events",
                "Events appended and not yet processed (consumer-group lag)",
                |p| p.backlog as f64,
            ),
            per_partition(
                "pipeline.pending.entries",
                "Entries delivered to a consumer and not yet acknowledged",
                |p| p.pending as f64,
            ),
            per_partition(
                "pipeline.oldest_pending_age_seconds",
                "Age of the oldest pending entry, in seconds",
                |p| p.oldest_pending_age,
            ),
        ];
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let metrics = Self {
            processed: counter(
                "worker.events.processed",
                "Events applied to aggregates (exactly once)",
            ),
            dead_lettered: counter(
                "worker.events.dead_lettered",
                "Events moved to the dead-letter stream",
            ),
            retried: counter(
                "worker.events.retried",
                "Events of entries that failed and are retried, by reason",
            ),
            already_acked: counter(
                "worker.entries.already_acked",
                "Entries found already acknowledged by another consumer",
            ),
            taken_over: counter(
                "worker.entries.taken_over",
                "Entries taken over from consumers whose heartbeat lapsed",
            ),
            e2e: ExemplarHistogram::seconds(
                &meter,
                "pipeline.e2e.latency",
                "Time from append to aggregates applied",
                &[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0, 60.0,
                ],
            ),
            partitions,
            _gauges: Arc::new(gauges),
        };
        // Series exist from the start: an idle worker is visibly idle, not
        // absent, and the first dead letter shows up in increase().
        metrics.processed.add(0, &[]);
        metrics.dead_lettered.add(0, &[]);
        metrics.taken_over.add(0, &[]);
        for reason in ["injected_fault", "store_error"] {
            metrics.retried.add(0, &[KeyValue::new("reason", reason)]);
        }
        metrics
    }
}
