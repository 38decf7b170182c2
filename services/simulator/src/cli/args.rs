//! The `testbed sim` flags, both modes' (`--serve` and its flags are
//! [`ServeArgs`]): the CLI contract scripts and docs rely on.

use std::path::PathBuf;
use std::time::Duration;

use testbed_server::ListenArgs;
use testbed_server::auth::client::Token;

use crate::load::allow::AllowEntry;
use crate::load::fleet::{self, Mix};
use crate::load::transport::parse_target;
use crate::thresholds::{LiveSettings, Threshold, parse_threshold};

/// Report formats of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A human table.
    Text,
    /// The testbed's own JSON experiment record.
    Json,
    /// ghz's JSON report layout, for ghz tooling.
    GhzJson,
    /// One self-contained HTML page with inline SVG charts (no network
    /// needed to view it); give it a file with --output-file.
    Html,
}

/// How the server deduplicates the run's retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dedupe {
    /// An idempotent producer: a producer_id (one per run) and batch
    /// sequences, deduplicated per batch.
    Sequence,
    /// No producer_id: the server's event-id window deduplicates, as for
    /// clients that do not number their batches.
    EventId,
}

/// `testbed sim`: drive the testbed with a simulated fleet and measure it.
#[derive(Debug, Clone, clap::Args)]
pub struct SimArgs {
    /// Ingest endpoint: `http://host:port`, `https://host:port`, or
    /// `dns:///name:port` to balance over every address of a headless Service.
    #[arg(long, env = "TESTBED_SIM_TARGET", default_value = "http://127.0.0.1:50051", value_parser = parse_target)]
    pub target: String,

    /// Query endpoint used by --verify (defaults to --target); with --serve,
    /// its host:port is on the allow-list of run targets.
    #[arg(long, env = "TESTBED_SIM_QUERY_TARGET", value_parser = parse_target)]
    pub query_target: Option<String>,

    /// Open-loop schedule in events per second.
    #[arg(long, env = "TESTBED_SIM_RATE", default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// How long to run (e.g. `30s`, `5m`).
    #[arg(long, env = "TESTBED_SIM_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Number of simulated devices in the fleet.
    #[arg(long, env = "TESTBED_SIM_DEVICES", default_value_t = crate::load::DEFAULT_DEVICES, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,

    /// After the run, check that every accepted event was processed exactly once.
    #[arg(long, env = "TESTBED_SIM_VERIFY")]
    pub verify: bool,

    /// Report format.
    #[arg(long, env = "TESTBED_SIM_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Write the report to this file instead of stdout (the text summary
    /// then still goes to stdout).
    #[arg(long, env = "TESTBED_SIM_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,

    /// How often the run's figures are sampled for the report's time
    /// series (the HTML charts, `timeline` in the JSON record).
    #[arg(long, env = "TESTBED_SIM_SAMPLE_INTERVAL", default_value = "1s",
          value_parser = parse_sample_interval)]
    pub sample_interval: Duration,

    /// A scenario file (TOML phases: ramp, hold, burst, spike, pause);
    /// replaces --rate and --duration.
    #[arg(long, env = "TESTBED_SIM_SCENARIO")]
    pub scenario: Option<PathBuf>,

    /// HTTP/2 connections to the target (at least one per resolved address
    /// of a dns:/// target).
    #[arg(long, env = "TESTBED_SIM_CONNECTIONS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub connections: u32,

    /// Bidirectional PublishStreams per connection.
    #[arg(long, env = "TESTBED_SIM_STREAMS", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub streams: u32,

    /// Send unary Publish calls instead of streams.
    #[arg(long, env = "TESTBED_SIM_UNARY")]
    pub unary: bool,

    /// Largest batch; batches are sized for about 100 per second.
    #[arg(long, env = "TESTBED_SIM_BATCH_SIZE", default_value_t = crate::load::DEFAULT_BATCH_SIZE,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// Payload mix, as weights.
    #[arg(long, env = "TESTBED_SIM_MIX", default_value = "gpu=0.5,tokens=0.3,metric=0.2",
          value_parser = parse_mix)]
    pub mix: Mix,

    /// Architecture mix of the fleet's nodes, as weights.
    #[arg(long, env = "TESTBED_SIM_ARCH_MIX", default_value = "amd64=0.5,arm64=0.3,armv7=0.2",
          value_parser = parse_arch_mix)]
    pub arch_mix: ArchMix,

    /// Device id prefix: devices are PREFIX-00000, PREFIX-00001, ...
    #[arg(long, env = "TESTBED_SIM_DEVICE_PREFIX", default_value = "sim")]
    pub device_prefix: String,

    /// RNG seed; the same seed gives the same fleet and events.
    #[arg(long, env = "TESTBED_SIM_SEED", default_value_t = 1)]
    pub seed: u64,

    /// Run id carried by every event (the delivery ledger's key);
    /// generated when omitted.
    #[arg(long, env = "TESTBED_SIM_RUN_ID")]
    pub run_id: Option<String>,

    /// How the server deduplicates retries: `sequence` (an idempotent
    /// producer: per batch, Kafka-style) or `event-id` (the server's window
    /// of recent event ids, what clients without a producer_id get; it
    /// costs the server more per event).
    #[arg(long, env = "TESTBED_SIM_DEDUPE", value_enum, default_value_t = Dedupe::Sequence)]
    pub dedupe: Dedupe,

    /// Retries of a refused batch (RESOURCE_EXHAUSTED, UNAVAILABLE) before
    /// it counts as failed.
    #[arg(long, env = "TESTBED_SIM_MAX_RETRIES", default_value_t = 10)]
    pub max_retries: u32,

    /// How long to wait for outstanding acks after the schedule ends.
    #[arg(long, env = "TESTBED_SIM_DRAIN_TIMEOUT", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,

    /// With a dns:/// target, close and reopen each stream after this long,
    /// so pods added by a scale-out receive streams too.
    #[arg(long, env = "TESTBED_SIM_STREAM_MAX_AGE", default_value = "30s",
          value_parser = humantime::parse_duration)]
    pub stream_max_age: Duration,

    /// How long --verify waits for the pipeline to process the run.
    #[arg(long, env = "TESTBED_SIM_VERIFY_TIMEOUT", default_value = "60s",
          value_parser = humantime::parse_duration)]
    pub verify_timeout: Duration,

    /// Bearer token sent with every call to ingest and query (their
    /// --auth-tokens-file's secret of a `write` token; `read` is enough for
    /// --verify alone). With --serve, runs send it to ingest.
    #[arg(long, env = "TESTBED_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,

    /// TLS to ingest and query (`--tls-ca`, `--tls-client-cert`,
    /// `--tls-client-key`, `--tls-server-name`); with --serve, of its runs.
    #[command(flatten)]
    pub tls: crate::load::tls::ClientTlsArgs,

    /// A pass/fail threshold (repeat, or comma-separate in the env var):
    /// `METRIC OP VALUE[UNIT]`, e.g. `ack_p99<10ms`, `errors<0.1%`,
    /// `achieved>=99%`, `retried<10`, `e2e_p99<1s` or `verify` (these two
    /// need --verify). Metrics: ack_p50/p90/p99/p999/max/mean (us, ms, s),
    /// e2e_p50/p90/p99/max, errors, rejected, failed, achieved (% or a
    /// fraction), achieved_rate (events/s), retried (batches), verify,
    /// gap (the longest time without an accepted batch: us, ms, s).
    /// Checked at the end; with `:abort` (`ack_p99<50ms:abort`) also live
    /// over --threshold-window after --threshold-warmup, stopping the run
    /// when crossed. A crossed threshold exits with status 99.
    #[arg(long = "threshold", value_name = "EXPR", env = "TESTBED_SIM_THRESHOLD", value_delimiter = ',',
          value_parser = parse_threshold)]
    pub thresholds: Vec<Threshold>,

    /// How long a run goes before `:abort` thresholds are checked live
    /// (with --serve: for every run).
    #[arg(long, env = "TESTBED_SIM_THRESHOLD_WARMUP", default_value = "5s",
          value_parser = humantime::parse_duration)]
    pub threshold_warmup: Duration,

    /// The sliding window over which `:abort` thresholds are checked live
    /// (with --serve: for every run).
    #[arg(long, env = "TESTBED_SIM_THRESHOLD_WINDOW", default_value = "5s",
          value_parser = parse_window)]
    pub threshold_window: Duration,

    /// `--serve` and the server's flags.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The `--serve` flags. Every flag but `--serve` requires it.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Serving (--serve)")]
// Applied after the flattened listener flags exist: they only mean
// something with --serve, and their default ports are one above the
// other servers' so `testbed all` and `testbed sim --serve` can share a
// host with their defaults (and the default --target then points at it).
#[command(
    mut_arg("grpc_addr", |a| a.requires("serve").default_value("0.0.0.0:50052")),
    mut_arg("metrics_addr", |a| a.requires("serve").default_value("0.0.0.0:9465")),
    mut_arg("shutdown_grace", |a| a.requires("serve")),
    mut_arg("health_interval", |a| a.requires("serve")),
    mut_arg("addr_file", |a| a.requires("serve")),
    mut_arg("auth_tokens_file", |a| a.requires("serve")),
    mut_arg("auth_tokens", |a| a.requires("serve")),
    mut_arg("tls_cert", |a| a.requires("serve")),
    mut_arg("tls_client_ca", |a| a.requires("serve")),
    mut_arg("probe_addr", |a| a.requires("serve")),
)]
pub struct ServeArgs {
    /// Serve testbed.v1.SimulatorService (StartRun, UpdateRun, StopRun,
    /// GetRun, WatchRun) instead of doing one run; --target and the
    /// connection flags become the defaults of every run.
    #[arg(long, env = "TESTBED_SIM_SERVE", conflicts_with_all = [
        "rate", "duration", "devices", "verify", "output",
        "output_file", "scenario", "batch_size", "mix", "seed", "run_id",
        "verify_timeout", "dedupe", "stream_max_age", "sample_interval",
        "thresholds",
    ])]
    pub serve: bool,

    /// Most runs pending, running or stopping at once; StartRun beyond it
    /// is RESOURCE_EXHAUSTED.
    #[arg(long, env = "TESTBED_SIM_MAX_RUNS", default_value_t = 4, requires = "serve",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub max_runs: u32,

    /// Finished runs kept for GetRun (the oldest are forgotten first).
    #[arg(long, env = "TESTBED_SIM_KEEP_FINISHED", default_value_t = 100, requires = "serve",
          value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub keep_finished: u32,

    /// Highest rate a run may ask for, in events per second (in any phase,
    /// bursts included). A server reachable in a cluster should not be a
    /// million-events-per-second cannon by default; raise it on purpose.
    #[arg(long, env = "TESTBED_SIM_MAX_RATE", default_value_t = 20_000.0, requires = "serve",
          value_parser = parse_positive)]
    pub max_rate: f64,

    /// Highest sum of the peak rates of the active runs, in events per
    /// second; a StartRun or UpdateRun beyond it is RESOURCE_EXHAUSTED.
    #[arg(long, env = "TESTBED_SIM_MAX_TOTAL_RATE", default_value_t = 50_000.0, requires = "serve",
          value_parser = parse_positive)]
    pub max_total_rate: f64,

    /// Longest run: a longer duration or scenario is INVALID_ARGUMENT, and a
    /// run "until stopped" completes after it.
    #[arg(long, env = "TESTBED_SIM_MAX_RUN_DURATION", default_value = "1h", requires = "serve",
          value_parser = parse_max_duration)]
    pub max_run_duration: Duration,

    /// Most HTTP/2 connections one run may open: --connections times the
    /// addresses a dns:/// target resolves to.
    #[arg(long, env = "TESTBED_SIM_MAX_RUN_CONNECTIONS", default_value_t = 64, requires = "serve",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_run_connections: u32,

    /// More targets runs may send to, besides --target and --query-target
    /// (repeat, or comma-separate in the env var): HOST, HOST:PORT or
    /// HOST:*, HOST a DNS name, an address or a CIDR (IPv6 in brackets),
    /// e.g. `ingest.other-ns.svc:50051`, `10.0.0.0/8:50051`. A name
    /// not listed is allowed only if every address it resolves to is.
    #[arg(
        long,
        env = "TESTBED_SIM_ALLOW_TARGET",
        requires = "serve",
        value_delimiter = ','
    )]
    pub allow_target: Vec<AllowEntry>,

    /// Most devices a run may simulate.
    #[arg(long, env = "TESTBED_SIM_MAX_DEVICES", default_value_t = 100_000, requires = "serve",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_devices: u32,

    /// Largest batch_size a run may ask for; keep it at most ingest's
    /// --max-batch.
    #[arg(long, env = "TESTBED_SIM_MAX_BATCH_SIZE", default_value_t = 1000, requires = "serve",
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_batch_size: u32,

    /// The window of RunFigures.achieved_rate: accepted events over the
    /// last this long.
    #[arg(long, env = "TESTBED_SIM_RATE_WINDOW", default_value = "3s", requires = "serve",
          value_parser = parse_window)]
    pub rate_window: Duration,

    /// The retry delay suggested (google.rpc.RetryInfo) when --max-runs
    /// runs are already active.
    #[arg(long, env = "TESTBED_SIM_RETRY_AFTER", default_value = "5s", requires = "serve",
          value_parser = humantime::parse_duration)]
    pub retry_after: Duration,

    /// Where the server listens.
    #[command(flatten)]
    pub listen: ListenArgs,
}

fn parse_positive(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err("must be a positive number".to_owned()),
    }
}

fn parse_sample_interval(value: &str) -> Result<Duration, String> {
    let every = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if every < Duration::from_millis(100) {
        return Err("must be at least 100ms".into());
    }
    Ok(every)
}

fn parse_max_duration(value: &str) -> Result<Duration, String> {
    let max = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if (Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600)).contains(&max) {
        Ok(max)
    } else {
        Err("must be between 1s and 30 days".to_owned())
    }
}

fn parse_window(value: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if (Duration::from_millis(500)..=Duration::from_secs(300)).contains(&window) {
        Ok(window)
    } else {
        Err("must be between 500ms and 5m".to_owned())
    }
}

/// Architecture names and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchMix(pub Vec<(String, f64)>);

fn parse_mix(value: &str) -> Result<Mix, String> {
    let w = fleet::parse_weights(value, &["gpu", "tokens", "metric"])?;
    Ok(Mix {
        gpu: w[0],
        tokens: w[1],
        metric: w[2],
    })
}

fn parse_arch_mix(value: &str) -> Result<ArchMix, String> {
    let mut out = Vec::new();
    for pair in value.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, weight) = pair
            .split_once('=')
            .ok_or_else(|| format!("expected arch=weight, got {pair:?}"))?;
        let w: f64 = weight
            .trim()
            .parse()
            .map_err(|_| format!("weight of {name} is not a number"))?;
        if !(w.is_finite() && w >= 0.0) || name.trim().is_empty() {
            return Err(format!("bad entry {pair:?}"));
        }
        out.push((name.trim().to_owned(), w));
    }
    if out.iter().map(|(_, w)| w).sum::<f64>() <= 0.0 {
        return Err("weights must not all be zero".to_owned());
    }
    Ok(ArchMix(out))
}

impl SimArgs {
    /// How `:abort` thresholds are checked live.
    pub fn live_thresholds(&self) -> LiveSettings {
        LiveSettings {
            warmup: self.threshold_warmup,
            window: self.threshold_window,
        }
    }

    /// The query endpoint: --query-target, or --target when not given.
    pub fn query_target(&self) -> &str {
        self.query_target.as_deref().unwrap_or(&self.target)
    }
}

fn parse_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value
        .parse()
        .map_err(|_| format!("not a number: {value}"))?;
    if rate.is_finite() && rate > 0.0 {
        Ok(rate)
    } else {
        Err("must be a positive number of events per second".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    /// The documented defaults hold; the query target follows the target.
    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["sim"]).unwrap();
        assert_eq!(cli.sim.target, "http://127.0.0.1:50051");
        assert_eq!(cli.sim.query_target(), "http://127.0.0.1:50051");
        assert_eq!(cli.sim.output, OutputFormat::Text);
        assert_eq!(cli.sim.duration, Duration::from_secs(30));
        assert_eq!(cli.sim.sample_interval, Duration::from_secs(1));
        assert_eq!(
            (cli.sim.connections, cli.sim.streams, cli.sim.batch_size),
            (2, 2, 100)
        );
        assert_eq!(cli.sim.mix, Mix::default());
        assert_eq!(cli.sim.arch_mix.0.len(), 3);
    }

    /// The CLI contract's flags parse, with humane durations.
    #[test]
    fn parses_contract_flags() {
        let cli = Cli::try_parse_from([
            "sim",
            "--target",
            "dns:///ingest-headless.testbed.svc:50051",
            "--query-target",
            "http://query:50051",
            "--rate",
            "2500",
            "--duration",
            "5m",
            "--devices",
            "64",
            "--verify",
            "--output",
            "ghz-json",
            "--output-file",
            "/tmp/r.json",
        ])
        .unwrap();
        assert_eq!(cli.sim.target, "dns:///ingest-headless.testbed.svc:50051");
        assert_eq!(cli.sim.query_target(), "http://query:50051");
        assert_eq!(cli.sim.rate, 2500.0);
        assert_eq!(cli.sim.duration, Duration::from_secs(300));
        assert_eq!(cli.sim.devices, 64);
        assert!(cli.sim.verify);
        assert_eq!(cli.sim.output, OutputFormat::GhzJson);
    }

    /// `--threshold` repeats, and a malformed one is refused at start
    /// naming the part that failed to parse.
    #[test]
    fn thresholds_parse_or_name_the_bad_part() {
        let cli = Cli::try_parse_from([
            "sim",
            "--threshold",
            "ack_p99<10ms",
            "--threshold",
            "errors<0.1%:abort,achieved>=99%",
        ])
        .unwrap();
        let given: Vec<&str> = cli
            .sim
            .thresholds
            .iter()
            .map(|t| t.expression.as_str())
            .collect();
        assert_eq!(
            given,
            ["ack_p99<10ms", "errors<0.1%:abort", "achieved>=99%"]
        );
        assert!(cli.sim.thresholds[1].abort);
        assert_eq!(cli.sim.live_thresholds().warmup, Duration::from_secs(5));
        let err = Cli::try_parse_from(["sim", "--threshold", "ack_p99<10parsecs"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        assert!(err.to_string().contains("\"parsecs\""), "{err}");
        let err = Cli::try_parse_from(["sim", "--serve", "--threshold", "verify"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    /// Bad values are rejected with the flag named.
    #[test]
    fn rejects_bad_values() {
        for (flag, value) in [
            ("--target", "127.0.0.1:50051"),
            ("--target", "dns:///ingest"),
            ("--target", "http://"),
            ("--rate", "0"),
            ("--rate", "NaN"),
            ("--devices", "0"),
            ("--duration", "forever"),
            ("--mix", "gpu=1,cpu=2"),
            ("--arch-mix", "amd64=x"),
            ("--sample-interval", "10ms"),
            ("--connections", "0"),
        ] {
            let err = Cli::try_parse_from(["sim", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }

    /// The flag set is consistent (the listener flags exist for `mut_arg`).
    #[test]
    fn command_is_consistent() {
        use clap::CommandFactory as _;
        Cli::command().debug_assert();
    }

    /// `--serve` takes the listener flags, with ports of its own by default.
    #[test]
    fn serve_parses_listener_flags() {
        let cli = Cli::try_parse_from(["sim", "--serve"]).unwrap();
        assert!(cli.sim.serve.serve);
        assert_eq!(cli.sim.serve.listen.grpc_addr.to_string(), "0.0.0.0:50052");
        assert_eq!(
            cli.sim.serve.listen.metrics_addr.to_string(),
            "0.0.0.0:9465"
        );
        assert_eq!(
            (cli.sim.serve.max_runs, cli.sim.serve.keep_finished),
            (4, 100)
        );
        assert_eq!(cli.sim.serve.rate_window, Duration::from_secs(3));
        let cli = Cli::try_parse_from([
            "sim",
            "--serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--addr-file",
            "/tmp/a.json",
            "--max-runs",
            "2",
            "--target",
            "http://ingest:50051",
        ])
        .unwrap();
        assert_eq!(cli.sim.serve.listen.grpc_addr.to_string(), "127.0.0.1:0");
        assert_eq!(cli.sim.serve.max_runs, 2);
        assert_eq!(cli.sim.target, "http://ingest:50051");
    }

    /// The guard's flags: service-sized defaults, and allow-list entries
    /// repeated or comma-separated.
    #[test]
    fn guard_flags() {
        let cli = Cli::try_parse_from(["sim", "--serve"]).unwrap();
        let serve = &cli.sim.serve;
        assert_eq!((serve.max_rate, serve.max_total_rate), (20_000.0, 50_000.0));
        assert_eq!(serve.max_run_duration, Duration::from_secs(3600));
        assert_eq!(serve.max_run_connections, 64);
        assert!(serve.allow_target.is_empty());
        let cli = Cli::try_parse_from([
            "sim",
            "--serve",
            "--query-target",
            "http://query:50051",
            "--allow-target",
            "10.0.0.0/8:50051,ingest.other:*",
            "--allow-target",
            "[fd00::/8]",
            "--max-run-duration",
            "10m",
        ])
        .unwrap();
        let shown: Vec<String> = cli
            .sim
            .serve
            .allow_target
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8:50051", "ingest.other", "[fd00::/8]"]);
        assert_eq!(cli.sim.serve.max_run_duration, Duration::from_secs(600));
        for (flag, value) in [
            ("--allow-target", "http://x:1"),
            ("--max-run-duration", "0s"),
            ("--max-run-connections", "0"),
            ("--token", "two words"),
        ] {
            let err = Cli::try_parse_from(["sim", "--serve", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }

    /// Server flags need `--serve`; one-run flags conflict with it.
    #[test]
    fn serve_flags_and_run_flags_exclude_each_other() {
        for flag in [
            ["--grpc-addr", "127.0.0.1:0"],
            ["--addr-file", "/tmp/a.json"],
            ["--max-runs", "2"],
            ["--allow-target", "10.0.0.0/8"],
            ["--max-total-rate", "10"],
            ["--auth-tokens-file", "/tmp/t"],
        ] {
            let err = Cli::try_parse_from(["sim", flag[0], flag[1]]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::MissingRequiredArgument,
                "{flag:?}"
            );
            assert!(err.to_string().contains("--serve"), "{flag:?}: {err}");
        }
        for flag in [["--rate", "10"], ["--run-id", "r1"], ["--output", "json"]] {
            let err = Cli::try_parse_from(["sim", "--serve", flag[0], flag[1]]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag:?}"
            );
        }
        let err = Cli::try_parse_from(["sim", "--serve", "--verify"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        // Run-only flags a served run would ignore are refused, not dropped.
        for flag in [["--dedupe", "event-id"], ["--stream-max-age", "10s"]] {
            let err = Cli::try_parse_from([&["sim", "--serve"][..], &flag].concat()).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{flag:?}"
            );
        }
        // A CLI run ignores the server defaults.
        assert!(!Cli::try_parse_from(["sim"]).unwrap().sim.serve.serve);
    }

    /// Bad limits are refused with the flag named.
    #[test]
    fn rejects_bad_limits() {
        for (flag, value) in [
            ("--max-runs", "0"),
            ("--max-rate", "NaN"),
            ("--max-rate", "-1"),
            ("--rate-window", "10ms"),
        ] {
            let arg = format!("{flag}={value}");
            let err = Cli::try_parse_from(["sim", "--serve", &arg]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }
}
