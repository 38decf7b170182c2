//! Telemetry settings of the processes under test, and the local OTLP
//! sink that receives what they export and drops it.
//!
//! The sink is the cheapest possible collector: it decodes each export and
//! counts spans, metric data points and log records, so the cost measured is
//! the exporters' (span creation, batching, encoding, sending), not a real
//! collector's processing. It runs as its own process (`testbed-bench
//! --otlp-sink`) so its CPU is not charged to the harness, and writes its
//! counts to a file when it stops.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde::{Deserialize, Serialize};
use testbed_test_support::otlp;

use crate::error::{Context as _, Result};
use crate::serve;

/// OTLP export of the processes under test (the simulator included: it
/// starts the traces).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Telemetry {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`; none: nothing exported.
    pub endpoint: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG` of `parentbased_traceidratio`.
    pub sampling: f64,
}

impl Telemetry {
    /// The environment that sets it.
    pub fn env(&self) -> Vec<(String, String)> {
        let Some(endpoint) = &self.endpoint else {
            return Vec::new();
        };
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.clone()),
            (
                "OTEL_TRACES_SAMPLER".into(),
                "parentbased_traceidratio".into(),
            ),
            ("OTEL_TRACES_SAMPLER_ARG".into(), self.sampling.to_string()),
        ]
    }
}

/// What the sink received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkCounts {
    /// Export calls of any signal.
    pub exports: u64,
    /// Spans.
    pub spans: u64,
    /// Metric data points.
    pub metric_points: u64,
    /// Log records.
    pub log_records: u64,
}

#[derive(Debug, Default)]
struct Counters {
    exports: AtomicU64,
    spans: AtomicU64,
    metric_points: AtomicU64,
    log_records: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> SinkCounts {
        SinkCounts {
            exports: self.exports.load(Ordering::Relaxed),
            spans: self.spans.load(Ordering::Relaxed),
            metric_points: self.metric_points.load(Ordering::Relaxed),
            log_records: self.log_records.load(Ordering::Relaxed),
        }
    }

    fn add(&self, counter: &AtomicU64, n: usize) {
        self.exports.fetch_add(1, Ordering::Relaxed);
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// The sink: counts what each export carries, keeps nothing.
impl otlp::Receive for Counters {
    fn traces(&self, request: ExportTraceServiceRequest) {
        let n = request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.add(&self.spans, n);
    }

    fn metrics(&self, request: ExportMetricsServiceRequest) {
        let n = request
            .resource_metrics
            .iter()
            .flat_map(|r| &r.scope_metrics)
            .flat_map(|s| &s.metrics)
            .map(|m| match &m.data {
                Some(Data::Gauge(g)) => g.data_points.len(),
                Some(Data::Sum(s)) => s.data_points.len(),
                Some(Data::Histogram(h)) => h.data_points.len(),
                Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                Some(Data::Summary(s)) => s.data_points.len(),
                None => 0,
            })
            .sum();
        self.add(&self.metric_points, n);
    }

    fn logs(&self, request: ExportLogsServiceRequest) {
        self.add(&self.log_records, otlp::log_records(&request));
    }
}

/// Serves the sink on `listen` until SIGTERM/SIGINT, announcing the bound
/// address in `addr_file`, then writes the counts to `stats_file`.
pub async fn run_sink(listen: SocketAddr, addr_file: &Path, stats_file: &Path) -> Result<()> {
    let counters = Arc::new(Counters::default());
    serve::run(otlp::router(counters.clone()), listen, addr_file).await?;
    let counts = counters.snapshot();
    let json = serde_json::to_vec_pretty(&counts).unwrap_or_default();
    std::fs::write(stats_file, json).context(|| format!("writing {}", stats_file.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OTLP off sets nothing; on sets the endpoint and the ratio sampler.
    #[test]
    fn environment_of_each_mode() {
        assert!(Telemetry::default().env().is_empty());
        let on = Telemetry {
            endpoint: Some("http://127.0.0.1:4317".into()),
            sampling: 0.1,
        };
        let env = on.env();
        assert!(env.contains(&("OTEL_TRACES_SAMPLER_ARG".into(), "0.1".into())));
        assert!(env.contains(&(
            "OTEL_TRACES_SAMPLER".into(),
            "parentbased_traceidratio".into()
        )));
    }
}
