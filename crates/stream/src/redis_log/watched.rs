//! The watched apply (single Redis): merged values written by a `WATCH`ed
//! `MULTI` of plain commands, no Lua.

#[allow(clippy::wildcard_imports)]
use super::*;

/// How the pending check of a watched apply came out.
#[derive(Debug, PartialEq)]
pub(super) enum Watched {
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
pub(super) fn e2e_increments<'o>(
    ops: &'o Ops,
    entries: &[Entry],
    now_ms: u64,
) -> Vec<((&'o str, u32), u64)> {
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

impl RedisLog {
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
    pub(super) async fn commit_watched(
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
    pub(super) async fn watch_apply(
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
    pub(super) async fn exec_apply(
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
            .arg(crate::aggregates::stats::PROCESSED)
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
}
