//! The event log: where ingest appends and workers consume.
//!
//! One abstraction, [`EventLog`], over an append-only, partitioned log with
//! consumer-group semantics (read, ack, claim stale pending entries,
//! dead-letter, backlog and pending figures), whose apply writes the
//! worker's aggregates atomically with the ack; and [`AggregateStore`], the
//! small key-value surface the query and the worker's control read and
//! write outside those steps. Two backends implement both:
//!
//! - [`RedisLog`] — Redis Streams with one consumer group, on a single Redis
//!   or a Redis Cluster. Each atomic step is a Lua script whose keys all carry
//!   the partition's hash tag (`{prefix:pN}`), so every step runs in one slot.
//! - [`MemoryLog`] — an embedded, non-durable log with the same semantics,
//!   the default of `testbed all` when no Redis is configured.
//!
//! The same conformance tests run against both (see `tests/`).
//!
//! This crate does not interpret events: ingest validates and encodes
//! them, the worker decides what aggregates to write. It owns how bytes are
//! stored, deduplicated (by producer sequence or by event id), acknowledged
//! and trimmed, and it is the one home of the names both sides of the
//! aggregates use ([`keys`] and [`aggregates`]), so the worker that writes
//! them and the query that reads them cannot disagree.
//!
//! # Deduplication
//! An append is deduplicated one of two ways, both bounded in memory:
//! - **Idempotent producers** (a batch with a `producer_id` and a sequence
//!   above 0, as the simulator sends): by sequence, Kafka-style. Each
//!   partition remembers, per producer, the newest sequence and a bitmap of
//!   the last `--producer-window` sequences (8 KiB for 65536). A sequence
//!   already set is a retry: the whole batch is a duplicate. One older than
//!   the window is refused ([`StoreError::StaleSequence`]). The cost is a
//!   few commands per batch, not per event. Events repeated inside one
//!   batch are still dropped (in Rust, before the append). Each partition
//!   judges its own share of a request: a retry can be a duplicate on one
//!   partition and stale on another whose window moved on.
//! - **Everyone else**: by event id, within a window of the last
//!   `--dedupe-window` ids of the partition (a hash and a list in Redis,
//!   about 100 bytes per id).
//!
//! # Why the `redis` crate
//! `redis` (redis-rs) has a reconnecting [`redis::aio::ConnectionManager`],
//! an async Redis Cluster client and script helpers (EVALSHA with an EVAL
//! fallback) in one well-kept crate; `fred` is a fine alternative with a
//! larger API surface this project does not need.
//!
//! # Layout
//! - [`StoreArgs`] (`config.rs`): the flags (`--redis-url`, `--partitions`,
//!   ...); [`StoreError`] (`error.rs`): what can go wrong.
//! - [`EventLog`] (`log.rs`): the log: append, read, claim, apply, trim.
//! - [`AggregateStore`] (`kv.rs`): hash, sorted-set and record reads and
//!   small writes for the query and the worker's control.
//! - [`AnyLog`] (`any.rs`): the configured backend, delegating both traits;
//!   the only module that names both backends.
//! - [`model`]: entries, append and apply outcomes, aggregate operations.
//! - [`keys`]: every key name, in one place.
//! - [`aggregates`]: every field name inside the aggregate keys.
//! - [`memory`], [`redis_log`]: the backends.
//! - [`recent`]: [`recent::RecentKeys`], a bounded memory of what this
//!   process knows the store holds (ingest's admitted devices, the worker's
//!   written index memberships), so it need not ask or write again; uses
//!   nothing else of the crate.
//!
//! Dependencies point down: the backends use `log`, `kv`, `model` and
//! `keys`; `any` uses the backends; nothing uses `any` but callers.
#![forbid(unsafe_code)]

pub mod aggregates;
mod any;
mod config;
mod error;
pub mod keys;
mod kv;
mod log;
pub mod memory;
pub mod model;
pub mod recent;
pub mod redis_log;

pub use any::AnyLog;
pub use config::StoreArgs;
pub use error::StoreError;
pub use kv::{AggregateStore, HashFields, Prune};
pub use log::EventLog;
pub use memory::MemoryLog;
pub use model::{
    AppendEvent, AppendOutcome, ApplyOutcome, ConsumerInfo, Entry, EntryMeta, MAX_SEQUENCE, Op,
    Ops, PartitionFigures, PendingSummary, latency_bucket, latency_bucket_upper, merge_summary,
    parse_summary, partition_of, repeated_ids, summary_text,
};
pub use redis_log::RedisLog;
