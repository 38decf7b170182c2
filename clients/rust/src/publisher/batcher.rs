//! Events into sealed batches: by size (`max_batch`) and by idle time
//! (`linger` after a batch's first event), each sealed batch numbered with
//! the next sequence and handed to the stream task in sequence order.
//!
//! The open batch sits behind an async mutex held across the hand-over, so
//! sequences leave in order and a full channel (the stream task holding
//! `max_unacked` batches) makes `publish` wait: the backpressure.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt as _;
use testbed_proto::v1::Event;
use tokio::sync::{Mutex, mpsc, oneshot, watch};

use super::lane::Outgoing;
use super::{AckFuture, AckResult, Counters, PublishError, PublisherOptions};

/// A batch ready to send: its acknowledgement goes to the handle.
pub(super) type Sealed = Outgoing<Vec<Event>, oneshot::Sender<AckResult>>;

/// The batch being filled.
#[derive(Debug)]
struct Open {
    events: Vec<Event>,
    /// Sent with the batch: set by `push_batch`, empty for batched events.
    trace_context: HashMap<String, String>,
    /// The open batch's ack channel, made with its first event.
    ack: Option<(oneshot::Sender<AckResult>, AckFuture)>,
    /// Bumped at every seal, so a linger timer set for an earlier batch
    /// does not seal a later one early.
    generation: u64,
    next_sequence: u64,
    /// `None` once closed.
    out: Option<mpsc::Sender<Sealed>>,
}

/// The open batch and where sealed ones go.
#[derive(Debug)]
pub(super) struct Batcher {
    open: Mutex<Open>,
    /// The generation of an open batch that just got its first event.
    started: watch::Sender<u64>,
    max_batch: usize,
    counters: Arc<Counters>,
}

impl Batcher {
    /// The batcher and its linger task (owned by the publisher).
    pub fn start(
        options: &PublisherOptions,
        out: mpsc::Sender<Sealed>,
        counters: Arc<Counters>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (started, generations) = watch::channel(0);
        let batcher = Arc::new(Self {
            open: Mutex::new(Open {
                events: Vec::new(),
                trace_context: HashMap::new(),
                ack: None,
                generation: 0,
                next_sequence: options.first_sequence,
                out: Some(out),
            }),
            started,
            max_batch: options.max_batch,
            counters,
        });
        let linger = tokio::spawn(linger(
            Arc::downgrade(&batcher),
            generations,
            options.linger,
        ));
        (batcher, linger)
    }

    /// Adds one event to the open batch.
    pub async fn push(&self, event: Event) -> Result<AckFuture, PublishError> {
        let mut open = self.open.lock().await;
        if open.out.is_none() {
            return Err(PublishError::Closed);
        }
        let future = match &open.ack {
            Some((_, future)) => future.clone(),
            None => {
                let (tx, rx) = oneshot::channel();
                let future = AckFuture(rx.shared());
                open.ack = Some((tx, future.clone()));
                future
            }
        };
        open.events.push(event);
        if open.events.len() == 1 {
            self.started.send_replace(open.generation);
        }
        if open.events.len() >= self.max_batch {
            self.seal(&mut open).await?;
        }
        Ok(future)
    }

    /// Seals the open batch, then sends `events` as a batch of their own,
    /// with `trace_context`.
    pub async fn push_batch(
        &self,
        events: Vec<Event>,
        trace_context: HashMap<String, String>,
    ) -> Result<AckFuture, PublishError> {
        let mut open = self.open.lock().await;
        self.seal(&mut open).await?;
        let (tx, rx) = oneshot::channel();
        open.events = events;
        open.trace_context = trace_context;
        open.ack = Some((tx, AckFuture(rx.shared())));
        let future = open.ack.as_ref().map(|(_, f)| f.clone());
        self.seal_any(&mut open).await?;
        future.ok_or(PublishError::Closed)
    }

    /// Seals the open batch now.
    pub async fn flush(&self) -> Result<(), PublishError> {
        let mut open = self.open.lock().await;
        self.seal(&mut open).await
    }

    /// Seals the open batch if it is still generation `generation`.
    async fn flush_generation(&self, generation: u64) {
        let mut open = self.open.lock().await;
        if open.generation == generation {
            // Closed meanwhile: its futures resolve Closed, nothing to report.
            let _ = self.seal(&mut open).await;
        }
    }

    /// Seals the open batch and closes the output: the stream task ends
    /// once it has settled every batch.
    pub async fn close(&self) {
        let mut open = self.open.lock().await;
        let _ = self.seal(&mut open).await;
        open.out = None;
    }

    async fn seal(&self, open: &mut Open) -> Result<(), PublishError> {
        if open.events.is_empty() {
            return Ok(());
        }
        self.seal_any(open).await
    }

    /// Seals the open batch even when empty (an explicit empty batch is
    /// sent as is: the server's refusal is the caller's answer).
    async fn seal_any(&self, open: &mut Open) -> Result<(), PublishError> {
        let Some((ack, _)) = open.ack.take() else {
            return Ok(());
        };
        let events = std::mem::take(&mut open.events);
        let sequence = open.next_sequence;
        open.next_sequence += 1;
        open.generation += 1;
        let Some(out) = &open.out else {
            return Err(PublishError::Closed);
        };
        Counters::add(&self.counters.batches, 1);
        Counters::add(&self.counters.events, events.len() as u64);
        out.send(Sealed {
            sequence,
            payload: events,
            trace_context: std::mem::take(&mut open.trace_context),
            handle: ack,
        })
        .await
        .map_err(|_| PublishError::Closed)
    }
}

/// Seals a batch `linger` after its first event unless it was sealed
/// (full, flushed) before; ends with the batcher.
async fn linger(
    batcher: std::sync::Weak<Batcher>,
    mut generations: watch::Receiver<u64>,
    linger: Duration,
) {
    while generations.changed().await.is_ok() {
        let generation = *generations.borrow_and_update();
        tokio::time::sleep(linger).await;
        let Some(batcher) = batcher.upgrade() else {
            return;
        };
        batcher.flush_generation(generation).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events;

    /// 250 events with max_batch 100 leave as batches 1 and 2 of 100 (by
    /// size) and 3 of 50 (by linger), in sequence order; a closed batcher
    /// refuses events.
    #[tokio::test]
    async fn batches_by_size_then_by_linger() {
        let options = PublisherOptions {
            max_batch: 100,
            linger: Duration::from_millis(20),
            first_sequence: 1,
            ..PublisherOptions::default()
        };
        let (tx, mut rx) = mpsc::channel(8);
        let (batcher, _linger) = Batcher::start(&options, tx, Arc::default());
        for i in 0..250 {
            batcher
                .push(events::metric(&format!("e-{i}"), "d", "x", 1.0, ""))
                .await
                .unwrap();
        }
        let mut seen = Vec::new();
        for _ in 0..3 {
            let sealed = rx.recv().await.unwrap();
            seen.push((sealed.sequence, sealed.payload.len()));
        }
        assert_eq!(seen, [(1, 100), (2, 100), (3, 50)]);
        batcher.close().await;
        assert!(rx.recv().await.is_none());
        assert!(matches!(
            batcher
                .push(events::metric("late", "d", "x", 1.0, ""))
                .await,
            Err(PublishError::Closed)
        ));
    }
}
