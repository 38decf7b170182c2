//! [`EventLog`]: the partitioned log with one consumer group.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;
use crate::keys::Keys;
use crate::model::{
    AppendEvent, AppendOutcome, ApplyOutcome, ConsumerInfo, Entry, EntryMeta, Ops,
    PartitionFigures, PendingSummary,
};

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
///   consumer died) to another consumer, counting deliveries; `claim`
///   does the same for listed entries, and `read_own_pending` for a
///   consumer's own, each reporting the entries' delivery counts.
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
    /// waiting up to `block` when there are none (zero: not at all).
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

    /// Delivers the listed pending entries of `partition` again, to
    /// `consumer`, counting a delivery; each comes back with its delivery
    /// count. Entries no longer pending (acked meanwhile) are left out.
    /// How a consumer retries the entries it failed to process, and takes
    /// over those of a consumer known to be dead.
    fn claim(
        &self,
        partition: u32,
        consumer: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<Vec<Entry>, StoreError>> + Send;

    /// The members of `partition`'s group, with their pending counts and
    /// idle times (one entry per consumer: its cost grows with the
    /// consumers, which [`EventLog::forget_consumer`] keeps few).
    fn consumers(
        &self,
        partition: u32,
    ) -> impl Future<Output = Result<Vec<ConsumerInfo>, StoreError>> + Send;

    /// Ids of up to `count` entries of `partition` pending with `owner`,
    /// oldest first.
    fn pending_of(
        &self,
        partition: u32,
        owner: &str,
        count: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// Admits `devices` (distinct ids) to `partition`'s tracked devices,
    /// atomically: a device already tracked is admitted (and stays tracked
    /// a `--retention` from now), a new one only while fewer than `cap`
    /// are tracked. Devices not admitted for a whole retention leave the
    /// set. The answer is, per device in order, whether it is admitted.
    fn admit_devices(
        &self,
        partition: u32,
        devices: &[&str],
        cap: u64,
    ) -> impl Future<Output = Result<Vec<bool>, StoreError>> + Send;

    /// Removes `name` from `partition`'s group if it holds no pending
    /// entry, in one atomic step; whether it was removed.
    fn forget_consumer(
        &self,
        partition: u32,
        name: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

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
}
