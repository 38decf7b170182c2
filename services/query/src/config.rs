//! The `testbed query` flags: every limit of the read path.

/// Limits of the query service's reads and streams.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryConfig {
    /// Keys read per store call. A query over a window reads one key per
    /// partition and minute; they are fetched in batches of this size.
    #[arg(long, env = "TESTBED_QUERY_READ_BATCH", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub query_read_batch: u32,

    /// Store calls one query keeps in flight at once; bounds the load a
    /// single 24h query puts on the store.
    #[arg(long, env = "TESTBED_QUERY_READ_CONCURRENCY", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=256))]
    pub query_read_concurrency: u32,

    /// Messages a WatchPipelineStats stream buffers for a slow client;
    /// past it the producer waits, so updates are delayed, not queued.
    #[arg(long, env = "TESTBED_QUERY_WATCH_BUFFER", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub query_watch_buffer: u32,

    /// Devices one ListDevices call examines at most. A filter matches
    /// what its label postings hold, but a device whose labels changed, or
    /// one of several pairs that rarely meet, can make a call read many
    /// devices for few matches: past this many it answers the devices
    /// found so far (fewer than page_size, possibly none) with a
    /// next_page_token that resumes where it stopped.
    #[arg(long, env = "TESTBED_QUERY_MAX_SCAN", default_value_t = 5000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub query_max_scan: u32,

    /// Members TopDevices reads from each partition's ranking of each
    /// minute (at least the request's limit). Deeper reads more entries
    /// per call and makes the answer exact for more distributions (see
    /// the README's "What each read costs"); the cost is this many entries
    /// per partition and minute, whatever the fleet.
    #[arg(long, env = "TESTBED_QUERY_TOP_DEPTH", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub query_top_depth: u32,

    /// Budget of one unary query call. Past it the call answers DEADLINE_EXCEEDED; the store is
    /// not down, the query was too large or Redis too busy for it. Query
    /// reads use their own Redis connections, whose per-call bound is
    /// this budget (plus a margin) instead of --redis-timeout, so that the
    /// budget, not the store's bound, ends a slow query.
    #[arg(long, env = "TESTBED_QUERY_TIMEOUT", default_value = "2s",
          value_parser = parse_timeout)]
    pub query_timeout: std::time::Duration,
}

/// A `--query-timeout`: a duration from 1 ms to 10 minutes.
fn parse_timeout(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if d < std::time::Duration::from_millis(1) || d > std::time::Duration::from_secs(600) {
        return Err(format!("{text} is not between 1ms and 10m"));
    }
    Ok(d)
}

testbed_flags::default_from_flags!(QueryConfig);

#[cfg(test)]
mod tests {
    use super::*;

    /// `QueryConfig::default()` is the flags' defaults, every field of it
    /// (compared whole, so a hand-written default cannot drift again).
    #[test]
    fn default_is_every_flags_default() {
        let parsed = testbed_flags::parse_from::<QueryConfig, _, _>(["x"]).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", QueryConfig::default())
        );
    }

    /// Out-of-range values name their flag.
    #[test]
    fn rejects_bad_values() {
        for (flag, value) in [
            ("--query-read-batch", "0"),
            ("--query-read-concurrency", "0"),
            ("--query-watch-buffer", "0"),
            ("--query-max-scan", "0"),
            ("--query-top-depth", "0"),
            ("--query-timeout", "0s"),
            ("--query-timeout", "11m"),
        ] {
            let err =
                testbed_flags::parse_from::<QueryConfig, _, _>(["x", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }
}
