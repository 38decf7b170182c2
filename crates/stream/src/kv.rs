//! [`AggregateStore`]: the small key-value surface next to the log that
//! the query and the worker's control read and write (hashes, sorted sets,
//! records). The worker's aggregate writes themselves go through
//! [`crate::EventLog::apply`], atomically with the ack.

use std::future::Future;
use std::time::Duration;

use crate::StoreError;

/// A hash or a record as text: (field, value), sorted by field.
pub type HashFields = Vec<(String, String)>;

/// Reads and small writes of hashes, sorted sets and records, outside the
/// log's atomic steps. Every backend of [`crate::EventLog`] implements it.
pub trait AggregateStore: Send + Sync {
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
    /// (record name, its fields as [`AggregateStore::read_hashes`] gives them),
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
