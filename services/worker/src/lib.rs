//! The worker: consumer-group members folding events into aggregates, and
//! `testbed.v1.WorkerControlService`, the cluster-wide control API.
//!
//! Owns event processing and its steering. It does not accept events
//! (ingest does) nor answer aggregate queries (the query service does).
//!
//! # Layout
//! - [`WorkerConfig`]: the `testbed worker` flags.
//! - [`control`]: the control RPC handlers (`GetStatus`, `WatchStatus`,
//!   `Pause`, `Resume`, `SetConcurrency`, `InjectFault`, `ClearFaults`).
//! - [`register`] / [`run`]: how the worker joins a [`GrpcServer`].
#![forbid(unsafe_code)]

pub mod control;

use testbed_server::{CancellationToken, GrpcServer, Listeners, ServeError};

pub use control::WorkerControlApi;

/// The `testbed worker` flags that belong to this service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct WorkerConfig {}

/// Adds the worker control service to `server`.
pub async fn register(
    server: &mut GrpcServer,
    _config: &WorkerConfig,
    shutdown: CancellationToken,
) {
    server
        .add_service(WorkerControlApi::new(shutdown).into_server())
        .await;
}

/// Serves the worker alone on `listeners` until `shutdown`.
pub async fn run(
    config: WorkerConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::new();
    register(&mut server, &config, shutdown.clone()).await;
    server.serve(listeners.grpc, shutdown, grace).await
}
