//! Sealed batches out on `PublishStream`, acknowledgements back to their
//! futures, and the re-sends that keep it exact.
//!
//! Every batch not yet settled is an [`Entry`], in flight on the current
//! stream or waiting until a time to be sent again. The server answers each
//! batch once, in order; an answer settles the entry, or (a retryable
//! refusal, an OK answer that breaks the contract) schedules a re-send
//! under the same sequence. When the stream ends or fails, every entry in
//! flight waits for the next stream, which is opened after a backoff; the
//! server recognises a re-sent batch it already appended by producer id and
//! sequence, and acknowledges it as duplicates.

use std::collections::BTreeMap;
use std::sync::Arc;

use backon::ExponentialBackoff;
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::{PublishStreamRequest, PublishStreamResponse};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::batcher::Sealed;
use super::{BatchAck, Counters, PublishError, PublisherOptions};
use crate::retry::next_delay;
use crate::{AuthChannel, ErrorDetails};

/// A batch not settled yet.
struct Entry {
    sealed: Sealed,
    /// Times sent so far.
    attempts: u32,
    /// The waits left before giving up.
    backoff: ExponentialBackoff,
    /// `None`: in flight on the current stream; `Some(t)`: to be sent at `t`.
    due: Option<Instant>,
}

/// The stream task's state.
struct Lane {
    options: PublisherOptions,
    counters: Arc<Counters>,
    unacked: BTreeMap<u64, Entry>,
}

/// Runs until the batcher is closed and every batch is settled.
pub(super) async fn run(
    mut ingest: IngestServiceClient<AuthChannel>,
    mut batches: mpsc::Receiver<Sealed>,
    options: PublisherOptions,
    counters: Arc<Counters>,
) {
    let mut lane = Lane {
        options,
        counters,
        unacked: BTreeMap::new(),
    };
    let mut input_open = true;
    loop {
        if lane.unacked.is_empty() {
            // No stream is held open while there is nothing to send.
            match batches.recv().await {
                Some(sealed) => lane.add(sealed),
                None => return,
            }
        }
        let (requests, outgoing) = mpsc::channel(lane.options.max_unacked + 1);
        let opened = ingest
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await;
        let mut responses = match opened {
            Ok(response) => response.into_inner(),
            Err(status) => {
                tracing::debug!(%status, "cannot open a publish stream; retrying");
                lane.open_failed(&status.to_string());
                lane.wait_until_due().await;
                continue;
            }
        };
        Counters::add(&lane.counters.streams_opened, 1);
        loop {
            lane.send_due(&requests).await;
            if !input_open && lane.unacked.is_empty() {
                // Dropping `requests` half-closes the stream: the server ends it.
                return;
            }
            let room = lane.unacked.len() < lane.options.max_unacked;
            let next_due = lane.next_due();
            tokio::select! {
                answer = responses.message() => match answer {
                    Ok(Some(ack)) => lane.settle(ack),
                    Ok(None) => {
                        lane.stream_lost("the server ended the stream");
                        break;
                    }
                    Err(status) => {
                        tracing::debug!(%status, "publish stream failed; re-sending what it left unacknowledged");
                        lane.stream_lost(&status.to_string());
                        break;
                    }
                },
                sealed = batches.recv(), if input_open && room => match sealed {
                    Some(sealed) => lane.add(sealed),
                    None => input_open = false,
                },
                () = tokio::time::sleep_until(next_due.unwrap_or_else(Instant::now)), if next_due.is_some() => {}
            }
        }
        lane.wait_until_due().await;
    }
}

impl Lane {
    /// A new batch, to be sent at once.
    fn add(&mut self, sealed: Sealed) {
        let entry = Entry {
            backoff: self.options.retry.backoff(),
            sealed,
            attempts: 0,
            due: Some(Instant::now()),
        };
        self.unacked.insert(entry.sealed.sequence, entry);
    }

    /// The earliest time a waiting entry is due.
    fn next_due(&self) -> Option<Instant> {
        self.unacked.values().filter_map(|e| e.due).min()
    }

    /// Sleeps until the earliest waiting entry is due (at once if none waits).
    async fn wait_until_due(&self) {
        if let Some(due) = self.next_due() {
            tokio::time::sleep_until(due).await;
        }
    }

    /// Sends every due entry, in sequence order.
    async fn send_due(&mut self, requests: &mpsc::Sender<PublishStreamRequest>) {
        let now = Instant::now();
        for entry in self.unacked.values_mut() {
            if entry.due.is_none_or(|due| due > now) {
                continue;
            }
            if entry.attempts > 0 {
                // Sent before (or tried, when no stream could be opened).
                Counters::add(&self.counters.resent_batches, 1);
            }
            entry.attempts += 1;
            entry.due = None;
            let request = PublishStreamRequest {
                sequence: entry.sealed.sequence,
                events: entry.sealed.events.clone(),
                producer_id: self.options.producer_id.clone(),
                trace_context: Default::default(),
            };
            // Never full (room for every unacknowledged batch); closed only
            // when the call has ended, which the response side reports.
            let _ = requests.send(request).await;
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
        for sequence in in_flight {
            self.retry(sequence, why, None);
        }
    }

    /// No stream could be opened: every entry that was due counts the try
    /// as an attempt (so a server down for good gives batches up) and waits.
    fn open_failed(&mut self, why: &str) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .unacked
            .iter_mut()
            .filter(|(_, e)| e.due.is_none_or(|due| due <= now))
            .map(|(s, e)| {
                e.attempts += 1;
                *s
            })
            .collect();
        for sequence in due {
            self.retry(sequence, why, None);
        }
    }

    /// Schedules `sequence` to be sent again after the longer of its
    /// backoff and `hint`, or gives it up when its attempts are used up.
    fn retry(&mut self, sequence: u64, why: &str, hint: Option<std::time::Duration>) {
        let Some(entry) = self.unacked.get_mut(&sequence) else {
            return;
        };
        match next_delay(entry.backoff.next(), hint) {
            Some(delay) => entry.due = Some(Instant::now() + delay),
            None => {
                let attempts = entry.attempts;
                self.finish(
                    sequence,
                    Err(PublishError::GaveUp {
                        sequence,
                        attempts,
                        last: why.to_owned(),
                    }),
                );
            }
        }
    }

    /// Settles an entry: its future resolves with `result`.
    fn finish(&mut self, sequence: u64, result: Result<BatchAck, PublishError>) {
        let Some(entry) = self.unacked.remove(&sequence) else {
            return;
        };
        match &result {
            Ok(ack) => {
                Counters::add(&self.counters.acked_batches, 1);
                Counters::add(&self.counters.accepted, u64::from(ack.accepted_count));
                Counters::add(&self.counters.duplicates, u64::from(ack.duplicate_count));
                Counters::add(&self.counters.rejected, ack.rejections.len() as u64);
            }
            Err(error) => {
                tracing::debug!(sequence, %error, "batch not acknowledged");
                Counters::add(&self.counters.failed_batches, 1);
            }
        }
        // Nobody may be waiting for it any more: nothing to do then.
        let _ = entry.sealed.ack.send(result.map(Arc::new));
    }

    /// One answer of the server.
    fn settle(&mut self, ack: PublishStreamResponse) {
        let sequence = ack.sequence;
        let Some(entry) = self.unacked.get(&sequence).filter(|e| e.due.is_none()) else {
            tracing::warn!(
                sequence,
                "ingest acknowledged a batch that is not in flight on this stream"
            );
            return;
        };
        let (events, attempts) = (entry.sealed.events.len(), entry.attempts);
        // An absent status and one with code 0 both mean OK.
        match ack.status.as_ref().filter(|s| s.code != 0) {
            None => match contract_violation(events, &ack) {
                None => self.finish(
                    sequence,
                    Ok(BatchAck {
                        sequence,
                        events,
                        accepted_count: ack.accepted_count,
                        duplicate_count: ack.duplicate_count,
                        rejections: ack.rejections,
                        attempts,
                    }),
                ),
                Some(why) => {
                    tracing::warn!(
                        sequence,
                        why,
                        "an OK answer breaks the contract; re-sending the batch"
                    );
                    self.retry(sequence, &why, None);
                }
            },
            Some(status) => {
                let details = ErrorDetails::from_rpc_status(status);
                if self.options.retry.retries(details.code) {
                    self.retry(sequence, &details.to_string(), details.retry_delay);
                } else {
                    self.finish(
                        sequence,
                        Err(PublishError::Refused {
                            sequence,
                            details: Arc::new(details),
                        }),
                    );
                }
            }
        }
    }
}

/// Why an OK answer for a batch of `events` events breaks the contract of
/// `PublishStreamResponse`: accepted plus rejected must be the batch, and
/// duplicates are among the accepted.
fn contract_violation(events: usize, ack: &PublishStreamResponse) -> Option<String> {
    if ack.accepted_count as usize + ack.rejections.len() != events {
        return Some(format!(
            "accepted_count {} + {} rejections != {events} events in the batch",
            ack.accepted_count,
            ack.rejections.len()
        ));
    }
    if ack.duplicate_count > ack.accepted_count {
        return Some(format!(
            "duplicate_count {} is over accepted_count {}",
            ack.duplicate_count, ack.accepted_count
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OK answers must account for every event of the batch.
    #[test]
    fn ok_answers_are_checked() {
        let ack = |accepted, duplicates, rejected: usize| PublishStreamResponse {
            accepted_count: accepted,
            duplicate_count: duplicates,
            rejections: vec![Default::default(); rejected],
            ..Default::default()
        };
        assert_eq!(contract_violation(10, &ack(8, 2, 2)), None);
        assert_eq!(
            contract_violation(30, &ack(0, 0, 0)).as_deref(),
            Some("accepted_count 0 + 0 rejections != 30 events in the batch")
        );
        assert_eq!(
            contract_violation(4, &ack(2, 3, 2)).as_deref(),
            Some("duplicate_count 3 is over accepted_count 2")
        );
    }
}
