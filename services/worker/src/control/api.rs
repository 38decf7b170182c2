//! RPC handlers of `testbed.v1.WorkerControlService`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use testbed_proto::v1::worker_control_service_server::{
    WorkerControlService, WorkerControlServiceServer,
};
use testbed_proto::v1::{
    ClearFaultsRequest, ClearFaultsResponse, GetStatusRequest, GetStatusResponse, GroupStatus,
    InjectFaultRequest, InjectFaultResponse, PartitionStatus, PauseRequest, PauseResponse,
    ResumeRequest, ResumeResponse, SetConcurrencyRequest, SetConcurrencyResponse,
    WatchStatusRequest, WatchStatusResponse,
};
use testbed_server::CancellationToken;
use testbed_stream::{AnyLog, EventLog as _};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::control::error::ControlError;
use crate::control::faults;
use crate::control::local::LocalControl;
use crate::control::store::ControlStore;

/// Watch interval bounds and default.
const WATCH_INTERVAL: (Duration, Duration, Duration) = (
    Duration::from_millis(100),
    Duration::from_secs(60),
    Duration::from_secs(1),
);
/// Concurrency bounds.
const CONCURRENCY: (u32, u32) = (1, 256);

/// The worker control API. Any replica answers for the whole group.
#[derive(Debug, Clone)]
pub struct WorkerControlApi {
    log: AnyLog,
    store: ControlStore,
    local: Arc<LocalControl>,
    heartbeat_ttl: Duration,
    /// Cancelled at shutdown: watch streams end.
    shutdown: CancellationToken,
}

fn age(now: SystemTime, since_ms: Option<u64>) -> Option<prost_types::Duration> {
    let since = SystemTime::UNIX_EPOCH + Duration::from_millis(since_ms?);
    prost_types::Duration::try_from(now.duration_since(since).unwrap_or_default()).ok()
}

impl WorkerControlApi {
    /// Handlers over the control state in `log`'s store.
    pub fn new(
        log: AnyLog,
        local: Arc<LocalControl>,
        heartbeat_ttl: Duration,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store: ControlStore::new(log.clone()),
            log,
            local,
            heartbeat_ttl,
            shutdown,
        }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> WorkerControlServiceServer<Self> {
        WorkerControlServiceServer::new(self)
    }

    async fn status(&self) -> Result<GetStatusResponse, ControlError> {
        let now = SystemTime::now();
        let mut group = GroupStatus::default();
        let mut oldest: Option<u64> = None;
        for partition in 0..self.log.partitions() {
            let figures = self.log.figures(partition).await?;
            let pending = self.log.pending(partition).await?;
            group.partitions.push(PartitionStatus {
                partition,
                backlog: figures.backlog(),
                pending: pending.entries,
                oldest_pending_age: age(now, pending.oldest_ms),
            });
            group.backlog += figures.backlog();
            group.pending += pending.entries;
            group.dead_lettered += figures.dead_lettered;
            oldest = match (oldest, pending.oldest_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        group.oldest_pending_age = age(now, oldest);
        Ok(GetStatusResponse {
            workers: self.store.workers(self.heartbeat_ttl, now).await?,
            group: Some(group),
            desired: Some(
                self.store
                    .state(self.local.default_concurrency(), now)
                    .await?,
            ),
        })
    }

    async fn state(&self) -> Result<testbed_proto::v1::ControlState, ControlError> {
        Ok(self
            .store
            .state(self.local.default_concurrency(), SystemTime::now())
            .await?)
    }
}

#[tonic::async_trait]
impl WorkerControlService for WorkerControlApi {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<GetStatusResponse>, Status> {
        Ok(Response::new(self.status().await?))
    }

    type WatchStatusStream = ReceiverStream<Result<WatchStatusResponse, Status>>;

    async fn watch_status(
        &self,
        request: Request<WatchStatusRequest>,
    ) -> Result<Response<Self::WatchStatusStream>, Status> {
        let interval = match request.into_inner().interval {
            None => WATCH_INTERVAL.2,
            Some(d) => Duration::try_from(d)
                .ok()
                .filter(|d| *d >= WATCH_INTERVAL.0 && *d <= WATCH_INTERVAL.1)
                .ok_or_else(|| ControlError::field("interval", "must be between 100ms and 60s"))?,
        };
        let (tx, rx) = mpsc::channel(4);
        let api = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = api.shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    _ = ticker.tick() => {}
                }
                let update =
                    api.status()
                        .await
                        .map_err(Status::from)
                        .map(|s| WatchStatusResponse {
                            workers: s.workers,
                            group: s.group,
                            desired: s.desired,
                            time: Some(SystemTime::now().into()),
                        });
                if tx.send(update).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn pause(
        &self,
        request: Request<PauseRequest>,
    ) -> Result<Response<PauseResponse>, Status> {
        let reason = request.into_inner().reason;
        if reason.chars().count() > 256 {
            return Err(ControlError::field("reason", "must be at most 256 characters").into());
        }
        self.store
            .set_paused(true, &reason)
            .await
            .map_err(ControlError::from)?;
        tracing::info!(%reason, "workers paused");
        Ok(Response::new(PauseResponse {
            state: Some(self.state().await?),
        }))
    }

    async fn resume(
        &self,
        _request: Request<ResumeRequest>,
    ) -> Result<Response<ResumeResponse>, Status> {
        self.store
            .set_paused(false, "")
            .await
            .map_err(ControlError::from)?;
        tracing::info!("workers resumed");
        Ok(Response::new(ResumeResponse {
            state: Some(self.state().await?),
        }))
    }

    async fn set_concurrency(
        &self,
        request: Request<SetConcurrencyRequest>,
    ) -> Result<Response<SetConcurrencyResponse>, Status> {
        let concurrency = request.into_inner().concurrency;
        if !(CONCURRENCY.0..=CONCURRENCY.1).contains(&concurrency) {
            return Err(ControlError::field(
                "concurrency",
                format!(
                    "must be {}..{}, got {concurrency}",
                    CONCURRENCY.0, CONCURRENCY.1
                ),
            )
            .into());
        }
        self.store
            .set_concurrency(concurrency)
            .await
            .map_err(ControlError::from)?;
        Ok(Response::new(SetConcurrencyResponse {
            state: Some(self.state().await?),
        }))
    }

    async fn inject_fault(
        &self,
        request: Request<InjectFaultRequest>,
    ) -> Result<Response<InjectFaultResponse>, Status> {
        let fault = faults::validate(request.into_inner(), SystemTime::now())?;
        self.store
            .add_fault(&fault)
            .await
            .map_err(ControlError::from)?;
        tracing::info!(fault = ?fault, "fault injected");
        Ok(Response::new(InjectFaultResponse { fault: Some(fault) }))
    }

    async fn clear_faults(
        &self,
        request: Request<ClearFaultsRequest>,
    ) -> Result<Response<ClearFaultsResponse>, Status> {
        let ids = request.into_inner().fault_ids;
        let cleared = self
            .store
            .clear_faults(&ids, SystemTime::now())
            .await
            .map_err(ControlError::from)?;
        Ok(Response::new(ClearFaultsResponse {
            cleared_count: cleared,
            state: Some(self.state().await?),
        }))
    }
}
