//! Calls to `testbed.v1.SimulatorService` (`testbed sim --serve`), each
//! answering the run it returns.
#![allow(clippy::unwrap_used, dead_code)]

use testbed_proto::v1::simulator_service_client::SimulatorServiceClient;
use testbed_proto::v1::update_run_request::Change;
use testbed_proto::v1::{
    GetRunRequest, Run, RunSpec, StartRunRequest, StopRunRequest, UpdateRunRequest,
};
use tonic::Status;
use tonic::transport::Channel;

/// A simulator server's client.
pub type Client = SimulatorServiceClient<Channel>;

/// StartRun.
pub async fn start(client: &mut Client, spec: RunSpec) -> Result<Run, Status> {
    let response = client
        .start_run(StartRunRequest { spec: Some(spec) })
        .await?;
    Ok(response.into_inner().run.unwrap())
}

/// GetRun.
pub async fn get(client: &mut Client, run_id: &str) -> Result<Run, Status> {
    let response = client
        .get_run(GetRunRequest {
            run_id: run_id.to_owned(),
        })
        .await?;
    Ok(response.into_inner().run.unwrap())
}

/// UpdateRun.
pub async fn update(client: &mut Client, run_id: &str, change: Change) -> Result<Run, Status> {
    let response = client
        .update_run(UpdateRunRequest {
            run_id: run_id.to_owned(),
            change: Some(change),
        })
        .await?;
    Ok(response.into_inner().run.unwrap())
}

/// StopRun, which must succeed.
pub async fn stop(client: &mut Client, run_id: &str) -> Run {
    let response = client
        .stop_run(StopRunRequest {
            run_id: run_id.to_owned(),
        })
        .await
        .unwrap();
    response.into_inner().run.unwrap()
}
