//! RPC handlers of `testbed.v1.IngestService`.
//!
//! The server is the one generated over [`testbed_proto::raw`] requests:
//! the same service on the wire, with each event left encoded for the
//! publisher to validate through a view and store as it came.

use futures::StreamExt as _;
use futures::stream::FuturesOrdered;
use testbed_proto::raw::ingest_service_server::{IngestService, IngestServiceServer};
use testbed_proto::raw::{RawPublishRequest, RawPublishStreamRequest};
use testbed_proto::v1::{PublishResponse, PublishStreamResponse};
use testbed_server::CancellationToken;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::error::to_rpc_status;
use crate::publisher::{Batch, Publisher};

/// The ingest API.
#[derive(Debug, Clone)]
pub struct IngestApi {
    publisher: Publisher,
    /// Cancelled at shutdown: streams stop reading, finish the batches in
    /// flight, and end.
    shutdown: CancellationToken,
}

impl IngestApi {
    /// Handlers over `publisher` whose streams end when `shutdown` is cancelled.
    pub fn new(publisher: Publisher, shutdown: CancellationToken) -> Self {
        Self {
            publisher,
            shutdown,
        }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> IngestServiceServer<Self> {
        IngestServiceServer::new(self)
    }
}

/// The trace context of this call's server span (which continues the
/// caller's), stored with its entries so the worker's span continues the
/// trace across the queue.
fn trace_context(_metadata: &MetadataMap) -> (String, String) {
    testbed_telemetry::propagation::current_to_strings()
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn publish(
        &self,
        request: Request<RawPublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let (traceparent, tracestate) = trace_context(request.metadata());
        let request = request.into_inner();
        let published = self
            .publisher
            .publish(Batch {
                events: request.events,
                producer_id: request.producer_id,
                sequence: request.sequence,
                traceparent,
                tracestate,
            })
            .await?;
        Ok(Response::new(PublishResponse {
            accepted_count: published.accepted,
            rejections: published.rejections,
            duplicate_count: published.duplicates,
        }))
    }

    type PublishStreamStream = ReceiverStream<Result<PublishStreamResponse, Status>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<RawPublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        // Each batch gets a span: a child of the caller's batch context when
        // the request carries one, else of this stream's server span.
        let stream_span = tracing::Span::current();
        let mut inbound = request.into_inner();
        let window = self.publisher.config().stream_window as usize;
        let (tx, rx) = mpsc::channel(window);
        let publisher = self.publisher.clone();
        let shutdown = self.shutdown.clone();
        // One task per stream: reads batches while fewer than `window` are
        // being appended, and sends acks strictly in request order
        // (FuturesOrdered) as soon as each batch and all before it are done.
        tokio::spawn(async move {
            let mut in_flight = FuturesOrdered::new();
            let mut reading = true;
            loop {
                tokio::select! {
                    // Acks first: they free window slots.
                    biased;
                    Some(ack) = in_flight.next(), if !in_flight.is_empty() => {
                        if tx.send(Ok(ack)).await.is_err() {
                            return; // the client went away
                        }
                    }
                    () = shutdown.cancelled(), if reading => {
                        // Stop taking batches; acknowledge those in flight,
                        // then end the stream. The client re-sends the rest.
                        reading = false;
                    }
                    message = inbound.message(), if reading && in_flight.len() < window => {
                        match message {
                            Ok(Some(req)) => {
                                let publisher = publisher.clone();
                                let span = batch_span(&stream_span, &req);
                                let (traceparent, tracestate) = span.in_scope(testbed_telemetry::propagation::current_to_strings);
                                let batch = Batch {
                                    events: req.events,
                                    producer_id: req.producer_id,
                                    sequence: req.sequence,
                                    traceparent,
                                    tracestate,
                                };
                                let sequence = req.sequence;
                                in_flight.push_back(
                                    async move { ack(sequence, publisher.publish(batch).await) }.instrument(span),
                                );
                            }
                            Ok(None) => reading = false,
                            Err(status) => {
                                tracing::debug!(%status, "publish stream broken by the client");
                                return;
                            }
                        }
                    }
                    else => break,
                }
                if !reading && in_flight.is_empty() {
                    break;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The span of one streamed batch.
fn batch_span(stream: &tracing::Span, request: &RawPublishStreamRequest) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    let span = tracing::info_span!(
        parent: stream,
        "publish batch",
        otel.kind = "server",
        batch.sequence = request.sequence,
        batch.events = request.events.len(),
    );
    let get = |k: &str| {
        request
            .trace_context
            .get(k)
            .map(String::as_str)
            .unwrap_or_default()
    };
    if !get("traceparent").is_empty() {
        let _ = span.set_parent(testbed_telemetry::propagation::from_strings(
            get("traceparent"),
            get("tracestate"),
        ));
    }
    span
}

fn ack(
    sequence: u64,
    result: Result<crate::publisher::Published, crate::error::IngestError>,
) -> PublishStreamResponse {
    match result {
        Ok(published) => PublishStreamResponse {
            sequence,
            accepted_count: published.accepted,
            rejections: published.rejections,
            status: None,
            duplicate_count: published.duplicates,
        },
        Err(err) => PublishStreamResponse {
            sequence,
            status: Some(to_rpc_status(&Status::from(err))),
            ..Default::default()
        },
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prost::Message as _;
    use testbed_proto::google::rpc;
    use testbed_stream::StoreError;

    use super::*;
    use crate::error::IngestError;

    /// How many refusals [`variant`] tells apart.
    const VARIANTS: usize = 11;

    /// Which refusal `err` is. Exhaustive on purpose: a new `IngestError`
    /// or `StoreError` variant does not compile until it has a number here,
    /// and the test below fails until [`every_refusal`] builds one.
    fn variant(err: &IngestError) -> usize {
        match err {
            IngestError::EmptyBatch { .. } => 0,
            IngestError::BatchTooLarge { .. } => 1,
            IngestError::InvalidProducer(_) => 2,
            IngestError::SequenceTooLarge(_) => 3,
            IngestError::Backpressure { .. } => 4,
            IngestError::Store(StoreError::Unavailable(_)) => 5,
            IngestError::Store(StoreError::Protocol(_)) => 6,
            IngestError::Store(StoreError::StaleSequence { .. }) => 7,
            IngestError::Store(StoreError::Disagreement { .. }) => 8,
            IngestError::Store(StoreError::NotReplicated { .. }) => 9,
            IngestError::Store(StoreError::Config(_)) => 10,
        }
    }

    /// One refusal of every kind.
    fn every_refusal() -> Vec<IngestError> {
        vec![
            IngestError::EmptyBatch { field: "events" },
            IngestError::BatchTooLarge {
                field: "events",
                len: 5,
                max: 2,
            },
            IngestError::InvalidProducer("too long".into()),
            IngestError::SequenceTooLarge(1 << 60),
            IngestError::Backpressure {
                partition: 1,
                backlog: 10,
                limit: 5,
                retry_after: Duration::from_millis(1500),
            },
            IngestError::Store(StoreError::Unavailable("Connection refused".into())),
            IngestError::Store(StoreError::Protocol("boom".into())),
            IngestError::Store(StoreError::StaleSequence {
                producer_id: "sim-1".into(),
                sequence: 3,
                highest: 70_000,
                window: 65_536,
            }),
            IngestError::Store(StoreError::Disagreement {
                flag: "--partitions",
                ours: "4".into(),
                stored: "8".into(),
            }),
            IngestError::Store(StoreError::NotReplicated {
                wanted: 1,
                replicated: 0,
                timeout: Duration::from_millis(100),
            }),
            IngestError::Store(StoreError::Config("bad".into())),
        ]
    }

    /// Every refused stream batch is acknowledged with the code, message
    /// and details the unary call answers with, never as OK (a refusal
    /// without details, such as UNAVAILABLE, once decoded as code 0).
    #[test]
    fn stream_ack_of_every_refusal_matches_the_unary_error() {
        let mut seen = [false; VARIANTS];
        for (err, same) in every_refusal().into_iter().zip(every_refusal()) {
            let which = variant(&err);
            seen[which] = true;
            let unary = Status::from(same);
            let ack = ack(7, Err(err));
            assert_eq!(ack.sequence, 7);
            assert_eq!(ack.accepted_count, 0, "variant {which}");
            assert!(ack.rejections.is_empty(), "variant {which}");
            let status = ack.status.expect("a refused batch carries a status");
            assert_ne!(unary.code(), tonic::Code::Ok, "variant {which}");
            assert_eq!(status.code, unary.code() as i32, "variant {which}");
            assert_eq!(status.message, unary.message(), "variant {which}");
            let details = if unary.details().is_empty() {
                Vec::new()
            } else {
                rpc::Status::decode(unary.details()).unwrap().details
            };
            assert_eq!(status.details, details, "variant {which}");
        }
        assert_eq!(seen, [true; VARIANTS], "every_refusal misses a variant");
    }

    /// The details that matter to a client survive: the field of a bad
    /// request and the retry delay of backpressure.
    #[test]
    fn stream_ack_keeps_field_violations_and_retry_info() {
        let refusals = every_refusal();
        let by_variant = |n: usize| {
            let err = every_refusal()
                .into_iter()
                .find(|e| variant(e) == n)
                .unwrap();
            ack(1, Err(err)).status.unwrap()
        };
        assert_eq!(refusals.len(), VARIANTS);
        let bad = by_variant(1);
        assert_eq!(
            bad.details[0].type_url,
            "type.googleapis.com/google.rpc.BadRequest"
        );
        let bad = rpc::BadRequest::decode(bad.details[0].value.as_slice()).unwrap();
        assert_eq!(bad.field_violations[0].field, "events");
        let busy = by_variant(4);
        let info = rpc::RetryInfo::decode(busy.details[0].value.as_slice()).unwrap();
        assert_eq!(
            info.retry_delay,
            Some(prost_types::Duration {
                seconds: 1,
                nanos: 500_000_000
            })
        );
        let down = by_variant(5);
        assert_eq!(down.code, tonic::Code::Unavailable as i32);
        assert!(down.message.contains("Connection refused"), "{down:?}");
    }
}
