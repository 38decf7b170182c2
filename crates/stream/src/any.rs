//! [`AnyLog`]: the backend chosen by configuration, delegating every
//! operation to it.

use std::future::Future;
use std::time::Duration;

use crate::keys::Keys;
use crate::kv::{AggregateStore, HashFields, Prune};
use crate::log::EventLog;
use crate::memory::MemoryLog;
use crate::model::{
    AppendEvent, AppendOutcome, ApplyOutcome, ConsumerInfo, Entry, EntryMeta, Ops,
    PartitionFigures, PendingSummary,
};
use crate::redis_log::RedisLog;
use crate::{StoreArgs, StoreError};

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
        args.check().map_err(StoreError::Config)?;
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

    /// The same store on connections of its own whose every call is
    /// bounded by `call_timeout` (instead of `--redis-timeout`), for a
    /// reader in a process that also writes (`testbed all`): a large or
    /// slow reply then never queues ahead of an append or an apply, nor
    /// an abandoned read's reply behind it. The embedded log is shared
    /// as it is (its calls do not queue on a connection).
    pub fn for_reads(&self, call_timeout: Duration) -> Self {
        match self {
            Self::Memory(log) => Self::Memory(log.clone()),
            Self::Redis(log) => Self::Redis(log.with_own_connections(call_timeout)),
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

    async fn claim(
        &self,
        partition: u32,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<Entry>, StoreError> {
        delegate!(self, log => log.claim(partition, consumer, ids))
    }

    async fn consumers(&self, partition: u32) -> Result<Vec<ConsumerInfo>, StoreError> {
        delegate!(self, log => log.consumers(partition))
    }

    async fn pending_of(
        &self,
        partition: u32,
        owner: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        delegate!(self, log => log.pending_of(partition, owner, count))
    }

    async fn admit_devices(
        &self,
        partition: u32,
        devices: &[&str],
        cap: u64,
    ) -> Result<Vec<bool>, StoreError> {
        delegate!(self, log => log.admit_devices(partition, devices, cap))
    }

    async fn forget_consumer(&self, partition: u32, name: &str) -> Result<bool, StoreError> {
        delegate!(self, log => log.forget_consumer(partition, name))
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

    fn retention(&self) -> Duration {
        match self {
            Self::Memory(log) => log.retention(),
            Self::Redis(log) => log.retention(),
        }
    }
}

impl AggregateStore for AnyLog {
    async fn read_hashes(&self, keys: &[String]) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        delegate!(self, log => log.read_hashes(keys))
    }

    async fn read_records(&self, container: &str) -> Result<Vec<(String, HashFields)>, StoreError> {
        delegate!(self, log => log.read_records(container))
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

    async fn zset_range_lex(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        delegate!(self, log => log.zset_range_lex(key, after, limit))
    }

    async fn zset_len(&self, key: &str) -> Result<u64, StoreError> {
        delegate!(self, log => log.zset_len(key))
    }

    async fn zset_top(&self, key: &str, limit: usize) -> Result<Vec<(String, f64)>, StoreError> {
        delegate!(self, log => log.zset_top(key, limit))
    }

    async fn zset_scores(
        &self,
        key: &str,
        members: &[String],
    ) -> Result<Vec<Option<f64>>, StoreError> {
        delegate!(self, log => log.zset_scores(key, members))
    }

    async fn prune_index(&self, prune: Prune<'_>) -> Result<u64, StoreError> {
        delegate!(self, log => log.prune_index(prune))
    }
}
