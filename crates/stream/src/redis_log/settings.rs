//! Settings every process sharing a key prefix must agree on, recorded in
//! the store by the first process and compared by every later one (as
//! Kafka keeps a topic's partition count in the cluster's metadata): a
//! process whose flags disagree refuses to start, and one that finds the
//! record changed under it (the prefix was reset by another deployment)
//! stops writing and reports NOT_SERVING until its flags match again.
//!
//! - `--partitions`: an event's partition is a hash of its device modulo
//!   the count, so a writer and a reader that disagree strand events on
//!   streams nobody reads.
//! - `--producer-window`: an idempotent producer's sequence marks a bit
//!   `sequence mod window` of its bitmap, so two ingests that disagree
//!   would not recognise each other's retries.
//! - the layout version ([`LAYOUT`]): key names, entry fields and the
//!   aggregates' encodings of this release.
//!
//! A process never adopts a stored value in place of its flag, default or
//! not: what runs is what its configuration says, or nothing.
//!
//! Not recorded, because a disagreement loses or double-counts nothing:
//! `--dedupe-window` (each ingest trims the partition's id window to its
//! own length: the window is as long as the last writer's), `--retention`
//! (how long the worker keeps aggregates and how far back the query may
//! ask), `--redis-timeout` and every per-process limit. `--key-prefix` is
//! the namespace itself: processes on different prefixes share nothing.
//!
//! Between two health probes (`--health-interval`) a process that has
//! agreed once does not re-read the record, and on Redis Cluster the
//! record and the partitions live in different slots, so no append can
//! read the record itself. The record therefore carries an **epoch** (a
//! token chosen by the process that wrote it), copied into every
//! partition's stats hash (`epoch`, same slot as the stream). Each append
//! script compares the partition's epoch with the one this process last
//! read from the record and refuses on any difference; the process then
//! reads the record again ([`RedisLog::reagree_settings`]): settings that
//! now disagree refuse the append (FAILED_PRECONDITION), settings that
//! still agree (the prefix was reset and recorded with the same values, or
//! Redis came back empty) adopt the new epoch and the append is retried
//! once. So after a reset, not one append lands under settings this
//! process has not checked.

use std::sync::atomic::Ordering;

#[allow(clippy::wildcard_imports)]
use super::*;

/// The version of the store layout this release reads and writes.
pub(super) const LAYOUT: &str = "1";

/// Field names of the settings hash that every process must agree on.
const FIELDS: [&str; 3] = ["partitions", "producer_window", "layout"];

/// Field of the settings hash holding the record's epoch (not compared:
/// whichever process records first chooses it).
const EPOCH: &str = "epoch";

/// A token no earlier record of this prefix has used: the time, the
/// process and a per-process random seed.
fn fresh_epoch() -> String {
    use std::hash::BuildHasher;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = std::collections::hash_map::RandomState::new().hash_one((nanos, std::process::id()));
    format!("{nanos:x}-{:x}-{seed:x}", std::process::id())
}

impl RedisLog {
    /// This process's settings, as (field, flag, value).
    fn our_settings(&self) -> [(&'static str, &'static str, String); 3] {
        let args = &self.inner.args;
        [
            (FIELDS[0], "--partitions", args.partitions.to_string()),
            (
                FIELDS[1],
                "--producer-window",
                args.producer_window.next_multiple_of(8).to_string(),
            ),
            (FIELDS[2], "the store layout of release", LAYOUT.to_owned()),
        ]
    }

    /// Records this process's settings where none are recorded yet (each
    /// field only if absent), then compares them with what is recorded.
    /// When they agree and the record's epoch is not the one this process
    /// holds, it is adopted and copied into every partition.
    pub(super) async fn agree_settings(&self) -> Result<(), StoreError> {
        self.agree_settings_with(false).await
    }

    /// After an append found its partition's epoch differing from the one
    /// this process holds: the record is read again and, when the settings
    /// still agree, its epoch is copied into every partition (even when
    /// this process held it already: the partition may have lost it).
    pub(super) async fn reagree_settings(&self) -> Result<(), StoreError> {
        self.inner.settings_agreed.store(false, Ordering::Release);
        self.agree_settings_with(true).await
    }

    /// The epoch this process last read from the record, if any: the one
    /// its appends carry.
    pub(super) fn epoch(&self) -> Option<std::sync::Arc<str>> {
        self.inner
            .epoch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn agree_settings_with(&self, copy_epoch: bool) -> Result<(), StoreError> {
        let key = self.inner.keys.settings();
        let ours = self.our_settings();
        let mut pipe = redis::pipe();
        for (field, _, value) in &ours {
            pipe.cmd("HSETNX").arg(&key).arg(*field).arg(value).ignore();
        }
        pipe.cmd("HSETNX")
            .arg(&key)
            .arg(EPOCH)
            .arg(fresh_epoch())
            .ignore();
        pipe.cmd("HMGET").arg(&key).arg(&FIELDS[..]).arg(EPOCH);
        let (mut stored,): (Vec<Option<String>>,) = self
            .call(
                "settings",
                |mut c| async move { pipe.query_async(&mut c).await },
            )
            .await?;
        let recorded_epoch = stored.pop().flatten();
        let disagreement = ours
            .into_iter()
            .zip(stored)
            .find_map(|((_, flag, ours), stored)| match stored {
                Some(stored) if stored != ours => {
                    Some(StoreError::Disagreement { flag, ours, stored })
                }
                _ => None,
            });
        if let Some(err) = disagreement {
            self.inner.settings_agreed.store(false, Ordering::Release);
            return Err(err);
        }
        if let Some(epoch) = recorded_epoch {
            let changed = self.epoch().as_deref() != Some(epoch.as_str());
            if changed || copy_epoch {
                self.copy_epoch(&epoch).await?;
                *self
                    .inner
                    .epoch
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(epoch.into());
            }
        }
        self.inner.settings_agreed.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes the record's epoch into every partition's stats hash (one
    /// command per partition: on Redis Cluster each is in its own slot).
    /// Every process writes the value it read from the record, so they
    /// converge on the record's epoch whatever their order.
    async fn copy_epoch(&self, epoch: &str) -> Result<(), StoreError> {
        for partition in 0..self.inner.args.partitions {
            let key = self.inner.keys.stats(partition);
            self.call("settings epoch", |mut c| async move {
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(crate::aggregates::stats::EPOCH)
                    .arg(epoch)
                    .query_async::<()>(&mut c)
                    .await
            })
            .await?;
        }
        Ok(())
    }

    /// Before a write or a read of the log: `Ok` at the cost of one atomic
    /// load once the settings were found to agree; otherwise they are
    /// checked again (one round trip) and a disagreement refuses the call.
    pub(super) async fn ensure_settings(&self) -> Result<(), StoreError> {
        if self.inner.settings_agreed.load(Ordering::Acquire) {
            return Ok(());
        }
        self.agree_settings().await
    }
}
