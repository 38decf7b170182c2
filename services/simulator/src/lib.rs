//! The load simulator: `testbed sim`.
//!
//! Drives ingest the way a fleet of GPU nodes and LLM inference servers
//! would, and measures it honestly: the schedule is open-loop (batches go
//! out at their intended times whatever the server does), and each batch's
//! latency is measured from its intended send time, so a stalled server
//! shows up as latency rather than as a silently lower rate (no coordinated
//! omission). `--verify` then checks the delivery ledger: every accepted
//! event processed exactly once, per kind.
//!
//! It talks to the other services only through their public gRPC APIs,
//! like any client.
//!
//! A load generator must stay far below its target's cost per event. Each
//! batch's events are encoded once, into one buffer, and sent as
//! [`testbed_proto::raw`] requests (the same bytes on the wire as the
//! generated messages): a retry resends the same parts, and each device's
//! labels are encoded once for the whole run and spliced into its events.
//! That took the simulator from about 2.6 to 0.9 µs of CPU per event
//! (`bench/README.md`, session 4).
//!
//! # Layout
//! - [`SimArgs`]: the `testbed sim` flags (the CLI contract).
//! - [`scenario`]: phases (ramp, hold, burst, spike, pause) and the rate function.
//! - [`fleet`]: seeded devices and events.
//! - [`runner`]: the open-loop scheduler and the stream/unary senders.
//! - [`stats`]: HDR latency histograms and counters.
//! - [`report`]: text, JSON and ghz-JSON reports.
//! - [`verify`]: the end-to-end check against `QueryService.GetRunStats`.
//! - [`serve`]: `testbed sim --serve`: the `--serve` flags and how the
//!   simulator joins a [`testbed_server::GrpcServer`].
//! - [`api`]: the `SimulatorService` handlers (StartRun, UpdateRun, StopRun,
//!   GetRun, WatchRun).
//! - [`spec`]: run specs and changes checked, with the contract's defaults.
//! - [`runs`]: the runs a server knows, their life cycle and bounds.
//! - [`live`]: a served run's live figures (load clock, achieved rate).
//! - [`error`]: the API's errors and their gRPC status codes.
//!
//! # Why these crates
//! `hdrhistogram` (the reference HDR histogram port) records latencies with
//! fixed relative precision at constant cost; `indicatif` draws the live
//! progress line; `toml` + `serde` parse scenario files with line and
//! column in errors; `rand`'s `StdRng` makes seeded runs reproducible on
//! every architecture.
#![forbid(unsafe_code)]

pub mod api;
mod args;
pub mod error;
pub mod fleet;
pub mod live;
mod progress;
pub mod report;
pub mod runner;
pub mod runs;
pub mod scenario;
pub mod serve;
pub mod spec;
pub mod stats;
pub mod transport;
pub mod verify;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use testbed_server::CancellationToken;

pub use api::SimulatorApi;
pub use args::{Dedupe, OutputFormat, SimArgs};
pub use serve::ServeArgs;

use crate::fleet::Fleet;
use crate::report::Report;
use crate::runner::{Progress, SendOptions};
use crate::scenario::{Scenario, ScenarioError};
use crate::stats::RunFigures;

/// Why a simulator run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario file is unusable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The target is unusable.
    #[error(transparent)]
    Connect(#[from] transport::ConnectError),
    /// The report could not be written.
    #[error("cannot write the report to {path}: {source}")]
    Output {
        /// Where.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// GetRunStats failed during --verify.
    #[error("verification could not read the delivery ledger: {0}")]
    VerifyCall(tonic::Status),
    /// --verify found a difference (the report has the details).
    #[error("verification FAILED: {0}")]
    VerifyFailed(String),
    /// Some events were never acknowledged (given up, or unanswered when
    /// the run ended).
    #[error(
        "{0} events were never acknowledged (see the status codes and re-sent batches in the report)"
    )]
    Undelivered(u64),
}

/// Runs one load run as `args` describe it, writes the report, and returns
/// an error when verification fails or events were not delivered.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> Result<(), SimError> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path)?,
        None => Scenario::steady(args.rate, args.duration),
    };
    let run_id = args.run_id.clone().unwrap_or_else(|| {
        let secs = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("run-{secs}-{:04x}", rand::random::<u16>())
    });
    let fleet = Fleet::new(
        args.devices,
        &args.device_prefix,
        &args.arch_mix.0,
        args.mix,
        args.seed,
        &run_id,
    );
    let channels = transport::channels(&args.target, args.connections).await?;
    let options = SendOptions {
        streams: args.streams,
        unary: args.unary,
        max_retries: args.max_retries,
        max_batch: args.batch_size,
        producer_id: match args.dedupe {
            args::Dedupe::Sequence => runner::producer_id(&run_id),
            args::Dedupe::EventId => String::new(),
        },
        drain: args.drain_timeout,
        stream_max_age: args
            .target
            .starts_with("dns:///")
            .then_some(args.stream_max_age),
    };
    tracing::info!(
        run_id, scenario = scenario.name, duration = %humantime::format_duration(scenario.duration()),
        planned_events = scenario.planned_events() as u64, target = args.target,
        connections = channels.len(), streams = args.streams, unary = args.unary, "sim starting"
    );
    let figures = Arc::new(Mutex::new(RunFigures::new(scenario.phases.len())));
    let live = Arc::new(Mutex::new(Progress::default()));
    let started = SystemTime::now();
    let reporter = progress::spawn(scenario.clone(), figures.clone(), live.clone());
    let scheduled = runner::run(
        &scenario,
        fleet,
        channels,
        options,
        figures.clone(),
        live,
        shutdown,
    )
    .await;
    reporter.finish();
    let figures = figures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let mut report = Report::new(
        &run_id,
        &scenario,
        args.seed,
        &args.target,
        started,
        SystemTime::now(),
        scheduled,
        &figures,
    );

    if args.verify {
        let channels = transport::channels(args.query_target(), 1).await?;
        let channel = channels.into_iter().next().ok_or_else(|| {
            SimError::VerifyCall(tonic::Status::invalid_argument("no query target"))
        })?;
        let verification = verify::verify(
            channel,
            &run_id,
            &verify::Expectation::of(&figures.total),
            args.verify_timeout,
        )
        .await
        .map_err(SimError::VerifyCall)?;
        report.verification = Some(verification);
    }

    let body = match args.output {
        OutputFormat::Text => report.text(),
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        OutputFormat::GhzJson => {
            serde_json::to_string_pretty(&report.ghz_json(&figures.total)).unwrap_or_default()
                + "\n"
        }
    };
    match &args.output_file {
        Some(path) => {
            std::fs::write(path, &body).map_err(|source| SimError::Output {
                path: path.display().to_string(),
                source,
            })?;
            // The human summary still goes to stdout.
            let _ = std::io::stdout().write_all(report.text().as_bytes());
        }
        None => {
            let _ = std::io::stdout().write_all(body.as_bytes());
        }
    }

    if let Some(v) = &report.verification
        && !v.passed
    {
        return Err(SimError::VerifyFailed(v.diff.join("; ")));
    }
    let undelivered = figures.total.failed + figures.total.unanswered();
    if undelivered > 0 {
        return Err(SimError::Undelivered(undelivered));
    }
    Ok(())
}
