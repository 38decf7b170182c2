//! The connection instruments every server exports (at `/metrics` and over
//! OTLP), under one name whatever the service.

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, UpDownCounter};

/// Why the server closed a connection (`reason` of
/// `server_connections_closed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// No HTTP/2 preface and SETTINGS within `--handshake-timeout`.
    HandshakeTimeout,
    /// No open call for `--idle-timeout` (GOAWAY, then closed).
    Idle,
    /// Older than `--max-connection-age` (GOAWAY, then closed).
    Age,
    /// Pinged more often than the ping policy allows (GOAWAY
    /// `too_many_pings`).
    PingPolicy,
    /// The client closed it, or hyper did (keepalive timeout, protocol
    /// error, rapid reset, shutdown).
    Other,
}

impl CloseReason {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::Idle => "idle",
            Self::Age => "age",
            Self::PingPolicy => "ping_policy",
            Self::Other => "other",
        }
    }
}

/// Connection counters of one process.
#[derive(Debug, Clone)]
pub struct ConnMetrics {
    /// `server_connections_open`: connections held now.
    pub open: UpDownCounter<i64>,
    /// `server_connections_accepted_total`: connections accepted and served.
    pub accepted: Counter<u64>,
    /// `server_connections_refused_total`: closed right after accept, over
    /// `--max-connections`.
    pub refused: Counter<u64>,
    /// `server_connections_closed_total{reason}`.
    pub closed: Counter<u64>,
    /// `server_accept_errors_total{kind}`: failed accepts (`emfile`,
    /// `enfile`, `enobufs`, `enomem`, `other`), each followed by a backoff
    /// for the resource kinds.
    pub accept_errors: Counter<u64>,
}

impl Default for ConnMetrics {
    fn default() -> Self {
        let meter = opentelemetry::global::meter("testbed-server");
        let counter = |name: &'static str, help: &'static str| {
            meter.u64_counter(name).with_description(help).build()
        };
        let metrics = Self {
            open: meter
                .i64_up_down_counter("server.connections.open")
                .with_description("Client connections held now")
                .build(),
            accepted: counter(
                "server.connections.accepted",
                "Client connections accepted and served",
            ),
            refused: counter(
                "server.connections.refused",
                "Client connections closed right after accept: over --max-connections",
            ),
            closed: counter(
                "server.connections.closed",
                "Client connections ended, by reason",
            ),
            accept_errors: counter(
                "server.accept.errors",
                "Failed accepts, by kind (descriptor or memory exhaustion backs off)",
            ),
        };
        // Series exist from the start, so rates and alerts see zeros, not gaps.
        metrics.open.add(0, &[]);
        metrics.accepted.add(0, &[]);
        metrics.refused.add(0, &[]);
        for reason in [
            CloseReason::HandshakeTimeout,
            CloseReason::Idle,
            CloseReason::Age,
            CloseReason::PingPolicy,
            CloseReason::Other,
        ] {
            metrics
                .closed
                .add(0, &[KeyValue::new("reason", reason.as_str())]);
        }
        metrics
    }
}

impl ConnMetrics {
    /// Counts a connection closed for `reason`.
    pub fn close(&self, reason: CloseReason) {
        self.open.add(-1, &[]);
        self.closed
            .add(1, &[KeyValue::new("reason", reason.as_str())]);
    }
}
