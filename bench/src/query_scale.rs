//! The query-scale step (#32): what the query API's reads cost as the
//! fleet grows, and what a polling dashboard costs the write path.
//!
//! For each fleet size, smallest first: a fresh Redis and `testbed all
//! --max-tracked-devices 0` (the device cap admits each partition its
//! share of the cap, and devices hash unevenly, so a cap equal to the
//! fleet would refuse some of a full fleet's devices), filled by `testbed
//! sim --devices N --batch-size 1000` at `--query-scale-fill-rate` for at
//! least 1.2 N events (the simulator goes round-robin over its devices,
//! so every device is sent), then waited for until the backlog and every
//! partition's pending entries are 0. Then each read of
//! [`READS`](crate::query_report::READS) is called once untimed, then
//! `--query-scale-reads` times in a row, one call at a time, from one
//! client, timed around each call; Redis' `used_memory` is read before
//! and after the fill.
//!
//! At the largest size, before the stack is stopped: `testbed sim` at
//! `--query-scale-harm-rate` for `--query-scale-harm-duration`, alone,
//! then with a client calling ListDevices(10) and TopDevices(10) every
//! `--query-scale-poll-interval`, `--query-scale-harm-rounds` times; the
//! backlog is drained between runs.
//!
//! Figures, verdicts and the Markdown section: [`crate::query_report`].

use std::future::Future;
use std::time::{Duration, Instant};

use testbed_proto::v1::query_service_client::QueryServiceClient;
use testbed_proto::v1::{
    GetDeviceStatsRequest, GetTokenUsageRequest, ListDevicesRequest, TopDevicesRequest, TopMetric,
};
use testbed_stream::keys::Keys;
use testbed_stream::{EventLog as _, RedisLog, StoreArgs};
use tonic::transport::Channel;

use crate::error::{Error, Result};
use crate::machine::loadavg;
use crate::pipeline::{self, KEY_PREFIX, Pipeline, Topology};
use crate::probe::ProbeEnv;
use crate::process::inherited_settings;
use crate::query_report::{self, FleetSize, Harm, HarmRun, QueryScale, READS};
use crate::redis;
use crate::sim::{self, SimSpec};

/// Settings of the query-scale step.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryScaleOptions {
    /// Fleet sizes, in the order run.
    pub sizes: Vec<u64>,
    /// Timed calls per read and size.
    pub reads: u32,
    /// The fill's offered rate, events/s.
    pub fill_rate: f64,
    /// The longest a fill may take to be processed after its schedule.
    pub fill_timeout: Duration,
    /// The write-harm load, events/s (0: not measured).
    pub harm_rate: f64,
    /// Each write-harm run's schedule.
    pub harm_duration: Duration,
    /// Pairs of write-harm runs (without, with the poller).
    pub harm_rounds: u32,
    /// The poller's interval.
    pub poll_interval: Duration,
}

/// How often the backlog is read while a fill drains.
const DRAIN_POLL: Duration = Duration::from_millis(500);

/// The write-harm runs' batch size (the method).
const HARM_BATCH: u32 = 200;

/// Runs the step; `label` prefixes its directories.
pub async fn run(env: &ProbeEnv, o: &QueryScaleOptions, label: &str) -> Result<QueryScale> {
    let mut out = QueryScale {
        reads_per_size: o.reads,
        fill_rate: o.fill_rate,
        ..QueryScale::default()
    };
    let largest = o.sizes.iter().copied().max();
    for &devices in &o.sizes {
        let dir = env.work.join(format!("{label}-{devices}"));
        let mut options = env.pipeline.clone();
        options.topology = Topology::Monolithic;
        options
            .ingest_args
            .extend(["--max-tracked-devices".to_owned(), "0".to_owned()]);
        tracing::info!(devices, "query-scale: starting a fresh stack");
        let p = Pipeline::start(&options, &dir).await?;
        let measured = measure(env, o, &p, devices, &dir, &mut out.notes).await;
        let harm = match (&measured, Some(devices) == largest && o.harm_rate > 0.0) {
            (Ok(_), true) => Some(harm(env, o, &p, devices, &dir, &mut out.notes).await),
            _ => None,
        };
        p.stop().await?;
        out.sizes.push(measured?);
        if let Some(h) = harm {
            out.harm = Some(h?);
        }
    }
    Ok(out)
}

/// The simulator run `name` against `p`, waited for until it exits.
async fn simulate(
    env: &ProbeEnv,
    p: &Pipeline,
    dir: &std::path::Path,
    name: &str,
    (rate, duration, devices, batch): (f64, Duration, u64, u32),
) -> Result<sim::Report> {
    let spec = SimSpec {
        target: p.ingest_target()?,
        verify_with: None,
        rate,
        duration,
        devices: u32::try_from(devices)
            .map_err(|_| Error::Process(format!("{devices} devices: at most {}", u32::MAX)))?,
        connections: env.sim.connections,
        streams: env.sim.streams,
        batch_size: batch,
        drain_timeout: env.drain_timeout,
        verify_timeout: env.verify_timeout,
        run_id: format!("bench-{name}"),
        report: dir.join(format!("{name}.json")),
    };
    let mut proc = spec.spawn(
        &env.pipeline.testbed,
        &env.pipeline.log_env(),
        &inherited_settings(),
        &dir.join(format!("{name}.log")),
    )?;
    if proc.wait(spec.limit()).await?.is_none() {
        return Err(Error::Process(format!(
            "{name}: the simulator still ran after {:?}",
            spec.limit()
        )));
    }
    sim::read_report(&spec.report)
}

/// Waits until the backlog and every partition's pending entries are 0;
/// false if `timeout` passed first.
async fn drained(p: &Pipeline, log: &RedisLog, timeout: Duration) -> Result<bool> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut left = p.backlog().await?;
        for part in 0..log.partitions() {
            left += log.pending(part).await.map_or(1, |s| s.entries);
        }
        if left == 0 {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

fn redis_port(p: &Pipeline) -> Result<u16> {
    p.redis_url()
        .rsplit(':')
        .next()
        .and_then(|port| port.parse().ok())
        .ok_or_else(|| Error::parse("the pipeline's Redis URL", p.redis_url()))
}

/// `used_memory` of `INFO memory`.
fn used_memory(port: u16) -> Result<u64> {
    let info = redis::command_text(port, &["INFO", "memory"])
        .map_err(|e| Error::Process(format!("INFO memory: {e}")))?;
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::parse("INFO memory", "no used_memory"))
}

/// Devices in every partition's id index.
fn indexed(port: u16, partitions: u32) -> Result<u64> {
    let keys = Keys::new(KEY_PREFIX);
    let mut total = 0;
    for part in 0..partitions {
        let reply = redis::command(port, &["ZCARD", &keys.device_ids(part)])
            .map_err(|e| Error::Process(format!("ZCARD: {e}")))?;
        total += reply
            .strip_prefix(':')
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| Error::parse("ZCARD", reply))?;
    }
    Ok(total)
}

async fn store(p: &Pipeline, partitions: u32) -> Result<RedisLog> {
    RedisLog::connect(&StoreArgs {
        redis_url: Some(p.redis_url()),
        partitions,
        key_prefix: KEY_PREFIX.to_owned(),
        ..StoreArgs::default()
    })
    .await
    .map_err(|e| Error::Process(format!("reading the pipeline's store: {e}")))
}

/// One fleet size: fill, drain, memory, the timed reads.
async fn measure(
    env: &ProbeEnv,
    o: &QueryScaleOptions,
    p: &Pipeline,
    devices: u64,
    dir: &std::path::Path,
    notes: &mut Vec<String>,
) -> Result<FleetSize> {
    let port = redis_port(p)?;
    let partitions = env.pipeline.partitions;
    let log = store(p, partitions).await?;
    let used_memory_empty = used_memory(port)?;
    // At least 1.2 N events, so every device is sent even if a few
    // batches are refused; at least 2 s, so small fleets fill like large.
    let schedule = Duration::from_secs_f64((devices as f64 * 1.2 / o.fill_rate).max(2.0).ceil());
    let started = Instant::now();
    let report = simulate(
        env,
        p,
        dir,
        "fill",
        (o.fill_rate, schedule, devices, env.sim.batch_size),
    )
    .await?;
    if !drained(p, &log, o.fill_timeout).await? {
        notes.push(format!(
            "{devices} devices: backlog or pending entries left {:?} after the fill's start; read anyway",
            started.elapsed()
        ));
    }
    let fill_s = started.elapsed().as_secs_f64();
    let indexed = indexed(port, partitions)?;
    if indexed < devices {
        notes.push(format!(
            "{devices} devices: only {indexed} indexed after the fill ({} of {} events accepted)",
            report.total.accepted, report.total.sent
        ));
    }
    let used_memory = used_memory(port)?;
    tracing::info!(devices, indexed, fill_s, used_memory, "query-scale: filled");

    let mut client = QueryServiceClient::new(pipeline::connect(&p.query_target()?).await?);
    // The first page's ids are the devices GetDeviceStats asks about.
    let ids: Vec<String> = client
        .list_devices(list(""))
        .await
        .map(|r| r.into_inner().devices)
        .unwrap_or_default()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    let loadavg = loadavg();
    let mut reads = Vec::new();
    for (name, _) in READS {
        let mut n = 0usize;
        let timed = time_calls(o.reads, || {
            let mut c = client.clone();
            let id = ids.get(n % ids.len().max(1)).cloned().unwrap_or_default();
            n += 1;
            async move { call(&mut c, name, id).await }
        })
        .await;
        let figures = query_report::figures(name, timed.samples_ms, &timed.errors);
        tracing::info!(
            devices,
            read = name,
            p50_ms = figures.p50_ms,
            p99_ms = figures.p99_ms,
            failed = figures.failed,
            "query-scale: read timed"
        );
        reads.push(figures);
    }
    Ok(FleetSize {
        devices,
        indexed,
        fill_sent: report.total.sent,
        fill_accepted: report.total.accepted,
        fill_schedule_s: schedule.as_secs_f64(),
        fill_s,
        used_memory,
        used_memory_empty,
        loadavg,
        reads,
    })
}

fn list(filter: &str) -> ListDevicesRequest {
    ListDevicesRequest {
        page_size: 10,
        page_token: String::new(),
        filter: filter.to_owned(),
    }
}

fn top(metric: TopMetric) -> TopDevicesRequest {
    TopDevicesRequest {
        metric: metric as i32,
        window: None,
        limit: 10,
    }
}

/// One call of the read `name` (`device` for GetDeviceStats).
async fn call(
    c: &mut QueryServiceClient<Channel>,
    name: &str,
    device: String,
) -> Result<(), tonic::Status> {
    match name {
        "list" => c.list_devices(list("")).await.map(drop),
        "list_arm64" => c.list_devices(list("arch=arm64")).await.map(drop),
        "top_events" => c.top_devices(top(TopMetric::EventCount)).await.map(drop),
        "top_gpu" => c
            .top_devices(top(TopMetric::GpuUtilization))
            .await
            .map(drop),
        "device_stats" => c
            .get_device_stats(GetDeviceStatsRequest {
                device_id: device,
                window: None,
            })
            .await
            .map(drop),
        _ => c
            .get_token_usage(GetTokenUsageRequest::default())
            .await
            .map(drop),
    }
}

/// Raw timings of calls.
struct Timed {
    samples_ms: Vec<f64>,
    errors: Vec<String>,
}

/// One untimed call, then `n` calls one after another, each timed.
async fn time_calls<F, Fut>(n: u32, mut next: F) -> Timed
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), tonic::Status>>,
{
    let _ = next().await;
    let mut t = Timed {
        samples_ms: Vec::new(),
        errors: Vec::new(),
    };
    for _ in 0..n {
        let at = Instant::now();
        match next().await {
            Ok(()) => t.samples_ms.push(at.elapsed().as_secs_f64() * 1e3),
            Err(s) => t.errors.push(format!("{:?}: {}", s.code(), s.message())),
        }
    }
    t
}

/// The write-harm comparison on the filled stack `p`.
async fn harm(
    env: &ProbeEnv,
    o: &QueryScaleOptions,
    p: &Pipeline,
    devices: u64,
    dir: &std::path::Path,
    notes: &mut Vec<String>,
) -> Result<Harm> {
    let log = store(p, env.pipeline.partitions).await?;
    let client = QueryServiceClient::new(pipeline::connect(&p.query_target()?).await?);
    let mut out = Harm {
        devices,
        rate: o.harm_rate,
        duration_s: o.harm_duration.as_secs_f64(),
        poll_interval_ms: o.poll_interval.as_secs_f64() * 1e3,
        runs: Vec::new(),
    };
    let shape = (o.harm_rate, o.harm_duration, devices, HARM_BATCH);
    for round in 1..=o.harm_rounds {
        for polled in [false, true] {
            let name = format!("harm-{round}-{}", if polled { "polled" } else { "alone" });
            let loadavg = loadavg();
            let (report, poller) = if polled {
                let mut calls = Timed {
                    samples_ms: Vec::new(),
                    errors: Vec::new(),
                };
                let sim = simulate(env, p, dir, &name, shape);
                tokio::pin!(sim);
                let mut tick = tokio::time::interval(o.poll_interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let report = loop {
                    tokio::select! {
                        r = &mut sim => break r?,
                        _ = tick.tick() => {
                            for name in ["list", "top_events"] {
                                let mut c = client.clone();
                                let at = Instant::now();
                                match call(&mut c, name, String::new()).await {
                                    Ok(()) => calls.samples_ms.push(at.elapsed().as_secs_f64() * 1e3),
                                    Err(s) => calls.errors.push(format!("{:?}: {}", s.code(), s.message())),
                                }
                            }
                        }
                    }
                };
                let figures = query_report::figures("poller", calls.samples_ms, &calls.errors);
                (report, Some(figures))
            } else {
                (simulate(env, p, dir, &name, shape).await?, None)
            };
            tracing::info!(
                run = name,
                ack_p99_ms = report.total.latency.p99_ms,
                accepted = report.total.accepted,
                "query-scale: write-harm run"
            );
            out.runs.push(HarmRun {
                polled,
                ack_p50_ms: report.total.latency.p50_ms,
                ack_p99_ms: report.total.latency.p99_ms,
                sent: report.total.sent,
                accepted: report.total.accepted,
                poller,
                loadavg,
            });
            if !drained(p, &log, o.fill_timeout).await? {
                notes.push(format!("{name}: backlog not drained before the next run"));
            }
        }
    }
    Ok(out)
}
