//! RPC handlers of `testbed.v1.QueryService`.

use testbed_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use testbed_proto::v1::{
    GetDeviceStatsRequest, GetDeviceStatsResponse, GetPipelineStatsRequest,
    GetPipelineStatsResponse, GetRunStatsRequest, GetRunStatsResponse, GetTokenUsageRequest,
    GetTokenUsageResponse, ListDevicesRequest, ListDevicesResponse, TopDevicesRequest,
    TopDevicesResponse, WatchPipelineStatsRequest, WatchPipelineStatsResponse,
};
use testbed_server::{CancellationToken, not_implemented_yet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const WORK: &str = "query";

/// The query API.
#[derive(Debug, Clone)]
pub struct QueryApi {
    /// Cancelled at shutdown: watch streams end.
    _shutdown: CancellationToken,
}

impl QueryApi {
    /// A handler set whose watch streams end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            _shutdown: shutdown,
        }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> QueryServiceServer<Self> {
        QueryServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_device_stats(
        &self,
        _request: Request<GetDeviceStatsRequest>,
    ) -> Result<Response<GetDeviceStatsResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/GetDeviceStats",
            WORK,
        ))
    }

    async fn list_devices(
        &self,
        _request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/ListDevices",
            WORK,
        ))
    }

    async fn top_devices(
        &self,
        _request: Request<TopDevicesRequest>,
    ) -> Result<Response<TopDevicesResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/TopDevices",
            WORK,
        ))
    }

    async fn get_token_usage(
        &self,
        _request: Request<GetTokenUsageRequest>,
    ) -> Result<Response<GetTokenUsageResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/GetTokenUsage",
            WORK,
        ))
    }

    async fn get_pipeline_stats(
        &self,
        _request: Request<GetPipelineStatsRequest>,
    ) -> Result<Response<GetPipelineStatsResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/GetPipelineStats",
            WORK,
        ))
    }

    type WatchPipelineStatsStream = ReceiverStream<Result<WatchPipelineStatsResponse, Status>>;

    async fn watch_pipeline_stats(
        &self,
        _request: Request<WatchPipelineStatsRequest>,
    ) -> Result<Response<Self::WatchPipelineStatsStream>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/WatchPipelineStats",
            WORK,
        ))
    }

    async fn get_run_stats(
        &self,
        _request: Request<GetRunStatsRequest>,
    ) -> Result<Response<GetRunStatsResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.QueryService/GetRunStats",
            WORK,
        ))
    }
}
