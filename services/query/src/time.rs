//! Clocks, windows and conversions to the protobuf time types.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use testbed_proto::prost_types;

/// Milliseconds in a minute: aggregates are bucketed by Unix minute.
const MINUTE_MS: i64 = 60_000;

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A validated window ending at a given time, and the minute buckets it
/// covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// How far back the window reaches.
    pub duration: Duration,
    /// When it ends, in Unix milliseconds.
    pub end_ms: i64,
}

impl Window {
    /// The window of `duration` ending at `end_ms`.
    pub fn ending_at(end_ms: i64, duration: Duration) -> Self {
        Self { duration, end_ms }
    }

    /// The Unix minutes the window overlaps, oldest first. Aggregates are
    /// per minute, so the window is rounded out to whole minutes: the
    /// partial minute at each end is included.
    pub fn minutes(&self) -> std::ops::RangeInclusive<i64> {
        let span = i64::try_from(self.duration.as_millis()).unwrap_or(i64::MAX);
        let start = self.end_ms.saturating_sub(span);
        start.div_euclid(MINUTE_MS)..=self.end_ms.div_euclid(MINUTE_MS)
    }
}

/// A Unix time in milliseconds as a protobuf timestamp.
pub fn timestamp_ms(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        // Below 1e9, so it fits.
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// The start of Unix minute `minute` as a protobuf timestamp.
pub fn minute_start(minute: i64) -> prost_types::Timestamp {
    timestamp_ms(minute.saturating_mul(MINUTE_MS))
}

/// A duration as a protobuf duration (saturating at `i64::MAX` seconds).
pub fn proto_duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        // Below 1e9, so it fits.
        nanos: d.subsec_nanos() as i32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 15-minute window ending mid-minute covers 16 minute buckets,
    /// the partial first one included.
    #[test]
    fn window_rounds_out_to_minutes() {
        // 1000 minutes and 30 s after the epoch.
        let end = 1000 * 60_000 + 30_000;
        let w = Window::ending_at(end, Duration::from_secs(15 * 60));
        assert_eq!(w.minutes(), 985..=1000);
        // Ending exactly on a boundary: that minute has just begun.
        let w = Window::ending_at(1000 * 60_000, Duration::from_secs(60));
        assert_eq!(w.minutes(), 999..=1000);
    }

    /// Timestamps and durations convert exactly.
    #[test]
    fn conversions() {
        assert_eq!(
            timestamp_ms(1_763_780_000_123),
            prost_types::Timestamp {
                seconds: 1_763_780_000,
                nanos: 123_000_000
            }
        );
        assert_eq!(
            timestamp_ms(-1),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
        assert_eq!(minute_start(2).seconds, 120);
        assert_eq!(
            proto_duration(Duration::from_millis(1500)),
            prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            }
        );
    }
}
