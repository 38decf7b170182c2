//! The testbed's benchmark harness.
//!
//! It owns measuring the testbed on one machine and writing the results
//! under `bench/results/`: the Redis XADD ceiling, the pipeline's verified
//! saturation throughput as a ratio to it, batch-ack and end-to-end
//! latency below saturation (open loop, so without coordinated omission),
//! per-process footprint, the cost of trace sampling, monolithic against
//! split processes, the simulator's own ceiling against an acking stub, and
//! recovery after a failure fault and after a worker's SIGKILL, and Redis
//! Cluster failover with and without replica waits, the query API's
//! reads at fleet sizes up to a million devices, each role's cold start,
//! and the simulator against k6 as a load generator.
//! It does not own the services or the simulator (it runs the `testbed`
//! binary as a user would), and it enforces nothing: targets are judged in
//! the Markdown summary only.
//!
//! # Layout
//! - [`cli`]: flags; [`steps`]: one repetition of the selected steps;
//!   [`search`]: the saturation search's bookkeeping.
//! - [`probe`]: one measurement, judged by [`sustain`] (fresh processes, one simulator run,
//!   figures, every process stopped); [`pipeline`], [`redis`], [`sim`]:
//!   the processes it drives; [`process`]: the guard that stops them;
//!   [`procfs`]: RSS and CPU time.
//! - [`recovery`]: the recovery step's probe and what it deals during it
//!   (a failure fault, SIGKILLs), read from the store through
//!   `testbed-stream`.
//! - [`failover`]: the failover step's probes and the master it kills,
//!   on a [`cluster`] of `redis-server`s.
//! - [`query_scale`]: the query-scale step's fleets, timed reads and
//!   polling client; [`query_report`]: its figures, verdicts and section.
//! - [`cold_start`]: spawn to every health status SERVING, per role;
//!   [`cold_report`]: its figures, verdict and section.
//! - [`k6_compare`]: k6 and the simulator on the acking stub, with their
//!   CPU; [`k6_report`]: its figures and section.
//! - [`instructions`]: the instructions step's processes under
//!   [`callgrind`] and its fixed workload; [`instructions_report`]: its
//!   figures and section.
//! - [`ceiling`]: `redis-benchmark` XADD; [`stub`] and [`telemetry`]: the
//!   harness's own servers (`--stub`, `--otlp-sink`), via [`serve`].
//! - [`results`], [`summary`], [`markdown`], [`chart`], [`machine`]: what is
//!   written ([`results::ProbeResult`], one probe's figures, lives in
//!   `results`, so `probe` and `sustain` both use it without using each
//!   other); [`error`]: the harness's errors.
//!
//! No module imports one that imports it back.
#![forbid(unsafe_code)]

pub mod callgrind;
pub mod ceiling;
pub mod chart;
pub mod cli;
pub mod cluster;
pub mod cold_report;
pub mod cold_start;
pub mod error;
pub mod failover;
pub mod instructions;
pub mod instructions_report;
pub mod k6_compare;
pub mod k6_report;
pub mod latency_report;
pub mod machine;
pub mod markdown;
pub mod pipeline;
pub mod probe;
pub mod process;
pub mod procfs;
pub mod query_report;
pub mod query_scale;
pub mod recovery;
pub mod redis;
pub mod results;
pub mod search;
pub mod serve;
pub mod sim;
pub mod steps;
pub mod stub;
pub mod summary;
pub mod sustain;
pub mod telemetry;

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use crate::cli::{Cli, Step};
use crate::cold_start::ColdStartOptions;
use crate::error::{Context as _, Error, Result};
use crate::failover::FailoverOptions;
use crate::instructions::InstructionsOptions;
use crate::k6_compare::K6Options;
use crate::machine::Machine;
use crate::pipeline::{PipelineOptions, Topology};
use crate::probe::{ProbeEnv, SimShape};
use crate::query_scale::QueryScaleOptions;
use crate::recovery::RecoveryOptions;
use crate::results::ProbeResult;
use crate::results::{Record, RunResult};
use crate::search::SearchOptions;
use crate::steps::StepOptions;
use crate::sustain::Sustain;
use crate::telemetry::Telemetry;

/// The files a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    /// Raw figures.
    pub json: PathBuf,
    /// The summary.
    pub markdown: PathBuf,
    /// The chart, if there was anything to draw.
    pub chart: Option<PathBuf>,
    /// The summary's text.
    pub summary: String,
}

/// `<dir>/<stem>.json` etc., with `-2`, `-3`… if a run of the same day and
/// host is already there.
fn unique_stem(dir: &Path, stem: &str) -> String {
    (1..)
        .map(|i| {
            if i == 1 {
                stem.to_owned()
            } else {
                format!("{stem}-{i}")
            }
        })
        .find(|s| !dir.join(format!("{s}.json")).exists())
        .unwrap_or_else(|| stem.to_owned())
}

/// Runs the harness as `cli` says and writes the results.
pub async fn run(mut cli: Cli) -> Result<Written> {
    cli.apply_smoke();
    let steps = cli.selected();
    let started_at = SystemTime::now();
    let started = Instant::now();
    let needs_testbed = steps.iter().any(|s| *s != Step::Ceiling);
    if needs_testbed && !cli.testbed_bin.exists() {
        return Err(Error::Process(format!(
            "{} not found: build it (bench/run does) or pass --testbed-bin",
            cli.testbed_bin.display()
        )));
    }
    let self_exe = std::env::current_exe().context(|| "locating testbed-bench itself")?;
    let stamp = humantime::format_rfc3339_seconds(started_at).to_string();
    let work = cli.work_dir.join(stamp.replace(':', ""));
    std::fs::create_dir_all(&work).context(|| format!("creating {}", work.display()))?;
    let mut machine = Machine::detect(&cli.testbed_bin, &cli.redis_server);

    let env = ProbeEnv {
        pipeline: PipelineOptions {
            testbed: cli.testbed_bin.clone(),
            redis_server: cli.redis_server.clone(),
            topology: Topology::Split,
            redis_cluster: None,
            partitions: cli.partitions,
            shutdown_grace: cli.shutdown_grace,
            telemetry: Telemetry::default(),
            ingest_args: cli.ingest_arg.clone(),
            worker_args: cli.worker_arg.clone(),
            query_args: cli.query_arg.clone(),
            ready_timeout: std::time::Duration::from_secs(30),
            rust_log: cli.rust_log.clone(),
        },
        self_exe,
        work: work.clone(),
        duration: cli.duration,
        drain_timeout: cli.drain_timeout,
        verify_timeout: cli.verify_timeout,
        sim: SimShape {
            devices: cli.sim_devices,
            connections: cli.sim_connections,
            streams: cli.sim_streams,
            batch_size: cli.sim_batch_size,
        },
        sustain: Sustain {
            min_ratio: cli.sustain_ratio,
            backlog_seconds: cli.backlog_seconds,
            backlog_min: cli.backlog_min,
            max_p99_ms: (!cli.sustain_p99.is_zero()).then_some(cli.sustain_p99.as_secs_f64() * 1e3),
        },
    };
    let options = StepOptions {
        steps: steps.clone(),
        redis_benchmark: cli.redis_benchmark.clone(),
        ceiling: (
            cli.ceiling_requests,
            cli.ceiling_pipeline,
            cli.ceiling_clients,
            cli.ceiling_fields,
        ),
        search: SearchOptions {
            start: cli.start_rate,
            max: cli.max_rate,
            min: cli.min_rate,
            factor: cli.ramp_factor.max(1.05),
            precision: cli.precision,
            max_probes: cli.max_probes,
        },
        search_budget: cli.search_budget,
        saturation_rate: cli.saturation_rate,
        latency_levels: cli.latency_levels.clone(),
        footprint: (cli.footprint_level, cli.idle),
        telemetry: (
            cli.sampling.clone(),
            cli.telemetry_level,
            cli.telemetry_rounds,
        ),
        monolithic_levels: cli.monolithic_levels.clone(),
        stub_multiples: cli.stub_multiples.clone(),
        recovery: RecoveryOptions {
            rate: cli.recovery_rate,
            duration: cli.recovery_duration,
            fault_ratio: cli.recovery_fault_ratio,
            fault_ttl: cli.recovery_fault_ttl,
            kills: cli.recovery_kills,
            timeout: cli.recovery_timeout,
        },
        failover: FailoverOptions {
            rate: cli.failover_rate,
            duration: cli.failover_duration,
            kill_after: cli.failover_kill_after,
            wait_replicas: cli.failover_wait_replicas.clone(),
            node_timeout: cli.failover_node_timeout,
        },
        query_scale: QueryScaleOptions {
            sizes: cli.query_scale_devices.clone(),
            reads: cli.query_scale_reads,
            fill_rate: cli.query_scale_fill_rate,
            fill_timeout: cli.query_scale_fill_timeout,
            harm_rate: cli.query_scale_harm_rate,
            harm_duration: cli.query_scale_harm_duration,
            harm_rounds: cli.query_scale_harm_rounds,
            poll_interval: cli.query_scale_poll_interval,
        },
        cold_start: ColdStartOptions {
            runs: cli.cold_start_runs,
            poll: cli.cold_start_poll,
            timeout: cli.cold_start_timeout,
            partitions: cli.partitions,
        },
        k6: K6Options {
            k6: cli.k6_bin.clone(),
            script: cli.k6_script.clone(),
            vus: cli.k6_vus,
            duration: cli.k6_duration,
            batch: cli.k6_batch,
            devices: cli.sim_devices,
            sim_connections: cli.k6_sim_connections,
            sim_multiples: cli.k6_sim_multiples.clone(),
        },
        instructions: InstructionsOptions {
            tools: callgrind::Tools {
                valgrind: cli.valgrind.clone(),
                control: cli.callgrind_control.clone(),
            },
            events: cli.instructions_events,
            warmup_events: cli.instructions_warmup_events,
            batch_size: cli.instructions_batch_size,
            devices: cli.instructions_devices,
            seed: cli.instructions_seed,
            settle: cli.instructions_settle,
            idle: cli.instructions_idle,
            timeout: cli.instructions_timeout,
        },
    };
    let settings = serde_json::json!({
        "steps": steps.iter().map(|s| format!("{s:?}").to_lowercase()).collect::<Vec<_>>(),
        "repeat": cli.repeat,
        "duration_s": cli.duration.as_secs_f64(),
        "partitions": cli.partitions,
        "sim": { "devices": cli.sim_devices, "connections": cli.sim_connections,
                 "streams": cli.sim_streams, "batch_size": cli.sim_batch_size },
        "ceiling": { "requests": cli.ceiling_requests, "pipeline": cli.ceiling_pipeline,
                     "clients": cli.ceiling_clients, "fields": cli.ceiling_fields },
        "search": { "start": cli.start_rate, "max": cli.max_rate, "factor": cli.ramp_factor,
                    "precision": cli.precision, "max_probes": cli.max_probes,
                    "budget_s": cli.search_budget.as_secs_f64() },
        "sustain": env.sustain,
        "levels": { "latency": cli.latency_levels, "footprint": cli.footprint_level,
                    "telemetry": cli.telemetry_level, "sampling": cli.sampling,
                    "telemetry_rounds": cli.telemetry_rounds,
                    "monolithic": cli.monolithic_levels, "stub_multiples": cli.stub_multiples },
        "recovery": { "rate": cli.recovery_rate, "duration_s": cli.recovery_duration.as_secs_f64(),
                      "fault_ratio": cli.recovery_fault_ratio,
                      "fault_ttl_s": cli.recovery_fault_ttl.as_secs_f64(),
                      "kills": cli.recovery_kills, "timeout_s": cli.recovery_timeout.as_secs_f64() },
        "query_scale": { "devices": cli.query_scale_devices, "reads": cli.query_scale_reads,
                         "fill_rate": cli.query_scale_fill_rate,
                         "fill_timeout_s": cli.query_scale_fill_timeout.as_secs_f64(),
                         "harm_rate": cli.query_scale_harm_rate,
                         "harm_duration_s": cli.query_scale_harm_duration.as_secs_f64(),
                         "harm_rounds": cli.query_scale_harm_rounds,
                         "poll_interval_ms": cli.query_scale_poll_interval.as_secs_f64() * 1e3 },
        "cold_start": { "runs": cli.cold_start_runs,
                        "poll_ms": cli.cold_start_poll.as_secs_f64() * 1e3,
                        "timeout_s": cli.cold_start_timeout.as_secs_f64() },
        "k6": { "bin": cli.k6_bin.display().to_string(),
                "script": cli.k6_script.display().to_string(), "vus": cli.k6_vus,
                "duration_s": cli.k6_duration.as_secs_f64(), "batch": cli.k6_batch,
                "sim_connections": cli.k6_sim_connections,
                "sim_multiples": cli.k6_sim_multiples },
        "instructions": { "events": cli.instructions_events,
                          "warmup_events": cli.instructions_warmup_events,
                          "batch_size": cli.instructions_batch_size,
                          "devices": cli.instructions_devices, "seed": cli.instructions_seed,
                          "settle_s": cli.instructions_settle.as_secs_f64(),
                          "idle_s": cli.instructions_idle.as_secs_f64(),
                          "timeout_s": cli.instructions_timeout.as_secs_f64() },
        "rust_log": cli.rust_log,
        "extra_args": { "ingest": cli.ingest_arg, "worker": cli.worker_arg, "query": cli.query_arg },
        "work_dir": work.display().to_string(),
    });

    let mut notes = Vec::new();
    let mut runs: Vec<RunResult> = Vec::new();
    for rep in 1..=cli.repeat {
        tracing::info!(repetition = rep, of = cli.repeat, steps = ?steps, "repetition starting");
        runs.push(steps::run_repetition(&options, &env, rep, &mut notes).await?);
    }
    machine.loadavg_end = machine::loadavg();

    let binary = std::fs::metadata(&cli.testbed_bin).ok().map(|m| m.len());
    let summaries: Vec<_> = runs.iter().map(|r| summary::summarize(r, binary)).collect();
    let median = results::median_summary(&summaries);
    let record = Record {
        schema: 1,
        started: stamp.clone(),
        wall_s: started.elapsed().as_secs_f64(),
        smoke: cli.smoke,
        command: std::env::args().collect(),
        settings,
        machine,
        runs,
        summaries,
        median,
        notes,
    };
    write(&cli, &record, &stamp)
}

/// Every split, OTLP-off probe of a record (the chart's points).
fn chart_probes(record: &Record) -> Vec<&ProbeResult> {
    let mut out = Vec::new();
    for r in &record.runs {
        out.extend(r.saturation.iter().flat_map(|s| s.probes.iter()));
        out.extend(r.latency.iter().flatten().map(|l| &l.probe));
        out.extend(r.footprint.iter().map(|l| &l.probe));
        out.extend(r.split_extra.iter().flatten().map(|l| &l.probe));
        out.extend(
            r.telemetry
                .iter()
                .flatten()
                .filter(|p| p.sampling.is_none()),
        );
    }
    out
}

fn write(cli: &Cli, record: &Record, stamp: &str) -> Result<Written> {
    let out_dir = cli.out_dir.clone().unwrap_or_else(|| {
        PathBuf::from(if cli.smoke {
            "target/bench/smoke"
        } else {
            "bench/results"
        })
    });
    std::fs::create_dir_all(&out_dir).context(|| format!("creating {}", out_dir.display()))?;
    let host = if record.machine.host.is_empty() {
        "host"
    } else {
        &record.machine.host
    };
    let stem = unique_stem(
        &out_dir,
        &format!("{}-{host}", &stamp[..stamp.len().min(10)]),
    );
    let json = out_dir.join(format!("{stem}.json"));
    let markdown = out_dir.join(format!("{stem}.md"));
    let png = out_dir.join(format!("{stem}.png"));

    let body = serde_json::to_vec_pretty(record).map_err(|e| Error::parse("results JSON", e))?;
    std::fs::write(&json, body).context(|| format!("writing {}", json.display()))?;
    let probes = chart_probes(record);
    let chart = if probes.iter().any(|p| p.accepted > 0) {
        let title = format!(
            "testbed latency vs offered rate, {} ({})",
            record.machine.host,
            &stamp[..10.min(stamp.len())]
        );
        match chart::draw(&png, &title, &probes) {
            Ok(()) => Some(png),
            Err(e) => {
                tracing::warn!(error = %e, "chart not drawn");
                None
            }
        }
    } else {
        None
    };
    let chart_name = chart
        .as_ref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned());
    let summary = markdown::render(record, chart_name.as_deref(), cli.note.as_deref());
    std::fs::write(&markdown, &summary).context(|| format!("writing {}", markdown.display()))?;
    Ok(Written {
        json,
        markdown,
        chart,
        summary,
    })
}
