//! The `testbed sim` flags: the CLI contract scripts and docs rely on.

use std::path::PathBuf;
use std::time::Duration;

/// Report formats of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// A human table.
    Text,
    /// The testbed's own JSON experiment record.
    Json,
    /// ghz's JSON report layout, for ghz tooling.
    GhzJson,
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

    /// Query endpoint used by --verify (defaults to --target).
    #[arg(long, env = "TESTBED_SIM_QUERY_TARGET", value_parser = parse_target)]
    pub query_target: Option<String>,

    /// Open-loop schedule in events per second.
    #[arg(long, env = "TESTBED_SIM_RATE", default_value_t = 1000.0, value_parser = parse_rate)]
    pub rate: f64,

    /// How long to run (e.g. `30s`, `5m`).
    #[arg(long, env = "TESTBED_SIM_DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,

    /// Number of simulated devices in the fleet.
    #[arg(long, env = "TESTBED_SIM_DEVICES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub devices: u32,

    /// After the run, check that every accepted event was processed exactly once.
    #[arg(long, env = "TESTBED_SIM_VERIFY")]
    pub verify: bool,

    /// Report format.
    #[arg(long, env = "TESTBED_SIM_OUTPUT", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,

    /// Write the report to this file instead of stdout.
    #[arg(long, env = "TESTBED_SIM_OUTPUT_FILE")]
    pub output_file: Option<PathBuf>,

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
    #[arg(long, env = "TESTBED_SIM_BATCH_SIZE", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_size: u32,

    /// Payload mix, as weights.
    #[arg(long, env = "TESTBED_SIM_MIX", default_value = "gpu=0.5,tokens=0.3,metric=0.2",
          value_parser = parse_mix)]
    pub mix: crate::fleet::Mix,

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

    /// `--serve` and the server's flags (see [`crate::serve`]).
    #[command(flatten)]
    pub serve: crate::serve::ServeArgs,
}

/// Architecture names and weights.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchMix(pub Vec<(String, f64)>);

fn parse_mix(value: &str) -> Result<crate::fleet::Mix, String> {
    let w = crate::fleet::parse_weights(value, &["gpu", "tokens", "metric"])?;
    Ok(crate::fleet::Mix {
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
    /// The query endpoint: --query-target, or --target when not given.
    pub fn query_target(&self) -> &str {
        self.query_target.as_deref().unwrap_or(&self.target)
    }
}

/// Checks an ingest endpoint: `http(s)://HOST:PORT` or `dns:///NAME:PORT`.
pub(crate) fn parse_target(value: &str) -> Result<String, String> {
    if let Some(name) = value.strip_prefix("dns:///") {
        // gRPC's DNS resolver syntax: every address of NAME is a backend.
        let (host, port) = name
            .rsplit_once(':')
            .ok_or_else(|| "dns:/// targets need a port: dns:///NAME:PORT".to_owned())?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err("expected dns:///NAME:PORT".to_owned());
        }
        return Ok(value.to_owned());
    }
    if !(value.starts_with("http://") || value.starts_with("https://")) {
        return Err("expected http://HOST:PORT, https://HOST:PORT or dns:///NAME:PORT".to_owned());
    }
    let uri = value
        .parse::<tonic::transport::Uri>()
        .map_err(|e| format!("not a valid URI: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err("missing host".to_owned());
    }
    Ok(value.to_owned())
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
        assert_eq!(
            (cli.sim.connections, cli.sim.streams, cli.sim.batch_size),
            (2, 2, 100)
        );
        assert_eq!(cli.sim.mix, crate::fleet::Mix::default());
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
            ("--connections", "0"),
        ] {
            let err = Cli::try_parse_from(["sim", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }
}
