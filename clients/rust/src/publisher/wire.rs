//! What a lane puts on the wire and how it opens `PublishStream`: the two
//! batch forms ([`Payload`]: typed [`Event`]s or events already encoded),
//! the two generated clients that carry them ([`OpenStream`]), and the
//! contract every OK answer is checked against ([`contract_violation`]).

use std::collections::HashMap;
use std::future::Future;

use testbed_proto::raw::{RawIngestClient, RawPublishStreamRequest};
use testbed_proto::v1::ingest_service_client::IngestServiceClient;
use testbed_proto::v1::{Event, PublishStreamRequest, PublishStreamResponse};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::codegen::{Body, Bytes, StdError};
use tonic::{Status, Streaming};

/// The events of one batch, as a lane sends them.
///
/// Implemented for `Vec<Event>` (sent as `PublishStreamRequest`) and for
/// `Vec<Bytes>`, events already encoded as `testbed.v1.Event` (sent as
/// [`RawPublishStreamRequest`], the same bytes on the wire): a load
/// generator that encodes events itself skips building the messages.
pub trait Payload: Send + Sync + 'static {
    /// The request message that carries it.
    type Request: Send + 'static;

    /// Events in the batch.
    fn events(&self) -> usize;

    /// The request sending it as batch `sequence` of `producer_id`.
    fn request(
        &self,
        sequence: u64,
        producer_id: &str,
        trace_context: &HashMap<String, String>,
    ) -> Self::Request;
}

/// A client that can open `PublishStream` with requests of type `R`.
///
/// Implemented for the generated [`IngestServiceClient`] (typed requests)
/// and [`RawIngestClient`] (pre-encoded events) over any tonic service,
/// so a caller chooses the layers under the stream: an interceptor, a
/// telemetry layer, a load balancer.
pub trait OpenStream<R>: Send + 'static {
    /// Opens one `PublishStream` call that sends what `requests` yields.
    fn open(
        &mut self,
        requests: UnboundedReceiverStream<R>,
    ) -> impl Future<Output = Result<Streaming<PublishStreamResponse>, Status>> + Send;
}

/// One wire form: [`Payload`] for a batch of `$event`s sent in
/// `$request`s, and [`OpenStream`] for the generated `$client` that sends
/// them. The typed and the raw form differ only in these types.
macro_rules! wire_form {
    ($event:ty, $request:ident, $client:ident) => {
        impl Payload for Vec<$event> {
            type Request = $request;

            fn events(&self) -> usize {
                self.len()
            }

            fn request(
                &self,
                sequence: u64,
                producer_id: &str,
                trace_context: &HashMap<String, String>,
            ) -> $request {
                $request {
                    sequence,
                    events: self.clone(),
                    producer_id: producer_id.to_owned(),
                    trace_context: trace_context.clone(),
                }
            }
        }

        impl<T> OpenStream<$request> for $client<T>
        where
            T: tonic::client::GrpcService<tonic::body::Body> + Send + 'static,
            T::Future: Send,
            T::Error: Into<StdError>,
            T::ResponseBody: Body<Data = Bytes> + Send + 'static,
            <T::ResponseBody as Body>::Error: Into<StdError> + Send,
        {
            async fn open(
                &mut self,
                requests: UnboundedReceiverStream<$request>,
            ) -> Result<Streaming<PublishStreamResponse>, Status> {
                self.publish_stream(requests)
                    .await
                    .map(tonic::Response::into_inner)
            }
        }
    };
}

wire_form!(Event, PublishStreamRequest, IngestServiceClient);
// Clones of `Bytes` share the buffer: no event is copied into a request.
wire_form!(Bytes, RawPublishStreamRequest, RawIngestClient);

/// Why an OK answer for a batch of `events` events breaks the contract of
/// `PublishResponse` / `PublishStreamResponse`, if it does: accepted and
/// rejected events add up to the batch, rejections (their `index`es) are
/// in request order and in range, duplicates are among the accepted.
pub fn contract_violation(
    events: usize,
    accepted: u32,
    duplicates: u32,
    rejections: &[u32],
) -> Option<String> {
    if accepted as usize + rejections.len() != events {
        return Some(format!(
            "accepted_count {accepted} + {} rejections != {events} events in the batch",
            rejections.len()
        ));
    }
    if let Some(index) = rejections.iter().find(|&&i| i as usize >= events) {
        return Some(format!(
            "rejection index {index} is out of range for {events} events"
        ));
    }
    if rejections.windows(2).any(|w| w[0] >= w[1]) {
        return Some(format!(
            "rejection indexes {rejections:?} are not in request order"
        ));
    }
    if duplicates > accepted {
        return Some(format!(
            "duplicate_count {duplicates} is over accepted_count {accepted}"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An OK answer must account for every event of the batch; a refusal
    /// decoded as OK (no events accepted, none rejected) does not.
    #[test]
    fn ok_answers_are_checked_against_the_contract() {
        assert_eq!(contract_violation(10, 8, 2, &[3, 7]), None);
        assert_eq!(contract_violation(10, 10, 10, &[]), None);
        assert_eq!(
            contract_violation(30, 0, 0, &[]).as_deref(),
            Some("accepted_count 0 + 0 rejections != 30 events in the batch")
        );
        assert_eq!(
            contract_violation(3, 2, 0, &[3]).as_deref(),
            Some("rejection index 3 is out of range for 3 events")
        );
        assert_eq!(
            contract_violation(4, 2, 0, &[2, 1]).as_deref(),
            Some("rejection indexes [2, 1] are not in request order")
        );
        assert_eq!(
            contract_violation(4, 2, 3, &[0, 1]).as_deref(),
            Some("duplicate_count 3 is over accepted_count 2")
        );
    }
}
