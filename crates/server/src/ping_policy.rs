//! The ping enforcement policy: grpc-go's `keepalive.EnforcementPolicy`.
//!
//! A client ping is a strike when it comes sooner than `min_interval` after
//! the previous one, or, on a connection with no open call and
//! `permit_without_stream` false, sooner than two hours after it; sending
//! DATA or HEADERS (the server did work) clears the strikes at the next
//! ping. More than [`MAX_STRIKES`] strikes: the connection gets GOAWAY
//! `ENHANCE_YOUR_CALM` with debug data "too_many_pings" and is closed,
//! which grpc-go and grpc C-core clients answer by doubling their keepalive
//! time. Same numbers as grpc-go (`maxPingStrikes`, `defaultPingTimeout`).

use std::time::{Duration, Instant};

/// Strikes tolerated; the next one closes the connection.
pub const MAX_STRIKES: u32 = 2;
/// Without an open call and without `permit_without_stream`, pings closer
/// than this are strikes.
const IDLE_PING_INTERVAL: Duration = Duration::from_secs(2 * 60 * 60);

/// The policy's state on one connection.
#[derive(Debug, Clone)]
pub struct PingPolicy {
    min_interval: Duration,
    permit_without_stream: bool,
    last_ping: Option<Instant>,
    strikes: u32,
    reset: bool,
}

impl PingPolicy {
    /// A policy with `--ping-min-interval` and `--ping-permit-without-stream`.
    pub fn new(min_interval: Duration, permit_without_stream: bool) -> Self {
        Self {
            min_interval,
            permit_without_stream,
            last_ping: None,
            strikes: 0,
            reset: false,
        }
    }

    /// The server sent DATA or HEADERS: the next ping clears the strikes.
    pub fn server_sent_data(&mut self) {
        self.reset = true;
    }

    /// A client ping at `now`, with `open_streams` calls open; true when it
    /// is one strike too many.
    pub fn on_ping(&mut self, now: Instant, open_streams: usize) -> bool {
        let last = self.last_ping.replace(now);
        if std::mem::take(&mut self.reset) {
            self.strikes = 0;
            return false;
        }
        let allowed = if open_streams == 0 && !self.permit_without_stream {
            IDLE_PING_INTERVAL
        } else {
            self.min_interval
        };
        if let Some(last) = last
            && now.duration_since(last) < allowed
        {
            self.strikes += 1;
        }
        self.strikes > MAX_STRIKES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The third ping too soon is one too many; pings far enough apart never are.
    #[test]
    fn third_strike_too_many() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut p = PingPolicy::new(Duration::from_secs(10), true);
        assert!(!p.on_ping(t0, 1));
        assert!(!p.on_ping(t0 + ms(100), 1));
        assert!(!p.on_ping(t0 + ms(200), 1));
        assert!(p.on_ping(t0 + ms(300), 1));

        let mut p = PingPolicy::new(Duration::from_secs(10), true);
        for i in 0..100 {
            assert!(!p.on_ping(t0 + Duration::from_secs(10 * i), 0));
        }
    }

    /// Data sent by the server forgives the strikes (BDP pings of grpc C-core).
    #[test]
    fn data_clears_strikes() {
        let t0 = Instant::now();
        let mut p = PingPolicy::new(Duration::from_secs(10), true);
        for i in 0..100 {
            p.server_sent_data();
            assert!(!p.on_ping(t0 + Duration::from_millis(i), 1));
        }
    }

    /// Without permit_without_stream, idle pings even minutes apart are strikes.
    #[test]
    fn idle_pings_strike_unless_permitted() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut p = PingPolicy::new(Duration::from_secs(10), false);
        let hits: Vec<_> = (0..4).map(|i| p.on_ping(t0 + min * i, 0)).collect();
        assert_eq!(hits, [false, false, false, true]);
    }
}
