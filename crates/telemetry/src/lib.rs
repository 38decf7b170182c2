//! Logs, traces and metrics for every testbed service, set up in one place.
//!
//! One OpenTelemetry pipeline shared by every process:
//! - **Logs**: structured lines on stdout (human by default, JSON with
//!   `--log-format json`), filtered with `RUST_LOG` syntax, each carrying the
//!   `trace_id`/`span_id` of the span it was written in; and, when an OTLP
//!   endpoint is configured, the same records exported over OTLP.
//! - **Traces**: `tracing` spans bridged to OpenTelemetry
//!   (`tracing-opentelemetry`), exported over OTLP/gRPC in batches.
//! - **Metrics**: OpenTelemetry instruments, read both by a Prometheus
//!   registry served at `GET /metrics` ([`serve_metrics`]) and, when
//!   configured, by a periodic OTLP exporter: one set of instruments, two ways out.
//! - **Exemplars**: histograms made with [`ExemplarHistogram`] keep the trace
//!   id of the latest sampled observation per bucket; `/metrics` shows them
//!   when the scraper negotiates OpenMetrics (Prometheus does by default;
//!   it stores them with `--enable-feature=exemplar-storage`). OTLP-pushed
//!   histograms carry none: opentelemetry_sdk 0.33 does not record exemplars
//!   (open-telemetry/opentelemetry-rust#3369).
//!
//! Configuration uses the standard OpenTelemetry variables, not home-made
//! ones: `OTEL_EXPORTER_OTLP_ENDPOINT` (and the per-signal
//! `OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_ENDPOINT`),
//! `OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`/`OTEL_TRACES_SAMPLER_ARG`,
//! `OTEL_SDK_DISABLED`. With no endpoint set nothing is exported and nothing
//! complains; `/metrics` still works. A dead collector never blocks a
//! service: exports are batched on background tasks with bounded queues and
//! timeouts, and failures only drop telemetry. Nor does it hold up an exit:
//! the final flush gets `--telemetry-flush-timeout`, then what is left is
//! dropped and the last log line says so ([`flush`]).
//!
//! This crate does not decide what to measure: services own their spans and
//! instruments. It owns how they leave the process.
//!
//! # Layout
//! - [`init`] / [`TelemetryGuard`]: installing the pipeline, and flushing
//!   it at exit within `--telemetry-flush-timeout` ([`flush`]).
//! - [`resource`]: service, host, architecture and Kubernetes attributes.
//! - [`propagation`]: W3C trace context in and out of gRPC metadata and
//!   stream entries.
//! - [`rpc`]: the tower layer that traces and measures every RPC.
//! - [`export`]: exporters that count failures instead of flooding the log.
//! - [`exemplars`]: histograms that keep exemplars for `/metrics`.
//! - [`serve_metrics`]: the Prometheus endpoint, classic text or OpenMetrics
//!   by content negotiation (`openmetrics` renders the latter); with
//!   [`serve_metrics_and_status`], also the live status page at `/`.
//! - [`status`]: that page, filled by a [`StatusSource`] the binary gives
//!   (this crate does not know the services).
//!
//! # Why these crates
//! `opentelemetry-otlp` (gRPC via tonic, the same tonic as the services),
//! `tracing-opentelemetry` and `opentelemetry-appender-tracing` are the
//! OpenTelemetry project's own bridges; `opentelemetry-prometheus` renders
//! the same instruments in the Prometheus text format that `promtool check
//! metrics` accepts. The OpenMetrics rendering (with exemplars) is written
//! here on top of the same gathered families: the `prometheus` crate only
//! writes the classic format, and `prometheus-client` would mean a second
//! set of instruments.
#![forbid(unsafe_code)]

pub mod exemplars;
pub mod export;
pub mod flush;
mod init;
mod openmetrics;
pub mod propagation;
pub mod resource;
pub mod rpc;
mod serve;
pub mod status;

pub use exemplars::ExemplarHistogram;
pub use flush::FlushReport;
pub use init::{InitError, LogArgs, LogFormat, TelemetryGuard, init};
pub use serve::{serve_metrics, serve_metrics_and_status};
pub use status::{StatusPage, StatusSection, StatusSource};
