//! Logs, traces and metrics for every testbed service, set up in one place.
//!
//! Today this crate owns structured logging: human-readable lines by
//! default, JSON with `--log-format json`, filtered with `RUST_LOG` syntax
//! (default `info`). The OpenTelemetry pipeline (OTLP traces, metrics and
//! logs, `/metrics`) lands here with the observability work, behind the same
//! [`init`] and [`TelemetryGuard`], so no service changes when it does.
//!
//! It does not decide what to log; services do, with `tracing` fields.
#![forbid(unsafe_code)]

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// How log lines are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The logging flags, flattened into the `testbed` command.
#[derive(Debug, Clone, clap::Args)]
pub struct LogArgs {
    /// Log line format on stdout.
    #[arg(long, env = "TESTBED_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
}

/// Keeps the telemetry pipeline alive; drop it (last, after the servers have
/// drained) to flush and stop it. Bind it to a named variable: `let _ = init()`
/// would drop it at once.
#[derive(Debug)]
#[must_use = "dropping the guard stops telemetry"]
pub struct TelemetryGuard {
    _private: (),
}

/// Why telemetry could not start.
#[derive(Debug)]
pub struct InitError(String);

impl std::fmt::Display for InitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot start logging: {}", self.0)
    }
}

impl std::error::Error for InitError {}

/// Installs the global subscriber. `RUST_LOG` filters (default `info`); an
/// unparseable `RUST_LOG` is an error rather than a silently ignored setting.
pub fn init(args: &LogArgs) -> Result<TelemetryGuard, InitError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => {
            EnvFilter::try_new(&spec).map_err(|e| InitError(format!("RUST_LOG={spec:?}: {e}")))?
        }
        _ => EnvFilter::new("info"),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = match args.log_format {
        LogFormat::Human => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_target(true)
                    // Colour only for a person at a terminal, never in collected logs.
                    .with_ansi(std::io::stdout().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
            )
            .try_init(),
    };
    result.map_err(|e| InitError(e.to_string()))?;
    Ok(TelemetryGuard { _private: () })
}
