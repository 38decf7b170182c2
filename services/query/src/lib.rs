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

use testbed_proto::service_names;
use testbed_server::{CancellationToken, GrpcServer, Listeners, ServeError, watch_dependency};
use testbed_stream::{AnyLog, EventLog as _};

pub use api::QueryApi;

/// The `testbed query` flags that belong to this service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryConfig {}

/// Adds the query service to `server`, reading `log`'s aggregates. Its
/// health follows the store.
pub async fn register(
    server: &mut GrpcServer,
    _config: &QueryConfig,
    log: AnyLog,
    shutdown: CancellationToken,
) {
    server
        .add_service(QueryApi::new(shutdown.clone()).into_server())
        .await;
    let health = server.health();
    server.spawn_background(watch_dependency(
        "event store",
        health,
        vec![service_names::QUERY],
        server.probe_interval(),
        shutdown,
        move || {
            let log = log.clone();
            async move { log.ping().await.map_err(|e| e.to_string()) }
        },
    ));
}

/// Serves the query service alone on `listeners` until `shutdown`.
pub async fn run(
    config: QueryConfig,
    log: AnyLog,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::new();
    server.set_probe_interval(listeners.health_interval);
    register(&mut server, &config, log, shutdown.clone()).await;
    server
        .serve(listeners.grpc, shutdown, listeners.grace)
        .await
}
