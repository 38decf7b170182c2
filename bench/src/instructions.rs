//! The instructions step: instructions per event of `testbed ingest` and
//! `testbed worker` on a fixed workload, counted by callgrind, a figure
//! that does not move with the host's load as CPU time does.
//!
//! One measurement: a fresh `redis-server`; ingest and worker each under
//! `valgrind --tool=callgrind`, query as usual (it only answers the
//! simulator's verification). The run is split by callgrind dumps of both
//! processes at the same moments: start-up (to a settle time after they
//! are ready); an idle window (the idle rate); the *ingest phase*: the
//! workers paused, `testbed sim --verify` with a fixed seed, fleet, batch
//! size and event count until every event is appended; the *worker
//! phase*: the workers resumed until the simulator has verified every
//! event applied exactly once; then SIGTERM (the last dump, at exit, is
//! the shutdown). Ingest's figure is its ingest phase, the worker's its
//! worker phase; the figures are [`crate::instructions_report`]'s.
//!
//! What keeps the count fixed, found by comparing the functions' counts
//! of repetitions that differed:
//! - the same events in the same batches on one stream every time, after
//!   a warm-up of the same workload: without it, the first batches'
//!   device admissions, run concurrently by ingest's stream window,
//!   repeated by a varying amount;
//! - the worker finds the whole workload waiting when it resumes, so it
//!   reads and applies it in full batches, not in whatever the timing of
//!   ingest left for each read (the number of applies, and with it the
//!   per-key writes, moved the worker's count by about 1%);
//! - the ingest phase starts a few seconds into a wall-clock minute
//!   (and a note says so if it ends in the next one): aggregates are kept
//!   per device-minute, so a workload across a minute boundary writes
//!   twice the keys;
//! - [`INGEST_FLAGS`] and [`WORKER_FLAGS`]: under callgrind the services
//!   run about 50 times slower, so the default 500 ms bound on Redis calls
//!   fires, calls fail and batches are re-sent (seen in a trial: 152 of 200
//!   batches), and ingest's 100 ms `--backlog-max-age` lapses between
//!   batches, adding a backlog read per partition to some batches and not
//!   others (about 2% of ingest's count). Both are set to 60 s, which at
//!   full speed they effectively are: a batch every few milliseconds keeps
//!   the backlog figure fresh, and Redis answers in well under 500 ms.
//!
//! What is left varies with timing: the timers and polls that run whether
//! or not events arrive (subtracted at the idle rate), and how many events
//! each HTTP/2 read and Redis round trip of ingest carries.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use testbed_proto::v1::worker_control_service_client::WorkerControlServiceClient;
use testbed_proto::v1::{GetStatusRequest, PauseRequest, ResumeRequest, WorkerState};
use testbed_stream::{EventLog as _, RedisLog, StoreArgs};

use crate::callgrind::{self, Tools};
use crate::error::{Context as _, Error, Result};
use crate::instructions_report::{Instructions, ProcessCounts, ProcessFigures};
use crate::pipeline::{self, KEY_PREFIX, Service, Topology, role_command};
use crate::probe::ProbeEnv;
use crate::process::{Proc, inherited_settings};
use crate::redis::Redis;
use crate::sim::{self, SimSpec};
use crate::telemetry::Telemetry;

/// Flags ingest gets in this step beyond the pipeline's (see the module
/// docs for why).
pub const INGEST_FLAGS: [&str; 4] = ["--redis-timeout", "60s", "--backlog-max-age", "60s"];

/// Flags the worker gets in this step beyond the pipeline's.
pub const WORKER_FLAGS: [&str; 2] = ["--redis-timeout", "60s"];

/// Seconds into a wall-clock minute at which the ingest phase starts.
pub const MINUTE_OFFSET_S: u64 = 5;

/// Time allowed, before the ingest phase, for the workers to confirm the
/// pause.
const PAUSE_MARGIN: Duration = Duration::from_secs(3);

/// After the last event is appended, before the ingest phase's dump: the
/// acknowledgements of the last batches leave ingest.
const ACK_QUIET: Duration = Duration::from_secs(1);

/// The first moment at [`MINUTE_OFFSET_S`] into a minute at or after
/// `earliest`, in Unix seconds.
pub fn aligned_start(earliest: f64) -> f64 {
    let minute = (earliest / 60.0).floor() * 60.0;
    let candidate = minute + MINUTE_OFFSET_S as f64;
    if candidate >= earliest {
        candidate
    } else {
        candidate + 60.0
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Sleeps until Unix time `at` (at once if it has passed).
async fn sleep_until_unix(at: f64) {
    let left = at - unix_now();
    if left > 0.0 {
        tokio::time::sleep(Duration::from_secs_f64(left)).await;
    }
}

/// The step's settings.
#[derive(Debug, Clone)]
pub struct InstructionsOptions {
    /// `valgrind` and `callgrind_control`.
    pub tools: Tools,
    /// Events of the workload (a multiple of `batch_size` keeps every
    /// batch full).
    pub events: u64,
    /// Events sent (and verified) before the counting starts, so that
    /// connections, ingest's admitted devices and the worker's index
    /// memberships are warm (0: none).
    pub warmup_events: u64,
    /// Events per batch (the simulator's rate is 100 batches a second).
    pub batch_size: u32,
    /// Simulated devices.
    pub devices: u32,
    /// The simulator's seed.
    pub seed: u64,
    /// After the services are ready, before the first dump.
    pub settle: Duration,
    /// The idle window whose rate is subtracted.
    pub idle: Duration,
    /// The longest any phase may take (readiness, a dump, the workload
    /// with its verification, shutdown).
    pub timeout: Duration,
}

impl InstructionsOptions {
    /// The simulator's rate: `batch_size` × 100 events/s, as it sizes
    /// batches for about 100 a second.
    pub fn rate(&self) -> f64 {
        f64::from(self.batch_size.max(1)) * 100.0
    }

    /// The schedule that sends `events` at [`Self::rate`].
    pub fn duration_of(&self, events: u64) -> Duration {
        Duration::from_secs_f64(events as f64 / self.rate())
    }
}

/// A process under callgrind: its service and its output file.
struct Measured {
    service: Service,
    out: PathBuf,
    counts: ProcessCounts,
    last_dump: Instant,
}

impl Measured {
    /// Takes dump `n` named `hint`; returns its count and the seconds since
    /// the previous dump of this process.
    async fn dump(
        &mut self,
        tools: &Tools,
        n: u32,
        hint: &str,
        timeout: Duration,
    ) -> Result<(u64, f64)> {
        let ir = tools
            .dump(self.service.pid(), &self.out, n, hint, timeout)
            .await?;
        let now = Instant::now();
        let s = now.duration_since(self.last_dump).as_secs_f64();
        self.last_dump = now;
        tracing::info!(
            process = self.counts.name,
            dump = hint,
            ir,
            seconds = s,
            "callgrind dump"
        );
        Ok((ir, s))
    }
}

/// Spawns `testbed <role>` under callgrind, writing to `dir/<role>.callgrind`.
fn spawn_measured(
    o: &InstructionsOptions,
    pipeline: &pipeline::PipelineOptions,
    redis_url: &str,
    dir: &Path,
    role: &'static str,
) -> Result<(Proc, PathBuf, PathBuf)> {
    let c = role_command(pipeline, redis_url, dir, role, role, &[]);
    let _ = std::fs::remove_file(&c.addr_file);
    let out = dir.join(format!("{role}.callgrind"));
    let args = o.tools.wrap(&out, &pipeline.testbed, &c.args);
    let proc = Proc::spawn(
        role,
        &o.tools.valgrind,
        &args,
        &c.env,
        &inherited_settings(),
        &c.log,
    )?;
    Ok((proc, c.addr_file, out))
}

/// Runs one measurement in `env.work/label`; `valgrind` is the version
/// [`Tools::check`] found.
pub async fn run(
    env: &ProbeEnv,
    o: &InstructionsOptions,
    label: &str,
    valgrind: String,
) -> Result<Instructions> {
    let started = Instant::now();
    let dir = env.work.join(label);
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    tracing::info!(step = label, events = o.events, "instructions starting");

    let mut options = env.pipeline.clone();
    options.topology = Topology::Split;
    options.telemetry = Telemetry::default();
    options.ready_timeout = o.timeout;
    let owned = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    options.ingest_args.extend(owned(&INGEST_FLAGS));
    options.worker_args.extend(owned(&WORKER_FLAGS));
    let flags = vec![
        format!("ingest {}", INGEST_FLAGS.join(" ")),
        format!("worker {}", WORKER_FLAGS.join(" ")),
    ];

    let redis = Redis::start(&options.redis_server, &dir.join("redis")).await?;
    let url = redis.url();
    let mut starting = Vec::new();
    for role in ["ingest", "worker"] {
        starting.push((role, spawn_measured(o, &options, &url, &dir, role)?));
    }
    let q = role_command(&options, &url, &dir, "query", "query", &[]);
    let _ = std::fs::remove_file(&q.addr_file);
    let query = Proc::spawn(
        "query",
        &options.testbed,
        &q.args,
        &q.env,
        &inherited_settings(),
        &q.log,
    )?;
    let mut measured = Vec::new();
    for (role, (proc, addr_file, out)) in starting {
        let service = pipeline::ready(role, proc, &addr_file, o.timeout).await?;
        measured.push(Measured {
            service,
            out,
            counts: ProcessCounts {
                name: role.to_owned(),
                ..Default::default()
            },
            last_dump: Instant::now(),
        });
    }
    let query = pipeline::ready("query", query, &q.addr_file, o.timeout).await?;
    let ingest_url = format!("http://{}", measured[0].service.grpc);
    let query_url = format!("http://{}", query.grpc);

    let control = pipeline::connect(&format!("http://{}", measured[1].service.grpc)).await?;
    let mut control = WorkerControlServiceClient::new(control);
    let log = RedisLog::connect(&StoreArgs {
        redis_url: Some(url.clone()),
        partitions: options.partitions,
        key_prefix: KEY_PREFIX.to_owned(),
        ..StoreArgs::default()
    })
    .await
    .map_err(|e| Error::Process(format!("reading the pipeline's store: {e}")))?;

    tokio::time::sleep(o.settle).await;
    if o.warmup_events > 0 {
        let (spec, mut warmup) = spawn_sim(
            o,
            &options,
            (&ingest_url, &query_url),
            o.warmup_events,
            &format!("bench-{label}-warmup"),
            &dir.join("warmup"),
        )?;
        let status = warmup.wait(spec.limit()).await?;
        if !status.is_some_and(|s| s.success()) {
            return Err(Error::Process(format!(
                "the instructions warm-up did not finish verified (see {})",
                warmup.log().display()
            )));
        }
    }
    for m in &mut measured {
        m.counts.startup_ir = m.dump(&o.tools, 1, "startup", o.timeout).await?.0;
    }
    // The idle window runs up to a pause margin before the ingest phase's
    // aligned start.
    let start_at = aligned_start(unix_now() + (o.idle + PAUSE_MARGIN).as_secs_f64());
    sleep_until_unix(start_at - PAUSE_MARGIN.as_secs_f64()).await;
    for m in &mut measured {
        (m.counts.idle_ir, m.counts.idle_s) = m.dump(&o.tools, 2, "idle", o.timeout).await?;
    }

    control
        .pause(PauseRequest {
            reason: "instructions: ingest phase".into(),
        })
        .await
        .context(|| "WorkerControlService.Pause")?;
    wait_paused(&mut control, true, o.timeout).await?;
    sleep_until_unix(start_at).await;
    let ingest_started = unix_now();

    let (spec, mut sim_proc) = spawn_sim(
        o,
        &options,
        (&ingest_url, &query_url),
        o.events,
        &format!("bench-{label}"),
        &dir.join("sim"),
    )?;
    wait_appended(&log, &mut sim_proc, o.events, o.timeout).await?;
    tokio::time::sleep(ACK_QUIET).await;
    let ingest_ended = unix_now();
    for m in &mut measured {
        (m.counts.phase_ir[0], m.counts.phase_s[0]) =
            m.dump(&o.tools, 3, "ingest", o.timeout).await?;
    }

    control
        .resume(ResumeRequest {
            reason: "instructions: worker phase".into(),
        })
        .await
        .context(|| "WorkerControlService.Resume")?;
    let exited = sim_proc.wait(spec.limit()).await?;
    let Some(status) = exited else {
        return Err(Error::Process(format!(
            "the instructions workload did not finish within {:?} (see {})",
            spec.limit(),
            sim_proc.log().display()
        )));
    };
    for m in &mut measured {
        (m.counts.phase_ir[1], m.counts.phase_s[1]) =
            m.dump(&o.tools, 4, "worker", o.timeout).await?;
    }
    let report = sim::read_report(&spec.report)?;

    let grace = options.shutdown_grace + o.timeout;
    let mut notes = Vec::new();
    let mut counts = Vec::new();
    // Ingest first, as a pipeline is stopped.
    for mut m in measured {
        let stopped = m.service.stop(grace).await?;
        if stopped.killed {
            notes.push(format!("{} needed SIGKILL", m.counts.name));
        }
        m.counts.shutdown_ir = std::fs::read_to_string(&m.out)
            .ok()
            .and_then(|t| callgrind::parse(&t).ok())
            .map(|d| d.ir);
        counts.push(m.counts);
    }
    query.stop(Duration::from_secs(10)).await?;
    redis.stop().await?;

    if (ingest_started / 60.0).floor() != (ingest_ended / 60.0).floor() {
        notes.push(
            "the ingest phase crossed a minute boundary (events in two device-minutes): not comparable"
                .to_owned(),
        );
    }
    let total = &report.total;
    let verified = report.verification.as_ref().is_some_and(|v| v.passed);
    if !status.success() || !verified {
        notes.push(format!(
            "the simulator exited with {status} and verification {}: the workload was not applied exactly once, so the figures are not comparable",
            if verified { "passed" } else { "did not pass" }
        ));
    }
    if total.sent != o.events || total.accepted != total.sent {
        notes.push(format!(
            "{} events sent and {} accepted of the {} planned",
            total.sent, total.accepted, o.events
        ));
    }
    if total.retried_batches > 0 {
        notes.push(format!(
            "{} batches were re-sent (work beyond the fixed workload)",
            total.retried_batches
        ));
    }
    let events = total.accepted;
    for (i, c) in counts.iter_mut().enumerate() {
        // Ingest's own phase is the first, the worker's the second.
        (c.workload_ir, c.workload_s) = (c.phase_ir[i], c.phase_s[i]);
    }
    Ok(Instructions {
        events,
        warmup_events: o.warmup_events,
        batch_size: o.batch_size,
        devices: o.devices,
        seed: o.seed,
        rate: o.rate(),
        minute_offset_s: MINUTE_OFFSET_S,
        verified,
        retried_batches: total.retried_batches,
        service_flags: flags,
        valgrind,
        processes: counts
            .into_iter()
            .map(|c| ProcessFigures::new(c, events))
            .collect(),
        notes,
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// Starts `testbed sim --verify` sending `events` of the fixed workload
/// to `urls` (ingest, query) as run `run_id`; its report and log are
/// `stem.json` and `stem.log`.
fn spawn_sim(
    o: &InstructionsOptions,
    options: &pipeline::PipelineOptions,
    urls: (&str, &str),
    events: u64,
    run_id: &str,
    stem: &Path,
) -> Result<(SimSpec, Proc)> {
    let spec = SimSpec {
        target: urls.0.to_owned(),
        verify_with: Some(urls.1.to_owned()),
        rate: o.rate(),
        duration: o.duration_of(events),
        devices: o.devices,
        // One stream: the same batches arrive in the same order each time.
        connections: 1,
        streams: 1,
        batch_size: o.batch_size,
        drain_timeout: o.timeout,
        verify_timeout: o.timeout,
        run_id: run_id.to_owned(),
        report: stem.with_extension("json"),
    };
    let mut args = spec.args();
    args.extend(["--seed".to_owned(), o.seed.to_string()]);
    let _ = std::fs::remove_file(&spec.report);
    let proc = Proc::spawn(
        "sim",
        &options.testbed,
        &args,
        &options.log_env(),
        &inherited_settings(),
        &stem.with_extension("log"),
    )?;
    Ok((spec, proc))
}

/// Polls the workers' status until every one reports paused (or running).
async fn wait_paused(
    control: &mut WorkerControlServiceClient<tonic::transport::Channel>,
    paused: bool,
    timeout: Duration,
) -> Result<()> {
    let want = if paused {
        WorkerState::Paused
    } else {
        WorkerState::Running
    } as i32;
    let deadline = Instant::now() + timeout;
    loop {
        let status = control
            .get_status(GetStatusRequest::default())
            .await
            .context(|| "WorkerControlService.GetStatus")?
            .into_inner();
        if !status.workers.is_empty() && status.workers.iter().all(|w| w.state == want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Process(format!(
                "workers not {} within {timeout:?}",
                if paused { "paused" } else { "running" }
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the store holds `events` appended events (over every
/// partition); the simulator must not have exited meanwhile.
async fn wait_appended(
    log: &RedisLog,
    sim: &mut Proc,
    events: u64,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let mut appended = 0;
        for part in 0..log.partitions() {
            appended += log.figures(part).await.map_or(0, |f| f.ingested);
        }
        if appended >= events {
            return Ok(());
        }
        if let Some(status) = sim.try_exit()? {
            return Err(Error::Process(format!(
                "the simulator exited with {status} with {appended} of {events} events appended (see {})",
                sim.log().display()
            )));
        }
        if Instant::now() >= deadline {
            return Err(Error::Process(format!(
                "{appended} of {events} events appended within {timeout:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ingest phase starts MINUTE_OFFSET_S into the first minute
    /// that leaves it time: later in the same minute it waits a minute.
    #[test]
    fn start_is_aligned_to_a_minute() {
        assert_eq!(aligned_start(120.0), 125.0);
        assert_eq!(aligned_start(125.0), 125.0);
        assert_eq!(aligned_start(125.5), 185.0);
        assert_eq!(aligned_start(179.9), 185.0);
    }

    /// The simulator's rate gives batches of the batch size; the schedule
    /// sends exactly the events asked for.
    #[test]
    fn workload_schedule() {
        let o = InstructionsOptions {
            tools: Tools {
                valgrind: "valgrind".into(),
                control: "callgrind_control".into(),
            },
            events: 50_000,
            warmup_events: 10_000,
            batch_size: 1000,
            devices: 1000,
            seed: 1,
            settle: Duration::ZERO,
            idle: Duration::ZERO,
            timeout: Duration::ZERO,
        };
        assert_eq!(o.rate(), 100_000.0);
        assert_eq!(o.duration_of(o.events), Duration::from_millis(500));
    }
}
