//! Publish requests whose events are already encoded, and a client that
//! sends them.
//!
//! [`RawPublishRequest`] and [`RawPublishStreamRequest`] are wire-identical
//! to [`crate::v1::PublishRequest`] and [`crate::v1::PublishStreamRequest`]:
//! an embedded message and a `bytes` field are both length-delimited, so a
//! `repeated bytes` field holding encoded `Event`s is a `repeated Event` on
//! the wire. A load generator encodes each event once into one buffer per
//! batch, shares the parts (`Bytes`) between the request and its retries,
//! and splices in each device's labels, encoded once (protobuf fields may
//! come in any order). The server sees the ordinary messages.

use std::collections::HashMap;

use prost::bytes::Bytes;
use tonic::codegen::http::uri::PathAndQuery;

use crate::v1::{PublishResponse, PublishStreamResponse};

/// [`crate::v1::PublishRequest`] with encoded events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawPublishRequest {
    /// Encoded `testbed.v1.Event`s.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub events: Vec<Bytes>,
    /// As in `PublishRequest`.
    #[prost(string, tag = "2")]
    pub producer_id: String,
    /// As in `PublishRequest`.
    #[prost(uint64, tag = "3")]
    pub sequence: u64,
}

/// [`crate::v1::PublishStreamRequest`] with encoded events.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RawPublishStreamRequest {
    /// As in `PublishStreamRequest`.
    #[prost(uint64, tag = "1")]
    pub sequence: u64,
    /// Encoded `testbed.v1.Event`s.
    #[prost(bytes = "bytes", repeated, tag = "2")]
    pub events: Vec<Bytes>,
    /// As in `PublishStreamRequest`.
    #[prost(string, tag = "3")]
    pub producer_id: String,
    /// As in `PublishStreamRequest`.
    #[prost(map = "string, string", tag = "4")]
    pub trace_context: HashMap<String, String>,
}

/// `IngestService.Publish` and `PublishStream` with raw requests, over any
/// tonic transport (the same calls the generated client makes).
#[derive(Debug, Clone)]
pub struct RawIngestClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> RawIngestClient<T>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    /// A client over `inner`.
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    async fn ready(&mut self) -> Result<(), tonic::Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| tonic::Status::unknown(format!("Service was not ready: {}", e.into())))
    }

    /// `IngestService.Publish`.
    pub async fn publish(
        &mut self,
        request: tonic::Request<RawPublishRequest>,
    ) -> Result<tonic::Response<PublishResponse>, tonic::Status> {
        self.ready().await?;
        let codec = tonic_prost::ProstCodec::<RawPublishRequest, PublishResponse>::default();
        let path = PathAndQuery::from_static("/testbed.v1.IngestService/Publish");
        let mut request = request;
        request.extensions_mut().insert(tonic::GrpcMethod::new(
            "testbed.v1.IngestService",
            "Publish",
        ));
        self.inner.unary(request, path, codec).await
    }

    /// `IngestService.PublishStream`.
    pub async fn publish_stream(
        &mut self,
        request: impl tonic::IntoStreamingRequest<Message = RawPublishStreamRequest>,
    ) -> Result<tonic::Response<tonic::codec::Streaming<PublishStreamResponse>>, tonic::Status>
    {
        self.ready().await?;
        let codec =
            tonic_prost::ProstCodec::<RawPublishStreamRequest, PublishStreamResponse>::default();
        let path = PathAndQuery::from_static("/testbed.v1.IngestService/PublishStream");
        let mut request = request.into_streaming_request();
        request.extensions_mut().insert(tonic::GrpcMethod::new(
            "testbed.v1.IngestService",
            "PublishStream",
        ));
        self.inner.streaming(request, path, codec).await
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::v1::{Event, PublishRequest, PublishStreamRequest};

    fn event(id: &str) -> Event {
        Event {
            event_id: id.into(),
            device_id: "d".into(),
            labels: [("zone".to_owned(), "a".to_owned())].into(),
            ..Event::default()
        }
    }

    /// Raw requests decode as the ordinary ones, and back.
    #[test]
    fn raw_requests_are_the_ordinary_ones_on_the_wire() {
        let events = vec![event("1"), event("2")];
        let raw = RawPublishRequest {
            events: events
                .iter()
                .map(|e| Bytes::from(e.encode_to_vec()))
                .collect(),
            producer_id: "p".into(),
            sequence: 9,
        };
        let typed = PublishRequest::decode(raw.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            typed,
            PublishRequest {
                events: events.clone(),
                producer_id: "p".into(),
                sequence: 9,
            }
        );
        assert_eq!(
            RawPublishRequest::decode(typed.encode_to_vec().as_slice()).unwrap(),
            raw
        );

        let raw = RawPublishStreamRequest {
            sequence: 3,
            events: raw.events,
            producer_id: "p".into(),
            trace_context: [("traceparent".to_owned(), "x".to_owned())].into(),
        };
        let typed = PublishStreamRequest::decode(raw.encode_to_vec().as_slice()).unwrap();
        assert_eq!(typed.events, events);
        assert_eq!((typed.sequence, typed.producer_id.as_str()), (3, "p"));
        assert_eq!(typed.trace_context, raw.trace_context);
    }
}
