//! [`Limits`]: every transport and request limit of a server, from its flags.

use std::time::Duration;

use crate::config::ListenArgs;

/// Descriptors kept free for what is not a client connection (Redis, OTLP,
/// `/metrics`, log files), at least: the cap leaves a tenth of the limit or
/// this, whichever is more.
const MIN_DESCRIPTOR_HEADROOM: usize = 64;

/// Half the longest a connection in a reserved slot is held (see
/// [`Limits::reserved`]).
pub const RESERVED_LIFETIME: Duration = Duration::from_secs(1);

/// The limits [`crate::GrpcServer`] applies; see [`ListenArgs`] for each
/// field's flag, meaning and default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// `--max-connections`, resolved (see [`default_max_connections`]).
    pub max_connections: usize,
    /// `--reserved-connections`.
    pub reserved_connections: usize,
    /// `--handshake-timeout`.
    pub handshake_timeout: Duration,
    /// `--idle-timeout`.
    pub idle_timeout: Duration,
    /// `--http2-keepalive-interval`.
    pub keepalive_interval: Duration,
    /// `--http2-keepalive-timeout`.
    pub keepalive_timeout: Duration,
    /// `--ping-min-interval`.
    pub ping_min_interval: Duration,
    /// `--ping-permit-without-stream`.
    pub ping_permit_without_stream: bool,
    /// `--max-concurrent-streams`.
    pub max_concurrent_streams: u32,
    /// `--max-header-list-size`.
    pub max_header_list_size: u32,
    /// `--initial-stream-window`.
    pub initial_stream_window: u32,
    /// `--initial-connection-window`.
    pub initial_connection_window: u32,
    /// `--max-pending-resets`.
    pub max_pending_resets: usize,
    /// `--max-local-error-resets`.
    pub max_local_error_resets: usize,
    /// `--max-decoding-message-size`.
    pub max_decoding_message_size: usize,
    /// `--max-encoding-message-size`.
    pub max_encoding_message_size: usize,
    /// `--request-timeout`.
    pub request_timeout: Duration,
    /// `--max-concurrent-requests`.
    pub max_concurrent_requests: usize,
    /// `--max-connection-age` and its grace.
    pub connection_age: Option<crate::bind::ConnectionAge>,
    /// `--max-connection-age-grace`: also how long a connection sent GOAWAY
    /// for idleness may stay before it is closed under the client.
    pub drain_grace: Duration,
}

impl Default for Limits {
    /// The flags' defaults (environment not read).
    fn default() -> Self {
        match testbed_flags::defaults::<ListenArgs>() {
            Ok(args) => Self::from_args(&args),
            // Unreachable while every flag has a default (tested below).
            Err(_) => Self::from_args_fallback(),
        }
    }
}

impl Limits {
    /// The limits `args` name.
    pub fn from_args(args: &ListenArgs) -> Self {
        Self {
            max_connections: args
                .max_connections
                .unwrap_or_else(|| default_max_connections(descriptor_limit())),
            reserved_connections: args.reserved_connections,
            handshake_timeout: args.handshake_timeout,
            idle_timeout: args.idle_timeout,
            keepalive_interval: args.http2_keepalive_interval,
            keepalive_timeout: args.http2_keepalive_timeout,
            ping_min_interval: args.ping_min_interval,
            ping_permit_without_stream: args.ping_permit_without_stream,
            max_concurrent_streams: args.max_concurrent_streams,
            max_header_list_size: args.max_header_list_size,
            initial_stream_window: args.initial_stream_window,
            initial_connection_window: args.initial_connection_window,
            max_pending_resets: args.max_pending_resets,
            max_local_error_resets: args.max_local_error_resets,
            max_decoding_message_size: args.max_decoding_message_size,
            max_encoding_message_size: args.max_encoding_message_size,
            request_timeout: args.request_timeout,
            max_concurrent_requests: args.max_concurrent_requests,
            connection_age: args
                .max_connection_age
                .map(|max| crate::bind::ConnectionAge {
                    max,
                    grace: args.max_connection_age_grace,
                }),
            drain_grace: args.max_connection_age_grace,
        }
    }

    /// The limits of a connection admitted past the cap into a reserved
    /// slot: it must finish its handshake within [`RESERVED_LIFETIME`], gets
    /// GOAWAY at that age and is closed the same time later.
    pub fn reserved(&self) -> Self {
        Self {
            handshake_timeout: self.handshake_timeout.min(RESERVED_LIFETIME),
            connection_age: Some(crate::bind::ConnectionAge {
                max: RESERVED_LIFETIME,
                grace: RESERVED_LIFETIME,
            }),
            ..self.clone()
        }
    }

    fn from_args_fallback() -> Self {
        Self {
            max_connections: default_max_connections(descriptor_limit()),
            reserved_connections: 8,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            keepalive_interval: Duration::from_secs(60),
            keepalive_timeout: Duration::from_secs(20),
            ping_min_interval: Duration::from_secs(10),
            ping_permit_without_stream: true,
            max_concurrent_streams: 1000,
            max_header_list_size: 16 * 1024,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 4 * 1024 * 1024,
            max_pending_resets: 20,
            max_local_error_resets: 1024,
            max_decoding_message_size: 4 * 1024 * 1024,
            max_encoding_message_size: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            connection_age: None,
            drain_grace: Duration::from_secs(30),
        }
    }
}

/// The connection cap for a descriptor limit: the limit less a tenth of it,
/// and at least [`MIN_DESCRIPTOR_HEADROOM`], kept for everything else the
/// process opens. Never below 1.
pub fn default_max_connections(descriptor_limit: usize) -> usize {
    let headroom = (descriptor_limit / 10).max(MIN_DESCRIPTOR_HEADROOM);
    descriptor_limit.saturating_sub(headroom).max(1)
}

/// This process's soft `RLIMIT_NOFILE`, read from `/proc/self/limits`
/// (no `unsafe` `getrlimit` needed); 1024, the usual default, when it cannot
/// be read or is unlimited.
pub fn descriptor_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| parse_open_files(&text))
        .unwrap_or(1024)
}

/// The soft "Max open files" of a `/proc/PID/limits` text.
fn parse_open_files(text: &str) -> Option<usize> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every flag has a default, so `Limits::default` is the flags' defaults.
    #[test]
    fn default_is_the_flags_defaults() {
        let args = testbed_flags::defaults::<ListenArgs>().unwrap();
        let limits = Limits::default();
        assert_eq!(limits, Limits::from_args(&args));
        let mut fallback = Limits::from_args_fallback();
        fallback.max_connections = limits.max_connections;
        assert_eq!(limits, fallback);
    }

    /// The cap keeps a tenth of the limit, at least 64, free.
    #[test]
    fn cap_keeps_headroom() {
        assert_eq!(default_max_connections(1024), 922);
        assert_eq!(default_max_connections(256), 192);
        assert_eq!(default_max_connections(20_000), 18_000);
        assert_eq!(default_max_connections(1_048_576), 943_719);
        assert_eq!(default_max_connections(50), 1);
    }

    /// The soft limit is read from the `Max open files` line.
    #[test]
    fn reads_soft_open_files() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             63448                63448                processes\n\
                    Max open files            3000                 524288               files\n";
        assert_eq!(parse_open_files(text), Some(3000));
        assert_eq!(
            parse_open_files("Max open files  unlimited unlimited files"),
            None
        );
        assert!(descriptor_limit() > 0);
    }
}
