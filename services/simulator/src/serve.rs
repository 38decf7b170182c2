//! `testbed sim --serve`: the simulator as a server of
//! `testbed.v1.SimulatorService`, driving runs on request instead of doing
//! one run from its flags.
//!
//! The flags shared with a CLI run (`--target`, `--connections`,
//! `--streams`, `--unary`, `--max-retries`, `--drain-timeout`,
//! `--device-prefix`, `--arch-mix`) become the server's settings for every
//! run; the flags that describe one run (`--rate`, `--scenario`, ...)
//! conflict with `--serve`, as a `RunSpec` carries them instead.

use std::time::Duration;

use testbed_server::{CancellationToken, GrpcServer, ListenArgs, Listeners, ServeError};

use crate::SimArgs;
use crate::api::SimulatorApi;
use crate::runs::Runs;

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
)]
pub struct ServeArgs {
    /// Serve testbed.v1.SimulatorService (StartRun, UpdateRun, StopRun,
    /// GetRun, WatchRun) instead of doing one run; --target and the
    /// connection flags become the defaults of every run.
    #[arg(long, env = "TESTBED_SIM_SERVE", conflicts_with_all = [
        "query_target", "rate", "duration", "devices", "verify", "output",
        "output_file", "scenario", "batch_size", "mix", "seed", "run_id",
        "verify_timeout",
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
    /// bursts included).
    #[arg(long, env = "TESTBED_SIM_MAX_RATE", default_value_t = 1_000_000.0, requires = "serve",
          value_parser = parse_positive)]
    pub max_rate: f64,

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

fn parse_window(value: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(value).map_err(|e| e.to_string())?;
    if (Duration::from_millis(500)..=Duration::from_secs(300)).contains(&window) {
        Ok(window)
    } else {
        Err("must be between 500ms and 5m".to_owned())
    }
}

/// Adds `testbed.v1.SimulatorService` to `server`. Runs stop when
/// `shutdown` is cancelled; the server then waits for them (within its
/// grace period) to drain their batches in flight.
pub async fn register(server: &mut GrpcServer, args: &SimArgs, shutdown: CancellationToken) {
    let runs = Runs::new(args, shutdown.clone());
    server
        .add_service(SimulatorApi::new(runs.clone()).into_server())
        .await;
    server.spawn_background(async move {
        shutdown.cancelled().await;
        runs.wait_stopped().await;
    });
}

/// Serves the simulator alone on `listeners` until `shutdown`.
pub async fn run(
    args: SimArgs,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::for_listeners(&listeners);
    register(&mut server, &args, shutdown.clone()).await;
    server.serve_on(listeners, shutdown).await
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

    /// Server flags need `--serve`; one-run flags conflict with it.
    #[test]
    fn serve_flags_and_run_flags_exclude_each_other() {
        for flag in [
            ["--grpc-addr", "127.0.0.1:0"],
            ["--addr-file", "/tmp/a.json"],
            ["--max-runs", "2"],
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
