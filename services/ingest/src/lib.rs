//! The ingest service: `testbed.v1.IngestService`.
//!
//! Owns the public write path: validating batches of events and appending
//! them to the stream store. It does not process events (the worker does)
//! nor read aggregates (the query service does).
//!
//! # Layout
//! - [`IngestConfig`]: the `testbed ingest` flags.
//! - [`api`]: the RPC handlers (`Publish`, `PublishStream`).
//! - [`register`] / [`run`]: how the service joins a [`GrpcServer`].
#![forbid(unsafe_code)]

pub mod api;

use testbed_server::{CancellationToken, GrpcServer, Listeners, ServeError};

pub use api::IngestApi;

/// The `testbed ingest` flags that belong to this service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct IngestConfig {}

/// Adds the ingest service to `server`. Streams it opens end when
/// `shutdown` is cancelled.
pub async fn register(
    server: &mut GrpcServer,
    _config: &IngestConfig,
    shutdown: CancellationToken,
) {
    server
        .add_service(IngestApi::new(shutdown).into_server())
        .await;
}

/// Serves the ingest service alone on `listeners` until `shutdown`.
pub async fn run(
    config: IngestConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::new();
    register(&mut server, &config, shutdown.clone()).await;
    server.serve(listeners.grpc, shutdown, grace).await
}
