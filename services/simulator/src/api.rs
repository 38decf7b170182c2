//! RPC handlers of `testbed.v1.SimulatorService` (`testbed sim --serve`).

use testbed_proto::v1::simulator_service_server::{SimulatorService, SimulatorServiceServer};
use testbed_proto::v1::{
    GetRunRequest, GetRunResponse, StartRunRequest, StartRunResponse, StopRunRequest,
    StopRunResponse, UpdateRunRequest, UpdateRunResponse, WatchRunRequest, WatchRunResponse,
};
use testbed_server::not_implemented_yet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const WORK: &str = "simulator";

/// The simulator API.
#[derive(Debug, Clone, Default)]
pub struct SimulatorApi {}

impl SimulatorApi {
    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> SimulatorServiceServer<Self> {
        SimulatorServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl SimulatorService for SimulatorApi {
    async fn start_run(
        &self,
        _request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.SimulatorService/StartRun",
            WORK,
        ))
    }

    async fn update_run(
        &self,
        _request: Request<UpdateRunRequest>,
    ) -> Result<Response<UpdateRunResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.SimulatorService/UpdateRun",
            WORK,
        ))
    }

    async fn stop_run(
        &self,
        _request: Request<StopRunRequest>,
    ) -> Result<Response<StopRunResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.SimulatorService/StopRun",
            WORK,
        ))
    }

    async fn get_run(
        &self,
        _request: Request<GetRunRequest>,
    ) -> Result<Response<GetRunResponse>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.SimulatorService/GetRun",
            WORK,
        ))
    }

    type WatchRunStream = ReceiverStream<Result<WatchRunResponse, Status>>;

    async fn watch_run(
        &self,
        _request: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        Err(not_implemented_yet(
            "testbed.v1.SimulatorService/WatchRun",
            WORK,
        ))
    }
}
