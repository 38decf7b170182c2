//! Entries, outcomes and aggregate operations: the log's vocabulary.

use std::collections::HashMap;
use std::hash::Hasher as _;
use std::time::Duration;

/// The partition of `device_id` among `partitions`: FNV-1a 64 of its UTF-8
/// bytes, modulo the count. Stable across versions, processes and
/// architectures (documented so other producers can compute it too).
pub fn partition_of(device_id: &str, partitions: u32) -> u32 {
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(device_id.as_bytes());
    // The modulo is < partitions, which is a u32.
    (hasher.finish() % u64::from(partitions.max(1))) as u32
}

/// Histogram bucket of a latency in milliseconds: four buckets per
/// doubling (`floor(4 * log2(1 + ms))`), about 19% wide. The Redis scripts
/// compute the same function.
pub fn latency_bucket(ms: u64) -> u32 {
    (4.0 * (1.0 + ms as f64).log2()).floor() as u32
}

/// Upper bound of a [`latency_bucket`], as a duration.
pub fn latency_bucket_upper(bucket: u32) -> Duration {
    let ms = 2f64.powf(f64::from(bucket + 1) / 4.0) - 1.0;
    Duration::from_secs_f64(ms.max(0.0) / 1000.0)
}

/// The text form of a summary `[count, sum, min, max]` as backends return
/// it: four numbers separated by spaces, each in Rust's shortest form that
/// reads back as the same `f64`.
pub fn summary_text(summary: &[f64; 4]) -> String {
    let [count, sum, min, max] = summary;
    format!("{count} {sum} {min} {max}")
}

/// Parses [`summary_text`]; `None` unless it is four numbers.
pub fn parse_summary(text: &str) -> Option<[f64; 4]> {
    let mut parts = text.split(' ').map(|p| p.parse::<f64>());
    let summary = [
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ];
    parts.next().is_none().then_some(summary)
}

/// Merges summary `delta` into `base` (`None`: nothing yet).
pub fn merge_summary(base: Option<[f64; 4]>, delta: [f64; 4]) -> [f64; 4] {
    match base {
        None => delta,
        Some([n, s, lo, hi]) => [
            n + delta[0],
            s + delta[1],
            lo.min(delta[2]),
            hi.max(delta[3]),
        ],
    }
}

/// Metadata stored with every entry (field `m`), beside the events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EntryMeta {
    /// The idempotent producer that sent the batch, if any.
    #[prost(string, tag = "1")]
    pub producer_id: String,
    /// The producer's batch sequence.
    #[prost(uint64, tag = "2")]
    pub sequence: u64,
    /// W3C `traceparent` of the ingest span, so the worker continues the trace.
    #[prost(string, tag = "3")]
    pub traceparent: String,
    /// W3C `tracestate`.
    #[prost(string, tag = "4")]
    pub tracestate: String,
}

/// The largest producer sequence: sequences are compared in the store's
/// scripts, whose numbers are doubles (exact up to 2^53).
pub const MAX_SEQUENCE: u64 = (1 << 53) - 1;

impl EntryMeta {
    /// The idempotent producer and sequence of the batch, when it has both
    /// (a `producer_id` and a sequence above 0): such a batch is
    /// deduplicated by its sequence, not by its event ids.
    pub fn idempotent(&self) -> Option<(&str, u64)> {
        (!self.producer_id.is_empty() && self.sequence > 0)
            .then_some((self.producer_id.as_str(), self.sequence))
    }
}

/// Positions of events whose id already appeared earlier in the same batch
/// (the batch-level dedupe of idempotent producers still drops those).
/// Hashed with foldhash (seeded per process), as the fold's maps: SipHash
/// here was 2% of ingest's CPU.
pub fn repeated_ids(events: &[AppendEvent<'_>]) -> Vec<u32> {
    let mut seen = foldhash::HashSet::with_capacity_and_hasher(events.len(), Default::default());
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| !seen.insert(e.event_id))
        .map(|(i, _)| i as u32)
        .collect()
}

/// One event of an append: its dedupe key and its encoded bytes. The ids
/// borrow from the decoded request, so an append copies no id per event.
#[derive(Debug, Clone)]
pub struct AppendEvent<'a> {
    /// The client-chosen event id (dedupe key).
    pub event_id: &'a str,
    /// The simulator run it belongs to (empty: none), whose ledger counts
    /// it as a duplicate if it is one.
    pub run_id: &'a str,
    /// The encoded `testbed.v1.Event`: borrowed from the request when ingest
    /// stores the bytes it was sent.
    pub bytes: std::borrow::Cow<'a, [u8]>,
}

/// What an append did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendOutcome {
    /// The new entry's id; `None` when every event was a duplicate.
    pub entry_id: Option<String>,
    /// Positions (in the append's event list) of events whose id was
    /// already in the dedupe window: acknowledged, not appended again.
    pub duplicates: Vec<u32>,
    /// The partition's backlog (see [`PartitionFigures::backlog`]) right
    /// after the append, when the backend reports it: ingest's
    /// backpressure check uses it instead of reading the figures again.
    pub backlog: Option<u64>,
}

/// One log entry as a consumer sees it: a batch of events from one request
/// for one partition.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Stream entry id (`<ms>-<seq>`).
    pub id: String,
    /// The partition it was read from.
    pub partition: u32,
    /// Encoded [`EntryMeta`] (empty if missing).
    pub meta: Vec<u8>,
    /// Encoded events, in request order: slices of one buffer per entry,
    /// which a reader decodes without copying (see
    /// `testbed_proto::raw::EventRef`).
    pub events: Vec<prost::bytes::Bytes>,
    /// How many times the entry has been delivered (1 on first read).
    pub deliveries: u64,
}

impl Entry {
    /// The append time, in Unix milliseconds, from the entry id (the log's
    /// own clock, so end-to-end latency needs no clock agreement).
    pub fn appended_ms(&self) -> u64 {
        entry_ms(&self.id)
    }
}

/// The millisecond part of a stream entry id.
pub fn entry_ms(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0)
}

/// Whether an apply changed anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApplyOutcome {
    /// Every entry was pending; their aggregates were applied and they were
    /// acked, in one atomic step.
    Applied,
    /// These entries (indexes into the batch) had already been acked, by
    /// this or another consumer, so nothing at all was applied: the caller
    /// folds the other entries again without them, and nothing is counted
    /// twice.
    NotPending(Vec<usize>),
}
/// Pipeline counters of one partition.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionFigures {
    /// Events appended.
    pub ingested: u64,
    /// Events applied to aggregates.
    pub processed: u64,
    /// Events dropped as re-sent duplicates at append.
    pub duplicates: u64,
    /// Events moved to the dead-letter stream.
    pub dead_lettered: u64,
}

impl PartitionFigures {
    /// Events appended and not yet processed or dead-lettered.
    pub fn backlog(&self) -> u64 {
        self.ingested
            .saturating_sub(self.processed + self.dead_lettered)
    }
}

/// A member of a partition's consumer group, as the store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The consumer's name.
    pub name: String,
    /// Entries delivered to it and not acked.
    pub pending: u64,
    /// Time since it last read (or tried to), on the store's clock.
    pub idle: std::time::Duration,
}

/// Pending entries of a partition (delivered, not yet acked).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PendingSummary {
    /// Number of pending entries.
    pub entries: u64,
    /// Append time (Unix ms) of the oldest pending entry.
    pub oldest_ms: Option<u64>,
}

/// One aggregate write. Keys are indexes into [`Ops::keys`].
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `HINCRBY key field by`.
    HashIncr(u16, String, i64),
    /// `HINCRBYFLOAT key field by`.
    HashIncrFloat(u16, String, f64),
    /// Keep the minimum of `field` and the value.
    HashMin(u16, String, f64),
    /// Keep the maximum of `field` and the value.
    HashMax(u16, String, f64),
    /// `HSET key field value`.
    HashSet(u16, String, String),
    /// `ZINCRBY key by member`.
    ZIncr(u16, String, f64),
    /// `ZADD key GT score member`: keep the greater score (a last-seen time).
    ZMax(u16, String, f64),
    /// `EXPIRE key seconds`.
    Expire(u16, u64),
    /// Merge `[count, sum, min, max]` into the summary held in one field:
    /// counts and sums add up, the minimum and maximum are kept. One field
    /// instead of four keeps a device-minute hash small and its merge to
    /// one read and one write in the store (Redis keeps it as MessagePack;
    /// every backend reads it as [`summary_text`]).
    HashSummary(u16, String, [f64; 4]),
}

impl Op {
    /// Its key (index into [`Ops::keys`]), whether that key is a sorted
    /// set, and the field or member written (`None` for an expiry).
    pub fn target(&self) -> (u16, bool, Option<&str>) {
        match self {
            Op::HashIncr(k, f, _)
            | Op::HashIncrFloat(k, f, _)
            | Op::HashMin(k, f, _)
            | Op::HashMax(k, f, _)
            | Op::HashSet(k, f, _)
            | Op::HashSummary(k, f, _) => (*k, false, Some(f.as_str())),
            Op::ZIncr(k, m, _) | Op::ZMax(k, m, _) => (*k, true, Some(m.as_str())),
            Op::Expire(k, _) => (*k, false, None),
        }
    }
}

/// The aggregate writes of a batch of entries of one partition, applied
/// atomically with their acks.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ops {
    /// Distinct keys, all of the entry's partition.
    pub keys: Vec<String>,
    /// The writes, in order.
    pub ops: Vec<Op>,
    /// End-to-end latency histogram increments: (key, entry index in the
    /// batch, events to count). The backend measures each entry's append ->
    /// apply time on its own clock (Redis `TIME`) and increments that
    /// bucket.
    pub e2e: Vec<(u16, u32, u64)>,
    index: HashMap<String, u16>,
}

impl Ops {
    /// The index of `key`, added on first use.
    pub fn key(&mut self, key: String) -> u16 {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = u16::try_from(self.keys.len()).unwrap_or(u16::MAX);
        self.index.insert(key.clone(), i);
        self.keys.push(key);
        i
    }

    /// Adds a write.
    pub fn push(&mut self, op: Op) {
        self.ops.push(op);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Summaries read back exactly and merge count/sum/min/max.
    #[test]
    fn summaries_round_trip_and_merge() {
        let a = [2.0, 0.1 + 0.2, -3.5, 1e300];
        assert_eq!(parse_summary(&summary_text(&a)), Some(a));
        assert_eq!(parse_summary("1 2 3"), None);
        assert_eq!(parse_summary("1 2 3 4 5"), None);
        assert_eq!(
            merge_summary(Some([1.0, 2.0, 2.0, 2.0]), [2.0, 5.0, 1.0, 4.0]),
            [3.0, 7.0, 1.0, 4.0]
        );
        assert_eq!(merge_summary(None, a), a);
    }

    /// Partitioning is stable (pinned values) and spreads devices.
    #[test]
    fn partition_is_stable_and_spread() {
        assert_eq!(
            partition_of("gpu-node-0001", 4),
            partition_of("gpu-node-0001", 4)
        );
        // FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c.
        assert_eq!(
            partition_of("a", 1_000_000_007),
            (0xaf63dc4c8601ec8c_u64 % 1_000_000_007) as u32
        );
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[partition_of(&format!("dev-{i}"), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    /// Buckets grow by 2^(1/4) and their upper bounds bracket the value.
    #[test]
    fn latency_buckets_bracket_values() {
        assert_eq!(latency_bucket(0), 0);
        assert_eq!(latency_bucket(1), 4);
        assert_eq!(latency_bucket(3), 8);
        for ms in [0u64, 1, 2, 5, 17, 250, 999, 60_000] {
            let b = latency_bucket(ms);
            assert!(latency_bucket_upper(b) >= Duration::from_millis(ms), "{ms}");
        }
    }

    /// Keys are deduplicated in first-use order.
    #[test]
    fn ops_dedupe_keys() {
        let mut ops = Ops::default();
        assert_eq!(ops.key("a".into()), 0);
        assert_eq!(ops.key("b".into()), 1);
        assert_eq!(ops.key("a".into()), 0);
        assert_eq!(ops.keys, vec!["a".to_owned(), "b".to_owned()]);
    }

    /// The entry id's milliseconds are the append time.
    #[test]
    fn entry_ms_parses_ids() {
        assert_eq!(entry_ms("1700000000123-7"), 1_700_000_000_123);
        assert_eq!(entry_ms("garbage"), 0);
    }
}
