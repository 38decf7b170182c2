//! [`EventLog`]: the abstraction, and [`AnyLog`]: the configured backend.

use std::future::Future;
use std::time::Duration;

use crate::keys::Keys;
use crate::memory::MemoryLog;
use crate::model::{
    AppendEvent, AppendOutcome, ApplyOutcome, Entry, EntryMeta, Ops, PartitionFigures,
    PendingSummary,
};
use crate::redis_log::RedisLog;
use crate::{StoreArgs, StoreError};

/// A hash or a record as text: (field, value), sorted by field.
pub type HashFields = Vec<(String, String)>;

/// A partitioned log with one consumer group.
///
/// Semantics every backend keeps (the conformance tests check them):
/// - `append` is atomic per partition: the events not already in the
///   partition's dedupe window become one entry, or nothing changes.
/// - An entry read by a consumer stays pending until `apply` or
///   `dead_letter` acks it; `apply` writes the aggregates of a batch of
///   entries and acks them in one atomic step, and does nothing at all if
///   one of them was already acked.
/// - `claim_stale` hands entries pending longer than `min_idle` (their
///   consumer died) to another consumer, counting deliveries.
/// - `trim` removes only entries the group has acknowledged.
pub trait EventLog: Send + Sync {
    /// Number of partitions.
    fn partitions(&self) -> u32;

    /// Key names (aggregates are written under the same prefix and tags).
    fn keys(&self) -> &Keys;

    /// Whether the store answers now.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates the consumer group on every partition if missing.
    fn ensure_group(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Appends `events` to `partition` as one entry, minus duplicates.
    fn append(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
    ) -> impl Future<Output = Result<AppendOutcome, StoreError>> + Send;

    /// The pipeline counters of `partition`.
    fn figures(
        &self,
        partition: u32,
    ) -> impl Future<Output = Result<PartitionFigures, StoreError>> + Send;

    /// Reads up to `count` new entries of `partition` for `consumer`,
    /// waiting up to `block` when there are none.
    fn read(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Reads up to `count` entries of `partition` delivered to `consumer`
    /// and not yet acked (its own pending entries, oldest first): what a
    /// worker holds after a read whose reply it never saw (a timeout), or
    /// after a restart under the same name.
    fn read_own_pending(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Claims up to `count` entries of `partition` pending for longer than
    /// `min_idle` for `consumer`, with their delivery counts.
    fn claim_stale(
        &self,
        partition: u32,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// Applies `ops`, counts `events` processed, and acks `entries` (all of
    /// `partition`), in one atomic step. If any of them was already acked,
    /// nothing happens and the outcome names them.
    fn apply(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// Moves `entry` to the dead-letter stream with `reason`, applies `ops`
    /// (the run ledgers' dead-letter counts) and acks it, atomically; counts
    /// `events` dead-lettered. Nothing happens if `entry` was already acked.
    fn dead_letter(
        &self,
        entry: &Entry,
        events: u64,
        reason: &str,
        ops: &Ops,
    ) -> impl Future<Output = Result<ApplyOutcome, StoreError>> + Send;

    /// Pending entries of `partition`.
    fn pending(
        &self,
        partition: u32,
    ) -> impl Future<Output = Result<PendingSummary, StoreError>> + Send;

    /// Removes acknowledged entries of `partition`; returns how many.
    fn trim(&self, partition: u32) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// How long aggregates are kept (`--retention`).
    fn retention(&self) -> Duration;

    /// Reads a whole sorted set, lowest score first.
    fn read_zset(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<(String, f64)>, StoreError>> + Send;

    /// Sets `fields` of the hash `key` and, if given, its time to live.
    fn write_hash(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes `fields` from the hash `key`; returns how many existed.
    fn delete_hash_fields(
        &self,
        key: &str,
        fields: &[String],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Sets `member`'s score in the sorted set `key`.
    fn zset_set(
        &self,
        key: &str,
        member: &str,
        score: f64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes members scored below `score`; returns how many.
    fn zset_remove_below(
        &self,
        key: &str,
        score: f64,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Reads whole hashes (missing keys give empty maps), for queries and tests.
    fn read_hashes(
        &self,
        keys: &[String],
    ) -> impl Future<Output = Result<Vec<Vec<(String, String)>>, StoreError>> + Send;

    /// Reads every record of `container` (see [`crate::keys`], "Records"):
    /// (record name, its fields as [`EventLog::read_hashes`] gives them),
    /// by record name; a missing container has none.
    fn read_records(
        &self,
        container: &str,
    ) -> impl Future<Output = Result<Vec<(String, HashFields)>, StoreError>> + Send;

    /// Removes the members of the sorted set `index` scored below `score`
    /// and, atomically with them, each one's record `<records>#<member>`
    /// (see [`crate::keys`], "Records"); returns how many. Records share
    /// their container's time to live, so an index is what lets records of
    /// members gone quiet leave one by one.
    fn prune_index(
        &self,
        index: &str,
        score: f64,
        records: &str,
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

/// The backend chosen by configuration.
#[derive(Debug, Clone)]
pub enum AnyLog {
    /// The embedded in-memory log.
    Memory(MemoryLog),
    /// Redis Streams (single node or cluster).
    Redis(RedisLog),
}

impl AnyLog {
    /// Connects to Redis when `--redis-url` is set, else builds the
    /// embedded log (and says loudly that it is not durable).
    pub async fn from_args(args: &StoreArgs) -> Result<Self, StoreError> {
        match &args.redis_url {
            Some(_) => Ok(Self::Redis(RedisLog::connect(args).await?)),
            None => {
                tracing::warn!(
                    "no --redis-url: using the embedded in-memory log; events are NOT durable \
                     and are lost when this process stops"
                );
                Ok(Self::Memory(MemoryLog::new(args)))
            }
        }
    }

    /// A health probe of the store, for
    /// `GrpcServer::follow_dependency`.
    pub fn probe(
        &self,
    ) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send>>
    + Send
    + 'static {
        let log = self.clone();
        move || {
            let log = log.clone();
            Box::pin(async move { log.ping().await.map_err(|e| e.to_string()) })
        }
    }

    /// The backend's name, for logs and status.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
        }
    }
}

macro_rules! delegate {
    ($self:ident, $log:ident => $call:expr) => {
        match $self {
            AnyLog::Memory($log) => $call.await,
            AnyLog::Redis($log) => $call.await,
        }
    };
}

impl EventLog for AnyLog {
    fn partitions(&self) -> u32 {
        match self {
            Self::Memory(log) => log.partitions(),
            Self::Redis(log) => log.partitions(),
        }
    }

    fn keys(&self) -> &Keys {
        match self {
            Self::Memory(log) => log.keys(),
            Self::Redis(log) => log.keys(),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        delegate!(self, log => log.ping())
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        delegate!(self, log => log.ensure_group())
    }

    async fn append(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
    ) -> Result<AppendOutcome, StoreError> {
        delegate!(self, log => log.append(partition, meta, events))
    }

    async fn figures(&self, partition: u32) -> Result<PartitionFigures, StoreError> {
        delegate!(self, log => log.figures(partition))
    }

    async fn read(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StoreError> {
        delegate!(self, log => log.read(partition, consumer, count, block))
    }

    async fn read_own_pending(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        delegate!(self, log => log.read_own_pending(partition, consumer, count))
    }

    async fn claim_stale(
        &self,
        partition: u32,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        delegate!(self, log => log.claim_stale(partition, consumer, min_idle, count))
    }

    async fn apply(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        delegate!(self, log => log.apply(partition, entries, events, ops))
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        events: u64,
        reason: &str,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        delegate!(self, log => log.dead_letter(entry, events, reason, ops))
    }

    async fn pending(&self, partition: u32) -> Result<PendingSummary, StoreError> {
        delegate!(self, log => log.pending(partition))
    }

    async fn trim(&self, partition: u32) -> Result<u64, StoreError> {
        delegate!(self, log => log.trim(partition))
    }

    async fn read_hashes(&self, keys: &[String]) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        delegate!(self, log => log.read_hashes(keys))
    }

    async fn read_records(&self, container: &str) -> Result<Vec<(String, HashFields)>, StoreError> {
        delegate!(self, log => log.read_records(container))
    }

    fn retention(&self) -> Duration {
        match self {
            Self::Memory(log) => log.retention(),
            Self::Redis(log) => log.retention(),
        }
    }

    async fn read_zset(&self, key: &str) -> Result<Vec<(String, f64)>, StoreError> {
        delegate!(self, log => log.read_zset(key))
    }

    async fn write_hash(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        delegate!(self, log => log.write_hash(key, fields, ttl))
    }

    async fn delete_hash_fields(&self, key: &str, fields: &[String]) -> Result<u64, StoreError> {
        delegate!(self, log => log.delete_hash_fields(key, fields))
    }

    async fn zset_set(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError> {
        delegate!(self, log => log.zset_set(key, member, score))
    }

    async fn zset_remove_below(&self, key: &str, score: f64) -> Result<u64, StoreError> {
        delegate!(self, log => log.zset_remove_below(key, score))
    }

    async fn prune_index(&self, index: &str, score: f64, records: &str) -> Result<u64, StoreError> {
        delegate!(self, log => log.prune_index(index, score, records))
    }
}
