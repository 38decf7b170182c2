//! The ingest service's instruments (exported at `/metrics` and over OTLP).

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram};

/// Ingest counters and the batch size histogram.
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    /// `ingest_events_received_total`: events in requests, valid or not.
    pub received: Counter<u64>,
    /// `ingest_events_accepted_total`: events acknowledged (appended or duplicates).
    pub accepted: Counter<u64>,
    /// `ingest_events_rejected_total{reason}`: validation, device_cap,
    /// backpressure, unavailable, invalid_batch.
    pub rejected: Counter<u64>,
    /// `ingest_events_appended_total`: events newly appended to the log.
    pub appended: Counter<u64>,
    /// `ingest_events_duplicates_total`: re-sent events dropped at append.
    pub duplicates: Counter<u64>,
    /// `ingest_batch_size_events`: events per request.
    pub batch_size: Histogram<u64>,
    /// `ingest_backpressure_rejections_total`: requests refused for backlog.
    pub backpressure: Counter<u64>,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        let meter = opentelemetry::global::meter("testbed-ingest");
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let metrics = Self {
            received: counter(
                "ingest.events.received",
                "Events received in requests, valid or not",
            ),
            accepted: counter(
                "ingest.events.accepted",
                "Events acknowledged: appended, or duplicates of appended ones",
            ),
            rejected: counter("ingest.events.rejected", "Events refused, by reason"),
            appended: counter("ingest.events.appended", "Events newly appended to the log"),
            duplicates: counter(
                "ingest.events.duplicates",
                "Re-sent events recognised by event id and not appended again",
            ),
            batch_size: meter
                .u64_histogram("ingest_batch_size_events")
                .with_description("Events per request")
                .with_boundaries(vec![
                    1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 5000.0,
                ])
                .build(),
            backpressure: counter(
                "ingest.backpressure.rejections",
                "Requests refused because the backlog is over the limit",
            ),
        };
        // Series exist from the start, so rates and alerts see zeros, not gaps.
        for c in [
            &metrics.received,
            &metrics.accepted,
            &metrics.appended,
            &metrics.duplicates,
            &metrics.backpressure,
        ] {
            c.add(0, &[]);
        }
        metrics
    }
}

impl IngestMetrics {
    /// Counts `n` events rejected for `reason`.
    pub fn reject(&self, n: u64, reason: &'static str) {
        if n > 0 {
            self.rejected.add(n, &[KeyValue::new("reason", reason)]);
        }
    }
}
