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

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use serde::{Deserialize, Serialize};
use tonic::{Request, Response, Status};

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

#[derive(Debug, Clone, Default)]
struct Sink(Arc<Counters>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let n = request
            .get_ref()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.add(&self.0.spans, n);
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let n = request
            .get_ref()
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
        self.0.add(&self.0.metric_points, n);
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl LogsService for Sink {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let n = request
            .get_ref()
            .resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum();
        self.0.add(&self.0.log_records, n);
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// Serves the sink on `listen` until SIGTERM/SIGINT, announcing the bound
/// address in `addr_file`, then writes the counts to `stats_file`.
pub async fn run_sink(listen: SocketAddr, addr_file: &Path, stats_file: &Path) -> Result<()> {
    let sink = Sink::default();
    let counters = sink.0.clone();
    let router = tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(sink.clone()))
        .add_service(MetricsServiceServer::new(sink.clone()))
        .add_service(LogsServiceServer::new(sink));
    serve::run(router, listen, addr_file).await?;
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
