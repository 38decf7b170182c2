//! The `PublishStream` lane against a scripted ingest server (in process,
//! on 127.0.0.1:0): pre-encoded batches in an open loop, re-sends with
//! their reasons, per-batch trace context and times, and streams recycled
//! by age without a re-send.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use testbed_client::google::rpc;
use testbed_client::prost::bytes::Bytes;
use testbed_client::publisher::{
    BatchAck, LaneOptions, Outgoing, PublishError, Resend, Tracker, lane,
};
use testbed_client::raw::RawIngestClient;
use testbed_client::v1::ingest_service_server::{IngestService, IngestServiceServer};
use testbed_client::v1::{
    PublishRequest, PublishResponse, PublishStreamRequest, PublishStreamResponse,
};
use tokio::sync::mpsc;
use tonic::{Code, Request, Response, Status, Streaming};

/// What the server saw: (stream number from 1, sequence, traceparent).
type Seen = Arc<Mutex<Vec<(usize, u64, Option<String>)>>>;

/// Stream 1 refuses batch 1 (RESOURCE_EXHAUSTED), accepts batch 2 and
/// fails when batch 3 arrives; later streams accept everything.
#[derive(Clone, Default)]
struct Scripted {
    streams: Arc<AtomicUsize>,
    seen: Seen,
}

type Answers = Pin<Box<dyn Stream<Item = Result<PublishStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for Scripted {
    async fn publish(
        &self,
        _: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Err(Status::unimplemented("streams only"))
    }

    type PublishStreamStream = Answers;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishStreamRequest>>,
    ) -> Result<Response<Answers>, Status> {
        let stream = self.streams.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = mpsc::channel(64);
        let (mut requests, seen) = (request.into_inner(), self.seen.clone());
        tokio::spawn(async move {
            while let Some(Ok(batch)) = requests.next().await {
                let traceparent = batch.trace_context.get("traceparent").cloned();
                seen.lock()
                    .unwrap()
                    .push((stream, batch.sequence, traceparent));
                let ok = PublishStreamResponse {
                    sequence: batch.sequence,
                    accepted_count: batch.events.len() as u32,
                    ..Default::default()
                };
                let answer = match (stream, batch.sequence) {
                    (1, 1) => Ok(PublishStreamResponse {
                        sequence: 1,
                        status: Some(rpc::Status {
                            code: Code::ResourceExhausted as i32,
                            message: "busy".into(),
                            details: vec![],
                        }),
                        ..Default::default()
                    }),
                    (1, 3) => Err(Status::unavailable("going away")),
                    _ => Ok(ok),
                };
                let last = answer.is_err();
                if tx.send(answer).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Starts the scripted server; returns its client (raw requests).
async fn serve(script: Scripted) -> RawIngestClient<tonic::transport::Channel> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServiceServer::new(script))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    RawIngestClient::new(channel)
}

/// Records everything the lane reports.
#[derive(Default)]
struct Record {
    opened: usize,
    failed: Vec<Code>,
    refused: Vec<(u64, Code)>,
    resent: Vec<(u64, Resend)>,
    settled: Vec<(u64, Result<BatchAck, PublishError>)>,
}

impl Tracker for Record {
    type Handle = u64;

    fn stream_opened(&mut self) {
        self.opened += 1;
    }

    fn stream_failed(&mut self, status: &Status) {
        self.failed.push(status.code());
    }

    fn refused(&mut self, handle: &u64, _: u64, details: &testbed_client::ErrorDetails) {
        self.refused.push((*handle, details.code));
    }

    fn resending(&mut self, handle: &u64, _: usize, reason: Resend) {
        self.resent.push((*handle, reason));
    }

    fn settled(&mut self, handle: u64, _: usize, outcome: Result<BatchAck, PublishError>) {
        self.settled.push((handle, outcome));
    }
}

fn batch(sequence: u64) -> Outgoing<Vec<Bytes>, u64> {
    // Two events, already encoded (any bytes: the server does not look).
    Outgoing {
        sequence,
        payload: vec![
            Bytes::from_static(b"\x0a\x01a"),
            Bytes::from_static(b"\x0a\x01b"),
        ],
        trace_context: HashMap::from([(
            "traceparent".to_owned(),
            format!("00-{sequence:032x}-00f067aa0ba902b7-01"),
        )]),
        handle: sequence,
    }
}

fn options() -> LaneOptions {
    let mut options = LaneOptions::new("lane-test");
    options.max_unacked = None;
    options.unanswered_uses_attempts = false;
    // Long enough that a refused batch is not re-sent on stream 1 before
    // the server fails it (then it would be re-sent as StreamBroken too).
    options.retry.initial_backoff = Duration::from_millis(200);
    options.retry.jitter = false;
    options
}

/// A refused batch is re-sent as `Refused(RESOURCE_EXHAUSTED)`, a batch in
/// flight on a failed stream as `StreamBroken` on the next stream; every
/// batch is acknowledged once with its times in order, and each send
/// carries the batch's trace context.
#[tokio::test]
async fn refusals_and_broken_streams_are_resent_with_their_reason() {
    let script = Scripted::default();
    let client = serve(script.clone()).await;
    let (tx, rx) = mpsc::unbounded_channel();
    for sequence in 1..=3 {
        // Open loop: sending never waits for the server.
        tx.send(batch(sequence)).unwrap();
    }
    drop(tx);
    let lane = lane::run(
        client,
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        options(),
        Record::default(),
    );
    let record = tokio::time::timeout(Duration::from_secs(10), lane)
        .await
        .expect("the lane settles every batch and ends");

    assert_eq!(record.opened, 2);
    assert_eq!(record.failed, [Code::Unavailable]);
    assert_eq!(record.refused, [(1, Code::ResourceExhausted)]);
    let mut resent = record.resent.clone();
    resent.sort_by_key(|(s, _)| *s);
    assert_eq!(
        resent,
        [
            (1, Resend::Refused(Code::ResourceExhausted)),
            (3, Resend::StreamBroken)
        ]
    );
    let mut acks: Vec<(u64, u32, u32)> = record
        .settled
        .iter()
        .map(|(h, r)| {
            let ack = r.as_ref().unwrap();
            assert!(ack.first_sent_at <= ack.sent_at && ack.sent_at <= ack.acked_at);
            (*h, ack.attempts, ack.accepted_count)
        })
        .collect();
    acks.sort();
    assert_eq!(acks, [(1, 2, 2), (2, 1, 2), (3, 2, 2)]);
    let seen = script.seen.lock().unwrap().clone();
    let mut sends: Vec<(usize, u64)> = seen.iter().map(|(s, q, _)| (*s, *q)).collect();
    sends.sort();
    assert_eq!(sends, [(1, 1), (1, 2), (1, 3), (2, 1), (2, 3)]);
    for (_, sequence, traceparent) in &seen {
        assert_eq!(
            traceparent.as_deref(),
            Some(format!("00-{sequence:032x}-00f067aa0ba902b7-01").as_str())
        );
    }
}

/// With a stream max age, a batch sent after the age goes out on a new
/// stream, and nothing is re-sent (the old stream was drained first).
#[tokio::test]
async fn streams_are_recycled_by_age_without_resending() {
    let script = Scripted::default();
    // Start past stream 1's script: every batch is accepted.
    script.streams.store(1, Ordering::SeqCst);
    let client = serve(script.clone()).await;
    let (tx, rx) = mpsc::unbounded_channel();
    let mut options = options();
    options.stream_max_age = Some(Duration::from_millis(100));
    let lane = tokio::spawn(lane::run(
        client,
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        options,
        Record::default(),
    ));
    tx.send(batch(1)).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tx.send(batch(2)).unwrap();
    drop(tx);
    let record = tokio::time::timeout(Duration::from_secs(10), lane)
        .await
        .unwrap()
        .unwrap();
    assert!(record.resent.is_empty(), "{:?}", record.resent);
    assert_eq!(record.opened, 2);
    let seen = script.seen.lock().unwrap().clone();
    let sends: Vec<(usize, u64)> = seen.iter().map(|(s, q, _)| (*s, *q)).collect();
    assert_eq!(sends, [(2, 1), (3, 2)]);
    assert!(record.settled.iter().all(|(_, r)| r.is_ok()));
}
