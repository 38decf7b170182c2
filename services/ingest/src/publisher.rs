//! The write path shared by `Publish` and `PublishStream`: validate, check
//! backpressure, split by partition, append.
//!
//! Events arrive encoded (the server decodes [`testbed_proto::raw`]
//! requests): each is read in place as an [`EventRef`] (nothing copied or
//! allocated), validated, and when valid appended as the very bytes the
//! client sent, unless they hold something the view drops (unknown fields,
//! a field sent twice), in which case prost's encoding of what it holds is
//! stored. Decoding every event into `Event` structs (a `String` per text
//! field, a `HashMap` of labels) and encoding it again was most of ingest's
//! CPU, and decoding them as prost messages of `Bytes` fields a fifth of it
//! still (`bench/README.md`).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use prost::Message as _;
use testbed_proto::prost::bytes::Bytes;
use testbed_proto::raw::{EventRef, EventView};
use testbed_proto::v1::EventRejection;
use testbed_stream::{AnyLog, AppendEvent, EntryMeta, EventLog as _, MAX_SEQUENCE, partition_of};

use crate::IngestConfig;
use crate::error::IngestError;
use crate::metrics::IngestMetrics;
use crate::tracked::{self, Admitted};
use crate::validate::{check_id, validate};

/// What happened to an accepted batch.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Published {
    /// Events appended or recognised as duplicates.
    pub accepted: u32,
    /// Of those, duplicates.
    pub duplicates: u32,
    /// Events refused, by position.
    pub rejections: Vec<EventRejection>,
    /// Of those, refused by the cap on tracked devices.
    pub device_cap: u32,
}

/// A valid event on its way to its partition: its position in the
/// request, its device and what is appended.
struct Queued<'a> {
    index: u32,
    device: &'a str,
    event: AppendEvent<'a>,
}

/// One batch to publish.
#[derive(Debug, Default)]
pub struct Batch {
    /// The encoded `testbed.v1.Event`s.
    pub events: Vec<Bytes>,
    /// Producer id (may be empty).
    pub producer_id: String,
    /// Producer sequence.
    pub sequence: u64,
    /// W3C trace context of the request, stored with each entry.
    pub traceparent: String,
    /// W3C tracestate.
    pub tracestate: String,
}

/// The last backlog figure seen per partition and when: from the appends
/// themselves, or from a read when none is recent enough.
#[derive(Debug)]
struct Backlogs {
    base: Instant,
    /// (backlog, microseconds since `base` + 1; 0: never seen).
    seen: Vec<(AtomicU64, AtomicU64)>,
}

impl Backlogs {
    fn new(partitions: u32) -> Self {
        Self {
            base: Instant::now(),
            seen: (0..partitions)
                .map(|_| (AtomicU64::new(0), AtomicU64::new(0)))
                .collect(),
        }
    }

    fn now(&self) -> u64 {
        self.base.elapsed().as_micros() as u64 + 1
    }

    /// The partition's backlog if seen less than `max_age` ago.
    fn fresh(&self, partition: u32, max_age: Duration) -> Option<u64> {
        let (backlog, at) = self.seen.get(partition as usize)?;
        let at = at.load(Ordering::Acquire);
        (at > 0 && self.now() - at < max_age.as_micros() as u64)
            .then(|| backlog.load(Ordering::Relaxed))
    }

    fn record(&self, partition: u32, backlog: u64) {
        if let Some((b, at)) = self.seen.get(partition as usize) {
            b.store(backlog, Ordering::Relaxed);
            at.store(self.now(), Ordering::Release);
        }
    }
}

/// The write path.
#[derive(Debug, Clone)]
pub struct Publisher {
    log: AnyLog,
    config: Arc<IngestConfig>,
    metrics: IngestMetrics,
    backlogs: Arc<Backlogs>,
    /// Devices this process had admitted under `--max-tracked-devices`.
    admitted: Arc<Admitted>,
}

impl Publisher {
    /// A publisher appending to `log`.
    pub fn new(log: AnyLog, config: IngestConfig) -> Self {
        Self {
            backlogs: Arc::new(Backlogs::new(log.partitions())),
            admitted: Arc::new(Admitted::new(config.tracked_devices_cache, log.retention())),
            log,
            config: Arc::new(config),
            metrics: IngestMetrics::default(),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &IngestConfig {
        &self.config
    }

    /// Validates and appends a batch. Ok means every accepted event is
    /// durably appended; an error means the batch must be retried (a retry
    /// never double counts: duplicates are dropped at append).
    pub async fn publish(&self, batch: Batch) -> Result<Published, IngestError> {
        let received = batch.events.len() as u64;
        self.metrics.received.add(received, &[]);
        self.metrics.batch_size.record(received, &[]);
        let result = self.publish_inner(batch).await;
        match &result {
            Ok(p) => tracing::debug!(
                received,
                accepted = p.accepted,
                duplicates = p.duplicates,
                rejected = p.rejections.len(),
                "batch published"
            ),
            Err(err) => tracing::debug!(received, error = %err, "batch refused"),
        }
        match &result {
            Ok(p) => {
                self.metrics.accepted.add(u64::from(p.accepted), &[]);
                self.metrics
                    .appended
                    .add(u64::from(p.accepted - p.duplicates), &[]);
                self.metrics.duplicates.add(u64::from(p.duplicates), &[]);
                let capped = u64::from(p.device_cap);
                self.metrics
                    .reject(p.rejections.len() as u64 - capped, "validation");
                self.metrics.reject(capped, "device_cap");
            }
            Err(IngestError::Backpressure { .. }) => {
                self.metrics.backpressure.add(1, &[]);
                self.metrics.reject(received, "backpressure");
            }
            Err(IngestError::Store(_)) => self.metrics.reject(received, "unavailable"),
            Err(_) => self.metrics.reject(received, "invalid_batch"),
        }
        result
    }

    async fn publish_inner(&self, batch: Batch) -> Result<Published, IngestError> {
        let config = &self.config;
        if batch.events.is_empty() {
            return Err(IngestError::EmptyBatch { field: "events" });
        }
        if batch.events.len() > config.max_batch as usize {
            return Err(IngestError::BatchTooLarge {
                field: "events",
                len: batch.events.len(),
                max: config.max_batch,
            });
        }
        check_id("producer_id", &batch.producer_id, false)
            .map_err(|v| IngestError::InvalidProducer(v.reason))?;
        if !batch.producer_id.is_empty() && batch.sequence > MAX_SEQUENCE {
            return Err(IngestError::SequenceTooLarge(batch.sequence));
        }

        let now = SystemTime::now();
        let partitions = self.log.partitions();
        let mut published = Published::default();
        // Per partition, in request order.
        let mut by_partition: BTreeMap<u32, Vec<Queued<'_>>> = BTreeMap::new();
        // Views borrow the request's bytes: nothing is copied or allocated
        // per event unless it carries more than it holds.
        for (index, bytes) in batch.events.iter().enumerate() {
            let view = match EventRef::decode(bytes) {
                Ok(view) => view,
                Err(err) => {
                    published.rejections.push(EventRejection {
                        index: index as u32,
                        event_id: String::new(),
                        field: format!("events[{index}]"),
                        reason: format!("is not a valid testbed.v1.Event: {err}"),
                    });
                    continue;
                }
            };
            match validate(&view, config, now) {
                Ok(ids) => by_partition
                    .entry(partition_of(ids.device_id, partitions))
                    .or_default()
                    .push(Queued {
                        index: index as u32,
                        device: ids.device_id,
                        event: AppendEvent {
                            event_id: ids.event_id,
                            run_id: ids.run_id,
                            bytes: if view.holds_everything() {
                                Cow::Borrowed(&bytes[..])
                            } else {
                                // Unknown fields or a field sent twice:
                                // stored as the view reads it (prost's
                                // encoding of the same fields), nothing
                                // more.
                                Cow::Owned(reencode(bytes))
                            },
                        },
                    }),
                Err(violation) => published.rejections.push(EventRejection {
                    index: index as u32,
                    event_id: String::from_utf8_lossy(view.event_id).into_owned(),
                    field: format!("events[{index}].{}", violation.field),
                    reason: violation.reason,
                }),
            }
        }

        // Backpressure before any append, so a refused request appends
        // nothing. The check is advisory under concurrency (another request
        // may fill the backlog meanwhile) and uses the figure the last
        // append reported when it is recent (--backlog-max-age): the limit
        // is soft by a few batches.
        let backlogs = futures::future::try_join_all(by_partition.keys().map(|&p| async move {
            if let Some(backlog) = self.backlogs.fresh(p, config.backlog_max_age) {
                return Ok::<_, IngestError>((p, backlog));
            }
            let backlog = self.log.figures(p).await?.backlog();
            self.backlogs.record(p, backlog);
            Ok((p, backlog))
        }))
        .await?;
        for (partition, backlog) in backlogs {
            if backlog > config.backlog_limit {
                return Err(IngestError::Backpressure {
                    partition,
                    backlog,
                    limit: config.backlog_limit,
                    retry_after: config.retry_after,
                });
            }
        }

        // The cap on tracked devices, once the batch is let in: a refused
        // batch admits no device.
        if config.max_tracked_devices > 0 {
            self.admit(&mut by_partition, &mut published).await?;
        }
        let by_partition: BTreeMap<u32, Vec<AppendEvent<'_>>> = by_partition
            .into_iter()
            .map(|(p, queued)| (p, queued.into_iter().map(|q| q.event).collect()))
            .collect();

        let meta = EntryMeta {
            producer_id: batch.producer_id,
            sequence: batch.sequence,
            traceparent: batch.traceparent,
            tracestate: batch.tracestate,
        };
        // Partitions are appended concurrently; each append is atomic. If one
        // fails the whole request fails and is retried: the partitions that
        // did append drop the retry's events as duplicates.
        let outcomes = futures::future::try_join_all(by_partition.iter().map(|(&p, events)| {
            let meta = &meta;
            async move { self.log.append(p, meta, events).await }
        }))
        .await?;
        for ((&partition, events), outcome) in by_partition.iter().zip(outcomes) {
            if let Some(backlog) = outcome.backlog {
                self.backlogs.record(partition, backlog);
            }
            published.accepted += events.len() as u32;
            published.duplicates += outcome.duplicates.len() as u32;
        }
        Ok(published)
    }
}

impl Publisher {
    /// Drops from `by_partition` the events of devices the cap on tracked
    /// devices refuses, as rejections naming `device_id` (see
    /// [`crate::tracked`]); the store is asked only about devices this
    /// process has not admitted lately.
    async fn admit(
        &self,
        by_partition: &mut BTreeMap<u32, Vec<Queued<'_>>>,
        published: &mut Published,
    ) -> Result<(), IngestError> {
        let now = Instant::now();
        let total = self.config.max_tracked_devices;
        let cap = tracked::per_partition(total, self.log.partitions());
        let asks: Vec<(u32, Vec<&str>)> = by_partition
            .iter()
            .filter_map(|(&p, queued)| {
                // Distinct devices first, then one look at the memory.
                let mut devices: Vec<&str> = queued.iter().map(|q| q.device).collect();
                devices.sort_unstable();
                devices.dedup();
                let unknown = self.admitted.unknown(devices, now);
                (!unknown.is_empty()).then_some((p, unknown))
            })
            .collect();
        if asks.is_empty() {
            return Ok(());
        }
        let answers = futures::future::try_join_all(
            asks.iter()
                .map(|(p, devices)| self.log.admit_devices(*p, devices, cap)),
        )
        .await?;
        for ((partition, devices), answer) in asks.iter().zip(answers) {
            let (admitted, refused): (Vec<_>, Vec<_>) =
                devices.iter().zip(answer).partition(|(_, ok)| *ok);
            self.admitted.record(
                admitted
                    .iter()
                    .map(|(d, _)| **d)
                    .collect::<Vec<_>>()
                    .into_iter(),
                now,
            );
            if refused.is_empty() {
                continue;
            }
            let refused: std::collections::HashSet<&str> =
                refused.into_iter().map(|(d, _)| *d).collect();
            if let Some(queued) = by_partition.get_mut(partition) {
                queued.retain(|q| {
                    if !refused.contains(q.device) {
                        return true;
                    }
                    published.device_cap += 1;
                    published.rejections.push(EventRejection {
                        index: q.index,
                        event_id: q.event.event_id.to_owned(),
                        field: format!("events[{}].device_id", q.index),
                        reason: format!(
                            "a new device past the cap on tracked devices: its partition already tracks its \
                             share ({cap}) of --max-tracked-devices {total}; a device leaves the count a \
                             --retention after its last event"
                        ),
                    });
                    false
                });
            }
        }
        by_partition.retain(|_, queued| !queued.is_empty());
        // Rejections are reported in request order.
        published.rejections.sort_by_key(|r| r.index);
        Ok(())
    }
}

/// `bytes`, which [`EventRef`] read, re-encoded with only the fields it
/// holds. [`EventView`] reads exactly what [`EventRef`] reads (tested in
/// `testbed-proto`), so its decode cannot fail here; if it somehow did,
/// the bytes are kept as sent rather than losing the event.
fn reencode(bytes: &Bytes) -> Vec<u8> {
    EventView::decode(bytes.clone()).map_or_else(|_| bytes.to_vec(), |view| view.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use testbed_proto::v1::Event;
    use testbed_stream::{EventLog as _, MemoryLog, StoreArgs};
    use testbed_test_support::events::{gpu_event, rejected};

    use super::*;

    fn event(id: &str) -> Event {
        gpu_event(id, "gpu-1", SystemTime::now())
    }

    /// Appends `events` to a one-partition log and returns what was stored.
    async fn publish_and_read(events: Vec<Bytes>) -> (Published, Vec<Vec<u8>>) {
        let log = AnyLog::Memory(MemoryLog::new(&StoreArgs {
            partitions: 1,
            ..StoreArgs::default()
        }));
        log.ensure_group().await.unwrap();
        let publisher = Publisher::new(log.clone(), IngestConfig::default());
        let published = publisher
            .publish(Batch {
                events,
                ..Batch::default()
            })
            .await
            .unwrap();
        let entries = log.read(0, "t", 10, Duration::ZERO).await.unwrap();
        (
            published,
            entries
                .into_iter()
                .flat_map(|e| e.events)
                .map(|b| b.to_vec())
                .collect(),
        )
    }

    /// A valid event is stored as the very bytes it was sent in (here with
    /// its labels last, not in field order, so a re-encoding would differ);
    /// one carrying an unknown field is stored without it; bytes that are
    /// no event are rejected alone, by index.
    #[tokio::test]
    async fn events_are_stored_as_sent_unless_they_carry_extras() {
        // Labels spliced in after the payload, as the simulator does.
        let mut spliced = event("a").encode_to_vec();
        let entry = [0x0a, 1, b'k', 0x12, 1, b'v'];
        spliced.extend_from_slice(&[0x22, entry.len() as u8]);
        spliced.extend_from_slice(&entry);
        assert_ne!(
            Event::decode(spliced.as_slice()).unwrap().encode_to_vec(),
            spliced
        );
        // Encoded before the publish: event() stamps the current second.
        let plain_b = event("b").encode_to_vec();
        let mut unknown = plain_b.clone();
        unknown.extend_from_slice(&[0x98, 0x06, 7]); // field 99
        let garbage = vec![0x0a, 0x10, b'x']; // a length past the end

        let (published, stored) = publish_and_read(vec![
            Bytes::from(spliced.clone()),
            Bytes::from(unknown),
            Bytes::from(garbage),
        ])
        .await;
        assert_eq!((published.accepted, published.duplicates), (2, 0));
        assert_eq!(rejected(&published.rejections), [(2, "events[2]", "")]);
        assert!(
            published.rejections[0]
                .reason
                .starts_with("is not a valid testbed.v1.Event"),
            "{:?}",
            published.rejections
        );
        assert_eq!(stored, [spliced, plain_b]);
    }

    /// Text that is not UTF-8 rejects its event alone, naming the field and
    /// the event's id.
    #[tokio::test]
    async fn text_that_is_not_utf8_rejects_its_event_alone() {
        let mut bad = event("c").encode_to_vec();
        bad.extend_from_slice(&[0x2a, 2, 0xff, 0xfe]); // run_id
        let good = event("d").encode_to_vec();
        let (published, stored) =
            publish_and_read(vec![Bytes::from(bad), Bytes::from(good.clone())]).await;
        assert_eq!(published.accepted, 1);
        assert_eq!(
            rejected(&published.rejections),
            [(0, "events[0].run_id", "c")]
        );
        assert_eq!(stored, [good]);
    }

    /// Past the cap on tracked devices, the events of new devices are
    /// rejected by index, naming device_id, and nothing else: tracked
    /// devices keep publishing, with or without the local memory.
    #[tokio::test]
    async fn new_devices_past_the_cap_are_rejected_alone() {
        for cache in [100, 0] {
            let log = AnyLog::Memory(MemoryLog::new(&StoreArgs {
                partitions: 1,
                ..StoreArgs::default()
            }));
            log.ensure_group().await.unwrap();
            let publisher = Publisher::new(
                log.clone(),
                IngestConfig {
                    max_tracked_devices: 2,
                    tracked_devices_cache: cache,
                    ..IngestConfig::default()
                },
            );
            let on = |id: &str, device: &str| {
                let mut e = event(id);
                e.device_id = device.into();
                Bytes::from(e.encode_to_vec())
            };
            let published = publisher
                .publish(Batch {
                    events: vec![on("1", "d1"), on("2", "d3"), on("3", "d2"), on("4", "d3")],
                    ..Batch::default()
                })
                .await
                .unwrap();
            // The batch's new devices are admitted in id order: d1 and
            // d2 fill the cap, d3 is past it.
            assert_eq!(
                published.accepted, 2,
                "cache {cache}: {:?}",
                published.rejections
            );
            assert_eq!(published.device_cap, 2);
            assert_eq!(
                rejected(&published.rejections),
                [
                    (1, "events[1].device_id", "2"),
                    (3, "events[3].device_id", "4")
                ]
            );
            assert!(
                published.rejections[0]
                    .reason
                    .contains("--max-tracked-devices 2"),
                "{}",
                published.rejections[0].reason
            );
            let again = publisher
                .publish(Batch {
                    events: vec![on("5", "d4"), on("6", "d2"), on("7", "d1")],
                    ..Batch::default()
                })
                .await
                .unwrap();
            assert_eq!(again.accepted, 2, "cache {cache}");
            let rejected: Vec<u32> = again.rejections.iter().map(|r| r.index).collect();
            assert_eq!(rejected, [0]);
            let stored = log.read(0, "t", 10, Duration::ZERO).await.unwrap();
            let events: usize = stored.iter().map(|e| e.events.len()).sum();
            assert_eq!(events, 4, "only admitted events are appended");
        }
    }
}
