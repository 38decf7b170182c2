//! `testbed-bench --stub`: an `IngestService` that acknowledges every
//! batch at once without storing it, so the simulator's own ceiling can be
//! measured: the load generator must be well above the pipeline it drives,
//! or the pipeline's "saturation" is really the simulator's.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;

use futures::{Stream, StreamExt as _};
use testbed_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use testbed_proto::v1::{
    PublishRequest, PublishResponse, PublishStreamRequest, PublishStreamResponse,
};
use tonic::{Request, Response, Status, Streaming};

use crate::error::Result;
use crate::serve;

/// Acks without storing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stub;

fn count(events: usize) -> u32 {
    u32::try_from(events).unwrap_or(u32::MAX)
}

#[tonic::async_trait]
impl IngestService for Stub {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Ok(Response::new(PublishResponse {
            accepted_count: count(request.get_ref().events.len()),
            ..Default::default()
        }))
    }

    type PublishStreamStream =
        Pin<Box<dyn Stream<Item = Result<PublishStreamResponse, Status>> + Send + 'static>>;

    async fn publish_stream(
        &self,
        request: Request<Streaming<PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        // One ack per request, in order; HTTP/2 flow control is the only
        // backpressure, as it is the only work.
        let acks = request.into_inner().map(|batch| {
            batch.map(|b| PublishStreamResponse {
                sequence: b.sequence,
                accepted_count: count(b.events.len()),
                ..Default::default()
            })
        });
        Ok(Response::new(Box::pin(acks)))
    }
}

/// Serves the stub until SIGTERM/SIGINT.
pub async fn run_stub(listen: SocketAddr, addr_file: &Path) -> Result<()> {
    let router = tonic::transport::Server::builder().add_service(IngestServiceServer::new(Stub));
    serve::run(router, listen, addr_file).await
}

#[cfg(test)]
mod tests {
    use testbed_proto::v1::Event;

    use super::*;

    /// A unary batch is acknowledged with its size and no rejections.
    #[tokio::test(flavor = "current_thread")]
    async fn acks_the_whole_batch() {
        let reply = Stub
            .publish(Request::new(PublishRequest {
                events: vec![Event::default(); 7],
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(reply.accepted_count, 7);
        assert!(reply.rejections.is_empty());
    }
}
