//! The write path shared by `Publish` and `PublishStream`: validate, check
//! backpressure, split by partition, append.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use prost::Message as _;
use testbed_proto::v1::{Event, EventRejection};
use testbed_stream::{AnyLog, AppendEvent, EntryMeta, EventLog as _, MAX_SEQUENCE, partition_of};

use crate::IngestConfig;
use crate::error::IngestError;
use crate::metrics::IngestMetrics;
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
}

/// One batch to publish.
#[derive(Debug, Default)]
pub struct Batch {
    /// The events.
    pub events: Vec<Event>,
    /// Producer id (may be empty).
    pub producer_id: String,
    /// Producer sequence.
    pub sequence: u64,
    /// W3C trace context of the request, stored with each entry.
    pub traceparent: String,
    /// W3C tracestate.
    pub tracestate: String,
}

/// The write path.
#[derive(Debug, Clone)]
pub struct Publisher {
    log: AnyLog,
    config: Arc<IngestConfig>,
    metrics: IngestMetrics,
}

impl Publisher {
    /// A publisher appending to `log`.
    pub fn new(log: AnyLog, config: IngestConfig) -> Self {
        Self {
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
                self.metrics.reject(p.rejections.len() as u64, "validation");
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
        let mut by_partition: BTreeMap<u32, Vec<AppendEvent>> = BTreeMap::new();
        for (index, event) in batch.events.iter().enumerate() {
            match validate(event, config, now) {
                Ok(()) => by_partition
                    .entry(partition_of(&event.device_id, partitions))
                    .or_default()
                    .push(AppendEvent {
                        event_id: event.event_id.clone(),
                        run_id: event.run_id.clone(),
                        bytes: event.encode_to_vec(),
                    }),
                Err(violation) => published.rejections.push(EventRejection {
                    index: index as u32,
                    event_id: event.event_id.clone(),
                    field: format!("events[{index}].{}", violation.field),
                    reason: violation.reason,
                }),
            }
        }

        // Backpressure before any append, so a refused request appends
        // nothing. The check is advisory under concurrency (another request
        // may fill the backlog meanwhile); the limit is soft by a few batches.
        let figures = futures::future::try_join_all(
            by_partition
                .keys()
                .map(|&p| async move { Ok::<_, IngestError>((p, self.log.figures(p).await?)) }),
        )
        .await?;
        for (partition, f) in figures {
            if f.backlog() > config.backlog_limit {
                return Err(IngestError::Backpressure {
                    partition,
                    backlog: f.backlog(),
                    limit: config.backlog_limit,
                    retry_after: config.retry_after,
                });
            }
        }

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
        for ((_, events), outcome) in by_partition.iter().zip(outcomes) {
            published.accepted += events.len() as u32;
            published.duplicates += outcome.duplicates.len() as u32;
        }
        Ok(published)
    }
}
