//! The query service: `testbed.v1.QueryService`, reads over the aggregates
//! the worker writes and the pipeline's figures.
//!
//! Owns the read path. It never writes aggregates (the worker does) and
//! never scans the keyspace on a request path.
//!
//! # Layout
//! - [`QueryConfig`]: the `testbed query` flags.
//! - [`api`]: the RPC handlers (`GetDeviceStats`, `ListDevices`,
//!   `TopDevices`, `GetTokenUsage`, `GetPipelineStats`,
//!   `WatchPipelineStats`, `GetRunStats`).
//! - [`register`] / [`run`]: how the service joins a [`GrpcServer`].
#![forbid(unsafe_code)]

pub mod api;

use testbed_server::{CancellationToken, GrpcServer, Listeners, ServeError};

pub use api::QueryApi;

/// The `testbed query` flags that belong to this service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryConfig {}

/// Adds the query service to `server`.
pub async fn register(server: &mut GrpcServer, _config: &QueryConfig, shutdown: CancellationToken) {
    server
        .add_service(QueryApi::new(shutdown).into_server())
        .await;
}

/// Serves the query service alone on `listeners` until `shutdown`.
pub async fn run(
    config: QueryConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::new();
    register(&mut server, &config, shutdown.clone()).await;
    server.serve(listeners.grpc, shutdown, grace).await
}
