//! `testbed sim` without `--serve`: one run from the flags, a live
//! progress line, a report, and `--verify`'s check against the pipeline.
//!
//! The flags of both modes are here ([`args`]), as they are one command
//! line; [`crate::serve_config`] turns the server's share of them into a
//! [`crate::serve::ServeConfig`], so this module and [`crate::serve`] do
//! not know each other.
//!
//! - [`args`]: [`SimArgs`] and [`ServeArgs`], the CLI contract.
//! - [`run`]: one run, start to exit status.
//! - `progress`: the live progress line.
//! - [`timeline`]: the run sampled over time, for the report's charts.
//! - [`report`]: text, JSON and ghz-JSON reports.
//! - [`html`]: the report as one self-contained HTML page.
//! - [`verify`]: the end-to-end check against `QueryService.GetRunStats`.
//!
//! Within it, `run` (here) → `args`, `progress`, `timeline`, `report`,
//! `html`, `verify`; `html` → `report` → `timeline`, `verify`; any of them
//! → [`crate::load`].

pub mod args;
pub mod html;
mod progress;
pub mod report;
pub mod timeline;
pub mod verify;

use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use testbed_server::CancellationToken;

pub use args::{Dedupe, OutputFormat, ServeArgs, SimArgs};

use crate::cli::report::Report;
use crate::load::fleet::Fleet;
use crate::load::runner::{self, Progress, SendOptions};
use crate::load::scenario::{Scenario, ScenarioError};
use crate::load::stats::RunFigures;
use crate::load::transport;
use crate::thresholds::{self, Threshold, live::LiveCheck};

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
    /// The flags or the scenario file ask for something impossible (a
    /// threshold on what --verify measures, without --verify; a malformed
    /// threshold in the scenario file).
    #[error("{0}")]
    Usage(String),
    /// Thresholds were crossed (the report shows each with its value).
    #[error("thresholds crossed: {0}")]
    ThresholdsCrossed(String),
}

impl SimError {
    /// The process's exit status for this error: [`EXIT_THRESHOLDS`] for
    /// crossed thresholds, [`EXIT_USAGE`] for a usage error, 1 for the
    /// rest (verification failed, events undelivered, a target or file
    /// unusable).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::ThresholdsCrossed(_) => EXIT_THRESHOLDS,
            Self::Usage(_) => EXIT_USAGE,
            _ => 1,
        }
    }
}

/// Exit status of a run whose thresholds were crossed (k6's code).
pub const EXIT_THRESHOLDS: u8 = 99;
/// Exit status of a usage error (clap's code for bad flags).
pub const EXIT_USAGE: u8 = 2;

/// The thresholds of a run: the flags', then the scenario file's (with
/// its path and line in errors); those that need --verify are refused
/// without it.
fn thresholds(args: &SimArgs, file: Vec<(String, usize)>) -> Result<Vec<Threshold>, SimError> {
    let mut all = args.thresholds.clone();
    let path = args
        .scenario
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    for (i, (text, line)) in file.into_iter().enumerate() {
        let threshold: Threshold = text.parse().map_err(|e| {
            SimError::Usage(format!(
                "invalid scenario {path}: line {line}: thresholds[{i}]: {e}"
            ))
        })?;
        all.push(threshold);
    }
    if !args.verify
        && let Some(t) = all.iter().find(|t| t.metric.needs_verify())
    {
        return Err(SimError::Usage(format!(
            "threshold {:?} needs --verify, which measures it",
            t.expression
        )));
    }
    Ok(all)
}

/// The flags that shaped the load, for the report.
fn settings(args: &SimArgs, connections: usize) -> std::collections::BTreeMap<String, String> {
    let mix = &args.mix;
    let arch: Vec<String> = args
        .arch_mix
        .0
        .iter()
        .map(|(arch, w)| format!("{arch}={w}"))
        .collect();
    [
        ("devices", args.devices.to_string()),
        (
            "mix",
            format!(
                "gpu={} tokens={} metric={}",
                mix.gpu, mix.tokens, mix.metric
            ),
        ),
        ("arch mix", arch.join(" ")),
        ("connections", connections.to_string()),
        ("streams per connection", args.streams.to_string()),
        ("unary", args.unary.to_string()),
        ("batch size", args.batch_size.to_string()),
        ("max retries", args.max_retries.to_string()),
        ("dedupe", format!("{:?}", args.dedupe).to_lowercase()),
        (
            "sample interval",
            humantime::format_duration(args.sample_interval).to_string(),
        ),
    ]
    .into_iter()
    .chain(
        // How `:abort` thresholds were checked, when there were any.
        args.thresholds
            .iter()
            .any(|t| t.abort)
            .then(|| {
                [
                    ("threshold warm-up", args.threshold_warmup),
                    ("threshold window", args.threshold_window),
                ]
                .map(|(k, d)| (k, humantime::format_duration(d).to_string()))
            })
            .into_iter()
            .flatten(),
    )
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// Runs one load run as `args` describe it, writes the report, and returns
/// an error when verification fails or events were not delivered.
pub async fn run(args: SimArgs, shutdown: CancellationToken) -> Result<(), SimError> {
    let (scenario, file_thresholds) = match &args.scenario {
        Some(path) => {
            let file = Scenario::load_file(path)?;
            (file.scenario, file.thresholds)
        }
        None => (Scenario::steady(args.rate, args.duration), Vec::new()),
    };
    let thresholds = thresholds(&args, file_thresholds)?;
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
    let tls = args.tls.client_tls();
    let channels = transport::channels(&args.target, args.connections, tls.as_ref()).await?;
    let channels_opened = channels.len();
    let options = SendOptions {
        streams: args.streams,
        unary: args.unary,
        max_retries: args.max_retries,
        max_batch: args.batch_size,
        producer_id: match args.dedupe {
            Dedupe::Sequence => runner::producer_id(&run_id),
            Dedupe::EventId => String::new(),
        },
        drain: args.drain_timeout,
        stream_max_age: args
            .target
            .starts_with("dns:///")
            .then_some(args.stream_max_age),
        token: args.token.clone(),
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
    let sampler = timeline::spawn(args.sample_interval, figures.clone(), live.clone());
    // A crossed `:abort` threshold stops the schedule as a signal would;
    // the batches in flight still drain.
    let stop = shutdown.child_token();
    let watcher = LiveCheck::new(
        &thresholds,
        args.live_thresholds(),
        std::time::Instant::now(),
    )
    .map(|check| {
        let live = live.clone();
        let rate = move || live.lock().map(|p| p.target_rate).unwrap_or_default();
        thresholds::live::spawn(check, figures.clone(), rate, stop.clone())
    });
    let scheduled = runner::run(
        &scenario,
        fleet,
        channels,
        options,
        figures.clone(),
        live,
        stop,
    )
    .await;
    let aborted = match watcher {
        Some(watcher) => watcher.finish().await,
        None => None,
    };
    let samples = sampler.finish().await;
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
    report.timeline = samples;
    report.settings = settings(&args, channels_opened);

    if args.verify {
        let channels = transport::channels(args.query_target(), 1, tls.as_ref()).await?;
        let channel = channels.into_iter().next().ok_or_else(|| {
            SimError::VerifyCall(tonic::Status::invalid_argument("no query target"))
        })?;
        let verification = verify::verify(
            channel,
            args.token.clone(),
            &run_id,
            &verify::Expectation::of(&figures.total),
            args.verify_timeout,
        )
        .await
        .map_err(SimError::VerifyCall)?;
        report.verification = Some(verification);
    }
    report.thresholds = report.check(&thresholds, &figures.total, aborted);

    let body = match args.output {
        OutputFormat::Text => report.text(),
        OutputFormat::Json => serde_json::to_string_pretty(&report).unwrap_or_default() + "\n",
        OutputFormat::GhzJson => {
            serde_json::to_string_pretty(&report.ghz_json(&figures.total)).unwrap_or_default()
                + "\n"
        }
        OutputFormat::Html => html::render(&report),
    };
    match &args.output_file {
        Some(path) => {
            std::fs::write(path, &body).map_err(|source| SimError::Output {
                path: path.display().to_string(),
                source,
            })?;
            // The human summary still goes to stdout, with where the rest is.
            let text = format!("{}report   {}\n", report.text(), path.display());
            let _ = std::io::stdout().write_all(text.as_bytes());
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
    let crossed: Vec<String> = report
        .thresholds
        .iter()
        .filter(|o| !o.passed)
        .map(|o| format!("{} (observed {})", o.expression, o.observed_text))
        .collect();
    if !crossed.is_empty() {
        return Err(SimError::ThresholdsCrossed(crossed.join(", ")));
    }
    let undelivered = figures.total.failed + figures.total.unanswered();
    if undelivered > 0 {
        return Err(SimError::Undelivered(undelivered));
    }
    Ok(())
}
