//! The listener flags every server subcommand shares.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Where a server listens and how it stops. Flattened into every server
/// subcommand of the `testbed` binary; each flag has an environment variable
/// so manifests can set it without touching the command line.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    /// Address the gRPC server listens on. Port 0 picks a free port; the
    /// bound address is logged at startup and written to --addr-file.
    #[arg(long, env = "TESTBED_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the Prometheus `/metrics` endpoint. Port 0 picks a free
    /// port (see --addr-file).
    #[arg(long, env = "TESTBED_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,

    /// How long in-flight calls and open streams may take to finish after
    /// SIGTERM/SIGINT before the process exits anyway (e.g. `10s`, `1m`).
    /// Keep it below the pod's terminationGracePeriodSeconds.
    #[arg(
        long,
        env = "TESTBED_SHUTDOWN_GRACE",
        default_value = "20s",
        value_parser = humantime::parse_duration
    )]
    pub shutdown_grace: Duration,

    /// How often a service probes the dependencies its health follows
    /// (the event store): how fast NOT_SERVING and recovery show.
    #[arg(
        long,
        env = "TESTBED_HEALTH_INTERVAL",
        default_value = "250ms",
        value_parser = humantime::parse_duration
    )]
    pub health_interval: Duration,

    /// Close each client connection after it has been open this long
    /// (e.g. `5m`): the server sends GOAWAY, the client opens a new
    /// connection, and behind a `dns:///` name or a headless Service that
    /// new connection can land on a pod that was added since. Without it a
    /// long-lived stream stays on the pod it was opened to. Off by default.
    #[arg(long, env = "TESTBED_MAX_CONNECTION_AGE", value_parser = humantime::parse_duration)]
    pub max_connection_age: Option<Duration>,

    /// After --max-connection-age, how long calls and streams still open
    /// on the old connection may run before it is closed under them (a
    /// stream's unacknowledged batches are then re-sent on a new one).
    #[arg(
        long,
        env = "TESTBED_MAX_CONNECTION_AGE_GRACE",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub max_connection_age_grace: Duration,

    /// Once listening, write the bound addresses to this file as JSON
    /// (`{"grpc":"127.0.0.1:50051","metrics":"127.0.0.1:9464"}`), for
    /// scripts and tests that bind port 0.
    #[arg(long, env = "TESTBED_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Bearer tokens (`--auth-tokens-file`, `--auth-tokens`); none: no
    /// authentication. See [`crate::auth`].
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        listen: ListenArgs,
    }

    /// Defaults are the documented ports and a 20 s grace.
    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.listen.grpc_addr, "0.0.0.0:50051".parse().unwrap());
        assert_eq!(cli.listen.metrics_addr, "0.0.0.0:9464".parse().unwrap());
        assert_eq!(cli.listen.shutdown_grace, Duration::from_secs(20));
        assert!(cli.listen.addr_file.is_none());
        assert_eq!(cli.listen.health_interval, Duration::from_millis(250));
    }

    /// Humane durations and explicit addresses parse.
    #[test]
    fn parses_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "--grpc-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "[::1]:9000",
            "--shutdown-grace",
            "1m 30s",
        ])
        .unwrap();
        assert_eq!(cli.listen.grpc_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(cli.listen.metrics_addr, "[::1]:9000".parse().unwrap());
        assert_eq!(cli.listen.shutdown_grace, Duration::from_secs(90));
    }

    /// An unparseable address or duration is a parse error, not a panic.
    #[test]
    fn rejects_bad_values() {
        let err = Cli::try_parse_from(["x", "--grpc-addr", "localhost:50051:9"]).unwrap_err();
        assert!(err.to_string().contains("--grpc-addr"), "{err}");
        let err = Cli::try_parse_from(["x", "--shutdown-grace", "soon"]).unwrap_err();
        assert!(err.to_string().contains("--shutdown-grace"), "{err}");
    }
}
