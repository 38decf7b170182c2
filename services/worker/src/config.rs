//! The `testbed worker` flags.

use std::time::Duration;

/// How the worker's span for an entry relates to the ingest span stored
/// with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueueTraceMode {
    /// The processing span is a child of the ingest span: one trace from
    /// the load generator to the aggregate.
    #[default]
    Parent,
    /// The processing span starts a new trace with a span link to the
    /// ingest span (the messaging conventions' choice for batch consumers).
    Link,
}

/// The Linux scheduling class of the worker's threads (`--cpu-class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CpuClass {
    /// `SCHED_OTHER`, like every other process.
    Normal,
    /// `SCHED_BATCH` at nice 19: never preempts a waking task. The
    /// default of `testbed worker`.
    Batch,
    /// `SCHED_IDLE`: runs only on CPU time nothing else wants.
    Idle,
}

/// How a worker consumes.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerConfig {
    /// This worker's consumer name in the group. Default: the pod or host
    /// name plus a unique suffix, so a restarted pod never inherits a dead
    /// consumer's identity (its pending entries are claimed instead).
    #[arg(long, env = "TESTBED_CONSUMER_NAME")]
    pub consumer_name: Option<String>,

    /// Batches applied at once by this worker, across partitions.
    #[arg(long, env = "TESTBED_WORKER_CONCURRENCY", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,

    /// Most entries gathered from one partition for one apply.
    #[arg(long, env = "TESTBED_READ_COUNT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub read_count: u32,

    /// Most entries one `XREADGROUP` returns: a batch is gathered in reads
    /// of this many, one round trip each. Redis builds a read's reply while
    /// appends wait, so smaller reads hold it for less at a time (measured
    /// in bench/README.md, "Optimisation log").
    #[arg(long, env = "TESTBED_READ_CHUNK", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub read_chunk: u32,

    /// Most events folded into one atomic apply. Entries read together are
    /// applied together (one script, one ack for all), so the store's cost
    /// is per distinct key rather than per event; this bounds how long one
    /// apply holds Redis.
    #[arg(long, env = "TESTBED_APPLY_MAX_EVENTS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub apply_max_events: u64,

    /// The longest a read that found entries keeps gathering more before
    /// applying (up to `--read-count` entries and `--apply-max-events`
    /// events; a read that already filled its batch is applied at once, so
    /// a backlog drains at the speed of the applies). How long it actually
    /// waits is `--apply-linger-factor` times the recent applies' duration:
    /// short at light load, so the pipeline adds little latency, longer as
    /// load grows, so each write carries more events and the store's cost
    /// per event falls (Redis CPU per event and end-to-end latency against
    /// the linger: bench/README.md, "Optimisation log"). 0 applies what
    /// each read returns at once.
    #[arg(long, env = "TESTBED_APPLY_LINGER", default_value = "20ms",
          value_parser = humantime::parse_duration)]
    pub apply_linger: Duration,

    /// A short read lingers this many times the recent applies' mean
    /// duration (process-wide), at most `--apply-linger`: batching by
    /// demand, not by clock. 0: apply at once, the next batch being what
    /// arrived while the previous apply ran (group commit); larger: fewer,
    /// larger applies at the price of latency.
    #[arg(long, env = "TESTBED_APPLY_LINGER_FACTOR", default_value_t = 1.0,
          value_parser = linger_factor)]
    pub apply_linger_factor: f64,

    /// How long a read waits for new entries before looking again.
    #[arg(long, env = "TESTBED_READ_BLOCK", default_value = "500ms",
          value_parser = humantime::parse_duration)]
    pub read_block: Duration,

    /// Entries pending longer than this (their consumer died) are claimed.
    #[arg(long, env = "TESTBED_CLAIM_IDLE", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub claim_idle: Duration,

    /// How often stale pending entries are looked for, and idle devices
    /// pruned from the device index.
    #[arg(long, env = "TESTBED_MAINTENANCE_INTERVAL", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub maintenance_interval: Duration,

    /// Devices pruned from a partition's indexes per maintenance pass, at
    /// most (one bounded Redis call each: it holds Redis for about a
    /// millisecond per 500 devices, however many are due). Devices past
    /// the retention wait for a later pass beyond this.
    #[arg(long, env = "TESTBED_PRUNE_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub prune_batch: u32,

    /// Devices whose index memberships (id index, label postings) this
    /// worker remembers having written, so that later applies leave them
    /// out (about 80 bytes each). 0 writes them on every apply; past the
    /// count the memory is cleared and refilled.
    #[arg(long, env = "TESTBED_INDEX_CACHE", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u32).range(0..=50_000_000))]
    pub index_cache: u32,

    /// How often each partition's stream is trimmed of the entries the
    /// group has acknowledged. Often and small: Redis frees trimmed entries
    /// while appends wait, so a long interval's trim holds it for longer
    /// (measured in bench/README.md, "Optimisation log").
    #[arg(long, env = "TESTBED_TRIM_INTERVAL", default_value = "250ms",
          value_parser = humantime::parse_duration)]
    pub trim_interval: Duration,

    /// How often each worker reads the cluster-wide desired state (pause,
    /// concurrency, faults); changes apply within this interval.
    #[arg(long, env = "TESTBED_CONTROL_INTERVAL", default_value = "250ms",
          value_parser = humantime::parse_duration)]
    pub control_interval: Duration,

    /// How often each worker publishes its heartbeat. A worker whose
    /// heartbeat is two intervals old, and that has not read for one
    /// interval (at least two --read-block), is dead: its entries are taken
    /// over (about 1-1.5 s after a SIGKILL at 500ms). A worker silent for
    /// five intervals drops out of GetStatus. Every worker should use the
    /// same value: the lapse is judged by the reader's own interval.
    #[arg(long, env = "TESTBED_HEARTBEAT_INTERVAL", default_value = "500ms",
          value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,

    /// How processing spans relate to the ingest span carried through the
    /// queue: `parent` (one trace end to end) or `link` (a new trace per
    /// entry, linked).
    #[arg(long, env = "TESTBED_QUEUE_TRACE_MODE", value_enum, default_value_t = QueueTraceMode::Parent)]
    pub queue_trace_mode: QueueTraceMode,

    /// Scheduling class of the worker's threads (default `batch`), for a
    /// host it shares with latency-sensitive processes (ingest, Redis, an
    /// inference server): folding is batch work whose delay only adds to
    /// the aggregates' lag, while an append's latency is what producers
    /// wait on. `batch` (`SCHED_BATCH` at nice 19) lets those processes
    /// take the core first and the worker have the rest; `idle`
    /// (`SCHED_IDLE`) runs it only on CPU time nothing else wants, so on a
    /// host busy for long its backlog grows until ingest's backpressure
    /// refuses appends; `normal` competes as an equal. The class only
    /// orders threads of one cgroup: containers (a pod, a compose
    /// service) share a node by their CPU weights (requests) instead.
    /// `testbed worker` only (in `testbed all` it would slow ingest and
    /// query too); Linux (elsewhere only `normal`). Its effect on ack
    /// latency is measured in bench/README.md, "Optimisation log".
    #[arg(long, env = "TESTBED_WORKER_CPU_CLASS", value_enum)]
    pub cpu_class: Option<CpuClass>,

    /// Deliveries after which a failing entry is dead-lettered. With the
    /// default retry delays (100 ms doubling to 2 s), ten deliveries span
    /// 11.1 s (5.6 s at the shortest with jitter): a failure that lasts
    /// less than that is survived without dead-lettering (README,
    /// "Guarantees").
    #[arg(long, env = "TESTBED_MAX_DELIVERIES", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub max_deliveries: u64,

    /// How long after its first failure an entry is delivered again to
    /// the worker that failed it; the delay doubles with each delivery up
    /// to `--retry-max-delay`, each shortened at random by up to half.
    /// `--claim-idle` is for the entries of dead consumers.
    #[arg(long, env = "TESTBED_RETRY_INITIAL_DELAY", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub retry_initial_delay: Duration,

    /// The longest delay between two deliveries of a failing entry.
    #[arg(long, env = "TESTBED_RETRY_MAX_DELAY", default_value = "2s",
          value_parser = humantime::parse_duration)]
    pub retry_max_delay: Duration,
}

testbed_flags::default_from_flags!(WorkerConfig);

/// `--apply-linger-factor`: a finite number from 0 to 1000.
fn linger_factor(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(f) if (0.0..=1000.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a number from 0 to 1000, got {value:?}")),
    }
}

impl WorkerConfig {
    /// The class of `testbed worker`'s threads: `--cpu-class`, `batch`
    /// when not given.
    pub fn worker_cpu_class(&self) -> CpuClass {
        self.cpu_class.unwrap_or(CpuClass::Batch)
    }

    /// The consumer name: the configured one, or `<host>-<pid>-<nanos>`.
    pub fn consumer(&self) -> String {
        if let Some(name) = &self.consumer_name {
            return name.clone();
        }
        let host = std::env::var("POD_NAME")
            .or_else(|_| std::env::var("HOSTNAME"))
            .ok()
            .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "worker".to_owned());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{host}-{}-{nanos:08x}", std::process::id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `WorkerConfig::default()` is the flags' defaults, every field of it
    /// (compared whole, so a hand-written default cannot drift again).
    #[test]
    fn default_is_every_flags_default() {
        let parsed = testbed_flags::parse_from::<WorkerConfig, _, _>(["x"]).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", WorkerConfig::default())
        );
    }

    /// `--apply-linger-factor` takes 0 to 1000, nothing else.
    #[test]
    fn linger_factor_bounds() {
        assert_eq!(linger_factor("0"), Ok(0.0));
        assert_eq!(linger_factor("2.5"), Ok(2.5));
        for bad in ["-1", "1001", "NaN", "inf", "x"] {
            assert!(linger_factor(bad).is_err(), "{bad}");
        }
    }

    /// A configured name wins; a generated one carries the process id.
    #[test]
    fn consumer_names() {
        let c = WorkerConfig::default();
        assert!(c.consumer().contains(&format!("-{}-", std::process::id())));
        let named = WorkerConfig {
            consumer_name: Some("w1".into()),
            ..c
        };
        assert_eq!(named.consumer(), "w1");
    }
}
