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
        ] {
            let err =
                testbed_flags::parse_from::<QueryConfig, _, _>(["x", flag, value]).unwrap_err();
            assert!(err.to_string().contains(flag), "{flag} {value}: {err}");
        }
    }
}
