//! `testbed-bench --stub`: an `IngestService` that acknowledges every
//! batch at once without storing it, so the simulator's own ceiling can be
//! measured: the load generator must be well above the pipeline it drives,
//! or the pipeline's "saturation" is really the simulator's.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use testbed_proto::raw::ingest_service_server::{IngestService, IngestServiceServer};
use testbed_proto::raw::{RawPublishRequest, RawPublishStreamRequest};
use testbed_proto::v1::{PublishResponse, PublishStreamResponse};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Result;
use crate::serve;

/// Acks without storing, and without decoding the events: it is the
/// server generated over [`testbed_proto::raw`] requests (the same bytes on
/// the wire), which leaves each event as a slice of the received buffer,
/// so the stub's own CPU, which competes with the simulator for the same
/// cores, stays small.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stub;

fn count(events: usize) -> u32 {
    u32::try_from(events).unwrap_or(u32::MAX)
}

type AckStream = Pin<Box<dyn Stream<Item = Result<PublishStreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl IngestService for Stub {
    /// The whole batch accepted.
    async fn publish(
        &self,
        request: Request<RawPublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Ok(Response::new(PublishResponse {
            accepted_count: count(request.get_ref().events.len()),
            ..Default::default()
        }))
    }

    type PublishStreamStream = AckStream;

    /// One ack per request, in order; HTTP/2 flow control is the only
    /// backpressure, as it is the only work.
    async fn publish_stream(
        &self,
        request: Request<Streaming<RawPublishStreamRequest>>,
    ) -> Result<Response<AckStream>, Status> {
        Ok(Response::new(Box::pin(request.into_inner().map(|batch| {
            batch.map(|b| PublishStreamResponse {
                sequence: b.sequence,
                accepted_count: count(b.events.len()),
                ..Default::default()
            })
        }))))
    }
}

/// Serves the stub until SIGTERM/SIGINT.
pub async fn run_stub(listen: SocketAddr, addr_file: &Path) -> Result<()> {
    let router = tonic::transport::Server::builder().add_service(IngestServiceServer::new(Stub));
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
                .add_service(IngestServiceServer::new(Stub))
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
