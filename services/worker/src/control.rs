//! RPC handlers of `testbed.v1.WorkerControlService`.

use testbed_proto::v1::worker_control_service_server::{
    WorkerControlService, WorkerControlServiceServer,
};
use testbed_proto::v1::{
    ClearFaultsRequest, ClearFaultsResponse, GetStatusRequest, GetStatusResponse,
    InjectFaultRequest, InjectFaultResponse, PauseRequest, PauseResponse, ResumeRequest,
    ResumeResponse, SetConcurrencyRequest, SetConcurrencyResponse, WatchStatusRequest,
    WatchStatusResponse,
};
use testbed_server::{CancellationToken, not_implemented_yet};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const WORK: &str = "worker control";

/// The worker control API.
#[derive(Debug, Clone)]
pub struct WorkerControlApi {
    /// Cancelled at shutdown: watch streams end.
    _shutdown: CancellationToken,
}

impl WorkerControlApi {
    /// A handler set whose watch streams end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken) -> Self {
        Self {
            _shutdown: shutdown,
        }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> WorkerControlServiceServer<Self> {
        WorkerControlServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl WorkerControlService for WorkerControlApi {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/GetStatus",
            WORK,
        ))
    }

    type WatchStatusStream = ReceiverStream<Result<WatchStatusResponse, Status>>;

    async fn watch_status(
        &self,
        _request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/WatchStatus",
            WORK,
        ))
    }

    async fn pause(
        &self,
        _request: Request<PauseRequest>,
    ) -> Result<Response<PauseResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/Pause",
            WORK,
        ))
    }

    async fn resume(
        &self,
        _request: Request<ResumeRequest>,
    ) -> Result<Response<ResumeResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/Resume",
            WORK,
        ))
    }

    async fn set_concurrency(
        &self,
        _request: Request<SetConcurrencyRequest>,
    ) -> Result<Response<SetConcurrencyResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/SetConcurrency",
            WORK,
        ))
    }

    async fn inject_fault(
        &self,
        _request: Request<InjectFaultRequest>,
    ) -> Result<Response<InjectFaultResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/InjectFault",
            WORK,
        ))
    }

    async fn clear_faults(
        &self,
        _request: Request<ClearFaultsRequest>,
    ) -> Result<Response<ClearFaultsResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.WorkerControlService/ClearFaults",
            WORK,
        ))
    }
}
