//! An OpenTelemetry collector's three OTLP/gRPC services (traces, metrics,
//! logs) over one [`Receive`], which decides what to keep of each export:
//! the tests' collector keeps every span and metric, the bench's sink only
//! counts (its CPU is part of what the bench measures). Every export is
//! answered OK at once.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::transport::server::Router;
use tonic::{Request, Response, Status};

/// What a receiver does with each export it is sent.
pub trait Receive: Send + Sync + 'static {
    /// A trace export.
    fn traces(&self, request: ExportTraceServiceRequest);
    /// A metrics export.
    fn metrics(&self, request: ExportMetricsServiceRequest);
    /// A logs export.
    fn logs(&self, request: ExportLogsServiceRequest);
}

/// A router serving the three OTLP services, every export handed to
/// `receive`; the caller binds and serves it.
pub fn router<R: Receive>(receive: Arc<R>) -> Router {
    tonic::transport::Server::builder()
        .add_service(TraceServiceServer::new(Services(receive.clone())))
        .add_service(MetricsServiceServer::new(Services(receive.clone())))
        .add_service(LogsServiceServer::new(Services(receive)))
}

/// The services of [`router`]: each hands its export to the receiver.
struct Services<R>(Arc<R>);

#[tonic::async_trait]
impl<R: Receive> TraceService for Services<R> {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.traces(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl<R: Receive> MetricsService for Services<R> {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metrics(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl<R: Receive> LogsService for Services<R> {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        self.0.logs(request.into_inner());
        Ok(Response::new(ExportLogsServiceResponse::default()))
    }
}

/// The log records of an export, the count both receivers keep.
pub fn log_records(request: &ExportLogsServiceRequest) -> usize {
    request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum()
}
