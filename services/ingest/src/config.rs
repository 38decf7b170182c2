//! The `testbed ingest` flags: every limit of the write path.

use std::time::Duration;

/// Limits and behaviour of the ingest service.
#[derive(Debug, Clone, clap::Args)]
pub struct IngestConfig {
    /// Most events one Publish request or stream message may carry; more is
    /// INVALID_ARGUMENT for the whole batch.
    #[arg(long, env = "TESTBED_MAX_BATCH", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,

    /// How far in the future an event's observed_at may be (clock skew
    /// allowance).
    #[arg(long, env = "TESTBED_MAX_FUTURE_SKEW", default_value = "5m",
          value_parser = humantime::parse_duration)]
    pub max_future_skew: Duration,

    /// Most labels per event.
    #[arg(long, env = "TESTBED_MAX_LABELS", default_value_t = 32)]
    pub max_labels: usize,

    /// Longest label key, in characters.
    #[arg(long, env = "TESTBED_MAX_LABEL_KEY_LEN", default_value_t = 64)]
    pub max_label_key_len: usize,

    /// Longest label value, in characters.
    #[arg(long, env = "TESTBED_MAX_LABEL_VALUE_LEN", default_value_t = 256)]
    pub max_label_value_len: usize,

    /// Backpressure: when a partition a request touches has more events
    /// than this appended and not yet processed, the request is refused
    /// with RESOURCE_EXHAUSTED and nothing of it is appended.
    #[arg(long, env = "TESTBED_BACKLOG_LIMIT", default_value_t = 1_000_000)]
    pub backlog_limit: u64,

    /// How old the backlog figure behind --backlog-limit may be. Every
    /// append reports its partition's backlog for free; only when the last
    /// figure is older than this does ingest read it before appending (one
    /// more Redis round trip, which can wait behind a worker's apply). 0:
    /// read it before every request.
    #[arg(long, env = "TESTBED_BACKLOG_MAX_AGE", default_value = "100ms",
          value_parser = humantime::parse_duration)]
    pub backlog_max_age: Duration,

    /// The retry delay suggested (google.rpc.RetryInfo) under backpressure.
    #[arg(long, env = "TESTBED_RETRY_AFTER", default_value = "1s",
          value_parser = humantime::parse_duration)]
    pub retry_after: Duration,

    /// Batches of one PublishStream being appended at once; the stream
    /// stops reading past it (per-stream flow control).
    #[arg(long, env = "TESTBED_STREAM_WINDOW", default_value_t = 32,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub stream_window: u32,

    /// Most devices tracked at once (seen within --retention), over all
    /// partitions: the events of a new device past it are rejected, naming
    /// device_id, so that a client inventing device ids cannot exhaust
    /// Redis memory. Each partition holds its share (rounded up). 0: no cap.
    #[arg(long, env = "TESTBED_MAX_TRACKED_DEVICES", default_value_t = 1_000_000)]
    pub max_tracked_devices: u64,

    /// Devices this process remembers as admitted under
    /// --max-tracked-devices (asking the store only about the others);
    /// about 100 bytes each. 0: ask about every device of every batch.
    #[arg(long, env = "TESTBED_TRACKED_DEVICES_CACHE", default_value_t = 100_000)]
    pub tracked_devices_cache: usize,
}

testbed_flags::default_from_flags!(IngestConfig);

#[cfg(test)]
mod tests {
    use super::*;

    /// `IngestConfig::default()` is the flags' defaults, every field of it
    /// (compared whole, so a hand-written default cannot drift again).
    #[test]
    fn default_is_every_flags_default() {
        let parsed = testbed_flags::parse_from::<IngestConfig, _, _>(["x"]).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", IngestConfig::default())
        );
    }

    /// Out-of-range limits are refused.
    #[test]
    fn rejects_bad_limits() {
        assert!(
            testbed_flags::parse_from::<IngestConfig, _, _>(["x", "--max-batch", "0"]).is_err()
        );
        assert!(
            testbed_flags::parse_from::<IngestConfig, _, _>(["x", "--stream-window", "0"]).is_err()
        );
        assert!(
            testbed_flags::parse_from::<IngestConfig, _, _>(["x", "--retry-after", "soon"])
                .is_err()
        );
    }
}
