//! Exporters that count their failures instead of flooding the log.
//!
//! A dead collector makes every export fail. The SDK would log each one;
//! these wrappers count them in `telemetry_export_failures_total{signal}`
//! and log at most one warning per signal per minute, and the SDK's own
//! per-export error lines are filtered out by default (see `init`).

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogBatch, LogExporter};
use opentelemetry_sdk::metrics::Temporality;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::trace::{SpanData, SpanExporter};

/// How often a failing signal may log a warning.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Set when the final flush is over (see [`crate::flush`]): a provider
/// abandoned there may still see its export fail as the runtime goes away,
/// and its warning would come after what must be the last log line. One
/// flag for the process: there is one pipeline, installed once.
static FLUSH_OVER: AtomicBool = AtomicBool::new(false);

/// No more warnings from here on: the final flush has been reported.
pub(crate) fn flush_over() {
    FLUSH_OVER.store(true, Ordering::Relaxed);
}

/// Counts and rate-limits the failures of one signal's exporter.
pub struct Failures {
    signal: &'static str,
    // Made at the first failure: exporters are built before the global
    // meter provider is installed.
    counter: std::sync::OnceLock<Counter<u64>>,
    last_warning: Mutex<Option<Instant>>,
}

impl fmt::Debug for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Failures")
            .field("signal", &self.signal)
            .finish()
    }
}

impl Failures {
    /// Failure accounting for `signal` (traces, metrics, logs).
    pub fn new(signal: &'static str) -> Self {
        Self {
            signal,
            counter: std::sync::OnceLock::new(),
            last_warning: Mutex::new(None),
        }
    }

    fn counter(&self) -> &Counter<u64> {
        self.counter.get_or_init(|| {
            opentelemetry::global::meter("testbed-telemetry")
                .u64_counter("telemetry.export.failures")
                .with_description("OTLP exports that failed; their telemetry was dropped")
                .build()
        })
    }

    fn observe(&self, result: &OTelSdkResult) {
        let Err(err) = result else { return };
        self.counter()
            .add(1, &[KeyValue::new("signal", self.signal)]);
        if FLUSH_OVER.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            *last = Some(Instant::now());
            tracing::warn!(
                signal = self.signal,
                error = %err,
                "OTLP export failing; dropping telemetry (counted in telemetry_export_failures_total, \
                 next warning in a minute at the earliest)"
            );
        }
    }
}

/// A span exporter whose failures are counted.
#[derive(Debug)]
pub struct Counted<E> {
    inner: E,
    failures: Failures,
}

impl<E> Counted<E> {
    /// Wraps `inner`, accounting failures under `signal`.
    pub fn new(inner: E, signal: &'static str) -> Self {
        Self {
            inner,
            failures: Failures::new(signal),
        }
    }
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Counted<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.observe(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

impl<E: LogExporter> LogExporter for Counted<E> {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn event_enabled(
        &self,
        level: opentelemetry::logs::Severity,
        target: &str,
        name: Option<&str>,
    ) -> bool {
        self.inner.event_enabled(level, target, name)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}
