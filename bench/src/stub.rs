//! `testbed-bench --stub`: an `IngestService` that acknowledges every
//! batch at once without storing it, so the simulator's own ceiling can be
//! measured: the load generator must be well above the pipeline it drives,
//! or the pipeline's "saturation" is really the simulator's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt as _};
use testbed_proto::raw::{RawPublishRequest, RawPublishStreamRequest};
use testbed_proto::v1::{PublishResponse, PublishStreamResponse};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use crate::error::Result;
use crate::serve;

/// Acks without storing, and without decoding the events: requests are
/// read as [`testbed_proto::raw`] messages (the same bytes on the wire), so
/// the stub's own CPU, which competes with the simulator for the same
/// cores, stays small. A generated server would decode every event.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stub;

fn count(events: usize) -> u32 {
    u32::try_from(events).unwrap_or(u32::MAX)
}

impl NamedService for Stub {
    const NAME: &'static str = testbed_proto::service_names::INGEST;
}

impl Stub {
    /// `Publish`: the whole batch accepted.
    fn publish(request: &RawPublishRequest) -> PublishResponse {
        PublishResponse {
            accepted_count: count(request.events.len()),
            ..Default::default()
        }
    }

    /// `PublishStream`: one ack per request, in order; HTTP/2 flow control
    /// is the only backpressure, as it is the only work.
    fn publish_stream(requests: Streaming<RawPublishStreamRequest>) -> AckStream {
        Box::pin(requests.map(|batch| {
            batch.map(|b| PublishStreamResponse {
                sequence: b.sequence,
                accepted_count: count(b.events.len()),
                ..Default::default()
            })
        }))
    }
}

type AckStream = Pin<Box<dyn Stream<Item = Result<PublishStreamResponse, Status>> + Send>>;

struct Unary;

impl tonic::server::UnaryService<RawPublishRequest> for Unary {
    type Response = PublishResponse;
    type Future = futures::future::Ready<Result<Response<PublishResponse>, Status>>;

    fn call(&mut self, request: Request<RawPublishRequest>) -> Self::Future {
        futures::future::ready(Ok(Response::new(Stub::publish(request.get_ref()))))
    }
}

struct Streamed;

impl tonic::server::StreamingService<RawPublishStreamRequest> for Streamed {
    type Response = PublishStreamResponse;
    type ResponseStream = AckStream;
    type Future = futures::future::Ready<Result<Response<AckStream>, Status>>;

    fn call(&mut self, request: Request<Streaming<RawPublishStreamRequest>>) -> Self::Future {
        futures::future::ready(Ok(Response::new(Stub::publish_stream(
            request.into_inner(),
        ))))
    }
}

impl<B> tower_service::Service<http::Request<B>> for Stub
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            "/testbed.v1.IngestService/Publish" => Box::pin(async move {
                let codec = ProstCodec::<PublishResponse, RawPublishRequest>::default();
                Ok(tonic::server::Grpc::new(codec).unary(Unary, req).await)
            }),
            "/testbed.v1.IngestService/PublishStream" => Box::pin(async move {
                let codec = ProstCodec::<PublishStreamResponse, RawPublishStreamRequest>::default();
                Ok(tonic::server::Grpc::new(codec)
                    .streaming(Streamed, req)
                    .await)
            }),
            other => {
                let status = Status::unimplemented(format!("the stub does not serve {other}"));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

/// Serves the stub until SIGTERM/SIGINT.
pub async fn run_stub(listen: SocketAddr, addr_file: &Path) -> Result<()> {
    let router = tonic::transport::Server::builder().add_service(Stub);
    serve::run(router, listen, addr_file).await
}

#[cfg(test)]
mod tests {
    use testbed_proto::v1::ingest_service_client::IngestServiceClient;
    use testbed_proto::v1::{Event, PublishRequest, PublishStreamRequest};

    use super::*;

    /// Served over gRPC, the stub acks the generated clients' requests:
    /// a unary batch with its size, each streamed batch in order.
    #[tokio::test]
    async fn acks_generated_clients() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(Stub)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut client = IngestServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let reply = client
            .publish(PublishRequest {
                events: vec![Event::default(); 7],
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted_count, 7);
        assert!(reply.rejections.is_empty());

        let requests = (1..=3u64).map(|sequence| PublishStreamRequest {
            sequence,
            events: vec![Event::default(); sequence as usize],
            ..Default::default()
        });
        let acks: Vec<PublishStreamResponse> = client
            .publish_stream(futures::stream::iter(requests))
            .await
            .unwrap()
            .into_inner()
            .map(|a| a.unwrap())
            .collect()
            .await;
        let seen: Vec<(u64, u32)> = acks
            .iter()
            .map(|a| (a.sequence, a.accepted_count))
            .collect();
        assert_eq!(seen, [(1, 1), (2, 2), (3, 3)]);

        let missing = testbed_proto::v1::query_service_client::QueryServiceClient::connect(
            format!("http://{addr}"),
        )
        .await
        .unwrap()
        .get_pipeline_stats(testbed_proto::v1::GetPipelineStatsRequest::default())
        .await
        .unwrap_err();
        assert_eq!(missing.code(), tonic::Code::Unimplemented);
        server.abort();
    }
}
