//! The batching publisher: events in, batches out on one `PublishStream`
//! call, one acknowledgement future per batch.
//!
//! Every batch carries the publisher's producer id and its own sequence
//! (1, 2, 3… unless [`PublisherOptions::first_sequence`] says otherwise),
//! which makes the producer idempotent: when the stream breaks (ingest
//! restarted, a connection closed by `--max-connection-age`, a network
//! fault) the publisher opens a new one and re-sends every batch not yet
//! acknowledged under the same sequence, and the server acknowledges a
//! batch it already appended as all duplicates. Each event is appended
//! once, however many times its batch was sent.
//!
//! A batch refused as a whole with a retryable code (RESOURCE_EXHAUSTED,
//! UNAVAILABLE, INTERNAL) is re-sent after the longer of the backoff and
//! the server's `RetryInfo`; one refused otherwise (INVALID_ARGUMENT,
//! FAILED_PRECONDITION) resolves its future with [`PublishError::Refused`].
//! [`PublisherOptions::retry`] caps the sends of one batch.
//!
//! Backpressure: at most [`PublisherOptions::max_unacked`] batches are
//! unacknowledged at once; past that, [`Publisher::publish`] waits.
//!
//! # Layers
//! - [`Publisher`] (`mod.rs`, `batcher.rs`): events in, sealed batches of
//!   typed [`Event`]s out, one [`AckFuture`] per batch, closed loop.
//! - [`lane`]: the one `PublishStream` sender under it: sends numbered
//!   batches, matches answers, re-sends (broken streams, retryable
//!   refusals, contract breaches) under the same sequence, recycles
//!   streams by age. Use it directly for what the `Publisher` does not
//!   do: events already encoded (`Vec<Bytes>`), an open loop that never
//!   makes its caller wait, per-batch send and ack times, re-send reasons,
//!   your own tower layers under the stream ([`wire::OpenStream`] takes any
//!   generated ingest client). The simulator's load runs on it.
//! - [`wire`]: the two batch forms, the two clients that open the stream,
//!   and the contract every OK answer is checked against.

mod batcher;
pub mod lane;
pub mod wire;

pub use lane::{LaneOptions, Outgoing, Resend, Tracker};
pub use wire::{OpenStream, Payload, contract_violation};

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt as _;
use futures::future::Shared;
use testbed_proto::v1::{Event, EventRejection};
use tokio::sync::oneshot;
use tonic::Code;

use crate::{Client, ErrorDetails, RetryPolicy};

/// How a [`Publisher`] batches and retries.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// The idempotent producer id (at most 128 of `[A-Za-z0-9._:-]`). One
    /// id names one producer session: a new publisher whose sequences start
    /// again must take a new id. Default: `rust-` and 16 random hex digits.
    pub producer_id: String,
    /// The first batch's sequence (at least 1; 0 means "none" to the server).
    pub first_sequence: u64,
    /// Events per batch at most (the server's `--max-batch` is 1000 by default).
    pub max_batch: usize,
    /// How long the first event of a batch waits for more before the batch
    /// is sent anyway.
    pub linger: Duration,
    /// Batches sent and not yet acknowledged, at most; `publish` waits past it.
    pub max_unacked: usize,
    /// Sends of one batch (`max_attempts`) and the waits between them;
    /// `retry_codes` are the refusals worth re-sending.
    pub retry: RetryPolicy,
    /// Close and reopen the stream after this long (`None`: never), so
    /// that a `dns:///` channel spreads streams over servers added since
    /// (see [`LaneOptions::stream_max_age`]).
    pub stream_max_age: Option<Duration>,
}

impl Default for PublisherOptions {
    fn default() -> Self {
        Self {
            producer_id: format!("rust-{:016x}", rand::random::<u64>()),
            first_sequence: 1,
            max_batch: 500,
            linger: Duration::from_millis(5),
            max_unacked: 64,
            retry: RetryPolicy {
                max_attempts: 10,
                initial_backoff: Duration::from_millis(50),
                max_backoff: Duration::from_secs(2),
                max_elapsed: None,
                // INTERNAL on an ack: the store answered something
                // unexpected and re-sending is exact (ingest.proto).
                retry_codes: vec![Code::Unavailable, Code::ResourceExhausted, Code::Internal],
                ..RetryPolicy::default()
            },
            stream_max_age: None,
        }
    }
}

/// The acknowledgement of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchAck {
    /// The batch's sequence.
    pub sequence: u64,
    /// Events in the batch.
    pub events: usize,
    /// Events accepted (appended, or duplicates of ones appended).
    pub accepted_count: u32,
    /// Of the accepted: re-sent duplicates, counted once.
    pub duplicate_count: u32,
    /// Events refused on their own (fix them, do not re-send them).
    pub rejections: Vec<EventRejection>,
    /// Times the batch was sent.
    pub attempts: u32,
    /// When it was first written to a stream.
    pub first_sent_at: Instant,
    /// When it was last written to a stream (the send this answers).
    pub sent_at: Instant,
    /// When its answer was read.
    pub acked_at: Instant,
}

/// Why a batch was not acknowledged.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PublishError {
    /// Refused as a whole for a reason not worth re-sending.
    #[error("batch {sequence} refused: {details}")]
    Refused {
        /// The batch's sequence.
        sequence: u64,
        /// The decoded refusal (field violations for INVALID_ARGUMENT).
        details: Arc<ErrorDetails>,
    },
    /// Sent [`RetryPolicy::max_attempts`] times without an acknowledgement.
    #[error("batch {sequence} not acknowledged after {attempts} attempts; last: {last}")]
    GaveUp {
        /// The batch's sequence.
        sequence: u64,
        /// Times it was sent.
        attempts: u32,
        /// The last failure.
        last: String,
    },
    /// The publisher was closed (or dropped) first.
    #[error("the publisher is closed")]
    Closed,
    /// [`PublisherOptions`] out of range.
    #[error("invalid publisher options: {0}")]
    InvalidOptions(&'static str),
}

type AckResult = Result<Arc<BatchAck>, PublishError>;

/// Resolves with the acknowledgement of the batch an event went into.
/// Clones (every event of one batch holds one) resolve alike.
#[derive(Debug, Clone)]
pub struct AckFuture(Shared<oneshot::Receiver<AckResult>>);

impl Future for AckFuture {
    type Output = AckResult;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<AckResult> {
        self.0
            .poll_unpin(cx)
            .map(|r| r.unwrap_or(Err(PublishError::Closed)))
    }
}

/// Counters of a publisher's life so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublisherStats {
    /// Batches sealed (each sent at least once).
    pub batches: u64,
    /// Events in them.
    pub events: u64,
    /// Batches acknowledged.
    pub acked_batches: u64,
    /// Events accepted, duplicates included.
    pub accepted: u64,
    /// Of the accepted: re-sent duplicates.
    pub duplicates: u64,
    /// Events rejected on their own.
    pub rejected: u64,
    /// Batches that resolved with an error.
    pub failed_batches: u64,
    /// `PublishStream` calls opened.
    pub streams_opened: u64,
    /// Times a batch was sent again (broken stream or retryable refusal).
    pub resent_batches: u64,
    /// Re-sends decided because the batch was in flight on a stream that
    /// ended or failed.
    pub resent_stream_broken: u64,
    /// Re-sends decided because the server refused the batch as a whole
    /// with a retryable code (RESOURCE_EXHAUSTED, UNAVAILABLE...).
    pub resent_refused: u64,
    /// Re-sends decided because an OK answer broke the contract.
    pub resent_protocol_error: u64,
}

/// The live counters behind [`PublisherStats`].
#[derive(Debug, Default)]
struct Counters {
    batches: AtomicU64,
    events: AtomicU64,
    acked_batches: AtomicU64,
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: AtomicU64,
    failed_batches: AtomicU64,
    streams_opened: AtomicU64,
    resent_batches: AtomicU64,
    resent_stream_broken: AtomicU64,
    resent_refused: AtomicU64,
    resent_protocol_error: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> PublisherStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PublisherStats {
            batches: get(&self.batches),
            events: get(&self.events),
            acked_batches: get(&self.acked_batches),
            accepted: get(&self.accepted),
            duplicates: get(&self.duplicates),
            rejected: get(&self.rejected),
            failed_batches: get(&self.failed_batches),
            streams_opened: get(&self.streams_opened),
            resent_batches: get(&self.resent_batches),
            resent_stream_broken: get(&self.resent_stream_broken),
            resent_refused: get(&self.resent_refused),
            resent_protocol_error: get(&self.resent_protocol_error),
        }
    }
}

/// The publisher's [`Tracker`]: counters, and each outcome to its future.
#[derive(Debug)]
struct Acks(Arc<Counters>);

impl Tracker for Acks {
    type Handle = oneshot::Sender<AckResult>;

    fn stream_opened(&mut self) {
        Counters::add(&self.0.streams_opened, 1);
    }

    fn sent(&mut self, _: &Self::Handle, _: u64, attempt: u32) {
        if attempt > 1 {
            // Sent before (or tried, when no stream could be opened).
            Counters::add(&self.0.resent_batches, 1);
        }
    }

    fn resending(&mut self, _: &Self::Handle, _: usize, reason: Resend) {
        let counter = match reason {
            Resend::StreamBroken => &self.0.resent_stream_broken,
            Resend::Refused(_) => &self.0.resent_refused,
            Resend::ProtocolError => &self.0.resent_protocol_error,
        };
        Counters::add(counter, 1);
    }

    fn protocol_error(&mut self, _: &Self::Handle, sequence: u64, why: &str) {
        tracing::warn!(
            sequence,
            why,
            "an OK answer breaks the contract; re-sending the batch"
        );
    }

    fn stray_ack(&mut self, sequence: u64) {
        tracing::warn!(
            sequence,
            "ingest acknowledged a batch that is not in flight on this stream"
        );
    }

    fn settled(&mut self, handle: Self::Handle, _: usize, outcome: Result<BatchAck, PublishError>) {
        match &outcome {
            Ok(ack) => {
                Counters::add(&self.0.acked_batches, 1);
                Counters::add(&self.0.accepted, u64::from(ack.accepted_count));
                Counters::add(&self.0.duplicates, u64::from(ack.duplicate_count));
                Counters::add(&self.0.rejected, ack.rejections.len() as u64);
            }
            Err(_) => Counters::add(&self.0.failed_batches, 1),
        }
        // Nobody may be waiting for it any more: nothing to do then.
        let _ = handle.send(outcome.map(Arc::new));
    }
}

/// Aborts a task when dropped: the publisher's tasks live as long as it.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Events in, batches out on `PublishStream`. Dropping it without
/// [`Publisher::close`] abandons what is not acknowledged: those futures
/// resolve with [`PublishError::Closed`].
#[derive(Debug)]
pub struct Publisher {
    batcher: Arc<batcher::Batcher>,
    counters: Arc<Counters>,
    producer_id: String,
    _linger: AbortOnDrop,
    stream: Option<AbortOnDrop>,
}

impl Publisher {
    /// Starts a publisher on `client`'s ingest service (must be called in a
    /// Tokio runtime: it spawns the stream task and the linger timer).
    pub fn start(client: &Client, options: PublisherOptions) -> Result<Self, PublishError> {
        if options.first_sequence == 0 {
            return Err(PublishError::InvalidOptions(
                "first_sequence must be at least 1",
            ));
        }
        if options.max_batch == 0 || options.max_unacked == 0 || options.retry.max_attempts == 0 {
            return Err(PublishError::InvalidOptions(
                "max_batch, max_unacked and retry.max_attempts must be at least 1",
            ));
        }
        let counters = Arc::new(Counters::default());
        let (sealed_tx, sealed_rx) = tokio::sync::mpsc::channel(1);
        let (batcher, linger) = batcher::Batcher::start(&options, sealed_tx, counters.clone());
        let lane_options = LaneOptions {
            producer_id: options.producer_id.clone(),
            retry: options.retry.clone(),
            max_unacked: Some(options.max_unacked),
            stream_max_age: options.stream_max_age,
            unanswered_uses_attempts: true,
        };
        let (ingest, acks) = (client.ingest.clone(), Acks(counters.clone()));
        let stream = tokio::spawn(async move {
            lane::run(
                ingest,
                tokio_stream::wrappers::ReceiverStream::new(sealed_rx),
                lane_options,
                acks,
            )
            .await;
        });
        Ok(Self {
            batcher,
            counters,
            producer_id: options.producer_id,
            _linger: AbortOnDrop(linger),
            stream: Some(AbortOnDrop(stream)),
        })
    }

    /// Adds `event` to the open batch (sending the batch when it is full);
    /// returns that batch's acknowledgement future. Waits while
    /// `max_unacked` batches are unacknowledged.
    pub async fn publish(&self, event: Event) -> Result<AckFuture, PublishError> {
        self.batcher.push(event).await
    }

    /// Sends `events` as one batch of their own (after the open batch),
    /// whatever their number: the server refuses an empty or oversized one.
    pub async fn publish_batch(&self, events: Vec<Event>) -> Result<AckFuture, PublishError> {
        self.batcher.push_batch(events, HashMap::new()).await
    }

    /// As [`Publisher::publish_batch`], sending `trace_context` (W3C
    /// `traceparent` and `tracestate`, e.g. from an OpenTelemetry
    /// propagator) with the batch, so that ingest's and the worker's spans
    /// join the caller's trace.
    pub async fn publish_batch_traced(
        &self,
        events: Vec<Event>,
        trace_context: HashMap<String, String>,
    ) -> Result<AckFuture, PublishError> {
        self.batcher.push_batch(events, trace_context).await
    }

    /// Sends the open batch now, without waiting for `linger`.
    pub async fn flush(&self) -> Result<(), PublishError> {
        self.batcher.flush().await
    }

    /// The producer id every batch carries.
    pub fn producer_id(&self) -> &str {
        &self.producer_id
    }

    /// The counters so far.
    pub fn stats(&self) -> PublisherStats {
        self.counters.snapshot()
    }

    /// Sends the open batch, waits until every batch is acknowledged or
    /// given up, ends the stream and returns the final counters.
    pub async fn close(mut self) -> PublisherStats {
        self.batcher.close().await;
        if let Some(mut stream) = self.stream.take() {
            // The task ends once its input is closed and nothing is unacknowledged.
            if let Err(error) = (&mut stream.0).await {
                tracing::warn!(%error, "the publisher's stream task failed");
            }
        }
        self.counters.snapshot()
    }
}

impl Client {
    /// A [`Publisher`] on this client's ingest service.
    pub fn publisher(&self, options: PublisherOptions) -> Result<Publisher, PublishError> {
        Publisher::start(self, options)
    }
}
