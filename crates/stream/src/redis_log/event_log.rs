//! [`EventLog`] on Redis: each operation of the trait, built from the
//! steps in the sibling modules.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Expired devices one `admit.lua` call removes at most: bounded, so a call
/// never costs in proportion to the fleet; admissions come often enough
/// that the set keeps up.
const ADMIT_EXPIRED_PER_CALL: u32 = 128;

impl EventLog for RedisLog {
    fn partitions(&self) -> u32 {
        self.inner.args.partitions
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// The store answers, and the settings recorded for the prefix (or
    /// recorded now, after the prefix was reset) still agree with this
    /// process's: the health probe, so a disagreement found while running
    /// turns the services NOT_SERVING with its reason.
    async fn ping(&self) -> Result<(), StoreError> {
        self.call("PING", |mut c| async move {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await?;
        self.agree_settings().await
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
        self.ensure_settings().await?;
        let outcome = self.append_checked(partition, meta, events).await?;
        self.wait_replicas(partition).await?;
        Ok(outcome)
    }

    async fn figures(&self, partition: u32) -> Result<PartitionFigures, StoreError> {
        let key = self.inner.keys.stats(partition);
        let values: Vec<Option<u64>> = self
            .call("HMGET stats", |mut c| async move {
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg(&crate::aggregates::stats::ALL[..])
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
        self.ensure_settings().await?;
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
            .arg(count);
        // No wait: no BLOCK at all (BLOCK 0 would wait forever, and even
        // BLOCK 1 can wait until the next entry: Redis checks blocked
        // clients' timeouts only when its event loop wakes).
        if !block.is_zero() {
            cmd.arg("BLOCK").arg((block.as_millis() as u64).max(1));
        }
        cmd.arg("STREAMS")
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
        let (k, cons) = (key.clone(), consumer.to_owned());
        // ID 0 instead of `>`: this consumer's history, i.e. its pending
        // list. Redis counts the delivery; XREADGROUP does not say how many.
        let mut reply: redis::Value = self
            .call("XREADGROUP", |mut c| async move {
                redis::cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(group)
                    .arg(&cons)
                    .arg("COUNT")
                    .arg(count)
                    .arg("STREAMS")
                    .arg(&k)
                    .arg("0")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut entries = parse::read_reply(&mut reply, partition)?;
        // They are the first of the consumer's pending list, in order.
        self.delivery_counts(&key, consumer, &mut entries).await?;
        Ok(entries)
    }

    async fn claim(
        &self,
        partition: u32,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<Entry>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        // One round trip: the claim (min idle 0: they are wanted now), then
        // each entry's pending row, which then holds the counted delivery.
        let mut pipe = redis::pipe();
        pipe.cmd("XCLAIM")
            .arg(&key)
            .arg(group)
            .arg(consumer)
            .arg(0)
            .arg(ids);
        for id in ids {
            pipe.cmd("XPENDING")
                .arg(&key)
                .arg(group)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let mut replies: Vec<redis::Value> = self
            .call(
                "XCLAIM",
                |mut c| async move { pipe.query_async(&mut c).await },
            )
            .await?;
        if replies.is_empty() {
            return Err(StoreError::Protocol("empty XCLAIM reply".into()));
        }
        let mut claimed = replies.remove(0);
        let mut entries = parse::claim_reply(&mut claimed, partition)?;
        let mut deliveries = std::collections::BTreeMap::new();
        for row in &replies {
            deliveries.extend(parse::pending_deliveries(row)?);
        }
        for entry in &mut entries {
            if let Some(count) = deliveries.get(&entry.id) {
                entry.deliveries = *count;
            }
        }
        Ok(entries)
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
        self.delivery_counts(&key, consumer, &mut entries).await?;
        Ok(entries)
    }

    async fn consumers(&self, partition: u32) -> Result<Vec<ConsumerInfo>, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let reply = self
            .call("XINFO CONSUMERS", |mut c| async move {
                redis::cmd("XINFO")
                    .arg("CONSUMERS")
                    .arg(&key)
                    .arg(group)
                    .query_async::<redis::Value>(&mut c)
                    .await
            })
            .await;
        match reply {
            Ok(reply) => parse::consumers(&reply),
            // No stream or group yet: nobody to take over from.
            Err(StoreError::Protocol(msg))
                if msg.contains("NOGROUP") || msg.contains("no such key") =>
            {
                Ok(Vec::new())
            }
            Err(err) => Err(err),
        }
    }

    async fn pending_of(
        &self,
        partition: u32,
        owner: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let owner = owner.to_owned();
        let reply: redis::Value = self
            .call("XPENDING", |mut c| async move {
                redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(group)
                    .arg("-")
                    .arg("+")
                    .arg(count)
                    .arg(&owner)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(parse::pending_deliveries(&reply)?.into_keys().collect())
    }

    async fn admit_devices(
        &self,
        partition: u32,
        devices: &[&str],
        cap: u64,
    ) -> Result<Vec<bool>, StoreError> {
        if devices.is_empty() {
            return Ok(Vec::new());
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let horizon = now.saturating_sub(self.inner.args.retention.as_millis() as u64);
        let mut invocation = self.inner.admit.prepare_invoke();
        invocation
            .key(self.inner.keys.admitted(partition))
            .arg(cap)
            .arg(now)
            .arg(horizon)
            .arg(ADMIT_EXPIRED_PER_CALL)
            .arg(devices);
        let admitted: Vec<i64> = self
            .call("admit devices", |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        if admitted.len() != devices.len() {
            return Err(StoreError::Protocol(format!(
                "admit.lua answered {} flags for {} devices",
                admitted.len(),
                devices.len()
            )));
        }
        Ok(admitted.into_iter().map(|a| a == 1).collect())
    }

    async fn forget_consumer(&self, partition: u32, name: &str) -> Result<bool, StoreError> {
        let mut invocation = self.inner.forget_consumer.prepare_invoke();
        invocation
            .key(self.inner.keys.stream(partition))
            .arg(self.group())
            .arg(name);
        let removed: i64 = self
            .call("forget consumer", |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        Ok(removed == 1)
    }

    async fn apply(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        self.ack_with(
            partition,
            entries,
            events,
            Disposition::Process,
            ops,
            "apply",
        )
        .await
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        events: u64,
        reason: &str,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        self.ack_with(
            entry.partition,
            std::slice::from_ref(entry),
            events,
            Disposition::DeadLetter(reason),
            ops,
            "dead-letter",
        )
        .await
    }

    async fn pending(&self, partition: u32) -> Result<PendingSummary, StoreError> {
        let key = self.inner.keys.stream(partition);
        let group = self.group();
        let reply = self
            .call("XPENDING", |mut c| async move {
                redis::cmd("XPENDING")
                    .arg(&key)
                    .arg(group)
                    .query_async::<redis::Value>(&mut c)
                    .await
            })
            .await;
        match reply {
            Ok(reply) => parse::pending_summary(&reply),
            // No stream or no group yet (no worker has started on this
            // prefix, or Redis came back empty): nothing is pending, which
            // is what a reader must be told, not an error.
            Err(StoreError::Protocol(msg)) if msg.contains("NOGROUP") => {
                Ok(PendingSummary::default())
            }
            Err(err) => Err(err),
        }
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
}

impl RedisLog {
    /// Sets the delivery counts of `entries`, which are the first pending
    /// entries of `consumer` from the first of them, in order (what
    /// `XAUTOCLAIM` and `XREADGROUP ... 0` return): one `XPENDING` over
    /// their range.
    async fn delivery_counts(
        &self,
        key: &str,
        consumer: &str,
        entries: &mut [Entry],
    ) -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let (key, group) = (key.to_owned(), self.group());
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
        for entry in entries {
            if let Some(count) = deliveries.get(&entry.id) {
                entry.deliveries = *count;
            }
        }
        Ok(())
    }
}

impl RedisLog {
    /// An append by event id (`append.lua`): the batch's events not in
    /// the partition's dedupe window become one entry.
    pub(super) async fn append_scripted(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
    ) -> Result<Result<AppendOutcome, EpochChanged>, StoreError> {
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
            .arg(blob)
            .arg(self.epoch().as_deref().unwrap_or_default());
        for event in events {
            let run = runs
                .iter()
                .position(|r| *r == event.run_id)
                .map_or(0, |i| i + 5);
            invocation.arg(event.event_id).arg(run);
        }
        let reply = self
            .call("append", |mut c| async move {
                match invocation
                    .invoke_async::<(Option<String>, Vec<u32>, i64)>(&mut c)
                    .await
                {
                    Err(err) if err.code() == Some("EPOCH") => Ok(Err(EpochChanged)),
                    other => other.map(Ok),
                }
            })
            .await?;
        Ok(reply.map(|(entry_id, duplicates, backlog)| AppendOutcome {
            entry_id,
            duplicates,
            backlog: Some(backlog.max(0) as u64),
        }))
    }

    /// With `--redis-wait-replicas N`, waits (`WAIT`, up to
    /// `--redis-wait-timeout`) until N replicas of the partition's master
    /// have every write this connection sent it, the append included.
    async fn wait_replicas(&self, partition: u32) -> Result<(), StoreError> {
        let args = &self.inner.args;
        let wanted = args.redis_wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        let timeout = args.redis_wait_timeout;
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wanted).arg((timeout.as_millis() as u64).max(1));
        let key = self.inner.keys.stream(partition);
        let replicated: i64 = self
            .call("WAIT", |c| async move {
                match c {
                    Conn::Single(mut single) => cmd.query_async::<i64>(&mut single).await,
                    Conn::Cluster(mut cluster) => {
                        use redis::cluster_routing::{
                            Route, RoutingInfo, SingleNodeRoutingInfo, Slot, SlotAddr,
                        };
                        // The node that owns the partition's slot: the one
                        // the append went to, on the same connection.
                        let route = Route::with_slot(Slot::for_key(&key), SlotAddr::Master);
                        let value = cluster
                            .route_command(
                                cmd,
                                RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                            )
                            .await?;
                        redis::from_redis_value::<i64>(value).map_err(redis::RedisError::from)
                    }
                }
            })
            .await?;
        if replicated < i64::from(wanted) {
            return Err(StoreError::NotReplicated {
                wanted,
                replicated: replicated.max(0) as u32,
                timeout,
            });
        }
        Ok(())
    }
}
