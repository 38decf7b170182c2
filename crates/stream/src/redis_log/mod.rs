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
//! `HSET`, and [`EventLog::read_hashes`] decodes them to the same text as
//! any hash. Device-minutes are records of a per-minute container and
//! device states records of a per-partition one (pruned with the device
//! index, `prune.lua`), which took a 250-device apply from about 500 key
//! groups to a handful. Rankings of devices (`TopDevices`) read the
//! device-minute containers ([`EventLog::read_records`]) rather than
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

mod conn;
mod merge;
mod parse;

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use redis::Script;
use tokio::sync::{Mutex, OnceCell};

use self::conn::{Conn, connect, connect_dedicated};
use crate::keys::{Keys, record_parts};
use crate::log::{EventLog, HashFields};
use crate::model::{
    AppendEvent, AppendOutcome, ApplyOutcome, Entry, EntryMeta, Op, Ops, PartitionFigures,
    PendingSummary, latency_bucket, repeated_ids,
};
use crate::{StoreArgs, StoreError};

/// How many entries the dead-letter stream of a partition keeps (approximate).
const DEAD_LETTER_MAX_LEN: u64 = 100_000;

/// At most this many writes go in one group of `apply.lua` (Lua's `unpack`
/// is limited to a few thousand values).
const MAX_GROUP_WRITES: usize = 1000;

/// A summary as a MessagePack array of four float64, what `apply.lua`
/// unpacks (`cmsgpack`, in C) to merge it.
fn msgpack_summary(summary: &[f64; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(37);
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, 4);
    for v in summary {
        let _ = rmp::encode::write_f64(&mut out, *v);
    }
    out
}

/// A stored hash value as text: a summary (a MessagePack array, which no
/// UTF-8 text starts with) as [`summary_text`], anything else as UTF-8.
fn stored_text(bytes: Vec<u8>) -> String {
    if let Some(summary) = unpack_summary(&bytes) {
        return crate::model::summary_text(&summary);
    }
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Decodes a MessagePack array of four numbers (Lua's `cmsgpack` writes
/// whole numbers as integers and exact ones as float32).
fn unpack_summary(bytes: &[u8]) -> Option<[f64; 4]> {
    let mut rd = bytes;
    let summary = read_summary(&mut rd)?;
    rd.is_empty().then_some(summary)
}

/// Reads a summary (an array of four numbers) off the front of `rd`.
fn read_summary(rd: &mut &[u8]) -> Option<[f64; 4]> {
    if !matches!(rd.first(), Some(0x90..=0x9f | 0xdc)) {
        return None;
    }
    if rmp::decode::read_array_len(rd).ok()? != 4 {
        return None;
    }
    let mut out = [0.0; 4];
    for slot in &mut out {
        *slot = read_number(rd)?;
    }
    Some(out)
}

/// Reads a number (an integer, float32 or float64) off the front of `rd`.
fn read_number(rd: &mut &[u8]) -> Option<f64> {
    Some(match rd.first()? {
        0xca => f64::from(rmp::decode::read_f32(rd).ok()?),
        0xcb => rmp::decode::read_f64(rd).ok()?,
        _ => rmp::decode::read_int::<i64, _>(rd).ok()? as f64,
    })
}

/// Reads a string off the front of `rd`.
fn read_text(rd: &mut &[u8]) -> Option<String> {
    let len = rmp::decode::read_str_len(rd).ok()? as usize;
    let (text, rest) = (rd.get(..len)?, rd.get(len..)?);
    *rd = rest;
    Some(String::from_utf8_lossy(text).into_owned())
}

/// The fields of a record as `apply.lua` packs it (a MessagePack map of
/// numbers, strings and summaries), as text the way every backend reads
/// hash fields: integers in full, other numbers in Rust's shortest
/// round-trip form, summaries as [`crate::model::summary_text`]. Sorted by
/// field; `None` if it is not such a map.
fn unpack_record(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    let mut rd = bytes;
    let len = rmp::decode::read_map_len(&mut rd).ok()?;
    let mut fields = Vec::with_capacity(len as usize);
    for _ in 0..len {
        let name = read_text(&mut rd)?;
        let value = match rd.first()? {
            0xa0..=0xbf | 0xd9..=0xdb => read_text(&mut rd)?,
            0x90..=0x9f | 0xdc => crate::model::summary_text(&read_summary(&mut rd)?),
            0xca | 0xcb => read_number(&mut rd)?.to_string(),
            _ => rmp::decode::read_int::<i64, _>(&mut rd).ok()?.to_string(),
        };
        fields.push((name, value));
    }
    fields.sort();
    rd.is_empty().then_some(fields)
}

/// The writes of one key, as `apply.lua` takes them.
struct Group<'a> {
    key: u16,
    sorted_set: bool,
    ttl: u64,
    writes: Vec<&'a Op>,
}

impl<'a> Group<'a> {
    /// A group of `key` with no writes yet, and the fields it names.
    fn empty(key: u16, sorted_set: bool) -> (Self, std::collections::HashSet<&'a str>) {
        let group = Self {
            key,
            sorted_set,
            ttl: 0,
            writes: Vec::new(),
        };
        (group, std::collections::HashSet::new())
    }
}

/// `ops` grouped by key (in order of first use), expiries folded into each
/// group's time to live, large groups split.
fn groups(ops: &Ops) -> Vec<Group<'_>> {
    // Per key: its groups so far; a field written again, or a full group,
    // starts a new group of the same key (applied after, so it sees the
    // first one's result).
    let mut by_key: Vec<Vec<(Group<'_>, std::collections::HashSet<&str>)>> = Vec::new();
    by_key.resize_with(ops.keys.len(), Vec::new);
    let mut ttl = vec![0u64; ops.keys.len()];
    let mut order = Vec::new();
    for op in &ops.ops {
        let (key, sorted_set, field) = op.target();
        let Some(groups) = by_key.get_mut(usize::from(key)) else {
            continue;
        };
        if groups.is_empty() {
            order.push(key);
        }
        let Some(field) = field else {
            if let (Op::Expire(_, secs), Some(t)) = (op, ttl.get_mut(usize::from(key))) {
                *t = (*t).max(*secs);
            }
            if groups.is_empty() {
                groups.push(Group::empty(key, sorted_set));
            }
            continue;
        };
        let fresh = match groups.last() {
            None => true,
            Some((g, fields)) => g.writes.len() >= MAX_GROUP_WRITES || fields.contains(field),
        };
        if fresh {
            groups.push(Group::empty(key, sorted_set));
        }
        if let Some((group, fields)) = groups.last_mut() {
            group.sorted_set = sorted_set;
            group.writes.push(op);
            fields.insert(field);
        }
    }
    let mut out = Vec::new();
    for key in order {
        let Some(groups) = by_key.get_mut(usize::from(key)) else {
            continue;
        };
        let secs = ttl.get(usize::from(key)).copied().unwrap_or(0);
        for (mut group, _) in groups.drain(..) {
            group.ttl = secs;
            out.push(group);
        }
    }
    out
}

/// At most this many records go in one records group of `apply.lua`.
const MAX_GROUP_RECORDS: usize = 500;

/// One group of `apply.lua`: the writes of one key, or of several records
/// of one container (see [`crate::keys`], "Records").
enum Planned<'a> {
    Key(Group<'a>),
    Records {
        /// Index into the containers passed after the aggregate keys.
        container: usize,
        ttl: u64,
        /// (record name, its writes).
        records: Vec<(&'a str, Group<'a>)>,
    },
}

/// [`groups`], with the groups of record keys gathered into records groups
/// of their container (in order: a record split over several groups lands
/// in successive records groups, so each sees the one before), and the
/// containers named.
fn plan(ops: &Ops) -> (Vec<Planned<'_>>, Vec<&str>) {
    let mut out: Vec<Planned<'_>> = Vec::new();
    let mut containers: Vec<&str> = Vec::new();
    // Per container: its open records group (index into `out`) and the
    // records in it.
    let mut open: std::collections::HashMap<&str, (usize, std::collections::HashSet<&str>)> =
        std::collections::HashMap::new();
    for group in groups(ops) {
        let parts = ops
            .keys
            .get(usize::from(group.key))
            .and_then(|key| record_parts(key))
            .filter(|_| !group.sorted_set);
        let Some((container, record)) = parts else {
            out.push(Planned::Key(group));
            continue;
        };
        let c = match containers.iter().position(|c| *c == container) {
            Some(c) => c,
            None => {
                containers.push(container);
                containers.len() - 1
            }
        };
        let reusable = open
            .get(container)
            .is_some_and(|(_, names)| names.len() < MAX_GROUP_RECORDS && !names.contains(record));
        if !reusable {
            out.push(Planned::Records {
                container: c,
                ttl: 0,
                records: Vec::new(),
            });
            open.insert(container, (out.len() - 1, std::collections::HashSet::new()));
        }
        let Some((at, names)) = open.get_mut(container) else {
            continue;
        };
        if let Some(Planned::Records { ttl, records, .. }) = out.get_mut(*at) {
            *ttl = (*ttl).max(group.ttl);
            // A record with no writes (an expiry only) only sets the ttl.
            if !group.writes.is_empty() {
                names.insert(record);
                records.push((record, group));
            }
        }
    }
    (out, containers)
}

/// The op letters of `writes`, as `apply.lua` reads them.
fn letters(writes: &[&Op]) -> String {
    writes
        .iter()
        .map(|op| match op {
            Op::HashIncr(..) => 'I',
            Op::HashIncrFloat(..) => 'F',
            Op::HashMin(..) => 'm',
            Op::HashMax(..) => 'M',
            Op::HashSet(..) => 'S',
            Op::HashSummary(..) => 'U',
            Op::ZIncr(..) => 'Z',
            Op::ZMax(..) => 'X',
            // Not in a group's writes: folded into its ttl.
            Op::Expire(..) => '-',
        })
        .collect()
}

/// The fields (or members), then the values, of `writes`.
fn push_writes(invocation: &mut redis::ScriptInvocation<'_>, writes: &[&Op]) {
    for op in writes {
        match op {
            Op::HashIncr(_, f, _)
            | Op::HashIncrFloat(_, f, _)
            | Op::HashMin(_, f, _)
            | Op::HashMax(_, f, _)
            | Op::HashSet(_, f, _)
            | Op::HashSummary(_, f, _)
            | Op::ZIncr(_, f, _)
            | Op::ZMax(_, f, _) => invocation.arg(f),
            Op::Expire(..) => continue,
        };
    }
    for op in writes {
        match op {
            Op::HashIncr(_, _, v) => invocation.arg(v),
            // Floats as Rust's shortest round-trip text (`3`, `0.25`).
            Op::HashIncrFloat(_, _, v)
            | Op::HashMin(_, _, v)
            | Op::HashMax(_, _, v)
            | Op::ZIncr(_, _, v)
            | Op::ZMax(_, _, v) => invocation.arg(v.to_string()),
            Op::HashSet(_, _, v) => invocation.arg(v),
            Op::HashSummary(_, _, v) => invocation.arg(msgpack_summary(v)),
            Op::Expire(..) => continue,
        };
    }
}

/// Values merged outside the script, and the version they were read at.
struct Merged<'o> {
    version: String,
    targets: Vec<merge::Target<'o>>,
    /// Per target, the values of its fields.
    values: Vec<Vec<Vec<u8>>>,
    /// Per target, whether each value differs from what the field held.
    changed: Vec<Vec<bool>>,
}

/// Redis answered NOSCRIPT: it does not have a script sent by its hash.
#[derive(Debug)]
struct ScriptMissing;

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

/// What one merged apply of a partition wrote, and the version it left:
/// the next apply of the partition takes its current values from here
/// instead of reading them, as long as the version it reads (or, when
/// every value is here, the version `apply.lua` checks) is still this one.
///
/// Only applies and prunes change aggregates, and both move the version,
/// so an unchanged version means these are still the values in Redis, with
/// two exceptions handled here: a key's time to live (a value is used only
/// until [`EXPIRY_MARGIN`] before its key can have expired; a key written
/// without an expiry is taken to have none, as the fold writes every key
/// with an expiry every time or never) and eviction under `maxmemory`,
/// which the testbed does not support anyway (evicted stream entries would
/// be lost): run Redis with `maxmemory-policy noeviction`.
#[derive(Debug)]
struct Written {
    /// The version after the apply (the one it read, plus one).
    version: String,
    /// By key: when it may expire (`None`: never) and its fields' values.
    keys: std::collections::HashMap<String, WrittenKey>,
}

#[derive(Debug)]
struct WrittenKey {
    expires: Option<std::time::Instant>,
    fields: std::collections::HashMap<String, Vec<u8>>,
}

/// A written value is not used within this long of its key's expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(2);

impl Written {
    /// What `merged` wrote at `sent` (just before its script was sent, so
    /// every expiry here is no later than Redis' own), if its version is
    /// a counter.
    fn after(merged: Merged<'_>, sent: std::time::Instant) -> Option<Self> {
        let version = merged.version.parse::<u64>().ok()?.checked_add(1)?;
        let keys = merged
            .targets
            .iter()
            .zip(merged.values)
            .map(|(t, values)| {
                let expires = (t.ttl > 0)
                    .then(|| sent.checked_add(Duration::from_secs(t.ttl)))
                    .flatten();
                let fields = t
                    .fields
                    .iter()
                    .map(|(name, _)| (*name).to_owned())
                    .zip(values)
                    .collect();
                (t.key.to_owned(), WrittenKey { expires, fields })
            })
            .collect();
        Some(Self {
            version: version.to_string(),
            keys,
        })
    }

    /// The value of `field` of `key`, if written here and not about to
    /// expire at `now`.
    fn get(&self, key: &str, field: &str, now: std::time::Instant) -> Option<&[u8]> {
        let k = self.keys.get(key)?;
        if k.expires.is_some_and(|e| e <= now + EXPIRY_MARGIN) {
            return None;
        }
        k.fields.get(field).map(Vec::as_slice)
    }
}

/// How the pending check of a watched apply came out.
#[derive(Debug, PartialEq)]
enum Watched {
    /// The version is the one read and every entry is pending; the
    /// server's clock, ms since the epoch, for the latency histograms.
    Ready { now_ms: u64 },
    /// The version moved since it was read.
    Raced,
    /// These entries (indices) are no longer pending.
    NotPending(Vec<usize>),
}

/// The end-to-end latency histogram increments of `ops` as `apply.lua`
/// makes them: per (key, bucket of the entry's age at `now_ms`), the
/// events counted, summed, in order of first use.
fn e2e_increments<'o>(ops: &'o Ops, entries: &[Entry], now_ms: u64) -> Vec<((&'o str, u32), u64)> {
    let mut out: Vec<((&'o str, u32), u64)> = Vec::new();
    for &(key, entry, weight) in &ops.e2e {
        let (Some(key), Some(entry)) =
            (ops.keys.get(usize::from(key)), entries.get(entry as usize))
        else {
            continue;
        };
        let age = now_ms.saturating_sub(entry.appended_ms());
        let slot = (key.as_str(), latency_bucket(age));
        match out.iter_mut().find(|(s, _)| *s == slot) {
            Some((_, sum)) => *sum += weight,
            None => out.push((slot, weight)),
        }
    }
    out
}

/// What `apply.lua` answered.
enum Applied {
    Done(ApplyOutcome),
    /// The partition's version moved since the caller read it.
    Raced,
}

/// The script's index (1-based) of the first aggregate key, after the
/// stream, the stats, the dead letters and the version.
const FIRST_AGGREGATE_KEY: u32 = 5;

/// The aggregate keys and containers an `apply.lua` invocation names,
/// each once, in order of first use (indices from [`FIRST_AGGREGATE_KEY`]).
/// Only keys the script touches are named: a record key (`<container>#…`)
/// is written through its container, and naming the 500 records of a
/// 250-device apply cost Redis a Lua string each (about a third of the
/// script's arguments).
#[derive(Default)]
struct ScriptKeys<'a> {
    names: Vec<&'a str>,
    index: foldhash::HashMap<&'a str, u32>,
}

impl<'a> ScriptKeys<'a> {
    /// The script's index of `name`, naming it if it is new.
    fn index(&mut self, name: &'a str) -> u32 {
        *self.index.entry(name).or_insert_with(|| {
            self.names.push(name);
            self.names.len() as u32 - 1 + FIRST_AGGREGATE_KEY
        })
    }

    /// The script's index of aggregate key `i` of `ops`.
    fn aggregate(&mut self, ops: &'a Ops, i: u16) -> u32 {
        match ops.keys.get(usize::from(i)) {
            Some(name) => self.index(name),
            // `Ops` only refers to its own keys; an index past them would
            // be a bug of the fold, and the script reports a nil key.
            None => 0,
        }
    }

    /// Names the keys, in index order, after the four fixed ones.
    fn name_in(self, invocation: &mut redis::ScriptInvocation<'_>) {
        for name in self.names {
            invocation.key(name);
        }
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

/// Every event of an append in one blob (each length-delimited, as
/// protobuf `repeated bytes`): one stream field and one command argument
/// per batch instead of one per event.
fn blob<'a, 'b: 'a>(events: impl Iterator<Item = &'a AppendEvent<'b>> + Clone) -> Vec<u8> {
    let mut blob = Vec::with_capacity(events.clone().map(|e| e.bytes.len() + 3).sum());
    for event in events {
        prost::encoding::encode_varint(event.bytes.len() as u64, &mut blob);
        blob.extend_from_slice(&event.bytes);
    }
    blob
}

struct Inner {
    args: StoreArgs,
    keys: Keys,
    shared: OnceCell<Conn>,
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
    prune: Script,
    /// Per partition, what this process's last merged apply wrote
    /// ([`Written`]); taken out while an apply runs.
    written: Vec<std::sync::Mutex<Option<Written>>>,
    /// `redis_command_duration_seconds{command}`.
    latency: opentelemetry::metrics::Histogram<f64>,
}

impl RedisLog {
    /// A log on the Redis named by `args`. Connecting is lazy and retried,
    /// so a process can start before Redis is up: calls fail as
    /// `Unavailable` until it answers.
    pub async fn connect(args: &StoreArgs) -> Result<Self, StoreError> {
        let log = Self {
            inner: Arc::new(Inner {
                args: args.clone(),
                keys: Keys::new(&args.key_prefix),
                shared: OnceCell::new(),
                readers: (0..args.partitions).map(|_| Mutex::new(None)).collect(),
                appliers: (0..args.partitions).map(|_| Mutex::new(None)).collect(),
                append: Script::new(include_str!("append.lua")),
                append_producer: Script::new(include_str!("append_producer.lua")),
                append_finish: include_str!("append_finish.lua"),
                apply: Script::new(include_str!("apply.lua")),
                prune: Script::new(include_str!("prune.lua")),
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
            }),
        };
        if let Err(err) = log.conn().await {
            tracing::warn!(error = %err, "Redis not reachable yet; will keep trying");
        }
        Ok(log)
    }

    /// [`EventLog::append`] of an idempotent producer's batch: deduplicated
    /// by `sequence` (`append_producer.lua`), repeats inside the batch
    /// dropped here.
    async fn append_idempotent(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
        producer: &str,
        sequence: u64,
    ) -> Result<AppendOutcome, StoreError> {
        let keys = &self.inner.keys;
        let window = self.inner.args.producer_window.next_multiple_of(8);
        let repeated = repeated_ids(events);
        let is_repeat = |i: usize| repeated.binary_search(&(i as u32)).is_ok();
        // Per run ledger: (run, events in the blob, repeats left out).
        let mut runs: Vec<(&str, u64, u64)> = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if event.run_id.is_empty() {
                continue;
            }
            let slot = match runs.iter().position(|r| r.0 == event.run_id) {
                Some(slot) => slot,
                None => {
                    runs.push((event.run_id, 0, 0));
                    runs.len() - 1
                }
            };
            if is_repeat(i) {
                runs[slot].2 += 1;
            } else {
                runs[slot].1 += 1;
            }
        }
        // One MULTI: the bookkeeping script (no events in it), the XADD,
        // and the script that undoes the XADD unless the first marked the
        // sequence. The finishing script is sent with EVAL (its source), so
        // it always runs; the first with EVALSHA, and if Redis lost it
        // (NOSCRIPT) its decision is missing, the XADD is undone, and the
        // whole is sent again once the script is loaded.
        let fresh = events.len() - repeated.len();
        let token = format!("{producer}/{sequence}");
        let decision = keys.append_decision(partition);
        let stream = keys.stream(partition);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EVALSHA")
            .arg(self.inner.append_producer.get_hash())
            .arg(4 + runs.len())
            .arg(keys.stats(partition))
            .arg(keys.producer(partition, producer))
            .arg(keys.producer_seen(partition, producer))
            .arg(&decision);
        for (run, _, _) in &runs {
            pipe.arg(keys.run(partition, run));
        }
        pipe.arg(window)
            .arg(sequence)
            .arg(&token)
            .arg(self.inner.args.retention.as_secs().max(1))
            .arg(fresh)
            .arg(repeated.len());
        for (k, (_, in_blob, repeats)) in runs.iter().enumerate() {
            pipe.arg(k + 5).arg(in_blob).arg(repeats);
        }
        if fresh > 0 {
            pipe.cmd("XADD")
                .arg(&stream)
                .arg("*")
                .arg("m")
                .arg(meta.encode_to_vec())
                .arg("b")
                .arg(blob(
                    events
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| !is_repeat(*i))
                        .map(|(_, e)| e),
                ));
            pipe.cmd("EVAL")
                .arg(self.inner.append_finish)
                .arg(2)
                .arg(&stream)
                .arg(&decision)
                .arg(&token);
        }
        let mut replies = match self.append_transaction(&pipe).await? {
            Ok(replies) => replies,
            Err(ScriptMissing) => {
                self.load_script(&self.inner.append_producer).await?;
                self.append_transaction(&pipe)
                    .await?
                    .map_err(|ScriptMissing| {
                        StoreError::Protocol("append script missing after loading it".to_owned())
                    })?
            }
        };
        let (state, highest, backlog): (u8, String, i64) =
            next_reply(&mut replies, "append reply")?;
        let entry_id = if fresh > 0 {
            let id: Option<String> = next_reply(&mut replies, "append XADD reply")?;
            let kept: i64 = next_reply(&mut replies, "append finish reply")?;
            if (kept == 1) != (state == 0) {
                return Err(StoreError::Protocol(format!(
                    "append of {token}: state {state} but the entry was {}",
                    if kept == 1 { "kept" } else { "undone" }
                )));
            }
            id.filter(|_| kept == 1)
        } else {
            None
        };
        match state {
            0 => Ok(AppendOutcome {
                entry_id,
                duplicates: repeated,
                backlog: Some(backlog.max(0) as u64),
            }),
            1 => Ok(AppendOutcome {
                entry_id: None,
                duplicates: (0..events.len() as u32).collect(),
                backlog: Some(backlog.max(0) as u64),
            }),
            _ => Err(StoreError::StaleSequence {
                producer_id: producer.to_owned(),
                sequence,
                highest: highest.parse().unwrap_or(0),
                window,
            }),
        }
    }

    /// Runs the `MULTI` of an idempotent append: its replies, or
    /// [`ScriptMissing`] when Redis did not have the bookkeeping script (the
    /// rest of the transaction then changed nothing: see
    /// `append_finish.lua`).
    async fn append_transaction(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Result<std::vec::IntoIter<redis::Value>, ScriptMissing>, StoreError> {
        let no_script =
            |kind: Option<redis::ServerErrorKind>| kind == Some(redis::ServerErrorKind::NoScript);
        let replies = self
            .call("append", |mut c| async move {
                match pipe.query_async::<Vec<redis::Value>>(&mut c).await {
                    Err(err)
                        if err.kind()
                            == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                    {
                        Ok(Err(ScriptMissing))
                    }
                    other => other.map(Ok),
                }
            })
            .await?;
        let Ok(replies) = replies else {
            return Ok(Err(ScriptMissing));
        };
        match replies.first() {
            Some(redis::Value::ServerError(err)) if no_script(err.kind()) => Ok(Err(ScriptMissing)),
            Some(redis::Value::ServerError(err)) => Err(StoreError::Protocol(format!(
                "append script failed: {} {}",
                err.code(),
                err.details().unwrap_or_default()
            ))),
            _ => Ok(Ok(replies.into_iter())),
        }
    }

    async fn load_script(&self, script: &Script) -> Result<(), StoreError> {
        self.call("script-load", |mut c| async move {
            script.load_async(&mut c).await.map(drop)
        })
        .await
    }

    async fn conn(&self) -> Result<Conn, StoreError> {
        let args = &self.inner.args;
        self.inner
            .shared
            .get_or_try_init(|| connect(args, args.redis_timeout))
            .await
            .cloned()
    }

    /// Runs `f` on the shared connection, bounded by `--redis-timeout`, and
    /// records its latency under `what`.
    async fn call<T, F, Fut>(&self, what: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.conn().await?;
        self.timed(what, async {
            f(conn).await.map_err(StoreError::from_redis)
        })
        .await
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

    /// The one atomic step of `apply.lua`: ack `entries` (all of
    /// `partition`) and apply `ops`, counting them processed, or
    /// dead-lettered with `reason` when not empty. A normal apply merges
    /// here first ([`merge`]); the script merges when that raced.
    async fn ack_with(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        reason: &str,
        ops: &Ops,
        what: &'static str,
    ) -> Result<ApplyOutcome, StoreError> {
        if entries.is_empty() {
            return Ok(ApplyOutcome::Applied);
        }
        if reason.is_empty() {
            if let Some(outcome) = self.apply_merged(partition, entries, events, ops).await? {
                return Ok(outcome);
            }
            // Another apply or a prune of the partition wrote between the
            // read and the script: merge in the script, which cannot race.
            tracing::debug!(
                partition,
                "apply raced another writer; merging in the script"
            );
        }
        let (mut invocation, mut keys) =
            self.invocation(partition, entries, events, reason, "*", ops);
        let (plan, containers) = plan(ops);
        for planned in &plan {
            match planned {
                Planned::Key(group) => {
                    invocation
                        .arg(keys.aggregate(ops, group.key))
                        .arg(if group.sorted_set { "Z" } else { "H" })
                        .arg(group.writes.len())
                        .arg(group.ttl)
                        .arg(letters(&group.writes));
                    push_writes(&mut invocation, &group.writes);
                }
                Planned::Records {
                    container,
                    ttl,
                    records,
                } => {
                    let container = containers.get(*container).copied().unwrap_or_default();
                    invocation
                        .arg(keys.index(container))
                        .arg("R")
                        .arg(records.len())
                        .arg(*ttl);
                    for (name, group) in records {
                        invocation
                            .arg(*name)
                            .arg(group.writes.len())
                            .arg(letters(&group.writes));
                        push_writes(&mut invocation, &group.writes);
                    }
                }
            }
        }
        keys.name_in(&mut invocation);
        match self.run_apply(invocation, what).await? {
            Applied::Done(outcome) => Ok(outcome),
            Applied::Raced => Err(StoreError::Protocol(
                "apply refused a version it was not given".into(),
            )),
        }
    }

    /// A normal apply whose values are merged here ([`merge`]): one `MULTI`
    /// reads the partition's version and every field `ops` writes, then
    /// `apply.lua` writes the merged values if the version is unchanged.
    /// `None` when it was not (nothing was changed).
    async fn apply_merged(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        // Taken out, so whatever happens below (an error, a refusal) the
        // next apply reads again unless this one succeeds.
        let written = self.written(partition).and_then(|w| match w.lock() {
            Ok(mut w) => w.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        });
        let snapshot = match written {
            Some(w) => self.merged_with(partition, ops, &w).await?,
            None => self.merged(partition, ops).await?,
        };
        let sent = std::time::Instant::now();
        let outcome = self
            .commit_merged(partition, entries, events, ops, &snapshot)
            .await?;
        if outcome == Some(ApplyOutcome::Applied)
            && let (Some(next), Some(slot)) =
                (Written::after(snapshot, sent), self.written(partition))
        {
            match slot.lock() {
                Ok(mut w) => *w = Some(next),
                Err(poisoned) => *poisoned.into_inner() = Some(next),
            }
        }
        Ok(outcome)
    }

    fn written(&self, partition: u32) -> Option<&std::sync::Mutex<Option<Written>>> {
        self.inner.written.get(partition as usize)
    }

    /// [`Self::merged`] taking what `written` holds instead of reading it:
    /// no read at all when it holds every value (`apply.lua` then checks
    /// its version), else one read of the version and the missing values,
    /// and a full read if that version is not `written`'s.
    async fn merged_with<'o>(
        &self,
        partition: u32,
        ops: &'o Ops,
        written: &Written,
    ) -> Result<Merged<'o>, StoreError> {
        let targets = merge::targets(ops);
        let now = std::time::Instant::now();
        let known: Vec<Vec<Option<&[u8]>>> = targets
            .iter()
            .map(|t| {
                t.fields
                    .iter()
                    .map(|(name, _)| written.get(t.key, name, now))
                    .collect()
            })
            .collect();
        let missing = known.iter().flatten().filter(|v| v.is_none()).count();
        let (version, mut read) = if missing == 0 {
            (written.version.clone(), Vec::new().into_iter())
        } else {
            let mut pipe = redis::pipe();
            pipe.atomic()
                .cmd("GET")
                .arg(self.inner.keys.version(partition));
            for (t, known) in targets.iter().zip(&known) {
                if known.iter().all(Option::is_some) {
                    continue;
                }
                pipe.cmd(if t.sorted_set { "ZMSCORE" } else { "HMGET" })
                    .arg(t.key);
                for ((name, _), _) in t.fields.iter().zip(known).filter(|(_, k)| k.is_none()) {
                    pipe.arg(*name);
                }
            }
            let mut replies = self.read_values(pipe).await?;
            let version = parse_version(replies.next())?;
            if version != written.version {
                // Someone else applied or pruned since: nothing here holds.
                return self.merged(partition, ops).await;
            }
            (version, replies)
        };
        let (mut merged, mut changed) = (
            Vec::with_capacity(targets.len()),
            Vec::with_capacity(targets.len()),
        );
        for (t, known) in targets.iter().zip(known) {
            let missing = known.iter().filter(|v| v.is_none()).count();
            let mut fresh = if missing > 0 {
                let values = parse::optional_values(read.next())?;
                if values.len() != missing {
                    return Err(StoreError::Protocol(format!(
                        "read {} values of {missing} for {}",
                        values.len(),
                        t.key
                    )));
                }
                values.into_iter()
            } else {
                Vec::new().into_iter()
            };
            let old = known
                .into_iter()
                .map(|k| match k {
                    Some(v) => Some(v.to_vec()),
                    None => fresh.next().flatten(),
                })
                .collect();
            let (values, moved) = merge::merge(t, old);
            merged.push(values);
            changed.push(moved);
        }
        Ok(Merged {
            version,
            targets,
            values: merged,
            changed,
        })
    }

    /// Runs the `MULTI` of a read of current values.
    async fn read_values(
        &self,
        read: redis::Pipeline,
    ) -> Result<std::vec::IntoIter<redis::Value>, StoreError> {
        Ok(self
            .call("apply-read", |mut c| async move {
                read.query_async::<Vec<redis::Value>>(&mut c).await
            })
            .await?
            .into_iter())
    }

    /// The first half of [`Self::apply_merged`]: the version read and the
    /// values `ops` leads to from what was read.
    async fn merged<'o>(&self, partition: u32, ops: &'o Ops) -> Result<Merged<'o>, StoreError> {
        let targets = merge::targets(ops);
        let mut read = redis::pipe();
        read.atomic()
            .cmd("GET")
            .arg(self.inner.keys.version(partition));
        for t in targets.iter().filter(|t| !t.fields.is_empty()) {
            read.cmd(if t.sorted_set { "ZMSCORE" } else { "HMGET" })
                .arg(t.key);
            for (name, _) in &t.fields {
                read.arg(*name);
            }
        }
        let mut replies = self.read_values(read).await?;
        let version = parse_version(replies.next())?;
        let (mut merged, mut changed) = (
            Vec::with_capacity(targets.len()),
            Vec::with_capacity(targets.len()),
        );
        for t in &targets {
            if t.fields.is_empty() {
                merged.push(Vec::new());
                changed.push(Vec::new());
                continue;
            }
            let old = parse::optional_values(replies.next())?;
            if old.len() != t.fields.len() {
                return Err(StoreError::Protocol(format!(
                    "read {} values of {} for {}",
                    old.len(),
                    t.fields.len(),
                    t.key
                )));
            }
            let (values, moved) = merge::merge(t, old);
            merged.push(values);
            changed.push(moved);
        }
        Ok(Merged {
            version,
            targets,
            values: merged,
            changed,
        })
    }

    /// The second half of [`Self::apply_merged`]: writes the values of
    /// `merged` unless the version moved since (`None`): a transaction
    /// on a single Redis ([`Self::commit_watched`]), `apply.lua` on a
    /// cluster.
    async fn commit_merged(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
        merged: &Merged<'_>,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        if self.inner.args.redis_cluster {
            self.commit_scripted(partition, entries, events, ops, merged)
                .await
        } else {
            self.commit_watched(partition, entries, events, ops, merged)
                .await
        }
    }

    /// [`Self::commit_merged`] on a single Redis, without Lua: `WATCH`
    /// the partition's version, check it and the entries' pending state,
    /// then one `MULTI` of plain commands (`XACK`, the counters, `HSET`,
    /// `ZADD`, `EXPIRE`), which Redis refuses if anything wrote the version
    /// in between. Every apply and prune of the partition increments it,
    /// and nothing else acks its entries, so the entries checked pending
    /// are still pending when the transaction runs.
    ///
    /// `apply.lua` with the same values held Redis about 1 ms per
    /// 250-device apply at 250k events/s, a third of it pushing its 150 KB
    /// of arguments into Lua (whose strings are hashed byte by byte), and
    /// every append waited behind it; the commands alone cost a fraction.
    /// A Redis Cluster keeps the script: its client cannot hold a `WATCH`.
    async fn commit_watched(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
        merged: &Merged<'_>,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        let slot = self
            .inner
            .appliers
            .get(partition as usize)
            .ok_or_else(|| StoreError::Protocol(format!("no partition {partition}")))?;
        let mut held = slot.lock().await;
        let timeout = self.inner.args.redis_timeout;
        let mut conn = match held.take() {
            Some(conn) => conn,
            None => connect_dedicated(&self.inner.args, timeout).await?,
        };
        let run = async {
            match self
                .watch_apply(&mut conn, partition, entries, &merged.version)
                .await?
            {
                Watched::Ready { now_ms } => {
                    self.exec_apply(&mut conn, partition, entries, events, ops, merged, now_ms)
                        .await
                }
                Watched::Raced => Ok(None),
                Watched::NotPending(missing) => Ok(Some(ApplyOutcome::NotPending(missing))),
            }
        };
        let result = self.timed("apply", run).await;
        // A connection that failed, or timed out with a WATCH possibly
        // still set, is dropped: the next apply opens another.
        if result.is_ok() {
            *held = Some(conn);
        }
        result
    }

    /// The first step of [`Self::commit_watched`]: `WATCH` the version,
    /// then read it, the entries' pending state and the server's clock.
    /// Unless the apply can go on, the `WATCH` is cleared again.
    async fn watch_apply(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        partition: u32,
        entries: &[Entry],
        version: &str,
    ) -> Result<Watched, StoreError> {
        let keys = &self.inner.keys;
        let stream = keys.stream(partition);
        let mut pipe = redis::pipe();
        pipe.cmd("WATCH").arg(keys.version(partition)).ignore();
        pipe.cmd("GET").arg(keys.version(partition));
        pipe.cmd("TIME");
        for entry in entries {
            pipe.cmd("XPENDING")
                .arg(&stream)
                .arg(self.group())
                .arg(&entry.id)
                .arg(&entry.id)
                .arg(1);
        }
        let mut replies = pipe
            .query_async::<Vec<redis::Value>>(conn)
            .await
            .map_err(StoreError::from_redis)?
            .into_iter();
        let current = parse_version(replies.next())?;
        let (secs, micros): (u64, u64) = next_reply(&mut replies, "TIME")?;
        let missing: Vec<usize> = replies
            .enumerate()
            .filter(|(_, pending)| matches!(pending, redis::Value::Array(a) if a.is_empty()))
            .map(|(i, _)| i)
            .collect();
        let watched = if current != version {
            Watched::Raced
        } else if !missing.is_empty() {
            Watched::NotPending(missing)
        } else {
            return Ok(Watched::Ready {
                now_ms: secs * 1000 + micros / 1000,
            });
        };
        redis::cmd("UNWATCH")
            .query_async::<()>(conn)
            .await
            .map_err(StoreError::from_redis)?;
        Ok(watched)
    }

    /// The second step of [`Self::commit_watched`]: the `MULTI` of the
    /// ack, the counters and the writes. `None` when Redis refused it
    /// because the version was written since the `WATCH`.
    #[allow(clippy::too_many_arguments)]
    async fn exec_apply(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
        merged: &Merged<'_>,
        now_ms: u64,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        let keys = &self.inner.keys;
        let mut tx = redis::pipe();
        tx.atomic();
        tx.cmd("XACK").arg(keys.stream(partition)).arg(self.group());
        for entry in entries {
            tx.arg(&entry.id);
        }
        tx.cmd("INCR").arg(keys.version(partition));
        tx.cmd("HINCRBY")
            .arg(keys.stats(partition))
            .arg("processed")
            .arg(events);
        for ((key, bucket), count) in e2e_increments(ops, entries, now_ms) {
            tx.cmd("HINCRBY").arg(key).arg(bucket).arg(count);
        }
        for ((t, values), changed) in merged
            .targets
            .iter()
            .zip(&merged.values)
            .zip(&merged.changed)
        {
            for group in merge::pairs(t, values, changed) {
                if group.is_empty() {
                    continue;
                }
                tx.cmd(if t.sorted_set { "ZADD" } else { "HSET" })
                    .arg(t.key);
                for (a, b) in group {
                    tx.arg(a).arg(b);
                }
            }
            if t.ttl > 0 {
                tx.cmd("EXPIRE").arg(t.key).arg(t.ttl);
            }
        }
        let replies = tx
            .query_async::<Option<Vec<redis::Value>>>(conn)
            .await
            .map_err(StoreError::from_redis)?;
        let Some(replies) = replies else {
            return Ok(None);
        };
        if let Some(redis::Value::ServerError(err)) = replies
            .iter()
            .find(|r| matches!(r, redis::Value::ServerError(_)))
        {
            // A wrong type, say: the other commands of the transaction
            // did run, as in `apply.lua`, which stops at its first error
            // after its writes before it.
            return Err(StoreError::Protocol(format!("apply: {err:?}")));
        }
        Ok(Some(ApplyOutcome::Applied))
    }

    /// `apply.lua` writing the values of `merged` unless the version moved
    /// since (`None`).
    async fn commit_scripted(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
        merged: &Merged<'_>,
    ) -> Result<Option<ApplyOutcome>, StoreError> {
        let (mut invocation, mut keys) =
            self.invocation(partition, entries, events, "", &merged.version, ops);
        for ((t, values), changed) in merged
            .targets
            .iter()
            .zip(&merged.values)
            .zip(&merged.changed)
        {
            let index = match t.slot {
                merge::Slot::Key(i) => keys.aggregate(ops, i),
                merge::Slot::Container(c) => keys.index(c),
            };
            for group in merge::pairs(t, values, changed) {
                invocation
                    .arg(index)
                    .arg(if t.sorted_set { "z" } else { "h" })
                    .arg(group.len())
                    .arg(t.ttl);
                for (a, b) in group {
                    invocation.arg(a).arg(b);
                }
            }
        }
        keys.name_in(&mut invocation);
        match self.run_apply(invocation, "apply").await? {
            Applied::Done(outcome) => Ok(Some(outcome)),
            Applied::Raced => Ok(None),
        }
    }

    /// An `apply.lua` invocation with its keys and arguments up to the
    /// groups, and the script's index of aggregate key `i`.
    fn invocation<'o>(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        reason: &str,
        version: &str,
        ops: &'o Ops,
    ) -> (redis::ScriptInvocation<'_>, ScriptKeys<'o>) {
        let keys = &self.inner.keys;
        // KEYS[1] stream, KEYS[2] stats, KEYS[3] dead letters, KEYS[4] the
        // version, KEYS[5..] the aggregate keys the groups name (Lua is
        // 1-based), added by the caller once its groups are written.
        let mut invocation = self.inner.apply.prepare_invoke();
        invocation
            .key(keys.stream(partition))
            .key(keys.stats(partition))
            .key(keys.dead_letter(partition))
            .key(keys.version(partition));
        let mut aggregate = ScriptKeys::default();
        invocation
            .arg(self.group())
            .arg(entries.len())
            .arg(events)
            .arg(reason)
            .arg(DEAD_LETTER_MAX_LEN)
            .arg(version);
        for entry in entries {
            invocation.arg(&entry.id);
        }
        invocation.arg(ops.e2e.len());
        for &(key, entry, weight) in &ops.e2e {
            invocation
                .arg(aggregate.aggregate(ops, key))
                .arg(entry + 1)
                .arg(weight);
        }
        (invocation, aggregate)
    }

    /// Runs a prepared `apply.lua` and reads its reply.
    async fn run_apply(
        &self,
        invocation: redis::ScriptInvocation<'_>,
        what: &'static str,
    ) -> Result<Applied, StoreError> {
        let reply: Vec<i64> = self
            .call(what, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        match reply.split_first() {
            Some((1, _)) => Ok(Applied::Done(ApplyOutcome::Applied)),
            Some((2, _)) => Ok(Applied::Raced),
            Some((0, missing)) => Ok(Applied::Done(ApplyOutcome::NotPending(
                missing
                    .iter()
                    .map(|&e| usize::try_from(e - 1).unwrap_or(0))
                    .collect(),
            ))),
            _ => Err(StoreError::Protocol(format!(
                "unexpected apply reply {reply:?}"
            ))),
        }
    }

    fn group(&self) -> &'static str {
        self.inner.keys.group()
    }
}

impl EventLog for RedisLog {
    fn partitions(&self) -> u32 {
        self.inner.args.partitions
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.call("PING", |mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        for p in 0..self.partitions() {
            let key = self.inner.keys.stream(p);
            let group = self.group();
            let created = self
                .call("XGROUP CREATE", |mut c| async move {
                    redis::cmd("XGROUP")
                        .arg("CREATE")
                        .arg(&key)
                        .arg(group)
                        .arg("0")
                        .arg("MKSTREAM")
                        .query_async::<()>(&mut c)
                        .await
                })
                .await;
            match created {
                Ok(()) => {}
                Err(StoreError::Protocol(msg)) if msg.contains("BUSYGROUP") => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    async fn append(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
    ) -> Result<AppendOutcome, StoreError> {
        if let Some((producer, sequence)) = meta.idempotent() {
            return self
                .append_idempotent(partition, meta, events, producer, sequence)
                .await;
        }
        let keys = &self.inner.keys;
        let mut invocation = self.inner.append.prepare_invoke();
        invocation
            .key(keys.stream(partition))
            .key(keys.recent_ids(partition))
            .key(keys.recent_order(partition))
            .key(keys.stats(partition));
        // Run ledgers of the batch, for per-run duplicate counts: KEYS[5..].
        let mut runs: Vec<&str> = Vec::new();
        for event in events {
            if !event.run_id.is_empty() && !runs.contains(&event.run_id) {
                runs.push(event.run_id);
                invocation.key(keys.run(partition, event.run_id));
            }
        }
        let blob = blob(events.iter());
        invocation
            .arg(self.inner.args.dedupe_window)
            .arg(meta.encode_to_vec())
            .arg(self.inner.args.retention.as_secs().max(1))
            .arg(blob);
        for event in events {
            let run = runs
                .iter()
                .position(|r| *r == event.run_id)
                .map_or(0, |i| i + 5);
            invocation.arg(event.event_id).arg(run);
        }
        let (entry_id, duplicates, backlog): (Option<String>, Vec<u32>, i64) = self
            .call("append", |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(AppendOutcome {
            entry_id,
            duplicates,
            backlog: Some(backlog.max(0) as u64),
        })
    }

    async fn figures(&self, partition: u32) -> Result<PartitionFigures, StoreError> {
        let key = self.inner.keys.stats(partition);
        let values: Vec<Option<u64>> = self
            .call("HMGET stats", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&["ingested", "processed", "duplicates", "dead_lettered"])
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let get = |i: usize| values.get(i).copied().flatten().unwrap_or(0);
        Ok(PartitionFigures {
            ingested: get(0),
            processed: get(1),
            duplicates: get(2),
            dead_lettered: get(3),
        })
    }

    async fn read(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StoreError> {
        let slot = self
            .inner
            .readers
            .get(partition as usize)
            .ok_or_else(|| StoreError::Protocol(format!("no partition {partition}")))?;
        let mut reader = slot.lock().await;
        let limit = block + self.inner.args.redis_timeout;
        let mut conn = match reader.take() {
            Some(conn) => conn,
            None => connect(&self.inner.args, limit).await?,
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(self.group())
            .arg(consumer)
            .arg("COUNT")
            .arg(count)
            .arg("BLOCK")
            // BLOCK 0 would wait forever.
            .arg((block.as_millis() as u64).max(1))
            .arg("STREAMS")
            .arg(self.inner.keys.stream(partition))
            .arg(">");
        let mut reply =
            match tokio::time::timeout(limit, cmd.query_async::<redis::Value>(&mut conn)).await {
                Ok(Ok(value)) => value,
                Ok(Err(err)) => {
                    if err.to_string().contains("NOGROUP") {
                        // The stream or group vanished (FLUSHALL, a new Redis):
                        // recreate it rather than spin on errors.
                        *reader = Some(conn);
                        drop(reader);
                        self.ensure_group().await?;
                        return Ok(Vec::new());
                    }
                    return Err(StoreError::from_redis(err));
                }
                Err(_) => {
                    return Err(StoreError::Unavailable(format!(
                        "XREADGROUP timed out after {limit:?}"
                    )));
                }
            };
        *reader = Some(conn);
        parse::read_reply(&mut reply, partition)
    }

    async fn read_own_pending(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let consumer = consumer.to_owned();
        // ID 0 instead of `>`: this consumer's history, i.e. its pending list.
        let mut reply: redis::Value = self
            .call("XREADGROUP", |mut c| async move {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(group)
                    .arg(&consumer)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&key)
                    .arg("0")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        parse::read_reply(&mut reply, partition)
    }

    async fn claim_stale(
        &self,
        partition: u32,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let (k, cons) = (key.clone(), consumer.to_owned());
        let mut reply: redis::Value = self
            .call("XAUTOCLAIM", |mut c| async move {
                redis::cmd("XAUTOCLAIM")
                    .arg(&k)
                    .arg(group)
                    .arg(&cons)
                    .arg(min_idle.as_millis() as u64)
                    .arg("0-0")
                    .arg("COUNT")
                    .arg(count)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut entries = parse::autoclaim_reply(&mut reply, partition)?;
        if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
            let (first, last, cons) = (first.id.clone(), last.id.clone(), consumer.to_owned());
            let n = entries.len();
            let pending: redis::Value = self
                .call("XPENDING", |mut c| async move {
                    redis::cmd("XPENDING")
                        .arg(&key)
                        .arg(group)
                        .arg(&first)
                        .arg(&last)
                        .arg(n)
                        .arg(&cons)
                        .query_async(&mut c)
                        .await
                })
                .await?;
            let deliveries = parse::pending_deliveries(&pending)?;
            for entry in &mut entries {
                entry.deliveries = deliveries
                    .get(&entry.id)
                    .copied()
                    .unwrap_or(entry.deliveries);
            }
        }
        Ok(entries)
    }

    async fn apply(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        self.ack_with(partition, entries, events, "", ops, "apply")
            .await
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        events: u64,
        reason: &str,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        // An empty reason would mean a normal apply to the script.
        let reason = if reason.is_empty() {
            "unspecified"
        } else {
            reason
        };
        self.ack_with(
            entry.partition,
            std::slice::from_ref(entry),
            events,
            reason,
            ops,
            "dead-letter",
        )
        .await
    }

    async fn pending(&self, partition: u32) -> Result<PendingSummary, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let reply: redis::Value = self
            .call("XPENDING", |mut c| async move {
                redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(group)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        parse::pending_summary(&reply)
    }

    async fn trim(&self, partition: u32) -> Result<u64, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let k = key.clone();
        let groups: redis::Value = self
            .call("XINFO GROUPS", |mut c| async move {
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(&k)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let Some(last_delivered) = parse::group_last_delivered(&groups, group)? else {
            return Ok(0);
        };
        // Everything below both the first pending entry and the first
        // undelivered one has been acknowledged.
        let (ms, seq) = parse::split_id(&last_delivered);
        let mut min_id = format!("{ms}-{}", seq.saturating_add(1));
        let k = key.clone();
        let first: redis::Value = self
            .call("XPENDING", |mut c| async move {
                redis::cmd("XPENDING")
                    .arg(&k)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(1)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        if let Some(first_id) = parse::pending_deliveries(&first)?.keys().next()
            && parse::split_id(first_id) < parse::split_id(&min_id)
        {
            min_id = first_id.clone();
        }
        self.call("XTRIM", |mut c| async move {
            redis::cmd("XTRIM")
                .arg(&key)
                .arg("MINID")
                .arg("~")
                .arg(&min_id)
                .query_async(&mut c)
                .await
        })
        .await
    }

    fn retention(&self) -> Duration {
        self.inner.args.retention
    }

    async fn read_zset(&self, key: &str) -> Result<Vec<(String, f64)>, StoreError> {
        let key = key.to_owned();
        self.call("ZRANGE", |mut c| async move {
            redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn write_hash(
        &self,
        key: &str,
        fields: &[(String, String)],
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic().cmd("HSET").arg(key).arg(fields).ignore();
        if let Some(ttl) = ttl {
            pipe.cmd("PEXPIRE")
                .arg(key)
                .arg(ttl.as_millis() as u64)
                .ignore();
        }
        self.call("HSET", |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn delete_hash_fields(&self, key: &str, fields: &[String]) -> Result<u64, StoreError> {
        if fields.is_empty() {
            return Ok(0);
        }
        let key = key.to_owned();
        self.call("HDEL", |mut c| async move {
            redis::cmd("HDEL")
                .arg(&key)
                .arg(fields)
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn zset_set(&self, key: &str, member: &str, score: f64) -> Result<(), StoreError> {
        let (key, member) = (key.to_owned(), member.to_owned());
        self.call("ZADD", |mut c| async move {
            redis::cmd("ZADD")
                .arg(&key)
                .arg(score.to_string())
                .arg(&member)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn zset_remove_below(&self, key: &str, score: f64) -> Result<u64, StoreError> {
        let key = key.to_owned();
        self.call("ZREMRANGEBYSCORE", |mut c| async move {
            redis::cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({score}"))
                .query_async(&mut c)
                .await
        })
        .await
    }

    async fn prune_index(&self, index: &str, score: f64, records: &str) -> Result<u64, StoreError> {
        let Some(version) = crate::keys::version_of(index) else {
            return Err(StoreError::Protocol(format!(
                "index {index} is not a partition's key"
            )));
        };
        let mut invocation = self.inner.prune.prepare_invoke();
        invocation
            .key(index)
            .key(records)
            .key(version)
            .arg(format!("({score}"));
        self.call("prune", |mut c| async move {
            invocation.invoke_async(&mut c).await
        })
        .await
    }

    async fn read_hashes(&self, keys: &[String]) -> Result<Vec<Vec<(String, String)>>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some((container, record)) = record_parts(key) {
                let (container, record) = (container.to_owned(), record.to_owned());
                let packed: Option<Vec<u8>> = self
                    .call("HGET record", |mut c| async move {
                        redis::cmd("HGET")
                            .arg(&container)
                            .arg(&record)
                            .query_async(&mut c)
                            .await
                    })
                    .await?;
                let fields = match packed {
                    None => Vec::new(),
                    Some(bytes) => unpack_record(&bytes).ok_or_else(|| {
                        StoreError::Protocol(format!("record {key} is not a MessagePack map"))
                    })?,
                };
                out.push(fields);
                continue;
            }
            let key = key.clone();
            let raw: Vec<(String, Vec<u8>)> = self
                .call("HGETALL", |mut c| async move {
                    redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
                })
                .await?;
            let mut fields: Vec<(String, String)> =
                raw.into_iter().map(|(f, v)| (f, stored_text(v))).collect();
            fields.sort();
            out.push(fields);
        }
        Ok(out)
    }

    async fn read_records(&self, container: &str) -> Result<Vec<(String, HashFields)>, StoreError> {
        let key = container.to_owned();
        let raw: Vec<(String, Vec<u8>)> = self
            .call("HGETALL records", |mut c| async move {
                redis::cmd("HGETALL").arg(&key).query_async(&mut c).await
            })
            .await?;
        let mut out = raw
            .into_iter()
            .map(|(record, bytes)| {
                let fields = unpack_record(&bytes).ok_or_else(|| {
                    StoreError::Protocol(format!(
                        "record {container}#{record} is not a MessagePack map"
                    ))
                })?;
                Ok((record, fields))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppendEvent, EntryMeta};
    use testbed_test_support::RedisServer;

    async fn log_on(server: &RedisServer) -> RedisLog {
        let args = StoreArgs {
            partitions: 1,
            redis_url: Some(server.url()),
            redis_timeout: Duration::from_secs(2),
            ..StoreArgs::default()
        };
        let log = RedisLog::connect(&args).await.unwrap();
        log.ensure_group().await.unwrap();
        log
    }

    /// `n` entries of partition 0 (one event each), read by one consumer.
    async fn entries_of(log: &RedisLog, n: usize) -> Vec<Entry> {
        for i in 0..n {
            let id = format!("e{i}");
            let event = AppendEvent {
                run_id: "",
                event_id: &id,
                bytes: b"x".to_vec().into(),
            };
            log.append(0, &EntryMeta::default(), &[event])
                .await
                .unwrap();
        }
        let entries = log.read(0, "c", 10, Duration::ZERO).await.unwrap();
        assert_eq!(entries.len(), n);
        entries
    }

    /// Writes of every kind: a record, a hash, a sorted set.
    fn writes(log: &RedisLog, by: i64) -> Ops {
        let keys = log.keys();
        let mut ops = Ops::default();
        let record = ops.key(keys.device(0, "d1"));
        let hash = ops.key(keys.run(0, "r"));
        let top = ops.key(keys.aggregate(0, "zset"));
        ops.push(Op::HashIncr(record, "n".into(), by));
        ops.push(Op::HashIncr(hash, "processed".into(), by));
        ops.push(Op::ZIncr(top, "d1".into(), by as f64));
        ops
    }

    async fn totals(log: &RedisLog) -> (String, String, f64) {
        let keys = log.keys();
        let hashes = log
            .read_hashes(&[keys.device(0, "d1"), keys.run(0, "r")])
            .await
            .unwrap();
        let top = log.read_zset(&keys.aggregate(0, "zset")).await.unwrap();
        (hashes[0][0].1.clone(), hashes[1][0].1.clone(), top[0].1)
    }

    /// An apply whose values were read before another apply of the
    /// partition is refused by the script, changes nothing, and the apply
    /// then merged in the script counts both exactly once.
    #[tokio::test]
    async fn merged_apply_that_raced_falls_back_to_the_script() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let entries = entries_of(&log, 2).await;
        let (first, second) = (writes(&log, 2), writes(&log, 3));

        let stale = log.merged(0, &first).await.unwrap();
        assert_eq!(
            log.apply(0, &entries[1..], 1, &second).await.unwrap(),
            ApplyOutcome::Applied
        );
        let raced = log
            .commit_merged(0, &entries[..1], 1, &first, &stale)
            .await
            .unwrap();
        assert_eq!(raced, None, "a stale read must be refused");
        applies_once_after_a_refusal(&log, &entries[..1], &first, 3, 5).await;
    }

    /// After a refused apply of `entry`, the totals are `before` and the
    /// entry is still pending; applied again (merged in the script), it
    /// counts once: `after`, nothing pending.
    async fn applies_once_after_a_refusal(
        log: &RedisLog,
        entry: &[Entry],
        ops: &Ops,
        before: i64,
        after: i64,
    ) {
        let expect = |n: i64| (n.to_string(), n.to_string(), n as f64);
        assert_eq!(totals(log).await, expect(before));
        assert_eq!(log.pending(0).await.unwrap().entries, 1, "not acked");
        assert_eq!(
            log.apply(0, entry, 1, ops).await.unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(totals(log).await, expect(after));
        assert_eq!(log.pending(0).await.unwrap().entries, 0);
    }

    /// An apply of another process that lands between the `WATCH` and
    /// the `MULTI` of a watched apply makes Redis refuse the transaction:
    /// nothing of it is written or acked, and the apply merged in the
    /// script afterwards counts both exactly once. The merged values of a
    /// single Redis are written without Lua.
    #[tokio::test]
    async fn a_write_between_watch_and_exec_refuses_the_apply() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let other = log_on(&server).await;
        let entries = entries_of(&log, 3).await;
        let evalsha = calls(&server, "evalsha").await;
        log.apply(0, &entries[..1], 1, &writes(&log, 1))
            .await
            .unwrap();
        assert_eq!(calls(&server, "evalsha").await, evalsha, "no script");

        let ops = writes(&log, 10);
        let merged = log.merged(0, &ops).await.unwrap();
        let mut conn = connect_dedicated(&log.inner.args, Duration::from_secs(2))
            .await
            .unwrap();
        let watched = log
            .watch_apply(&mut conn, 0, &entries[1..2], &merged.version)
            .await
            .unwrap();
        let Watched::Ready { now_ms } = watched else {
            panic!("expected a ready apply, got {watched:?}");
        };
        assert_eq!(
            other
                .apply(0, &entries[2..], 1, &writes(&log, 100))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        let refused = log
            .exec_apply(&mut conn, 0, &entries[1..2], 1, &ops, &merged, now_ms)
            .await
            .unwrap();
        assert_eq!(refused, None, "the transaction must be refused");
        applies_once_after_a_refusal(&log, &entries[1..2], &ops, 101, 111).await;
    }

    /// The pending check of a watched apply names the entries already
    /// acked, and clears its `WATCH`: a later transaction on the same
    /// connection is not refused for a write that came after it.
    #[tokio::test]
    async fn a_watched_apply_reports_entries_no_longer_pending() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let entries = entries_of(&log, 3).await;
        log.apply(0, &entries[1..2], 1, &writes(&log, 1))
            .await
            .unwrap();
        let version = log.merged(0, &writes(&log, 1)).await.unwrap().version;
        let mut conn = connect_dedicated(&log.inner.args, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(
            log.watch_apply(&mut conn, 0, &entries, &version)
                .await
                .unwrap(),
            Watched::NotPending(vec![1])
        );
        assert_eq!(
            log.watch_apply(&mut conn, 0, &entries, "not-the-version")
                .await
                .unwrap(),
            Watched::Raced
        );
        log.apply(0, &entries[..1], 1, &writes(&log, 1))
            .await
            .unwrap();
        let mut tx = redis::pipe();
        tx.atomic().cmd("INCR").arg("unrelated");
        let ran: Option<Vec<i64>> = tx.query_async(&mut conn).await.unwrap();
        assert_eq!(ran, Some(vec![1]), "no WATCH left behind");
    }

    /// Histogram increments of one key and bucket are summed; the age of
    /// an entry is taken from its id.
    #[test]
    fn e2e_increments_sum_per_key_and_bucket() {
        let mut ops = Ops::default();
        let a = ops.key("a".to_owned());
        let b = ops.key("b".to_owned());
        ops.e2e = vec![(a, 0, 5), (a, 1, 7), (b, 0, 1), (a, 2, 2)];
        let entry = |id: &str| Entry {
            id: id.to_owned(),
            partition: 0,
            meta: Vec::new(),
            events: Vec::new(),
            deliveries: 1,
        };
        let entries = [entry("1000-0"), entry("1000-1"), entry("900-0")];
        assert_eq!(
            e2e_increments(&ops, &entries, 1003),
            vec![
                (("a", latency_bucket(3)), 12),
                (("b", latency_bucket(3)), 1),
                (("a", latency_bucket(103)), 2),
            ]
        );
    }

    /// Calls of `command` the server has run (`INFO commandstats`).
    async fn calls(server: &RedisServer, command: &str) -> u64 {
        let client = redis::Client::open(server.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut c)
            .await
            .unwrap();
        let prefix = format!("cmdstat_{command}:calls=");
        info.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }

    /// An apply that writes only what the previous apply of the partition
    /// wrote reads nothing: it merges with the values it wrote, and the
    /// script's version check stands for the read.
    #[tokio::test]
    async fn an_apply_merges_with_what_the_last_one_wrote_without_reading() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let entries = entries_of(&log, 2).await;
        // The commit only reads the version; values are read by HMGET
        // (hashes, records) and ZMSCORE (sorted sets). The appends' script
        // made HMGETs of its own.
        let before = calls(&server, "hmget").await + calls(&server, "zmscore").await;
        log.apply(0, &entries[..1], 1, &writes(&log, 2))
            .await
            .unwrap();
        let reads = calls(&server, "hmget").await + calls(&server, "zmscore").await;
        assert!(reads > before, "the first apply reads");
        assert_eq!(
            log.apply(0, &entries[1..], 1, &writes(&log, 3))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(
            calls(&server, "hmget").await + calls(&server, "zmscore").await,
            reads,
            "no second read"
        );
        assert_eq!(totals(&log).await, ("5".into(), "5".into(), 5.0));
        assert_eq!(log.pending(0).await.unwrap().entries, 0);
    }

    /// A value that an apply leaves as it was is not sent: a key whose
    /// every write is unchanged costs no `HSET` or `ZADD` (only its
    /// expiry), whether the value was known from the last apply or read.
    #[tokio::test]
    async fn unchanged_values_are_not_written() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let fresh = log_on(&server).await;
        let entries = entries_of(&log, 3).await;
        let keys = log.keys();
        let ops = |seen: f64| {
            let mut ops = Ops::default();
            let state = ops.key(keys.device(0, "d1"));
            let index = ops.key(keys.devices(0));
            let run = ops.key(keys.run(0, "r"));
            ops.push(Op::HashMax(state, "seen".into(), seen));
            ops.push(Op::HashSet(state, "labels".into(), "{}".into()));
            ops.push(Op::ZMax(index, "d1".into(), seen));
            ops.push(Op::HashIncr(run, "processed".into(), 1));
            ops.push(Op::Expire(state, 600));
            ops
        };
        log.apply(0, &entries[..1], 1, &ops(5000.0)).await.unwrap();
        let (hset, zadd) = (calls(&server, "hset").await, calls(&server, "zadd").await);
        // Known from the last apply: only the run's counter is written.
        assert_eq!(
            log.apply(0, &entries[1..2], 1, &ops(5000.0)).await.unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(calls(&server, "hset").await, hset + 1);
        assert_eq!(calls(&server, "zadd").await, zadd);
        // Read by a process that never wrote them: the same.
        assert_eq!(
            fresh
                .apply(0, &entries[2..], 1, &ops(4000.0))
                .await
                .unwrap(),
            ApplyOutcome::Applied
        );
        assert_eq!(calls(&server, "hset").await, hset + 2);
        assert_eq!(calls(&server, "zadd").await, zadd);
        let read = log
            .read_hashes(&[keys.device(0, "d1"), keys.run(0, "r")])
            .await
            .unwrap();
        assert_eq!(
            read[0],
            vec![
                ("labels".to_owned(), "{}".to_owned()),
                ("seen".to_owned(), "5000".to_owned())
            ]
        );
        assert_eq!(read[1], vec![("processed".to_owned(), "3".to_owned())]);
        assert_eq!(
            log.read_zset(&keys.devices(0)).await.unwrap(),
            vec![("d1".to_owned(), 5000.0)]
        );
        assert_eq!(server.command(&["TTL", &keys.device_states(0)]), ":600");
    }

    /// When another process applied to the partition in between, the
    /// values this one wrote are stale: its next apply reads again (or the
    /// script refuses and merges), and every apply counts exactly once.
    #[tokio::test]
    async fn written_values_are_not_used_after_another_writer() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let other = log_on(&server).await;
        let entries = entries_of(&log, 7).await;
        let with_run = |by: i64, run: &str| {
            let mut ops = writes(&log, by);
            let k = ops.key(log.keys().run(0, run));
            ops.push(Op::HashIncr(k, "processed".into(), 7));
            ops
        };
        let apply = |log: &RedisLog, e: usize, ops: Ops| {
            let log = log.clone();
            let entry = entries[e..=e].to_vec();
            async move {
                assert_eq!(
                    log.apply(0, &entry, 1, &ops).await.unwrap(),
                    ApplyOutcome::Applied
                );
            }
        };
        apply(&log, 0, writes(&log, 1)).await;
        apply(&other, 1, writes(&log, 10)).await;
        // Every value is known, so nothing is read: the script refuses the
        // stale version and merges itself.
        apply(&log, 2, writes(&log, 100)).await;
        assert_eq!(totals(&log).await, ("111".into(), "111".into(), 111.0));
        apply(&log, 3, writes(&log, 1000)).await;
        apply(&other, 4, writes(&log, 10_000)).await;
        // A value that is not known is read with the version, which shows
        // the other writer: everything is read again.
        apply(&log, 5, with_run(100_000, "r2")).await;
        assert_eq!(
            totals(&log).await,
            ("111111".into(), "111111".into(), 111_111.0)
        );
        // Nobody else wrote: only the unknown value is read.
        let reads = calls(&server, "hmget").await;
        apply(&log, 6, with_run(1_000_000, "r3")).await;
        assert_eq!(calls(&server, "hmget").await, reads + 1, "one HMGET");
        assert_eq!(
            totals(&log).await,
            ("1111111".into(), "1111111".into(), 1_111_111.0)
        );
        let runs = log
            .read_hashes(&[log.keys().run(0, "r2"), log.keys().run(0, "r3")])
            .await
            .unwrap();
        for run in runs {
            assert_eq!(run, vec![("processed".to_owned(), "7".to_owned())]);
        }
        assert_eq!(log.pending(0).await.unwrap().entries, 0);
    }

    /// A written value is not used once its key may have expired.
    #[test]
    fn written_values_expire_with_their_key() {
        let now = std::time::Instant::now();
        let key = |expires| WrittenKey {
            expires,
            fields: [("f".to_owned(), b"1".to_vec())].into(),
        };
        let written = Written {
            version: "3".into(),
            keys: [
                ("forever".to_owned(), key(None)),
                ("soon".to_owned(), key(Some(now + EXPIRY_MARGIN / 2))),
                ("later".to_owned(), key(Some(now + EXPIRY_MARGIN * 10))),
            ]
            .into(),
        };
        assert_eq!(written.get("forever", "f", now), Some(&b"1"[..]));
        assert_eq!(written.get("later", "f", now), Some(&b"1"[..]));
        assert_eq!(written.get("soon", "f", now), None);
        assert_eq!(written.get("later", "g", now), None);
        assert_eq!(written.get("other", "f", now), None);
    }

    /// A prune of the partition moves its version too.
    #[tokio::test]
    async fn prune_moves_the_version() {
        let server = RedisServer::start();
        let log = log_on(&server).await;
        let entries = entries_of(&log, 2).await;
        let keys = log.keys().clone();
        let mut seen = Ops::default();
        let index = seen.key(keys.devices(0));
        let state = seen.key(keys.device(0, "old"));
        seen.push(Op::ZMax(index, "old".into(), 1.0));
        seen.push(Op::HashMax(state, "seen".into(), 1.0));
        log.apply(0, &entries[..1], 1, &seen).await.unwrap();

        let next = writes(&log, 1);
        let stale = log.merged(0, &next).await.unwrap();
        let removed = log
            .prune_index(&keys.devices(0), 10.0, &keys.device_states(0))
            .await
            .unwrap();
        assert_eq!(removed, 1);
        let raced = log
            .commit_merged(0, &entries[1..], 1, &next, &stale)
            .await
            .unwrap();
        assert_eq!(raced, None);
    }

    /// What Lua's cmsgpack writes (integers of every width, float32 when
    /// exact, float64) and what Rust writes both decode; text stays text.
    #[test]
    fn summaries_decode_from_msgpack() {
        assert_eq!(
            unpack_summary(&msgpack_summary(&[3.0, 0.3, -1.5, 7.25])),
            Some([3.0, 0.3, -1.5, 7.25])
        );
        // fixarray(4): positive fixint 3, int16 -300, float32 0.5, uint32 70000
        let lua = [
            0x94, 0x03, 0xd1, 0xfe, 0xd4, 0xca, 0x3f, 0x00, 0x00, 0x00, 0xce, 0x00, 0x01, 0x11,
            0x70,
        ];
        assert_eq!(unpack_summary(&lua), Some([3.0, -300.0, 0.5, 70000.0]));
        assert_eq!(stored_text(lua.to_vec()), "3 -300 0.5 70000");
        assert_eq!(stored_text(b"rpm".to_vec()), "rpm");
        assert_eq!(unpack_summary(&[0x93, 1, 2, 3]), None);
    }

    /// A record as Lua's cmsgpack packs it reads back as hash text: integers
    /// in full, floats in shortest form, strings as they are, summaries as
    /// `count sum min max`, sorted by field; anything else is refused.
    #[test]
    fn records_decode_from_msgpack() {
        let mut packed = Vec::new();
        rmp::encode::write_map_len(&mut packed, 5).unwrap();
        rmp::encode::write_str(&mut packed, "n").unwrap();
        rmp::encode::write_uint(&mut packed, 1 << 40).unwrap();
        rmp::encode::write_str(&mut packed, "unit").unwrap();
        rmp::encode::write_str(&mut packed, "°C").unwrap();
        rmp::encode::write_str(&mut packed, "min").unwrap();
        rmp::encode::write_sint(&mut packed, -3).unwrap();
        rmp::encode::write_str(&mut packed, "avg").unwrap();
        rmp::encode::write_f64(&mut packed, 0.1).unwrap();
        rmp::encode::write_str(&mut packed, "util").unwrap();
        packed.extend_from_slice(&msgpack_summary(&[2.0, 0.75, 0.25, 0.5]));
        assert_eq!(
            unpack_record(&packed),
            Some(vec![
                ("avg".to_owned(), "0.1".to_owned()),
                ("min".to_owned(), "-3".to_owned()),
                ("n".to_owned(), (1u64 << 40).to_string()),
                ("unit".to_owned(), "°C".to_owned()),
                ("util".to_owned(), "2 0.75 0.25 0.5".to_owned()),
            ])
        );
        // Truncated, trailing bytes, not a map.
        assert_eq!(unpack_record(&packed[..packed.len() - 1]), None);
        let mut longer = packed.clone();
        longer.push(0);
        assert_eq!(unpack_record(&longer), None);
        assert_eq!(unpack_record(b"text"), None);
    }
}
