//! [`AggregateStore`]: the small key-value surface next to the log that
//! the query and the worker's control read and write (hashes, sorted sets,
//! records). The worker's aggregate writes themselves go through
//! [`crate::EventLog::apply`], atomically with the ack.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// A hash or a record as text: (field, value), sorted by field.
pub type HashFields = Vec<(String, String)>;

/// What [`AggregateStore::prune_index`] removes: members of `index` scored
/// below `below`, at most `limit` of them, from `index`, from `ids`, from
/// the postings of each label pair their record holds under `labels`, and
/// their records.
#[derive(Debug, Clone, Copy)]
pub struct Prune<'a> {
    /// The index by score (a device's last-seen time).
    pub index: &'a str,
    /// Members scored below this leave.
    pub below: f64,
    /// The container of the members' records (`<records>#<member>`).
    pub records: &'a str,
    /// A second index of the same members (by id), which they leave too.
    pub ids: &'a str,
    /// The record field holding the member's labels (a JSON object of
    /// strings): it leaves the postings of each pair,
    /// [`crate::keys::Keys::label_devices`] of `partition`.
    pub labels: &'a str,
    /// The partition of the keys above.
    pub partition: u32,
    /// At most this many members per call: the call's cost is bounded
    /// whatever the index holds; a caller with more to prune calls again.
    pub limit: usize,
}

/// Reads and small writes of hashes, sorted sets and records, outside the
/// log's atomic steps. Every backend of [`crate::EventLog`] implements it.
pub trait AggregateStore: Send + Sync {
    /// Reads a whole sorted set, lowest score first.
    fn read_zset(
        &self,
        key: &str,
    ) -> impl Future<Output = Result<Vec<(String, f64)>, StoreError>> + Send;

    /// Up to `limit` members of the sorted set `key` after `after` (all of
    /// them from the start when `None`), in byte order of the member: for
    /// sets whose members all share one score (Redis `ZRANGEBYLEX ...
    /// LIMIT`), so the cost is the page's, not the set's.
    fn zset_range_lex(
        &self,
        key: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;

    /// The `limit` highest-scored members of the sorted set `key`, highest
    /// first (ties in the backend's order): a ranking read whose cost is
    /// the limit's, not the set's (Redis `ZRANGE ... BYSCORE REV LIMIT`).
    fn zset_top(
        &self,
        key: &str,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<(String, f64)>, StoreError>> + Send;

    /// The scores of `members` in the sorted set `key`, in order; `None`
    /// for a member not in it (Redis `ZMSCORE`).
    fn zset_scores(
        &self,
        key: &str,
        members: &[String],
    ) -> impl Future<Output = Result<Vec<Option<f64>>, StoreError>> + Send;

    /// The number of members of the sorted set `key` (0 when missing).
    fn zset_len(&self, key: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;

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
    /// (record name, its fields as [`AggregateStore::read_hashes`] gives them),
    /// by record name; a missing container has none.
    fn read_records(
        &self,
        container: &str,
    ) -> impl Future<Output = Result<Vec<(String, HashFields)>, StoreError>> + Send;

    /// Removes up to `prune.limit` members of the sorted set `prune.index`
    /// scored below `prune.below` (lowest first) and, atomically with them,
    /// each one's record `<records>#<member>` (see [`crate::keys`],
    /// "Records") and its membership of `prune.ids` and of the postings of
    /// the label pairs its record holds; returns how many. Records
    /// share their container's time to live, so an index is what lets
    /// records of members gone quiet leave one by one.
    fn prune_index(&self, prune: Prune<'_>)
    -> impl Future<Output = Result<u64, StoreError>> + Send;
}
