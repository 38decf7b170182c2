//! [`ServeConfig`]: what a `testbed sim --serve` server needs, in its own
//! terms rather than as command-line flags, and the [`Limits`] of what a
//! run may ask for.

use std::time::Duration;

use testbed_server::auth::client::Token;

use crate::load::allow::AllowList;

/// Settings of a simulator server: where its runs send load and how, and
/// the bounds on what runs may ask for and how many it keeps.
///
/// The binary builds it from the `testbed sim --serve` flags
/// ([`crate::serve_config`]); tests build it directly.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The ingest endpoint of a run whose spec names none (`--target`).
    pub target: String,
    /// HTTP/2 connections per run (`--connections`).
    pub connections: u32,
    /// PublishStreams per connection (`--streams`).
    pub streams: u32,
    /// Unary Publish calls instead of streams (`--unary`).
    pub unary: bool,
    /// Retries of a refused batch before it counts as failed
    /// (`--max-retries`).
    pub max_retries: u32,
    /// How long a run waits for outstanding acks once its load ends
    /// (`--drain-timeout`).
    pub drain: Duration,
    /// Device id prefix (`--device-prefix`).
    pub device_prefix: String,
    /// Architecture names and weights of the fleets (`--arch-mix`).
    pub arch_mix: Vec<(String, f64)>,
    /// Most runs pending, running or stopping at once (`--max-runs`).
    pub max_runs: usize,
    /// Finished runs kept for GetRun (`--keep-finished`).
    pub keep_finished: usize,
    /// What a run may ask for (`--max-rate`, `--max-devices`,
    /// `--max-batch-size`, `--max-run-duration`, `--max-run-connections`,
    /// `--max-total-rate`).
    pub limits: Limits,
    /// Where runs may send load (`--target`, `--query-target`,
    /// `--allow-target`).
    pub allow: AllowList,
    /// The bearer token runs send to ingest (`--token`).
    pub token: Option<Token>,
    /// TLS of the runs' channels (`--tls-ca` and the client certificate),
    /// its files read again at each run's start.
    pub tls: Option<std::sync::Arc<crate::load::tls::ReloadingTls>>,
    /// The window of a run's achieved rate (`--rate-window`).
    pub rate_window: Duration,
    /// The retry delay suggested when `max_runs` are active
    /// (`--retry-after`).
    pub retry_after: Duration,
    /// How runs' `:abort` thresholds are checked live
    /// (`--threshold-warmup`, `--threshold-window`).
    pub live_thresholds: crate::thresholds::LiveSettings,
}

/// What a run may ask for (the `--max-*` serve flags).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Highest rate in any phase, events/s.
    pub max_rate: f64,
    /// Most devices.
    pub max_devices: u32,
    /// Largest batch.
    pub max_batch_size: u32,
    /// Longest run: a run "until stopped" ends (COMPLETED) after it.
    pub max_run_duration: Duration,
    /// Most HTTP/2 connections one run opens: `--connections` times the
    /// addresses of a `dns:///` target.
    pub max_connections: u32,
    /// Highest sum of the active runs' peak rates, events/s.
    pub max_total_rate: f64,
}
