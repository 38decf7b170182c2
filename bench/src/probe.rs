//! One measurement: fresh processes, one open-loop simulator run at a
//! fixed rate, the figures read, every process stopped.
//!
//! Each probe starts from nothing (a new `redis-server`, new services), so
//! a failed probe's backlog cannot slow the next one down and the
//! pipeline's `GetPipelineStats` window covers this probe only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::error::{Context as _, Error, Result};
use crate::pipeline::{Pipeline, PipelineOptions, Topology};
use crate::process::{Proc, inherited_settings, log_tail};
use crate::procfs::{self, Sample};
use crate::results::{E2e, Footprint, ProbeResult};
use crate::serve;
use crate::sim::{self, SimSpec};
use crate::sustain::{Sustain, backlog_fails, judge};
use crate::telemetry::Telemetry;

/// What the simulator's fleet and connections look like.
#[derive(Debug, Clone, Copy)]
pub struct SimShape {
    /// `--devices`.
    pub devices: u32,
    /// `--connections`.
    pub connections: u32,
    /// `--streams`.
    pub streams: u32,
    /// `--batch-size`.
    pub batch_size: u32,
}

/// Settings shared by every probe of a harness run.
#[derive(Debug, Clone)]
pub struct ProbeEnv {
    /// Services' settings (the topology is set per probe).
    pub pipeline: PipelineOptions,
    /// This executable, for `--stub` and `--otlp-sink`.
    pub self_exe: PathBuf,
    /// Where probes keep logs and reports.
    pub work: PathBuf,
    /// Schedule length of each run.
    pub duration: Duration,
    /// Simulator `--drain-timeout`.
    pub drain_timeout: Duration,
    /// Simulator `--verify-timeout`.
    pub verify_timeout: Duration,
    /// The simulator's fleet.
    pub sim: SimShape,
    /// Judging.
    pub sustain: Sustain,
}

/// What the simulator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The testbed on Redis.
    Pipeline(Topology),
    /// `testbed-bench --stub`: acks without storing.
    Stub,
}

/// One probe to run.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// Unique name (directory and run id).
    pub label: String,
    /// Offered events per second.
    pub rate: f64,
    /// What is driven.
    pub target: Target,
    /// OTLP trace sampling ratio into the local sink; none: OTLP off.
    pub sampling: Option<f64>,
    /// Measure idle footprint for this long before the load.
    pub idle: Option<Duration>,
}

/// The system being driven, owned for the probe's length.
enum Driven {
    Pipeline(Box<Pipeline>),
    Stub(Proc, String),
}

impl Driven {
    fn pids(&self) -> Vec<(String, u32)> {
        match self {
            Driven::Pipeline(p) => p.pids(),
            Driven::Stub(proc, _) => vec![("stub".to_owned(), proc.pid())],
        }
    }
}

/// The last backlog reading at or before `t` into the schedule (the first
/// reading if all are later).
fn backlog_at(samples: &[(Duration, u64)], t: Duration) -> Option<u64> {
    samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= t)
        .or(samples.first())
        .map(|(_, b)| *b)
}

fn sample_all(pids: &[(String, u32)]) -> BTreeMap<String, Sample> {
    pids.iter()
        .filter_map(|(name, pid)| procfs::sample(*pid).ok().map(|s| (name.clone(), s)))
        .collect()
}

/// Runs one probe.
pub async fn run(env: &ProbeEnv, spec: &ProbeSpec) -> Result<ProbeResult> {
    let (result, _) = run_with(env, spec, async |_: &Pipeline| Ok(())).await?;
    Ok(result)
}

/// Runs one probe, and `during` beside the simulator from the moment it
/// starts (the recovery step's faults); the probe ends once both have.
/// `during` runs only against a pipeline (none against the stub), and an
/// error of it ends the probe with that error.
pub async fn run_with<T>(
    env: &ProbeEnv,
    spec: &ProbeSpec,
    during: impl AsyncFnOnce(&Pipeline) -> Result<T>,
) -> Result<(ProbeResult, Option<T>)> {
    let started = Instant::now();
    let dir = env.work.join(&spec.label);
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    tracing::info!(probe = spec.label, rate = spec.rate, "probe starting");

    let sink = match spec.sampling {
        Some(_) => Some(serve::start_helper(&env.self_exe, &dir, "otlp-sink").await?),
        None => None,
    };
    let telemetry = Telemetry {
        endpoint: sink.as_ref().map(|(_, url)| url.clone()),
        sampling: spec.sampling.unwrap_or(0.0),
    };
    let driven = match spec.target {
        Target::Pipeline(topology) => {
            let mut options = env.pipeline.clone();
            options.topology = topology;
            options.telemetry = telemetry.clone();
            Driven::Pipeline(Box::new(Pipeline::start(&options, &dir).await?))
        }
        Target::Stub => {
            let (proc, url) = serve::start_helper(&env.self_exe, &dir, "stub").await?;
            Driven::Stub(proc, url)
        }
    };
    let pids = driven.pids();

    // Idle footprint: settle, then measure CPU over a window as long again.
    let mut idle: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    if let Some(settle) = spec.idle {
        tokio::time::sleep(settle).await;
        let before = sample_all(&pids);
        tokio::time::sleep(settle).await;
        for (name, after) in sample_all(&pids) {
            let cpu = before
                .get(&name)
                .map_or(0.0, |b| after.cpu_seconds - b.cpu_seconds);
            idle.insert(
                name,
                (after.rss_bytes, cpu / settle.as_secs_f64().max(1e-9)),
            );
        }
    }

    let (target, verify_with) = match &driven {
        Driven::Pipeline(p) => (p.ingest_target()?, Some(p.query_target()?)),
        Driven::Stub(_, url) => (url.clone(), None),
    };
    let sim_spec = SimSpec {
        target,
        verify_with,
        rate: spec.rate,
        duration: env.duration,
        devices: env.sim.devices,
        connections: env.sim.connections,
        streams: env.sim.streams,
        batch_size: env.sim.batch_size,
        drain_timeout: env.drain_timeout,
        verify_timeout: env.verify_timeout,
        run_id: format!("bench-{}", spec.label),
        report: dir.join("sim.json"),
    };
    let mut sim_env = env.pipeline.log_env();
    sim_env.extend(telemetry.env());
    sim_env.push(("OTEL_SERVICE_NAME".into(), "testbed-sim".into()));
    let load_start = sample_all(&pids);
    let mut sim_proc = sim_spec.spawn(
        &env.pipeline.testbed,
        &sim_env,
        &inherited_settings(),
        &dir.join("sim.log"),
    )?;
    let sim_started = Instant::now();
    let backlog_limit = env
        .sustain
        .backlog_min
        .max((spec.rate * env.sustain.backlog_seconds) as u64);

    let mut backlog: Vec<(Duration, u64)> = Vec::new();
    let mut judged_backlog = false;
    let mut paused = false;
    let mut sim_sample = Sample::default();
    let watch = async {
        loop {
            if let Some(status) = sim_proc.try_exit()? {
                break Ok::<_, Error>(status);
            }
            if let Ok(s) = procfs::sample(sim_proc.pid()) {
                sim_sample = s;
            }
            let elapsed = sim_started.elapsed();
            if let Driven::Pipeline(p) = &driven
                && elapsed <= env.duration + Duration::from_millis(500)
                && let Ok(b) = p.backlog().await
            {
                backlog.push((elapsed, b));
            }
            if !judged_backlog
                && elapsed > env.duration + Duration::from_millis(500)
                && let Driven::Pipeline(p) = &driven
            {
                judged_backlog = true;
                let end = backlog_at(&backlog, env.duration).unwrap_or(0);
                let mid = backlog_at(&backlog, env.duration / 2).unwrap_or(0);
                if backlog_fails(mid, end, backlog_limit) {
                    // Verification cannot pass in time: pause the workers so it
                    // sees processing stall and reports now, not at its timeout.
                    tracing::info!(
                        probe = spec.label,
                        backlog = end,
                        "backlog over the limit; pausing workers"
                    );
                    paused = p
                        .pause_workers("testbed-bench: probe over its backlog limit")
                        .await
                        .is_ok();
                }
            }
            if elapsed > sim_spec.limit() {
                return Err(Error::Process(format!(
                    "sim of probe {} still running after {:?}: {}",
                    spec.label,
                    sim_spec.limit(),
                    log_tail(sim_proc.log())
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let (exit, outcome) = match &driven {
        Driven::Pipeline(p) => {
            let (exit, outcome) = futures::future::try_join(watch, during(&**p)).await?;
            (exit, Some(outcome))
        }
        Driven::Stub(..) => (watch.await?, None),
    };
    let load_end = sample_all(&pids);

    let report = sim::read_report(&sim_spec.report).ok();
    let e2e = match (&driven, &report) {
        (Driven::Pipeline(p), Some(_)) => {
            // The window must cover the whole probe; 1m is the API's minimum.
            let window = Duration::from_secs((started.elapsed().as_secs() + 30).max(60));
            p.pipeline_stats(window)
                .await
                .ok()
                .and_then(|s| s.end_to_end_latency)
                .map(|l| {
                    let ms = |d: Option<prost_types::Duration>| {
                        d.map_or(0.0, |d| d.seconds as f64 * 1e3 + f64::from(d.nanos) / 1e6)
                    };
                    E2e {
                        p50_ms: ms(l.p50),
                        p90_ms: ms(l.p90),
                        p99_ms: ms(l.p99),
                        max_ms: ms(l.max),
                    }
                })
        }
        _ => None,
    };

    let accepted = report.as_ref().map_or(0, |r| r.total.accepted);
    let per_million = |cpu: f64| {
        if accepted == 0 {
            0.0
        } else {
            cpu / accepted as f64 * 1e6
        }
    };
    let mut processes: Vec<Footprint> = pids
        .iter()
        .map(|(name, _)| {
            let start = load_start.get(name).copied().unwrap_or_default();
            let end = load_end.get(name).copied().unwrap_or_default();
            let cpu = (end.cpu_seconds - start.cpu_seconds).max(0.0);
            Footprint {
                name: name.clone(),
                idle_rss_bytes: idle.get(name).map(|i| i.0),
                idle_cpu_cores: idle.get(name).map(|i| i.1),
                peak_rss_bytes: end.peak_rss_bytes,
                load_cpu_seconds: cpu,
                cpu_s_per_million_events: per_million(cpu),
            }
        })
        .collect();
    // The simulator's last reading before it exited (every 250 ms).
    processes.push(Footprint {
        name: "sim".into(),
        peak_rss_bytes: sim_sample.peak_rss_bytes,
        load_cpu_seconds: sim_sample.cpu_seconds,
        cpu_s_per_million_events: per_million(sim_sample.cpu_seconds),
        ..Default::default()
    });

    let unclean_shutdown = match driven {
        Driven::Pipeline(p) => (*p).stop().await?,
        Driven::Stub(proc, _) => {
            let stopped = proc.terminate(Duration::from_secs(5)).await?;
            if stopped.killed {
                vec!["stub".into()]
            } else {
                Vec::new()
            }
        }
    };
    let otlp = match sink {
        Some((proc, _)) => {
            proc.terminate(Duration::from_secs(5)).await?;
            std::fs::read(dir.join("otlp-sink.stats.json"))
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
        }
        None => None,
    };

    let mut result = ProbeResult {
        label: spec.label.clone(),
        target: match spec.target {
            Target::Pipeline(Topology::Split) => "split".into(),
            Target::Pipeline(Topology::Monolithic) => "monolithic".into(),
            Target::Stub => "stub".into(),
        },
        sampling: spec.sampling,
        offered_rate: spec.rate,
        backlog_end: backlog_at(&backlog, env.duration),
        backlog_mid: backlog_at(&backlog, env.duration / 2),
        workers_paused: paused,
        backlog_max: backlog.iter().map(|(_, b)| *b).max(),
        backlog_limit,
        processes,
        otlp,
        unclean_shutdown,
        ..Default::default()
    };
    match report {
        Some(r) => {
            result.achieved_rate = r.total.achieved_rate;
            result.sent = r.total.sent;
            result.accepted = r.total.accepted;
            result.failed = r.total.failed;
            result.retried_batches = r.total.retried_batches;
            result.status_codes = r.total.status_codes;
            result.ack_latency = r.total.latency.clone();
            result.e2e = e2e;
            if let Some(v) = r.verification {
                result.verified = Some(v.passed);
                result.verify_diff = v.diff;
            }
        }
        None => result.reasons.push(format!(
            "the simulator wrote no report (exit {exit}): {}",
            log_tail(&dir.join("sim.log"))
        )),
    }
    judge(
        &mut result,
        &env.sustain,
        matches!(spec.target, Target::Pipeline(_)),
    );
    result.wall_s = started.elapsed().as_secs_f64();
    tracing::info!(
        probe = result.label,
        offered = format!("{:.0}", result.offered_rate),
        achieved = format!("{:.0}", result.achieved_rate),
        p99_ms = format!("{:.2}", result.ack_latency.p99_ms),
        backlog_end = result.backlog_end,
        sustained = result.sustained,
        reasons = result.reasons.join("; "),
        "probe done"
    );
    Ok((result, outcome))
}
