//! RPC handlers of `testbed.v1.QueryService`: each validates its request
//! (see the `request` module), runs its query and maps errors once, through
//! `From<QueryError> for Status`.

use testbed_proto::v1::query_service_server::{QueryService, QueryServiceServer};
use testbed_proto::v1::{
    GetDeviceStatsRequest, GetDeviceStatsResponse, GetPipelineStatsRequest,
    GetPipelineStatsResponse, GetRunStatsRequest, GetRunStatsResponse, GetTokenUsageRequest,
    GetTokenUsageResponse, ListDevicesRequest, ListDevicesResponse, TopDevicesRequest,
    TopDevicesResponse, WatchPipelineStatsRequest,
};
use testbed_server::CancellationToken;
use testbed_stream::{AnyLog, EventLog as _};
use tonic::{Request, Response, Status};

use crate::error::QueryError;
use crate::paging::{LabelFilter, decode_token};
use crate::request::{self, DEFAULT_PIPELINE_WINDOW, DEFAULT_WINDOW};
use crate::store::Reader;
use crate::time::{Window, now_ms};
use crate::watch::WatchStream;
use crate::{QueryConfig, devices, pipeline, runs, tokens, top};

/// How much longer than the call budget one read on the query's
/// connections may take (see [`QueryApi::with_config`]).
const READ_TIMEOUT_MARGIN: std::time::Duration = std::time::Duration::from_millis(250);

/// The query API.
#[derive(Debug, Clone)]
pub struct QueryApi {
    /// Reads the aggregates, within the configured read limits.
    reader: Reader,
    /// Messages each watch stream buffers.
    watch_buffer: usize,
    /// Cancelled at shutdown: watch streams end with OK.
    shutdown: CancellationToken,
    /// Budget of one unary call (`--query-timeout`).
    budget: std::time::Duration,
}

impl QueryApi {
    /// Handlers over `log` with the default limits, whose watch streams end
    /// when `shutdown` is cancelled.
    pub fn new(log: AnyLog, shutdown: CancellationToken) -> Self {
        Self::with_config(log, &QueryConfig::default(), shutdown)
    }

    /// Handlers over `log` with the limits of `config`, reading on
    /// connections of their own ([`AnyLog::for_reads`]) whose calls are
    /// bounded a little past the call budget, so that the budget ends a
    /// slow query (DEADLINE_EXCEEDED) before a store timeout would
    /// (UNAVAILABLE, which says the store is down).
    pub fn with_config(log: AnyLog, config: &QueryConfig, shutdown: CancellationToken) -> Self {
        let reads = log.for_reads(config.query_timeout + READ_TIMEOUT_MARGIN);
        Self {
            reader: Reader::new(reads, config),
            watch_buffer: config.query_watch_buffer as usize,
            shutdown,
            budget: config.query_timeout,
        }
    }

    /// Wraps the handlers in tonic's generated server.
    pub fn into_server(self) -> QueryServiceServer<Self> {
        QueryServiceServer::new(self)
    }

    /// `work` within the call's budget: past it, DEADLINE_EXCEEDED, and
    /// the reads it had in flight are dropped (on the query's own
    /// connections, so nothing of the ingest or the worker waits behind
    /// their replies).
    async fn within<T>(
        &self,
        work: impl std::future::Future<Output = Result<T, QueryError>>,
    ) -> Result<T, QueryError> {
        tokio::time::timeout(self.budget, work)
            .await
            .unwrap_or(Err(QueryError::DeadlineExceeded {
                budget: self.budget,
            }))
    }

    /// A window from the request's `window` field, ending now.
    fn window(
        &self,
        value: Option<&testbed_proto::prost_types::Duration>,
        default: std::time::Duration,
    ) -> Result<Window, QueryError> {
        let duration = request::window(value, default, self.reader.log().retention())?;
        Ok(Window::ending_at(now_ms(), duration))
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    async fn get_device_stats(
        &self,
        request: Request<GetDeviceStatsRequest>,
    ) -> Result<Response<GetDeviceStatsResponse>, Status> {
        let req = request.into_inner();
        let device = request::id("device_id", &req.device_id)?;
        let window = self.window(req.window.as_ref(), DEFAULT_WINDOW)?;
        Ok(Response::new(
            self.within(devices::device_stats(&self.reader, device, window))
                .await?,
        ))
    }

    async fn list_devices(
        &self,
        request: Request<ListDevicesRequest>,
    ) -> Result<Response<ListDevicesResponse>, Status> {
        let req = request.into_inner();
        let page_size = request::page_size(req.page_size)?;
        let filter = LabelFilter::parse(&req.filter)?;
        let after = decode_token(&req.page_token, &req.filter)?;
        Ok(Response::new(
            self.within(devices::list_devices(
                &self.reader,
                page_size,
                &filter,
                &req.filter,
                after.as_deref(),
            ))
            .await?,
        ))
    }

    async fn top_devices(
        &self,
        request: Request<TopDevicesRequest>,
    ) -> Result<Response<TopDevicesResponse>, Status> {
        let req = request.into_inner();
        let metric = request::top_metric(req.metric)?;
        let limit = request::limit(req.limit)?;
        let window = self.window(req.window.as_ref(), DEFAULT_WINDOW)?;
        Ok(Response::new(
            self.within(top::top_devices(&self.reader, metric, window, limit))
                .await?,
        ))
    }

    async fn get_token_usage(
        &self,
        request: Request<GetTokenUsageRequest>,
    ) -> Result<Response<GetTokenUsageResponse>, Status> {
        let req = request.into_inner();
        let group_by = request::group_by(req.group_by)?;
        let window = self.window(req.window.as_ref(), DEFAULT_WINDOW)?;
        Ok(Response::new(
            self.within(tokens::token_usage(&self.reader, group_by, window))
                .await?,
        ))
    }

    async fn get_pipeline_stats(
        &self,
        request: Request<GetPipelineStatsRequest>,
    ) -> Result<Response<GetPipelineStatsResponse>, Status> {
        let req = request.into_inner();
        let window = self.window(req.window.as_ref(), DEFAULT_PIPELINE_WINDOW)?;
        let stats = self
            .within(pipeline::pipeline_stats(&self.reader, window))
            .await?;
        Ok(Response::new(GetPipelineStatsResponse {
            stats: Some(stats),
        }))
    }

    type WatchPipelineStatsStream = WatchStream;

    async fn watch_pipeline_stats(
        &self,
        request: Request<WatchPipelineStatsRequest>,
    ) -> Result<Response<Self::WatchPipelineStatsStream>, Status> {
        let req = request.into_inner();
        // Validated once, before the stream starts: a bad request is the
        // call's status, not a stream message.
        let interval = request::interval(req.interval.as_ref())?;
        let window = self
            .window(req.window.as_ref(), DEFAULT_PIPELINE_WINDOW)?
            .duration;
        Ok(Response::new(WatchStream::spawn(
            self.reader.clone(),
            interval,
            window,
            self.watch_buffer,
            self.shutdown.clone(),
        )))
    }

    async fn get_run_stats(
        &self,
        request: Request<GetRunStatsRequest>,
    ) -> Result<Response<GetRunStatsResponse>, Status> {
        let req = request.into_inner();
        let run_id = request::id("run_id", &req.run_id)?;
        Ok(Response::new(
            self.within(runs::run_stats(&self.reader, run_id)).await?,
        ))
    }
}
