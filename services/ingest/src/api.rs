//! RPC handlers of `testbed.v1.IngestService`.

use testbed_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use testbed_proto::v1::{
    PublishRequest, PublishResponse, PublishStreamRequest, PublishStreamResponse,
};
use testbed_server::{CancellationToken, not_implemented_yet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// The ingest API.
#[derive(Debug, Clone)]
pub struct IngestApi {
    /// Cancelled at shutdown: open streams finish their in-flight batches and end.
    _shutdown: CancellationToken,
}

impl IngestApi {
    /// A handler set whose streams end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            _shutdown: shutdown,
        }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> IngestServiceServer<Self> {
        IngestServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl IngestService for IngestApi {
    async fn publish(
        &self,
        _request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.IngestService/Publish",
            "pipeline",
        ))
    }

    type PublishStreamStream = ReceiverStream<Result<PublishStreamResponse, Status>>;

    async fn publish_stream(
        &self,
        _request: Request<Streaming<PublishStreamRequest>>,
    ) -> Result<Response<Self::PublishStreamStream>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.IngestService/PublishStream",
            "pipeline",
        ))
    }
}
