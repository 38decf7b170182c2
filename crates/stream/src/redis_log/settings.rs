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
//! agreed once does not re-read the record, so for that long after another
//! deployment resets the prefix its appends can still go through: the
//! check cannot be part of an append itself on Redis Cluster, where the
//! record and the partitions live in different slots.

use std::sync::atomic::Ordering;

#[allow(clippy::wildcard_imports)]
use super::*;

/// The version of the store layout this release reads and writes.
pub(super) const LAYOUT: &str = "1";

/// Field names of the settings hash.
const FIELDS: [&str; 3] = ["partitions", "producer_window", "layout"];

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
    pub(super) async fn agree_settings(&self) -> Result<(), StoreError> {
        let key = self.inner.keys.settings();
        let ours = self.our_settings();
        let mut pipe = redis::pipe();
        for (field, _, value) in &ours {
            pipe.cmd("HSETNX").arg(&key).arg(*field).arg(value).ignore();
        }
        pipe.cmd("HMGET").arg(&key).arg(&FIELDS[..]);
        let (stored,): (Vec<Option<String>>,) = self
            .call(
                "settings",
                |mut c| async move { pipe.query_async(&mut c).await },
            )
            .await?;
        let disagreement = ours
            .into_iter()
            .zip(stored)
            .find_map(|((_, flag, ours), stored)| match stored {
                Some(stored) if stored != ours => {
                    Some(StoreError::Disagreement { flag, ours, stored })
                }
                _ => None,
            });
        self.inner
            .settings_agreed
            .store(disagreement.is_none(), Ordering::Release);
        match disagreement {
            None => Ok(()),
            Some(err) => Err(err),
        }
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
