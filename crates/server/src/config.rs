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

    /// Most client connections this process holds at once; connections past
    /// it are closed right after accept (`server_connections_refused_total`).
    /// Default: the descriptor limit (`RLIMIT_NOFILE`, soft) minus a tenth
    /// of it and at least 64 kept for Redis, OTLP, `/metrics` and logs.
    /// Kubelet probes count too: see README "Limits".
    #[arg(long, env = "TESTBED_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Connections admitted past --max-connections, each for at most 2 s
    /// (handshake within 1 s, GOAWAY at 1 s, closed 1 s later): room for
    /// kubelet probes and an operator's grpcurl while the cap is reached.
    /// 0: none.
    #[arg(long, env = "TESTBED_RESERVED_CONNECTIONS", default_value_t = 8)]
    pub reserved_connections: usize,

    /// A connection that has not sent the HTTP/2 preface and its SETTINGS
    /// within this long is closed (slowloris).
    #[arg(
        long,
        env = "TESTBED_HANDSHAKE_TIMEOUT",
        default_value = "5s",
        value_parser = humantime::parse_duration
    )]
    pub handshake_timeout: Duration,

    /// A connection with no open call for this long gets GOAWAY and is
    /// closed (after --max-connection-age-grace at the latest).
    #[arg(
        long,
        env = "TESTBED_IDLE_TIMEOUT",
        default_value = "5m",
        value_parser = humantime::parse_duration
    )]
    pub idle_timeout: Duration,

    /// The server pings a connection it has heard nothing from for this
    /// long, to find dead peers.
    #[arg(
        long,
        env = "TESTBED_HTTP2_KEEPALIVE_INTERVAL",
        default_value = "60s",
        value_parser = humantime::parse_duration
    )]
    pub http2_keepalive_interval: Duration,

    /// A server ping unanswered for this long closes the connection.
    #[arg(
        long,
        env = "TESTBED_HTTP2_KEEPALIVE_TIMEOUT",
        default_value = "20s",
        value_parser = humantime::parse_duration
    )]
    pub http2_keepalive_timeout: Duration,

    /// Ping enforcement: a client ping sooner than this after its previous
    /// one is a strike (unless the server sent data or headers in
    /// between); the third strike gets GOAWAY `ENHANCE_YOUR_CALM`
    /// "too_many_pings", as grpc-go's `EnforcementPolicy.MinTime`. Client
    /// keepalive times must be at least this.
    #[arg(
        long,
        env = "TESTBED_PING_MIN_INTERVAL",
        default_value = "10s",
        value_parser = humantime::parse_duration
    )]
    pub ping_min_interval: Duration,

    /// Whether clients may ping a connection with no open call (at most
    /// every --ping-min-interval); when false such pings are strikes
    /// (grpc-go's `PermitWithoutStream`).
    #[arg(
        long,
        env = "TESTBED_PING_PERMIT_WITHOUT_STREAM",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub ping_permit_without_stream: bool,

    /// Most concurrent calls (HTTP/2 streams) per connection, announced in
    /// SETTINGS; further streams are refused by the client's own stack.
    #[arg(long, env = "TESTBED_MAX_CONCURRENT_STREAMS", default_value_t = 1000)]
    pub max_concurrent_streams: u32,

    /// Largest header list (decoded, HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE`)
    /// a request may carry, in bytes.
    #[arg(long, env = "TESTBED_MAX_HEADER_LIST_SIZE", default_value_t = 16 * 1024)]
    pub max_header_list_size: u32,

    /// HTTP/2 initial flow-control window of each stream, in bytes: how much
    /// a client may send on one call before the server reads it.
    #[arg(long, env = "TESTBED_INITIAL_STREAM_WINDOW", default_value_t = 1024 * 1024)]
    pub initial_stream_window: u32,

    /// HTTP/2 initial flow-control window of a whole connection, in bytes.
    #[arg(long, env = "TESTBED_INITIAL_CONNECTION_WINDOW", default_value_t = 4 * 1024 * 1024)]
    pub initial_connection_window: u32,

    /// Rapid-reset protection (CVE-2023-44487): streams a client may open
    /// and reset before the server has accepted them; past it the
    /// connection is closed with GOAWAY.
    #[arg(long, env = "TESTBED_MAX_PENDING_RESETS", default_value_t = 20)]
    pub max_pending_resets: usize,

    /// Streams the server may reset for protocol errors on one connection
    /// before it closes it (h2's `max_local_error_reset_streams`).
    #[arg(long, env = "TESTBED_MAX_LOCAL_ERROR_RESETS", default_value_t = 1024)]
    pub max_local_error_resets: usize,

    /// Largest request message, decoded, in bytes; larger ones get
    /// RESOURCE_EXHAUSTED.
    #[arg(long, env = "TESTBED_MAX_DECODING_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub max_decoding_message_size: usize,

    /// Largest response message, encoded, in bytes; a larger one fails its
    /// call with RESOURCE_EXHAUSTED instead of being sent.
    #[arg(long, env = "TESTBED_MAX_ENCODING_MESSAGE_SIZE", default_value_t = 4 * 1024 * 1024)]
    pub max_encoding_message_size: usize,

    /// Longest a call may take to its response headers (the client's
    /// `grpc-timeout` applies when shorter); past it the call ends
    /// CANCELLED. A stream's body is not bounded by it.
    #[arg(
        long,
        env = "TESTBED_REQUEST_TIMEOUT",
        default_value = "30s",
        value_parser = humantime::parse_duration
    )]
    pub request_timeout: Duration,

    /// Most calls in their handler at once, over all connections (health
    /// checks excepted); calls past it are shed at once with
    /// RESOURCE_EXHAUSTED and RetryInfo, never queued.
    #[arg(long, env = "TESTBED_MAX_CONCURRENT_REQUESTS", default_value_t = 1024)]
    pub max_concurrent_requests: usize,

    /// Once listening, write the bound addresses to this file as JSON
    /// (`{"grpc":"127.0.0.1:50051","metrics":"127.0.0.1:9464"}`), for
    /// scripts and tests that bind port 0.
    #[arg(long, env = "TESTBED_ADDR_FILE")]
    pub addr_file: Option<PathBuf>,

    /// Bearer tokens (`--auth-tokens-file`, `--auth-tokens`); none: no
    /// authentication. See [`crate::auth`].
    #[command(flatten)]
    pub auth: crate::auth::AuthArgs,

    /// TLS and mTLS of the gRPC port (`--tls-cert`, `--tls-key`,
    /// `--tls-client-ca`); none: plaintext. See [`crate::tls`].
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// A second, plaintext listener that serves only `grpc.health.v1`
    /// (kubelet gRPC probes cannot speak TLS): point the probes here when
    /// --tls-cert is on. Nothing else is served on it; reflection and the
    /// services stay on --grpc-addr. Off by default.
    #[arg(long, env = "TESTBED_PROBE_ADDR")]
    pub probe_addr: Option<SocketAddr>,
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
