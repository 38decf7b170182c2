//! The command line: `testbed <all|ingest|worker|query|sim>`.
//!
//! Every flag has an environment variable (shown in `--help`). Flags owned
//! by a library are defined there and flattened here, so each is declared
//! exactly once.

use clap::{Args, Parser, Subcommand};
use testbed_ingest::IngestConfig;
use testbed_query::QueryConfig;
use testbed_server::ListenArgs;
use testbed_sim::SimArgs;
use testbed_stream::StoreArgs;
use testbed_telemetry::LogArgs;
use testbed_worker::WorkerConfig;

/// Testbed: gRPC services for performance and observability experiments on
/// Kubernetes (ingest -> Redis Streams -> worker -> query, plus a load
/// simulator), in one binary for amd64, arm64 and armv7.
#[derive(Debug, Parser)]
#[command(
    name = "testbed",
    version = testbed_build_info::VERSION,
    propagate_version = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub log: LogArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// What this process runs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ingest, worker and query in one process on one port (monolithic
    /// mode). Without --redis-url, an embedded in-memory log is used.
    All(AllArgs),
    /// The ingest service (testbed.v1.IngestService).
    Ingest(IngestArgs),
    /// A worker and the worker control API (testbed.v1.WorkerControlService).
    Worker(WorkerArgs),
    /// The query service (testbed.v1.QueryService).
    Query(QueryArgs),
    /// The load simulator: drives ingest with a simulated fleet and measures
    /// it. With --serve, a server of testbed.v1.SimulatorService that runs
    /// loads on request instead.
    #[command(after_help = "Exit status of a run:\n  \
        0   the run ended and every check passed (--verify, --threshold)\n  \
        1   --verify found a difference, events were never acknowledged, or the target, \
        the scenario file or the report file was unusable\n  \
        2   usage error: bad flags, a malformed --threshold, a threshold needing --verify \
        without it, a malformed threshold in the scenario file\n  \
        99  a --threshold was crossed (the report names each with its observed value); \
        a --verify failure exits 1 instead")]
    Sim(SimArgs),
}

impl Command {
    /// The OpenTelemetry `service.name` of this process.
    pub fn service_name(&self) -> &'static str {
        match self {
            Command::All(_) => "testbed",
            Command::Ingest(_) => "testbed-ingest",
            Command::Worker(_) => "testbed-worker",
            Command::Query(_) => "testbed-query",
            Command::Sim(_) => "testbed-sim",
        }
    }
}

/// Flags every server subcommand shares.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `testbed all`.
#[derive(Debug, Args)]
pub struct AllArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub ingest: IngestConfig,
    #[command(flatten)]
    pub worker: WorkerConfig,
    #[command(flatten)]
    pub query: QueryConfig,
}

/// `testbed ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub ingest: IngestConfig,
}

/// `testbed worker`.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub worker: WorkerConfig,
}

/// `testbed query`.
#[derive(Debug, Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub query: QueryConfig,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    /// The clap definition is internally consistent (no duplicate flags
    /// from flattened libraries).
    #[test]
    fn command_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `testbed all` takes the documented flags.
    #[test]
    fn all_parses_contract_flags() {
        let cli = Cli::try_parse_from([
            "testbed",
            "all",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--redis-url",
            "redis://127.0.0.1:6379/0",
            "--shutdown-grace",
            "3s",
        ])
        .unwrap();
        let Command::All(args) = cli.command else {
            panic!("not all")
        };
        assert_eq!(args.server.listen.grpc_addr.to_string(), "127.0.0.1:0");
        assert_eq!(
            args.server.store.redis_url.as_deref(),
            Some("redis://127.0.0.1:6379/0")
        );
        assert_eq!(args.server.listen.shutdown_grace, Duration::from_secs(3));
    }

    /// Each server subcommand exists with the shared flags.
    #[test]
    fn every_server_subcommand_parses() {
        for sub in ["all", "ingest", "worker", "query"] {
            let cli = Cli::try_parse_from(["testbed", sub, "--grpc-addr", "[::1]:7000"]).unwrap();
            let listen = match cli.command {
                Command::All(a) => a.server.listen,
                Command::Ingest(a) => a.server.listen,
                Command::Worker(a) => a.server.listen,
                Command::Query(a) => a.server.listen,
                Command::Sim(_) => panic!("sim"),
            };
            assert_eq!(listen.grpc_addr.to_string(), "[::1]:7000", "{sub}");
        }
    }

    /// `testbed sim --serve` takes the listener flags the other servers
    /// take; without --serve they are refused.
    #[test]
    fn sim_serve_parses_listener_flags() {
        let cli = Cli::try_parse_from([
            "testbed",
            "sim",
            "--serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
            "--addr-file",
            "/tmp/sim.json",
            "--max-runs",
            "2",
        ])
        .unwrap();
        let Command::Sim(args) = cli.command else {
            panic!("not sim")
        };
        assert!(args.serve.serve);
        assert_eq!(args.serve.listen.grpc_addr.to_string(), "127.0.0.1:0");
        assert_eq!(
            args.serve.listen.addr_file.as_deref(),
            Some(std::path::Path::new("/tmp/sim.json"))
        );
        assert_eq!(args.serve.max_runs, 2);
        let err =
            Cli::try_parse_from(["testbed", "sim", "--grpc-addr", "127.0.0.1:0"]).unwrap_err();
        assert!(err.to_string().contains("--serve"), "{err}");
    }

    /// A bad Redis URL is a parse error naming the flag.
    #[test]
    fn rejects_bad_redis_url() {
        for bad in ["127.0.0.1:6379", "http://x:1", "redis://"] {
            let err = Cli::try_parse_from(["testbed", "all", "--redis-url", bad]).unwrap_err();
            assert!(err.to_string().contains("--redis-url"), "{bad}: {err}");
        }
    }

    /// `--log-format` is global: accepted before or after the subcommand.
    #[test]
    fn log_format_is_global() {
        let before = Cli::try_parse_from(["testbed", "--log-format", "json", "query"]).unwrap();
        let after = Cli::try_parse_from(["testbed", "query", "--log-format", "json"]).unwrap();
        assert_eq!(before.log.log_format, testbed_telemetry::LogFormat::Json);
        assert_eq!(after.log.log_format, testbed_telemetry::LogFormat::Json);
    }

    /// `--telemetry-flush-timeout`: 1 s unless given, global, a humane
    /// duration; a bad value is an error naming the flag.
    #[test]
    fn telemetry_flush_timeout_parses() {
        let default = Cli::try_parse_from(["testbed", "query"]).unwrap();
        assert_eq!(default.log.telemetry_flush_timeout, Duration::from_secs(1));
        let before =
            Cli::try_parse_from(["testbed", "--telemetry-flush-timeout", "250ms", "ingest"])
                .unwrap();
        assert_eq!(
            before.log.telemetry_flush_timeout,
            Duration::from_millis(250)
        );
        let after =
            Cli::try_parse_from(["testbed", "worker", "--telemetry-flush-timeout", "2s 500ms"])
                .unwrap();
        assert_eq!(
            after.log.telemetry_flush_timeout,
            Duration::from_millis(2500)
        );
        let err = Cli::try_parse_from(["testbed", "all", "--telemetry-flush-timeout", "soon"])
            .unwrap_err();
        assert!(
            err.to_string().contains("--telemetry-flush-timeout"),
            "{err}"
        );
    }
}
