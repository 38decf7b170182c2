//! Bounded, batched reads of the aggregates: the only place that talks to
//! the store.
//!
//! A query over a window reads one key per partition and minute. Keys are
//! read in batches of `--query-read-batch`, with at most
//! `--query-read-concurrency` calls in flight, in key order. Key names are
//! always computed (see [`testbed_stream::keys`]); the keyspace is never
//! scanned.

use futures::{StreamExt as _, TryStreamExt as _, stream};
use testbed_proto::v1::Device;
use testbed_stream::AggregateStore as _;
use testbed_stream::keys::Keys;
use testbed_stream::{AnyLog, EventLog as _, PartitionFigures, PendingSummary, partition_of};

use crate::QueryConfig;
use crate::aggregate::{self, Fields};
use crate::error::QueryError;

/// A hash as the store returns it: fields sorted by name.
pub type Hash = Vec<(String, String)>;

/// Reads aggregates from the log's store.
#[derive(Debug, Clone)]
pub struct Reader {
    log: AnyLog,
    batch: usize,
    concurrency: usize,
    max_scan: usize,
    top_depth: usize,
}

impl Reader {
    /// A reader of `log` with the limits of `config`.
    pub fn new(log: AnyLog, config: &QueryConfig) -> Self {
        Self {
            log,
            batch: (config.query_read_batch as usize).max(1),
            concurrency: (config.query_read_concurrency as usize).max(1),
            max_scan: (config.query_max_scan as usize).max(1),
            top_depth: (config.query_top_depth as usize).max(1),
        }
    }

    /// The store.
    pub fn log(&self) -> &AnyLog {
        &self.log
    }

    /// Keys per store call.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Key names.
    pub fn keys(&self) -> &Keys {
        self.log.keys()
    }

    /// Every partition.
    pub fn partitions(&self) -> std::ops::Range<u32> {
        0..self.log.partitions()
    }

    /// The partition of `device`.
    pub fn partition_of(&self, device: &str) -> u32 {
        partition_of(device, self.log.partitions())
    }

    /// Whole hashes, in the order of `keys`; a missing key is empty.
    pub async fn hashes(&self, keys: &[String]) -> Result<Vec<Hash>, QueryError> {
        // The calls are built before streaming them: a closure inside the
        // stream would make the handler's future not provably `Send`.
        let calls: Vec<_> = keys
            .chunks(self.batch)
            .map(|chunk| self.log.read_hashes(chunk))
            .collect();
        let batches: Vec<Vec<Hash>> = stream::iter(calls)
            .buffered(self.concurrency)
            .try_collect()
            .await?;
        Ok(batches.into_iter().flatten().collect())
    }

    /// Whole sorted sets, in the order of `keys`; a missing key is empty.
    pub async fn zsets(&self, keys: &[String]) -> Result<Vec<Vec<(String, f64)>>, QueryError> {
        let calls: Vec<_> = keys.iter().map(|key| self.log.read_zset(key)).collect();
        self.in_order(calls).await
    }

    /// Up to `limit` members of the sorted set `key` after `after`, in
    /// byte order (an index of devices, see `index.rs`): one bounded call.
    pub async fn ids_after(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, QueryError> {
        Ok(self.log.zset_range_lex(key, after, limit).await?)
    }

    /// The number of members of each sorted set of `keys`, in order.
    pub async fn set_lens(&self, keys: &[String]) -> Result<Vec<u64>, QueryError> {
        let calls: Vec<_> = keys.iter().map(|key| self.log.zset_len(key)).collect();
        self.in_order(calls).await
    }

    /// Runs `calls` (built before streaming them: a closure inside the
    /// stream would make the handler's future not provably `Send`) at most
    /// `--query-read-concurrency` at a time; their answers in order.
    async fn in_order<T, F>(&self, calls: Vec<F>) -> Result<Vec<T>, QueryError>
    where
        F: std::future::Future<Output = Result<T, testbed_stream::StoreError>>,
    {
        Ok(stream::iter(calls)
            .buffered(self.concurrency)
            .try_collect()
            .await?)
    }

    /// Devices one ListDevices call examines at most
    /// (`--query-max-scan`).
    pub fn max_scan(&self) -> usize {
        self.max_scan
    }

    /// Members TopDevices reads per ranking (`--query-top-depth`).
    pub fn top_depth(&self) -> usize {
        self.top_depth
    }

    /// The `limit` highest-scored members of each sorted set of `keys`,
    /// highest first, in the order of `keys`: one bounded call each.
    pub async fn tops(
        &self,
        keys: &[String],
        limit: usize,
    ) -> Result<Vec<Vec<(String, f64)>>, QueryError> {
        let calls: Vec<_> = keys
            .iter()
            .map(|key| self.log.zset_top(key, limit))
            .collect();
        self.in_order(calls).await
    }

    /// The scores of each (sorted set, members) of `lookups`, in order
    /// (`None` for a member not in its set): one call each.
    pub async fn scores(
        &self,
        lookups: &[(String, Vec<String>)],
    ) -> Result<Vec<Vec<Option<f64>>>, QueryError> {
        let calls: Vec<_> = lookups
            .iter()
            .map(|(key, members)| self.log.zset_scores(key, members))
            .collect();
        self.in_order(calls).await
    }

    /// The pipeline counters and pending entries of every partition.
    pub async fn partition_figures(
        &self,
    ) -> Result<Vec<(PartitionFigures, PendingSummary)>, QueryError> {
        let calls: Vec<_> = self
            .partitions()
            .map(|p| async move {
                let figures = self.log.figures(p).await?;
                let pending = self.log.pending(p).await?;
                Ok::<_, QueryError>((figures, pending))
            })
            .collect();
        stream::iter(calls)
            .buffered(self.concurrency)
            .try_collect()
            .await
    }

    /// The state of each of `ids` (labels, last seen), in order; `None` for
    /// a device with nothing retained.
    pub async fn devices(&self, ids: &[String]) -> Result<Vec<Option<Device>>, QueryError> {
        let keys: Vec<String> = ids
            .iter()
            .map(|id| self.keys().device(self.partition_of(id), id))
            .collect();
        let hashes = self.hashes(&keys).await?;
        ids.iter()
            .zip(keys.iter().zip(&hashes))
            .map(|(id, (key, hash))| aggregate::device(id, &Fields::new(key, hash)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use testbed_stream::{MemoryLog, StoreArgs};

    use super::*;

    /// Batched, concurrent reads keep key order, across batch boundaries.
    #[tokio::test]
    async fn batches_keep_order() {
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs::default()));
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        for (i, key) in keys.iter().enumerate() {
            if i % 3 != 0 {
                log.write_hash(key, &[("v".into(), i.to_string())], None)
                    .await
                    .unwrap();
            }
            log.zset_set(&format!("z{i}"), "m", i as f64).await.unwrap();
        }
        let config = QueryConfig {
            query_read_batch: 3,
            query_read_concurrency: 2,
            ..QueryConfig::default()
        };
        let reader = Reader::new(log, &config);
        let hashes = reader.hashes(&keys).await.unwrap();
        let values: Vec<Option<&str>> = hashes
            .iter()
            .map(|h| h.first().map(|(_, v)| v.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                None,
                Some("1"),
                Some("2"),
                None,
                Some("4"),
                Some("5"),
                None,
                Some("7"),
                Some("8"),
                None
            ]
        );
        let zkeys: Vec<String> = (0..10).map(|i| format!("z{i}")).collect();
        let zsets = reader.zsets(&zkeys).await.unwrap();
        let scores: Vec<f64> = zsets.iter().map(|z| z[0].1).collect();
        assert_eq!(scores, (0..10).map(f64::from).collect::<Vec<_>>());
    }
}
