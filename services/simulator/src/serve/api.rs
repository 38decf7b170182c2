//! RPC handlers of `testbed.v1.SimulatorService` (`testbed sim --serve`):
//! each checks its request ([`crate::serve::spec`]) and hands it to the run
//! registry ([`crate::serve::runs`]).

use testbed_proto::v1::simulator_service_server::{SimulatorService, SimulatorServiceServer};
use testbed_proto::v1::{
    GetRunRequest, GetRunResponse, StartRunRequest, StartRunResponse, StopRunRequest,
    StopRunResponse, UpdateRunRequest, UpdateRunResponse, WatchRunRequest, WatchRunResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use tracing::Instrument as _;

use crate::serve::audit::{self, Asked, Caller};
use crate::serve::runs::{Runs, is_final};
use crate::serve::spec;

/// Messages a WatchRun stream may hold for a slow client before the
/// producer waits for it.
const WATCH_BUFFER: usize = 4;

/// The simulator API over the runs of this server.
#[derive(Debug, Clone)]
pub struct SimulatorApi {
    runs: Runs,
}

impl SimulatorApi {
    /// Handlers over `runs`.
    pub fn new(runs: Runs) -> Self {
        Self { runs }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> SimulatorServiceServer<Self> {
        SimulatorServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl SimulatorService for SimulatorApi {
    async fn start_run(
        &self,
        request: Request<StartRunRequest>,
    ) -> Result<Response<StartRunResponse>, Status> {
        let caller = Caller::of(&request);
        let spec = request.into_inner().spec;
        let asked = Asked::start(spec.as_ref());
        let span = audit::span("StartRun", &caller, &asked);
        let result = self.runs.start(spec).instrument(span.clone()).await;
        span.in_scope(|| audit::record("StartRun", &caller, &asked, result.as_ref()));
        Ok(Response::new(StartRunResponse { run: Some(result?) }))
    }

    async fn update_run(
        &self,
        request: Request<UpdateRunRequest>,
    ) -> Result<Response<UpdateRunResponse>, Status> {
        let caller = Caller::of(&request);
        let request = request.into_inner();
        let asked = Asked::update(&request.run_id, request.change.as_ref());
        let span = audit::span("UpdateRun", &caller, &asked);
        let result = async {
            spec::run_id(&request.run_id, "run_id")?;
            let change = spec::change(request.change.as_ref(), self.runs.limits())?;
            self.runs.update(&request.run_id, change).await
        }
        .instrument(span.clone())
        .await;
        span.in_scope(|| audit::record("UpdateRun", &caller, &asked, result.as_ref()));
        Ok(Response::new(UpdateRunResponse { run: Some(result?) }))
    }

    async fn stop_run(
        &self,
        request: Request<StopRunRequest>,
    ) -> Result<Response<StopRunResponse>, Status> {
        let caller = Caller::of(&request);
        let id = request.into_inner().run_id;
        let asked = Asked {
            run_id: id.clone(),
            ..Asked::default()
        };
        let span = audit::span("StopRun", &caller, &asked);
        let result = span.in_scope(|| {
            spec::run_id(&id, "run_id")?;
            self.runs.stop(&id)
        });
        span.in_scope(|| audit::record("StopRun", &caller, &asked, result.as_ref()));
        Ok(Response::new(StopRunResponse { run: Some(result?) }))
    }

    async fn get_run(
        &self,
        request: Request<GetRunRequest>,
    ) -> Result<Response<GetRunResponse>, Status> {
        let id = request.into_inner().run_id;
        spec::run_id(&id, "run_id")?;
        Ok(Response::new(GetRunResponse {
            run: Some(self.runs.get(&id)?),
        }))
    }

    type WatchRunStream = ReceiverStream<Result<WatchRunResponse, Status>>;

    async fn watch_run(
        &self,
        request: Request<WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        let request = request.into_inner();
        spec::run_id(&request.run_id, "run_id")?;
        let interval = spec::watch_interval(request.interval.as_ref())?;
        let (first, mut changes) = self.runs.watch(&request.run_id)?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let (runs, id) = (self.runs.clone(), request.run_id);
        // The stream follows the run to its final state, also at shutdown:
        // shutdown stops the run, and its final message is what a client
        // most needs (the server's grace period bounds the wait).
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + interval;
            let mut ticker = tokio::time::interval_at(start, interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let (mut run, mut forgotten) = (first, false);
            loop {
                let done = forgotten || is_final(run.state());
                if tx
                    .send(Ok(WatchRunResponse { run: Some(run) }))
                    .await
                    .is_err()
                    || done
                {
                    // The client left, or the final state went out.
                    return;
                }
                run = tokio::select! {
                    // A change of state goes out at once, not at the next tick.
                    changed = changes.changed() => match changed {
                        Ok(()) => changes.borrow_and_update().clone(),
                        // Forgotten: only ever after its final state, which
                        // the receiver still holds.
                        Err(_) => {
                            forgotten = true;
                            changes.borrow().clone()
                        }
                    },
                    _ = ticker.tick() => runs.get(&id).unwrap_or_else(|_| {
                        forgotten = true;
                        changes.borrow().clone()
                    }),
                    () = tx.closed() => return,
                };
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
