//! Installing the pipeline, and handing it to the final flush at the end.

use std::io::IsTerminal as _;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::flush::{FlushReport, Provider};

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The telemetry flags (logging and the final flush), flattened into the
/// `testbed` command; global, so accepted before or after the subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stdout.
    #[arg(long, env = "TESTBED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,

    /// At exit, after the servers have drained, how long the OTLP
    /// exporters may take to send what they still hold (e.g. `1s`,
    /// `500ms`). What is not sent by then is dropped, and the last log
    /// line names the signals (traces, metrics, logs) it belonged to. Count
    /// it in the pod's terminationGracePeriodSeconds, with the preStop
    /// sleep and --shutdown-grace.
    #[arg(
        long,
        env = "TESTBED_TELEMETRY_FLUSH_TIMEOUT",
        default_value = "1s",
        value_parser = humantime::parse_duration,
        global = true
    )]
    pub telemetry_flush_timeout: Duration,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `RUST_LOG` does not parse.
    #[error("cannot start logging: RUST_LOG={spec:?}: {reason}")]
    Filter {
        /// The value.
        spec: String,
        /// Why.
        reason: String,
    },
    /// An exporter could not be built (bad endpoint or headers).
    #[error("cannot start the OpenTelemetry {signal} exporter: {reason}")]
    Exporter {
        /// traces, metrics or logs.
        signal: &'static str,
        /// Why.
        reason: String,
    },
    /// Another subscriber is already installed (only in tests).
    #[error("cannot start logging: {0}")]
    Subscriber(String),
}

/// Keeps the pipeline alive; [`TelemetryGuard::shutdown`] it last, after
/// the servers have drained, to flush and stop it within
/// `--telemetry-flush-timeout` (dropping it does the same). Bind it to a
/// named variable: `let _ = init(..)` would drop it at once.
#[must_use = "dropping the guard stops telemetry"]
pub struct TelemetryGuard {
    /// The providers, until the final flush takes them.
    providers: Option<Providers>,
    registry: prometheus::Registry,
    otlp: bool,
    /// The final flush's budget.
    flush_timeout: Duration,
}

/// Every provider the pipeline installed.
struct Providers {
    tracer: SdkTracerProvider,
    meter: SdkMeterProvider,
    logger: Option<SdkLoggerProvider>,
}

impl Providers {
    /// Each provider's shutdown, for [`crate::flush::flush_within`].
    fn into_flush(self) -> Vec<Provider> {
        let Self {
            tracer,
            meter,
            logger,
        } = self;
        let mut providers = vec![
            Provider::new("traces", move |timeout| {
                tracer.shutdown_with_timeout(timeout)
            }),
            Provider::new("metrics", move |timeout| {
                meter.shutdown_with_timeout(timeout)
            }),
        ];
        if let Some(logger) = logger {
            providers.push(Provider::new("logs", move |timeout| {
                logger.shutdown_with_timeout(timeout)
            }));
        }
        providers
    }
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("otlp", &self.otlp)
            .finish()
    }
}

impl TelemetryGuard {
    /// The registry `/metrics` renders.
    pub fn registry(&self) -> prometheus::Registry {
        self.registry.clone()
    }

    /// Serves `GET /metrics` on `listener` until `shutdown` is cancelled.
    pub fn serve_metrics(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        crate::serve_metrics(listener, self.registry(), shutdown.cancelled_owned())
    }

    /// Serves `GET /metrics` and, given a `status` source, the live status
    /// page it fills (at `/` and `/status.json`) on `listener` until
    /// `shutdown` is cancelled.
    pub fn serve_metrics_and_status(
        &self,
        listener: tokio::net::TcpListener,
        status: Option<std::sync::Arc<dyn crate::StatusSource>>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> impl std::future::Future<Output = std::io::Result<()>> + Send + 'static {
        crate::serve_metrics_and_status(
            listener,
            self.registry(),
            status,
            shutdown.cancelled_owned(),
        )
    }

    /// Whether signals are exported over OTLP.
    pub fn otlp(&self) -> bool {
        self.otlp
    }

    /// The final flush: shuts every provider down at once, exporting what
    /// they hold, and returns after `--telemetry-flush-timeout` at the most;
    /// a provider still exporting then is abandoned and what it held is
    /// dropped (see [`crate::flush`] for why). Log the report it returns
    /// last: no warning from an abandoned exporter follows it.
    ///
    /// Blocks the calling thread. Call it while the Tokio runtime still
    /// runs (the exporters' gRPC connections are tasks on it) but not on
    /// one of its worker threads: e.g. on the main thread once
    /// `Runtime::block_on` has returned, before the runtime is shut down.
    #[must_use = "log the report: it says what was dropped, as the last line"]
    pub fn shutdown(mut self) -> FlushReport {
        self.flush()
    }

    fn flush(&mut self) -> FlushReport {
        let providers = self
            .providers
            .take()
            .map(Providers::into_flush)
            .unwrap_or_default();
        let report = crate::flush::flush_within(providers, self.flush_timeout);
        crate::export::flush_over();
        report
    }
}

impl Drop for TelemetryGuard {
    /// A guard dropped without [`TelemetryGuard::shutdown`] (an early
    /// return, a panic) still flushes within the budget.
    fn drop(&mut self) {
        if self.providers.is_some() {
            self.flush().log();
        }
    }
}

fn env_set(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| !v.trim().is_empty())
}

/// Whether `OTEL_SDK_DISABLED` turns the SDK off.
fn sdk_disabled() -> bool {
    std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Whether an OTLP endpoint is configured for `signal` (TRACES, METRICS, LOGS).
fn endpoint_for(signal: &str) -> bool {
    !sdk_disabled()
        && (env_set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || env_set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

/// Bound on one export: a slow collector delays only the exporter task.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs the global subscriber and OpenTelemetry providers for a process
/// running `service` (`testbed-ingest`, ..., or `testbed` in `all` mode).
/// Must be called inside a Tokio runtime (the exporters run on it).
pub fn init(args: &LogArgs, service: &str) -> Result<TelemetryGuard, InitError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| InitError::Filter {
                spec: spec.clone(),
                reason: e.to_string(),
            })?
        }
        // The SDK's own export errors are warnings once per batch at most.
        _ => {
            // The SDK logs every failed export; the exporters are wrapped to
            // count failures and warn once a minute instead (see `export`).
            EnvFilter::new("info,opentelemetry_sdk=off,opentelemetry-otlp=warn,h2=warn,tower=warn")
        }
    };
    let resource = crate::resource::build(service);
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    // Traces: always a provider (so spans have ids for logs and
    // propagation); an exporter only when an endpoint is configured.
    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    let traces_otlp = endpoint_for("TRACES");
    if traces_otlp {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| InitError::Exporter {
                signal: "traces",
                reason: e.to_string(),
            })?;
        tracer = tracer.with_batch_exporter(crate::export::Counted::new(exporter, "traces"));
    }
    let tracer = tracer.build();
    opentelemetry::global::set_tracer_provider(tracer.clone());

    // Metrics: Prometheus always (pull), OTLP when configured (push).
    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        // Every series carries the service, architecture and node, so any
        // figure breaks down by them without joining target_info.
        .with_resource_selector(opentelemetry_prometheus::ResourceSelector::KeyAllowList(
            ["service.name", "host.arch", "k8s.node.name"]
                .into_iter()
                .map(opentelemetry::Key::from_static_str)
                .collect(),
        ))
        .build()
        .map_err(|e| InitError::Exporter {
            signal: "prometheus",
            reason: e.to_string(),
        })?;
    let mut meter = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(prometheus_reader);
    let metrics_otlp = endpoint_for("METRICS");
    if metrics_otlp {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| InitError::Exporter {
                signal: "metrics",
                reason: e.to_string(),
            })?;
        // The interval follows OTEL_METRIC_EXPORT_INTERVAL (default 60 s).
        meter = meter.with_reader(
            PeriodicReader::builder(crate::export::Counted::new(exporter, "metrics")).build(),
        );
    }
    let meter = meter.build();
    opentelemetry::global::set_meter_provider(meter.clone());

    let logs_otlp = endpoint_for("LOGS");
    let logger = if logs_otlp {
        let exporter = opentelemetry_otlp::LogExporter::builder()
            .with_tonic()
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| InitError::Exporter {
                signal: "logs",
                reason: e.to_string(),
            })?;
        Some(
            SdkLoggerProvider::builder()
                .with_resource(resource)
                .with_batch_exporter(crate::export::Counted::new(exporter, "logs"))
                .build(),
        )
    } else {
        None
    };

    let otel_traces = tracing_opentelemetry::layer().with_tracer(tracer.tracer("testbed"));
    let otel_logs = logger
        .as_ref()
        .map(opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new);
    let registry_layers = tracing_subscriber::registry()
        .with(filter)
        .with(otel_traces)
        .with(otel_logs);
    let result = match args.log_format {
        LogFormat::Human => registry_layers
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    // Colour only for a person at a terminal, never in collected logs.
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry_layers.with(json_layer()).try_init(),
    };
    result.map_err(|e| InitError::Subscriber(e.to_string()))?;
    Ok(TelemetryGuard {
        providers: Some(Providers {
            tracer,
            meter,
            logger,
        }),
        registry,
        otlp: traces_otlp || metrics_otlp || logs_otlp,
        flush_timeout: args.telemetry_flush_timeout,
    })
}

/// JSON lines with the span's trace and span ids (see [`crate::init`]).
fn json_layer<S>() -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
        .event_format(TraceIdFormat)
}

/// Wraps the JSON formatter to add `trace_id` and `span_id`.
struct TraceIdFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for TraceIdFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        use opentelemetry::trace::TraceContextExt as _;
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let mut buffer = String::new();
        let json = tracing_subscriber::fmt::format()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false);
        json.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut buffer),
            event,
        )?;
        let cx = tracing::Span::current().context();
        let span = cx.span();
        let sc = span.span_context();
        let line = buffer.trim_end();
        if sc.is_valid() && line.ends_with('}') {
            let head = &line[..line.len() - 1];
            writeln!(
                writer,
                "{head},\"trace_id\":\"{}\",\"span_id\":\"{}\"}}",
                sc.trace_id(),
                sc.span_id()
            )
        } else {
            writeln!(writer, "{line}")
        }
    }
}
