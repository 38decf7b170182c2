//! The embedded in-memory log: the same semantics as Redis Streams with a
//! consumer group, in one process, not durable.
//!
//! Used by `testbed all` without `--redis-url`, so the first command of the
//! README needs nothing installed. Everything is lost when the process
//! stops; startup says so.
//!
//! # Layout
//! In dependency order:
//! - `tables`: the hashes and sorted sets (with expiry) and how an apply's
//!   [`Op`]s change them.
//! - `mod.rs`: [`MemoryLog`]: the streams, the consumer group, dead letters
//!   ([`EventLog`]); holds the tables behind one lock.
//! - `kv`: [`crate::kv::AggregateStore`] on [`MemoryLog`], the reads and
//!   writes of the tables.

mod kv;
mod tables;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prost::Message as _;
use tokio::sync::Notify;

use crate::keys::Keys;
use crate::log::EventLog;
use crate::memory::tables::Kv;
use crate::model::{
    AppendEvent, AppendOutcome, ApplyOutcome, ConsumerInfo, Entry, EntryMeta, Op, Ops,
    PartitionFigures, PendingSummary, latency_bucket, repeated_ids,
};
use crate::{StoreArgs, StoreError};

type Id = (u64, u64);

/// The in-memory log. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct MemoryLog {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    keys: Keys,
    window: usize,
    producer_window: u64,
    retention: Duration,
    parts: Vec<Mutex<Part>>,
    notify: Vec<Notify>,
    kv: Mutex<Kv>,
}

#[derive(Debug, Default)]
struct Part {
    entries: BTreeMap<Id, Stored>,
    last_id: Id,
    last_delivered: Id,
    pending: BTreeMap<Id, Pending>,
    ids: HashSet<String>,
    order: VecDeque<String>,
    /// Idempotent producers' recent sequences (never expire here: the
    /// embedded log lives as long as its process).
    producers: HashMap<String, ProducerWindow>,
    figures: PartitionFigures,
    dead: Vec<(Id, String, Stored)>,
    /// Tracked devices (`admit_devices`): id -> Unix ms last admitted.
    admitted: HashMap<String, u64>,
}

/// The sequences of one producer the partition remembers: the newest and
/// those within the window below it (as `append_producer.lua` does with a
/// bitmap).
#[derive(Debug, Default)]
struct ProducerWindow {
    highest: Option<u64>,
    seen: BTreeSet<u64>,
}

enum SequenceCheck {
    New,
    Seen,
    /// Older than the window; the newest sequence.
    Stale(u64),
}

impl ProducerWindow {
    fn check(&self, sequence: u64, window: u64) -> SequenceCheck {
        match self.highest {
            None => SequenceCheck::New,
            Some(hi) if sequence.saturating_add(window) <= hi => SequenceCheck::Stale(hi),
            Some(_) if self.seen.contains(&sequence) => SequenceCheck::Seen,
            Some(_) => SequenceCheck::New,
        }
    }

    fn mark(&mut self, sequence: u64, window: u64) {
        let hi = self.highest.map_or(sequence, |hi| hi.max(sequence));
        self.highest = Some(hi);
        self.seen.insert(sequence);
        // Keep (hi - window, hi].
        self.seen = self.seen.split_off(&(hi.saturating_sub(window) + 1));
    }
}

#[derive(Debug, Clone)]
struct Stored {
    meta: Vec<u8>,
    events: Vec<prost::bytes::Bytes>,
}

#[derive(Debug)]
struct Pending {
    consumer: String,
    delivered_at: Instant,
    deliveries: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn id_string(id: Id) -> String {
    format!("{}-{}", id.0, id.1)
}

fn parse_id(id: &str) -> Option<Id> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

fn entry(partition: u32, id: Id, stored: &Stored, deliveries: u64) -> Entry {
    Entry {
        id: id_string(id),
        partition,
        meta: stored.meta.clone(),
        events: stored.events.clone(),
        deliveries,
    }
}

impl MemoryLog {
    /// An empty log laid out as `args` say (partitions, dedupe window).
    pub fn new(args: &StoreArgs) -> Self {
        let partitions = args.partitions.max(1) as usize;
        Self {
            inner: Arc::new(Inner {
                keys: Keys::new(&args.key_prefix),
                window: usize::try_from(args.dedupe_window).unwrap_or(usize::MAX),
                producer_window: args.producer_window.next_multiple_of(8),
                retention: args.retention,
                parts: (0..partitions)
                    .map(|_| Mutex::new(Part::default()))
                    .collect(),
                notify: (0..partitions).map(|_| Notify::new()).collect(),
                kv: Mutex::new(Kv::default()),
            }),
        }
    }

    fn part(&self, partition: u32) -> Result<MutexGuard<'_, Part>, StoreError> {
        let part = self
            .inner
            .parts
            .get(partition as usize)
            .ok_or_else(|| StoreError::Protocol(format!("no partition {partition}")))?;
        // A panic while holding the lock cannot leave a half-applied step
        // visible to the caller that panicked; others keep going.
        Ok(part.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn kv(&self) -> MutexGuard<'_, Kv> {
        self.inner
            .kv
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn take_new(part: &mut Part, partition: u32, consumer: &str, count: usize) -> Vec<Entry> {
        let start = (
            part.last_delivered.0,
            part.last_delivered.1.saturating_add(1),
        );
        let ids: Vec<Id> = part
            .entries
            .range(start..)
            .take(count)
            .map(|(id, _)| *id)
            .collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            part.last_delivered = id;
            part.pending.insert(
                id,
                Pending {
                    consumer: consumer.to_owned(),
                    delivered_at: Instant::now(),
                    deliveries: 1,
                },
            );
            if let Some(stored) = part.entries.get(&id) {
                out.push(entry(partition, id, stored, 1));
            }
        }
        out
    }
}

impl EventLog for MemoryLog {
    fn partitions(&self) -> u32 {
        self.inner.parts.len() as u32
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn ensure_group(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn append(
        &self,
        partition: u32,
        meta: &EntryMeta,
        events: &[AppendEvent<'_>],
    ) -> Result<AppendOutcome, StoreError> {
        let mut part = self.part(partition)?;
        let mut outcome = AppendOutcome::default();
        if let Some((producer, sequence)) = meta.idempotent() {
            let window = self.inner.producer_window;
            let seen = part.producers.entry(producer.to_owned()).or_default();
            match seen.check(sequence, window) {
                SequenceCheck::Stale(highest) => {
                    return Err(StoreError::StaleSequence {
                        producer_id: producer.to_owned(),
                        sequence,
                        highest,
                        window,
                    });
                }
                SequenceCheck::Seen => outcome.duplicates = (0..events.len() as u32).collect(),
                SequenceCheck::New => {
                    seen.mark(sequence, window);
                    outcome.duplicates = repeated_ids(events);
                }
            }
        } else {
            for (i, event) in events.iter().enumerate() {
                if part.ids.insert(event.event_id.to_owned()) {
                    part.order.push_back(event.event_id.to_owned());
                } else {
                    outcome.duplicates.push(i as u32);
                }
            }
            while part.order.len() > self.inner.window {
                if let Some(old) = part.order.pop_front() {
                    part.ids.remove(&old);
                }
            }
        }
        let mut fresh = Vec::with_capacity(events.len() - outcome.duplicates.len());
        let mut dups = outcome.duplicates.iter().peekable();
        for (i, event) in events.iter().enumerate() {
            if dups.next_if_eq(&&(i as u32)).is_none() {
                fresh.push(prost::bytes::Bytes::copy_from_slice(&event.bytes));
            } else if !event.run_id.is_empty() {
                let key = self.inner.keys.run(partition, event.run_id);
                let mut kv = self.kv();
                let keys = [key];
                kv.apply(
                    &keys,
                    &Op::HashIncr(0, crate::aggregates::run::DUPLICATES.to_owned(), 1),
                );
                kv.apply(&keys, &Op::Expire(0, self.inner.retention.as_secs().max(1)));
            }
        }
        part.figures.duplicates += outcome.duplicates.len() as u64;
        part.figures.ingested += fresh.len() as u64;
        outcome.backlog = Some(part.figures.backlog());
        if !fresh.is_empty() {
            let ms = now_ms();
            let id = if ms > part.last_id.0 {
                (ms, 0)
            } else {
                (part.last_id.0, part.last_id.1 + 1)
            };
            part.last_id = id;
            part.entries.insert(
                id,
                Stored {
                    meta: meta.encode_to_vec(),
                    events: fresh,
                },
            );
            outcome.entry_id = Some(id_string(id));
            drop(part);
            if let Some(notify) = self.inner.notify.get(partition as usize) {
                notify.notify_waiters();
            }
        }
        Ok(outcome)
    }

    async fn figures(&self, partition: u32) -> Result<PartitionFigures, StoreError> {
        Ok(self.part(partition)?.figures)
    }

    async fn read(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
        block: Duration,
    ) -> Result<Vec<Entry>, StoreError> {
        let notify = self
            .inner
            .notify
            .get(partition as usize)
            .ok_or_else(|| StoreError::Protocol(format!("no partition {partition}")))?;
        // Register interest before looking, so an append in between wakes us.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let entries = Self::take_new(&mut *self.part(partition)?, partition, consumer, count);
        if !entries.is_empty() || block.is_zero() {
            return Ok(entries);
        }
        let _ = tokio::time::timeout(block, notified).await;
        Ok(Self::take_new(
            &mut *self.part(partition)?,
            partition,
            consumer,
            count,
        ))
    }

    async fn read_own_pending(
        &self,
        partition: u32,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut part = self.part(partition)?;
        Ok(Self::redeliver(
            &mut part,
            partition,
            count,
            consumer,
            |_, p| p.consumer == consumer,
        ))
    }

    async fn claim(
        &self,
        partition: u32,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<Entry>, StoreError> {
        let wanted: std::collections::BTreeSet<Id> =
            ids.iter().filter_map(|id| parse_id(id)).collect();
        let mut part = self.part(partition)?;
        Ok(Self::redeliver(
            &mut part,
            partition,
            wanted.len(),
            consumer,
            |id, _| wanted.contains(id),
        ))
    }

    async fn claim_stale(
        &self,
        partition: u32,
        consumer: &str,
        min_idle: Duration,
        count: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let mut part = self.part(partition)?;
        Ok(Self::redeliver(
            &mut part,
            partition,
            count,
            consumer,
            |_, p| p.delivered_at.elapsed() >= min_idle,
        ))
    }

    /// The consumers holding pending entries (the embedded log keeps no
    /// other record of them); idle since their latest delivery.
    async fn consumers(&self, partition: u32) -> Result<Vec<ConsumerInfo>, StoreError> {
        let part = self.part(partition)?;
        let mut by_name: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
        for pending in part.pending.values() {
            let idle = pending.delivered_at.elapsed();
            let slot = by_name
                .entry(pending.consumer.as_str())
                .or_insert((0, idle));
            slot.0 += 1;
            slot.1 = slot.1.min(idle);
        }
        Ok(by_name
            .into_iter()
            .map(|(name, (pending, idle))| ConsumerInfo {
                name: name.to_owned(),
                pending,
                idle,
            })
            .collect())
    }

    async fn pending_of(
        &self,
        partition: u32,
        owner: &str,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let part = self.part(partition)?;
        Ok(part
            .pending
            .iter()
            .filter(|(_, p)| p.consumer == owner)
            .take(count)
            .map(|(id, _)| id_string(*id))
            .collect())
    }

    async fn admit_devices(
        &self,
        partition: u32,
        devices: &[&str],
        cap: u64,
    ) -> Result<Vec<bool>, StoreError> {
        let now = now_ms();
        let horizon = now.saturating_sub(self.inner.retention.as_millis() as u64);
        let mut part = self.part(partition)?;
        // The embedded log forgets expired devices all at once (the Redis
        // script does it a bounded number per call).
        part.admitted.retain(|_, at| *at >= horizon);
        Ok(devices
            .iter()
            .map(|&device| {
                if let Some(at) = part.admitted.get_mut(device) {
                    *at = now;
                    true
                } else if (part.admitted.len() as u64) < cap {
                    part.admitted.insert(device.to_owned(), now);
                    true
                } else {
                    false
                }
            })
            .collect())
    }

    async fn forget_consumer(&self, partition: u32, name: &str) -> Result<bool, StoreError> {
        let part = self.part(partition)?;
        Ok(!part.pending.values().any(|p| p.consumer == name))
    }

    async fn apply(
        &self,
        partition: u32,
        entries: &[Entry],
        events: u64,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        let ids = entries
            .iter()
            .map(|e| {
                parse_id(&e.id).ok_or_else(|| StoreError::Protocol(format!("bad id {}", e.id)))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut part = self.part(partition)?;
        let missing: Vec<usize> = ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !part.pending.contains_key(id))
            .map(|(i, _)| i)
            .collect();
        if !missing.is_empty() {
            return Ok(ApplyOutcome::NotPending(missing));
        }
        for id in &ids {
            part.pending.remove(id);
        }
        part.figures.processed += events;
        // The kv lock is taken under the partition lock: apply and ack are
        // one step for any observer.
        let mut kv = self.kv();
        for op in &ops.ops {
            kv.apply(&ops.keys, op);
        }
        let now = now_ms();
        for &(key, entry, weight) in &ops.e2e {
            let appended = entries.get(entry as usize).map_or(now, Entry::appended_ms);
            let bucket = latency_bucket(now.saturating_sub(appended)).to_string();
            kv.apply(&ops.keys, &Op::HashIncr(key, bucket, weight as i64));
        }
        Ok(ApplyOutcome::Applied)
    }

    async fn dead_letter(
        &self,
        entry: &Entry,
        events: u64,
        reason: &str,
        ops: &Ops,
    ) -> Result<ApplyOutcome, StoreError> {
        let id = parse_id(&entry.id)
            .ok_or_else(|| StoreError::Protocol(format!("bad id {}", entry.id)))?;
        let mut part = self.part(entry.partition)?;
        if part.pending.remove(&id).is_none() {
            return Ok(ApplyOutcome::NotPending(vec![0]));
        }
        part.figures.dead_lettered += events;
        let mut kv = self.kv();
        for op in &ops.ops {
            kv.apply(&ops.keys, op);
        }
        drop(kv);
        let stored = Stored {
            meta: entry.meta.clone(),
            events: entry.events.clone(),
        };
        part.dead.push((id, reason.to_owned(), stored));
        Ok(ApplyOutcome::Applied)
    }

    async fn pending(&self, partition: u32) -> Result<PendingSummary, StoreError> {
        let part = self.part(partition)?;
        Ok(PendingSummary {
            entries: part.pending.len() as u64,
            oldest_ms: part.pending.keys().next().map(|id| id.0),
        })
    }

    async fn trim(&self, partition: u32) -> Result<u64, StoreError> {
        let mut part = self.part(partition)?;
        let next_undelivered = (
            part.last_delivered.0,
            part.last_delivered.1.saturating_add(1),
        );
        let min_id = part
            .pending
            .keys()
            .next()
            .copied()
            .map_or(next_undelivered, |p| p.min(next_undelivered));
        let keep = part.entries.split_off(&min_id);
        let removed = part.entries.len() as u64;
        part.entries = keep;
        Ok(removed)
    }

    fn retention(&self) -> Duration {
        self.inner.retention
    }
}

impl MemoryLog {
    /// Delivers again, to `consumer`, up to `count` pending entries of
    /// `part` that `pick` selects, oldest first, counting the delivery.
    fn redeliver(
        part: &mut Part,
        partition: u32,
        count: usize,
        consumer: &str,
        pick: impl Fn(&Id, &Pending) -> bool,
    ) -> Vec<Entry> {
        let mut out = Vec::new();
        for (id, pending) in part.pending.iter_mut() {
            if out.len() >= count {
                break;
            }
            if !pick(id, pending) {
                continue;
            }
            pending.consumer = consumer.to_owned();
            pending.delivered_at = Instant::now();
            pending.deliveries += 1;
            if let Some(stored) = part.entries.get(id) {
                out.push(entry(partition, *id, stored, pending.deliveries));
            }
        }
        out
    }

    /// Dead-lettered entries of `partition` with their reasons (for tests
    /// and status).
    pub fn dead_letters(&self, partition: u32) -> Vec<(String, String)> {
        self.part(partition)
            .map(|p| {
                p.dead
                    .iter()
                    .map(|(id, reason, _)| (id_string(*id), reason.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of entries still stored in `partition` (for trim tests).
    pub fn stored_entries(&self, partition: u32) -> usize {
        self.part(partition).map(|p| p.entries.len()).unwrap_or(0)
    }

    /// The consumer an entry is pending with, if any (for tests).
    pub fn pending_consumer(&self, entry: &Entry) -> Option<String> {
        let id = parse_id(&entry.id)?;
        self.part(entry.partition)
            .ok()?
            .pending
            .get(&id)
            .map(|p| p.consumer.clone())
    }
}
