//! The Redis backend: Redis Streams with one consumer group, on a single
//! Redis or a Redis Cluster.
//!
//! Every atomic step is one Lua script, or one `MULTI`, over keys of one
//! partition (one hash tag, one slot): `append.lua` (event-id dedupe, XADD
//! and counters); for an idempotent producer's batch, a `MULTI` of
//! `append_producer.lua` (dedupe by the producer's sequence, counters),
//! the `XADD` itself and `append_finish.lua`, which deletes that entry
//! again unless the first script marked the sequence as appended (the
//! events stay out of Lua, whose string hashing of a 40 KB blob cost more
//! Redis time than the `XADD`); and the apply, the exactly-once step
//! (pending check + XACK of a batch of entries + aggregate writes; in
//! dead-letter mode XACK + XADD to the dead-letter stream + the run
//! ledgers): `apply.lua`, or on a single Redis, for a normal apply whose
//! values were merged here, a `WATCH`ed `MULTI` of plain commands. Blocking reads use a dedicated connection per
//! partition so they never stall other calls.
//!
//! Layout of an entry: `m` (the [`EntryMeta`]), `b` (the events, each
//! length-delimited, as protobuf `repeated bytes`) and, when some events of
//! the request were duplicates, `d` (their positions, comma-separated),
//! which readers skip. Entries of one field `e` per event (the first
//! layout) are still read.
//!
//! Records (keys `<container>#<record>`, see [`crate::keys`]) are fields
//! of their container hash holding a MessagePack map: `apply.lua` merges
//! all the records of a container it touches with one `HMGET` and one
//! `HSET`, and [`AggregateStore::read_hashes`] decodes them to the same text as
//! any hash. Device-minutes are records of a per-minute container and
//! device states records of a per-partition one (pruned with the device
//! index, `prune.lua`), which took a 250-device apply from about 500 key
//! groups to a handful. Rankings of devices (`TopDevices`) read the
//! device-minute containers ([`AggregateStore::read_records`]) rather than
//! sorted sets of their own: the six per-minute `top:` sets an apply used
//! to write cost about half of its script time (250-member `ZADD`s) and
//! repeated what the records hold. Aggregates written in earlier layouts
//! (those sets, a hash per device-minute and per device) are no longer
//! read; they expire with `--retention`.
//!
//! A normal apply merges in Rust, not in the script (see `merge.rs`): the
//! worker reads the fields it touches with the partition's version
//! (`{tag}:version`, incremented by every apply and prune) in one `MULTI`,
//! and `apply.lua` writes the merged values only if the version is
//! unchanged; otherwise the apply is merged in the script as before. That
//! took the script of a 250-device apply from about 10 ms to 3 ms of
//! Redis time, during which appends wait. On a single Redis the merged
//! values skip Lua altogether: a transaction that `WATCH`es the version
//! writes them with `HSET` and `ZADD` (`RedisLog::commit_watched`).
//! Workers of an earlier release do not increment the version: while
//! both releases apply to the same Redis, a merged apply can overwrite an
//! old worker's concurrent one. Replace all workers at once when upgrading
//! across this change (Kubernetes: `strategy: Recreate`).
//!
//! Why scripts and not MULTI: each step reads before it writes (dedupe
//! window, pending check, min/max merges), and a script does that without
//! a round trip per key. Script time is what limits Redis here, so the
//! scripts take whole batches and each key costs one read and one write
//! whatever its number of fields; summaries are MessagePack arrays that
//! `cmsgpack` (C) unpacks and packs. Where the reads can be done before
//! and checked by a `WATCH` (the merged apply), a `MULTI` is cheaper still:
//! Lua hashes every byte of every argument it is given.
//! `redis-benchmark`'s XADD ceiling is what `bench/` compares against.
//!
//! # Layout
//! One file per step; each `impl RedisLog` block holds that step's methods.
//! - this file: [`RedisLog`], its connections and the timed call wrapper.
//! - `event_log`: the [`EventLog`] operations, built from the steps below;
//!   `kv`: the [`AggregateStore`] ones.
//! - `append`: appends (`append.lua`; the idempotent producer's `MULTI`).
//! - `apply`: how an apply is carried out (merged first, scripted when
//!   that raced) and what a merged apply commits; `Disposition` and
//!   `ReadAt` replace the script's string sentinels, encoded in `scripted`.
//! - `written`: the merged-values cache and reading an apply's fields.
//! - `watched`: the `WATCH`ed `MULTI` apply (single Redis).
//! - `scripted`: `apply.lua` invocations, keys and replies.
//! - `plan`: an apply's writes grouped as `apply.lua` takes them.
//! - `settings`: the settings every process on a prefix must agree on.
//! - `durability`: what Redis' persistence makes of an acknowledgement
//!   (read and logged at connect).
//! - `merge`: merging values in Rust; `msgpack`: the stored encodings;
//!   `parse`: stream replies; `conn`: connections (and reconnecting after
//!   a Redis Cluster failover).
//!
//! Dependencies point down the list: `event_log` uses the steps, `apply`
//! uses `written`, `watched` and `scripted`, and those use `plan`,
//! `merge`, `msgpack` and this file's helpers; none uses `event_log`.

mod append;
mod apply;
mod conn;
mod durability;
mod event_log;
mod kv;
mod merge;
mod msgpack;
mod parse;
mod plan;
mod scripted;
mod settings;
#[cfg(test)]
mod tests;
mod watched;
mod written;

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use redis::Script;
use tokio::sync::Mutex;

use self::conn::{Conn, SharedConn, connect, connect_dedicated};
use crate::keys::{Keys, record_parts};
use crate::kv::{AggregateStore, HashFields, Prune};
use crate::log::EventLog;
use crate::model::{
    AppendEvent, AppendOutcome, ApplyOutcome, ConsumerInfo, Entry, EntryMeta, Op, Ops,
    PartitionFigures, PendingSummary, latency_bucket, repeated_ids,
};
use crate::{StoreArgs, StoreError};

// The steps' items, for the sibling modules (each `use super::*`).
#[allow(clippy::wildcard_imports)]
use self::{append::*, apply::*, msgpack::*, plan::*, written::*};
// Items only the tests name besides their own module.
#[cfg(test)]
#[allow(clippy::wildcard_imports)]
use self::watched::*;

/// How many entries the dead-letter stream of a partition keeps (approximate).
const DEAD_LETTER_MAX_LEN: u64 = 100_000;

/// The next reply of a transaction as `T`; `what` names it in the error.
fn next_reply<T: redis::FromRedisValue>(
    replies: &mut impl Iterator<Item = redis::Value>,
    what: &str,
) -> Result<T, StoreError> {
    redis::from_redis_value(replies.next().unwrap_or(redis::Value::Nil))
        .map_err(|e| StoreError::Protocol(format!("{what}: {e}")))
}

/// The partition version a read returned (`0` when it was never set).
fn parse_version(reply: Option<redis::Value>) -> Result<String, StoreError> {
    match reply {
        Some(redis::Value::BulkString(v)) => Ok(String::from_utf8_lossy(&v).into_owned()),
        Some(redis::Value::SimpleString(v)) => Ok(v),
        Some(redis::Value::Int(v)) => Ok(v.to_string()),
        Some(redis::Value::Nil) => Ok("0".to_owned()),
        other => Err(StoreError::Protocol(format!(
            "unexpected version reply {other:?}"
        ))),
    }
}

/// The Redis log. Cheap to clone.
#[derive(Clone)]
pub struct RedisLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLog")
            .field("partitions", &self.inner.args.partitions)
            .field("cluster", &self.inner.args.redis_cluster)
            .finish()
    }
}

struct Inner {
    args: StoreArgs,
    keys: Keys,
    shared: SharedConn,
    readers: Vec<Mutex<Option<Conn>>>,
    /// Per partition, the connection of its merged applies on a single
    /// Redis (see [`RedisLog::commit_watched`]): `WATCH` is per connection.
    appliers: Vec<Mutex<Option<redis::aio::MultiplexedConnection>>>,
    append: Script,
    append_producer: Script,
    /// Source of `append_finish.lua`, sent with `EVAL` (see
    /// [`RedisLog::append_idempotent`]).
    append_finish: &'static str,
    apply: Script,
    /// `forget_consumer.lua`.
    forget_consumer: Script,
    /// `admit.lua`.
    admit: Script,
    prune: Script,
    /// Per partition, what this process's last merged apply wrote
    /// ([`Written`]); taken out while an apply runs.
    written: Vec<std::sync::Mutex<Option<Written>>>,
    /// `redis_command_duration_seconds{command}`.
    latency: opentelemetry::metrics::Histogram<f64>,
    /// Whether the settings recorded for the prefix were last found equal
    /// to this process's (see `settings.rs`).
    settings_agreed: std::sync::atomic::AtomicBool,
    /// The settings record's epoch this process last read (see
    /// `settings.rs`); every append carries it.
    epoch: std::sync::Mutex<Option<Arc<str>>>,
}

impl RedisLog {
    /// A log on the Redis named by `args`. Connecting is lazy and retried,
    /// so a process can start before Redis is up: calls fail as
    /// `Unavailable` until it answers.
    pub async fn connect(args: &StoreArgs) -> Result<Self, StoreError> {
        let log = Self::unconnected(args);
        if let Err(err) = log.conn().await {
            tracing::warn!(error = %err, "Redis not reachable yet; will keep trying");
        } else {
            // Flags that disagree with the prefix's recorded settings stop
            // the process here; an unreachable store is checked later (by
            // the health probe, and before any read or write).
            match log.agree_settings().await {
                Err(err @ StoreError::Disagreement { .. }) => return Err(err),
                Err(err) => {
                    tracing::warn!(error = %err, "settings not checked yet; will check before any read or write")
                }
                Ok(()) => {}
            }
            log.log_durability().await;
        }
        Ok(log)
    }

    /// A log on the Redis of `args` that has not connected yet.
    fn unconnected(args: &StoreArgs) -> Self {
        let log = Self {
            inner: Arc::new(Inner {
                args: args.clone(),
                keys: Keys::new(&args.key_prefix),
                shared: SharedConn::new(),
                readers: (0..args.partitions).map(|_| Mutex::new(None)).collect(),
                appliers: (0..args.partitions).map(|_| Mutex::new(None)).collect(),
                append: Script::new(include_str!("append.lua")),
                append_producer: Script::new(include_str!("append_producer.lua")),
                append_finish: include_str!("append_finish.lua"),
                apply: Script::new(include_str!("apply.lua")),
                prune: Script::new(include_str!("prune.lua")),
                forget_consumer: Script::new(include_str!("forget_consumer.lua")),
                admit: Script::new(include_str!("admit.lua")),
                written: (0..args.partitions)
                    .map(|_| std::sync::Mutex::new(None))
                    .collect(),
                latency: opentelemetry::global::meter("testbed-stream")
                    .f64_histogram("redis.command.duration")
                    .with_unit("s")
                    .with_description(
                        "Redis calls (commands and scripts), including failures and timeouts",
                    )
                    .with_boundaries(vec![
                        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                        0.25, 0.5, 1.0,
                    ])
                    .build(),
                settings_agreed: std::sync::atomic::AtomicBool::new(false),
                epoch: std::sync::Mutex::new(None),
            }),
        };
        if args.redis_cluster && !args.redis_topology_refresh.is_zero() {
            tokio::spawn(refresh_topology(
                Arc::downgrade(&log.inner),
                args.redis_topology_refresh,
            ));
        }
        log
    }

    /// This log on connections of its own (see [`crate::AnyLog::for_reads`]),
    /// every call bounded by `call_timeout`; the settings this process
    /// agreed with the store stay agreed.
    pub fn with_own_connections(&self, call_timeout: Duration) -> Self {
        let args = StoreArgs {
            redis_timeout: call_timeout,
            ..self.inner.args.clone()
        };
        let log = Self::unconnected(&args);
        let agreed = self
            .inner
            .settings_agreed
            .load(std::sync::atomic::Ordering::Relaxed);
        log.inner
            .settings_agreed
            .store(agreed, std::sync::atomic::Ordering::Relaxed);
        log
    }

    async fn load_script(&self, script: &Script) -> Result<(), StoreError> {
        self.call("script-load", |mut c| async move {
            script.load_async(&mut c).await.map(drop)
        })
        .await
    }

    async fn conn(&self) -> Result<(Conn, u64), StoreError> {
        self.inner.shared.get(&self.inner.args).await
    }

    /// Runs `f` on the shared connection, bounded by `--redis-timeout`, and
    /// records its latency under `what`. On Redis Cluster, a call failing
    /// as unavailable makes the next one reconnect ([`SharedConn`]).
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let (conn, generation) = self.conn().await?;
        let result = self
            .timed(what, async {
                f(conn).await.map_err(StoreError::from_redis)
            })
            .await;
        if let Err(err) = &result {
            self.inner.shared.failed(generation, err);
        }
        result
    }

    /// Runs `call` within `--redis-timeout` and records its duration as
    /// `what` (`redis_command_duration_seconds`).
    async fn timed<T>(
        &self,
        what: &'static str,
        call: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let timeout = self.inner.args.redis_timeout;
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::Unavailable(format!(
                "{what} timed out after {timeout:?}"
            ))),
        };
        self.inner.latency.record(
            started.elapsed().as_secs_f64(),
            &[opentelemetry::KeyValue::new("command", what)],
        );
        result
    }

    fn group(&self) -> &'static str {
        self.inner.keys.group()
    }
}

/// `--redis-topology-refresh`: every `period`, the shared connection is
/// renewed ([`SharedConn::renew`]) while the log is alive.
async fn refresh_topology(inner: std::sync::Weak<Inner>, period: Duration) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(err) = inner.shared.renew(&inner.args).await {
            tracing::warn!(error = %err, "periodic Redis Cluster topology refresh failed; the current connection stays");
        }
    }
}
