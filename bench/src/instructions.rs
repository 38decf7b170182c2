//! The instructions step: instructions per event of `testbed ingest` and
//! `testbed worker` on a fixed workload, counted by callgrind, a figure
//! that does not move with the host's load as CPU time does.
//!
//! One measurement: a fresh `redis-server`; ingest and worker each under
//! `valgrind --tool=callgrind`, query as usual (it only answers the
//! simulator's verification); a settle time after they are ready, then a
//! dump (start-up ends), an idle window, a dump (the idle rate), the
//! workload (`testbed sim` with a fixed seed, fleet, batch size and event
//! count, `--verify`: it exits once the worker has applied every event),
//! a dump (the workload), and SIGTERM to all (the last dump, at exit, is
//! the shutdown). The figures are [`crate::instructions_report`]'s.
//!
//! What keeps the count fixed: the workload is the same events in the
//! same batches on one stream every time, and the services get
//! [`SERVICE_FLAGS`]: under callgrind they run about 50 times slower, so
//! the default 500 ms bound on Redis calls fires, calls fail and batches
//! are re-sent (seen in a trial: 152 of 200 batches), work the fixed
//! workload does not contain. What is left varies with timing: the timers
//! and polls that run whether or not events arrive (subtracted at the
//! idle rate) and how many events each Redis round trip and apply carries
//! (the spread across repetitions shows how much).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::callgrind::{self, Tools};
use crate::error::{Context as _, Error, Result};
use crate::instructions_report::{Instructions, ProcessCounts, ProcessFigures};
use crate::pipeline::{self, Service, Topology, role_command};
use crate::probe::ProbeEnv;
use crate::process::{Proc, inherited_settings};
use crate::redis::Redis;
use crate::sim::{self, SimSpec};
use crate::telemetry::Telemetry;

/// Flags ingest and worker get in this step beyond the pipeline's (see
/// the module docs for why).
pub const SERVICE_FLAGS: [&str; 2] = ["--redis-timeout", "60s"];

/// The step's settings.
#[derive(Debug, Clone)]
pub struct InstructionsOptions {
    /// `valgrind` and `callgrind_control`.
    pub tools: Tools,
    /// Events of the workload (a multiple of `batch_size` keeps every
    /// batch full).
    pub events: u64,
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
    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.events as f64 / self.rate())
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
    let flags: Vec<String> = SERVICE_FLAGS.iter().map(|s| (*s).to_owned()).collect();
    options.ingest_args.extend(flags.iter().cloned());
    options.worker_args.extend(flags.iter().cloned());

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

    tokio::time::sleep(o.settle).await;
    for m in &mut measured {
        m.counts.startup_ir = m.dump(&o.tools, 1, "startup", o.timeout).await?.0;
    }
    tokio::time::sleep(o.idle).await;
    for m in &mut measured {
        (m.counts.idle_ir, m.counts.idle_s) = m.dump(&o.tools, 2, "idle", o.timeout).await?;
    }

    let spec = SimSpec {
        target: format!("http://{}", measured[0].service.grpc),
        verify_with: Some(format!("http://{}", query.grpc)),
        rate: o.rate(),
        duration: o.duration(),
        devices: o.devices,
        // One stream: the same batches arrive in the same order each time.
        connections: 1,
        streams: 1,
        batch_size: o.batch_size,
        drain_timeout: o.timeout,
        verify_timeout: o.timeout,
        run_id: format!("bench-{label}"),
        report: dir.join("sim.json"),
    };
    let mut args = spec.args();
    args.extend(["--seed".to_owned(), o.seed.to_string()]);
    let _ = std::fs::remove_file(&spec.report);
    let mut sim_proc = Proc::spawn(
        "sim",
        &options.testbed,
        &args,
        &options.log_env(),
        &inherited_settings(),
        &dir.join("sim.log"),
    )?;
    let exited = sim_proc.wait(spec.limit()).await?;
    let Some(status) = exited else {
        return Err(Error::Process(format!(
            "the instructions workload did not finish within {:?} (see {})",
            spec.limit(),
            sim_proc.log().display()
        )));
    };
    for m in &mut measured {
        (m.counts.workload_ir, m.counts.workload_s) =
            m.dump(&o.tools, 3, "workload", o.timeout).await?;
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
    Ok(Instructions {
        events,
        batch_size: o.batch_size,
        devices: o.devices,
        seed: o.seed,
        rate: o.rate(),
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
