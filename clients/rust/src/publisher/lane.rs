//! One lane: numbered batches out on `PublishStream`, the server's answers
//! back to whoever tracks them, and the re-sends that keep it exact. The
//! [`crate::Publisher`] runs one; a load generator (the simulator) runs
//! one per stream with its own [`Tracker`] and pre-encoded batches.
//!
//! Every batch not yet settled is an entry, in flight on the current
//! stream or waiting until a time to be sent (again). The server answers
//! each batch once, in order; an answer settles the entry, or (a
//! retryable refusal, an OK answer that breaks the contract) schedules a
//! re-send under the same sequence. When the stream ends or fails, every
//! entry in flight waits for the next stream; the server recognises a
//! re-sent batch it already appended by producer id and sequence, and
//! acknowledges it as duplicates.
//!
//! Open or closed loop: with [`LaneOptions::max_unacked`] set the lane
//! stops taking batches while that many are unsettled (the caller's
//! channel fills and its sender waits: backpressure); with `None` it takes
//! every batch at once and never makes its caller wait, so an open-loop
//! generator keeps its schedule whatever the server does and measures the
//! delay as latency instead (no coordinated omission).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use backon::ExponentialBackoff;
use futures::{Stream, StreamExt as _};
use testbed_proto::v1::PublishStreamResponse;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::{Code, Status};

use super::wire::{OpenStream, Payload, contract_violation};
use super::{BatchAck, PublishError};
use crate::retry::next_delay;
use crate::{ErrorDetails, RetryPolicy};

/// One batch handed to a lane.
#[derive(Debug)]
pub struct Outgoing<P, H> {
    /// Its sequence (at least 1, unique within the producer id).
    pub sequence: u64,
    /// Its events.
    pub payload: P,
    /// W3C trace context (`traceparent`, `tracestate`) sent with the batch,
    /// so ingest and the worker continue the caller's trace; empty for none.
    pub trace_context: HashMap<String, String>,
    /// The caller's handle, given back to its [`Tracker`] with each event
    /// of the batch's life and, last, with its outcome.
    pub handle: H,
}

/// How a lane sends and re-sends.
#[derive(Debug, Clone)]
pub struct LaneOptions {
    /// The idempotent producer id every batch carries.
    pub producer_id: String,
    /// Sends of one batch (`max_attempts`), the waits between them, and
    /// which refusals are worth another send (`retry_codes`).
    pub retry: RetryPolicy,
    /// Batches unsettled at most before the lane stops taking more (`None`:
    /// open loop, every batch is taken at once).
    pub max_unacked: Option<usize>,
    /// Close (half-close, then wait for the answers in flight) and reopen
    /// the stream after this long, so a balanced channel moves streams to
    /// new servers: a long-lived HTTP/2 stream otherwise stays on the
    /// server it was opened to. New batches wait for the next stream.
    pub stream_max_age: Option<Duration>,
    /// Whether a batch left unanswered by a broken stream (or not sent
    /// because no stream could be opened) uses up one of its attempts.
    /// `true`: a server down for good gives batches up after
    /// `retry.max_attempts`. `false`: they wait for the next stream however
    /// long it takes (streams are reopened after `retry.initial_backoff`
    /// doubling up to `retry.max_backoff`); only refusals and contract
    /// breaches use attempts up. A load generator that drains for a bounded
    /// time wants `false`.
    pub unanswered_uses_attempts: bool,
}

impl LaneOptions {
    /// The [`crate::Publisher`]'s defaults for `producer_id`: closed loop
    /// (64 batches unsettled at most), its [`RetryPolicy`], no stream max
    /// age, unanswered batches given up after `retry.max_attempts`.
    pub fn new(producer_id: impl Into<String>) -> Self {
        let defaults = super::PublisherOptions::default();
        Self {
            producer_id: producer_id.into(),
            retry: defaults.retry,
            max_unacked: Some(defaults.max_unacked),
            stream_max_age: defaults.stream_max_age,
            unanswered_uses_attempts: true,
        }
    }
}

/// Why a batch that was sent is sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// It was in flight on a stream that ended or failed.
    StreamBroken,
    /// The server refused it as a whole with this (retryable) code.
    Refused(Code),
    /// The server answered it OK against the contract (see
    /// [`super::contract_violation`]).
    ProtocolError,
}

/// What a lane reports as it goes: one value per lane, owned by the lane
/// task and handed back when it ends. Every method but [`Tracker::settled`]
/// has an empty default.
pub trait Tracker: Send + 'static {
    /// The caller's per-batch handle ([`Outgoing::handle`]).
    type Handle: Send + 'static;

    /// A `PublishStream` call was opened.
    fn stream_opened(&mut self) {}

    /// A stream could not be opened, or failed (the status of either).
    fn stream_failed(&mut self, _status: &Status) {}

    /// The batch was written to a stream: `attempt` counts from 1 (tries
    /// that found no stream count when
    /// [`LaneOptions::unanswered_uses_attempts`] is set).
    fn sent(&mut self, _handle: &Self::Handle, _sequence: u64, _attempt: u32) {}

    /// The server refused the batch as a whole (a re-send or the outcome
    /// follows).
    fn refused(&mut self, _handle: &Self::Handle, _sequence: u64, _details: &ErrorDetails) {}

    /// The server answered the batch OK against the contract (a re-send or
    /// the outcome follows).
    fn protocol_error(&mut self, _handle: &Self::Handle, _sequence: u64, _why: &str) {}

    /// The batch of `events` events will be sent again, for `reason`.
    fn resending(&mut self, _handle: &Self::Handle, _events: usize, _reason: Resend) {}

    /// The server answered a sequence that is not in flight on this stream
    /// (answered twice, or never sent on it): a breach of the contract.
    fn stray_ack(&mut self, _sequence: u64) {}

    /// The batch's outcome, once: acknowledged, refused for good, or given
    /// up. A batch still unsettled when the lane is dropped gets none.
    fn settled(
        &mut self,
        handle: Self::Handle,
        events: usize,
        outcome: Result<BatchAck, PublishError>,
    );
}

/// A batch not settled yet.
struct Entry<P, H> {
    batch: Outgoing<P, H>,
    /// Times tried so far.
    attempts: u32,
    /// The waits left before giving up.
    backoff: ExponentialBackoff,
    /// `None`: in flight on the current stream; `Some(t)`: to be sent at `t`.
    due: Option<Instant>,
    first_sent: Option<std::time::Instant>,
    last_sent: Option<std::time::Instant>,
}

/// The lane task's state.
struct Lane<P, K: Tracker> {
    options: LaneOptions,
    tracker: K,
    unacked: BTreeMap<u64, Entry<P, K::Handle>>,
    /// The entries waiting, by when they are due (then by sequence, so
    /// re-sends leave in order).
    waiting: BTreeSet<(Instant, u64)>,
    /// The wait before reopening a stream when unanswered batches do not
    /// use attempts up.
    reopen: Duration,
}

/// Sends what `batches` yields on `client`'s `PublishStream` until
/// `batches` ends and every batch is settled; returns the tracker.
///
/// Dropping the future (aborting its task) abandons unsettled batches: the
/// tracker gets no outcome for them.
pub async fn run<C, P, K, S>(mut client: C, mut batches: S, options: LaneOptions, tracker: K) -> K
where
    C: OpenStream<P::Request>,
    P: Payload,
    K: Tracker,
    S: Stream<Item = Outgoing<P, K::Handle>> + Unpin + Send,
{
    let mut lane = Lane {
        reopen: options.retry.initial_backoff,
        options,
        tracker,
        unacked: BTreeMap::new(),
        waiting: BTreeSet::new(),
    };
    let mut input_open = true;
    loop {
        if lane.unacked.is_empty() {
            // No stream is held open while there is nothing to send.
            if !input_open {
                return lane.tracker;
            }
            match batches.next().await {
                Some(batch) => lane.add(batch),
                None => return lane.tracker,
            }
        }
        // Unbounded: it never holds more than the unsettled batches, and a
        // send that waited here while the server waits for its answers to
        // be read would deadlock the lane.
        let (requests, outgoing) = mpsc::unbounded_channel();
        let opened = client
            .open(tokio_stream::wrappers::UnboundedReceiverStream::new(
                outgoing,
            ))
            .await;
        let mut responses = match opened {
            Ok(responses) => {
                lane.reopen = lane.options.retry.initial_backoff;
                lane.tracker.stream_opened();
                responses
            }
            Err(status) => {
                tracing::debug!(%status, "cannot open a publish stream; retrying");
                lane.tracker.stream_failed(&status);
                lane.open_failed(&status.to_string());
                lane.wait_until_due().await;
                continue;
            }
        };
        let expires = lane.options.stream_max_age.map(|age| Instant::now() + age);
        // `None` once half-closed for age: answers are still read.
        let mut requests = Some(requests);
        let recycled = loop {
            if let Some(requests) = &requests {
                lane.send_due(requests);
            }
            if !input_open && lane.unacked.is_empty() {
                // Dropping `requests` half-closes the stream: the server ends it.
                return lane.tracker;
            }
            if requests.is_none() && lane.in_flight() == 0 {
                break true;
            }
            let sending = requests.is_some();
            let room = sending
                && input_open
                && lane
                    .options
                    .max_unacked
                    .is_none_or(|max| lane.unacked.len() < max);
            let next_due = lane.next_due().filter(|_| sending);
            let expires = expires.filter(|_| sending);
            tokio::select! {
                answer = responses.message() => match answer {
                    Ok(Some(ack)) => lane.settle(ack),
                    Ok(None) => {
                        lane.stream_lost("the server ended the stream");
                        break false;
                    }
                    Err(status) => {
                        tracing::debug!(%status, "publish stream failed; re-sending what it left unacknowledged");
                        lane.tracker.stream_failed(&status);
                        lane.stream_lost(&status.to_string());
                        break false;
                    }
                },
                batch = batches.next(), if room => match batch {
                    Some(batch) => lane.add(batch),
                    None => input_open = false,
                },
                () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
                () = tokio::time::sleep_until(expires.unwrap_or_else(Instant::now)), if expires.is_some() => {
                    // Half-close: the server answers what it has and ends
                    // the stream; new batches wait for the next one.
                    requests = None;
                }
            }
        };
        if recycled {
            tracing::debug!("publish stream recycled");
        } else {
            lane.wait_until_due().await;
        }
    }
}

impl<P: Payload, K: Tracker> Lane<P, K> {
    /// A new batch, to be sent at once.
    fn add(&mut self, batch: Outgoing<P, K::Handle>) {
        let now = Instant::now();
        let sequence = batch.sequence;
        let entry = Entry {
            backoff: self.options.retry.backoff(),
            batch,
            attempts: 0,
            due: Some(now),
            first_sent: None,
            last_sent: None,
        };
        if let Some(old) = self.unacked.insert(sequence, entry) {
            // A caller's mistake (sequences must be unique); the old one
            // can no longer be told apart from the new on the wire.
            if let Some(due) = old.due {
                self.waiting.remove(&(due, sequence));
            }
            tracing::warn!(sequence, "a batch reused the sequence of an unsettled one");
        }
        self.waiting.insert((now, sequence));
    }

    /// Entries in flight on the current stream.
    fn in_flight(&self) -> usize {
        self.unacked.len() - self.waiting.len()
    }

    /// The earliest time a waiting entry is due.
    fn next_due(&self) -> Option<Instant> {
        self.waiting.first().map(|(due, _)| *due)
    }

    /// Sleeps until the earliest waiting entry is due (at once if none waits).
    async fn wait_until_due(&self) {
        if let Some(due) = self.next_due() {
            tokio::time::sleep_until(due).await;
        }
    }

    /// Makes `sequence` wait until `due`.
    fn schedule(&mut self, sequence: u64, due: Instant) {
        if let Some(entry) = self.unacked.get_mut(&sequence) {
            if let Some(old) = entry.due.replace(due) {
                self.waiting.remove(&(old, sequence));
            }
            self.waiting.insert((due, sequence));
        }
    }

    /// Sends every due entry, in order.
    fn send_due(&mut self, requests: &mpsc::UnboundedSender<<P as Payload>::Request>) {
        let now = Instant::now();
        while let Some(&(due, sequence)) = self.waiting.first() {
            if due > now {
                return;
            }
            self.waiting.pop_first();
            let Some(entry) = self.unacked.get_mut(&sequence) else {
                continue;
            };
            entry.attempts += 1;
            entry.due = None;
            let sent = std::time::Instant::now();
            entry.first_sent.get_or_insert(sent);
            entry.last_sent = Some(sent);
            let request = entry.batch.payload.request(
                sequence,
                &self.options.producer_id,
                &entry.batch.trace_context,
            );
            self.tracker
                .sent(&entry.batch.handle, sequence, entry.attempts);
            // Closed only when the call has ended, which the response side
            // reports (and the entry, in flight, is re-sent then).
            let _ = requests.send(request);
        }
    }

    /// The stream is gone: every entry in flight waits for the next one.
    fn stream_lost(&mut self, why: &str) {
        let in_flight: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(_, e)| e.due.is_none())
            .map(|(s, _)| *s)
            .collect();
        if self.options.unanswered_uses_attempts {
            for sequence in in_flight {
                self.retry(sequence, Resend::StreamBroken, why, None);
            }
            return;
        }
        let due = self.reopen_after();
        for sequence in in_flight {
            if let Some(entry) = self.unacked.get(&sequence) {
                self.tracker.resending(
                    &entry.batch.handle,
                    entry.batch.payload.events(),
                    Resend::StreamBroken,
                );
            }
            self.schedule(sequence, due);
        }
    }

    /// When to try a stream again (the reopening backoff, doubled after).
    fn reopen_after(&mut self) -> Instant {
        let wait = self.reopen;
        self.reopen = (self.reopen * 2).min(self.options.retry.max_backoff);
        Instant::now() + wait
    }

    /// No stream could be opened: every entry that was due waits (and, if
    /// unanswered batches use attempts up, counts the try as one, so a
    /// server down for good gives batches up).
    fn open_failed(&mut self, why: &str) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .waiting
            .iter()
            .take_while(|(due, _)| *due <= now)
            .map(|(_, s)| *s)
            .collect();
        if !self.options.unanswered_uses_attempts {
            let again = self.reopen_after();
            for sequence in due {
                self.schedule(sequence, again);
            }
            return;
        }
        for sequence in due {
            let Some(entry) = self.unacked.get_mut(&sequence) else {
                continue;
            };
            entry.attempts += 1;
            match next_delay(entry.backoff.next(), None) {
                Some(delay) => self.schedule(sequence, now + delay),
                None => self.give_up(sequence, why),
            }
        }
    }

    /// Schedules `sequence` to be sent again after the longer of its
    /// backoff and `hint`, or gives it up when its attempts are used up.
    fn retry(&mut self, sequence: u64, reason: Resend, why: &str, hint: Option<Duration>) {
        let Some(entry) = self.unacked.get_mut(&sequence) else {
            return;
        };
        match next_delay(entry.backoff.next(), hint) {
            Some(delay) => {
                self.tracker
                    .resending(&entry.batch.handle, entry.batch.payload.events(), reason);
                self.schedule(sequence, Instant::now() + delay);
            }
            None => self.give_up(sequence, why),
        }
    }

    fn give_up(&mut self, sequence: u64, why: &str) {
        let attempts = self.unacked.get(&sequence).map_or(0, |e| e.attempts);
        self.finish(
            sequence,
            Err(PublishError::GaveUp {
                sequence,
                attempts,
                last: why.to_owned(),
            }),
        );
    }

    /// Settles an entry: its tracker gets `result`.
    fn finish(&mut self, sequence: u64, result: Result<BatchAck, PublishError>) {
        let Some(entry) = self.unacked.remove(&sequence) else {
            return;
        };
        if let Some(due) = entry.due {
            self.waiting.remove(&(due, sequence));
        }
        if let Err(error) = &result {
            tracing::debug!(sequence, %error, "batch not acknowledged");
        }
        let events = entry.batch.payload.events();
        self.tracker.settled(entry.batch.handle, events, result);
    }

    /// One answer of the server.
    fn settle(&mut self, ack: PublishStreamResponse) {
        let sequence = ack.sequence;
        let Some(entry) = self.unacked.get(&sequence).filter(|e| e.due.is_none()) else {
            self.tracker.stray_ack(sequence);
            return;
        };
        let events = entry.batch.payload.events();
        // An absent status and one with code 0 both mean OK; the contract is
        // checked rather than trusted (a refusal once arrived as code 0).
        match ack.status.as_ref().filter(|s| s.code != 0) {
            None => {
                let rejected: Vec<u32> = ack.rejections.iter().map(|r| r.index).collect();
                match contract_violation(events, ack.accepted_count, ack.duplicate_count, &rejected)
                {
                    None => {
                        let acked = std::time::Instant::now();
                        let ack = BatchAck {
                            sequence,
                            events,
                            accepted_count: ack.accepted_count,
                            duplicate_count: ack.duplicate_count,
                            rejections: ack.rejections,
                            attempts: entry.attempts,
                            first_sent_at: entry.first_sent.unwrap_or(acked),
                            sent_at: entry.last_sent.unwrap_or(acked),
                            acked_at: acked,
                        };
                        self.finish(sequence, Ok(ack));
                    }
                    Some(why) => {
                        self.tracker
                            .protocol_error(&entry.batch.handle, sequence, &why);
                        self.retry(sequence, Resend::ProtocolError, &why, None);
                    }
                }
            }
            Some(status) => {
                let details = ErrorDetails::from_rpc_status(status);
                self.tracker
                    .refused(&entry.batch.handle, sequence, &details);
                if self.options.retry.retries(details.code) {
                    self.retry(
                        sequence,
                        Resend::Refused(details.code),
                        &details.to_string(),
                        details.retry_delay,
                    );
                } else {
                    self.finish(
                        sequence,
                        Err(PublishError::Refused {
                            sequence,
                            details: std::sync::Arc::new(details),
                        }),
                    );
                }
            }
        }
    }
}
