//! The ingest service: `testbed.v1.IngestService`.
//!
//! Owns the public write path: validating batches of events, refusing
//! them under backpressure, and appending them to the log (partitioned by
//! device, deduplicated by event id). It does not process events (the
//! worker does) nor read aggregates (the query service does).
//!
//! # Layout
//! - [`IngestConfig`]: the `testbed ingest` flags, every limit of the path.
//! - [`api`]: the RPC handlers (`Publish`, `PublishStream`).
//! - [`publisher`]: the write path both handlers share.
//! - [`validate`]: per-event rules, each naming its field.
//! - [`tracked`]: the cap on tracked devices (`--max-tracked-devices`).
//! - [`error`]: batch-level errors and their one mapping to gRPC codes.
//! - [`metrics`]: the service's instruments.
//! - [`register`]: how the service joins a [`GrpcServer`] (served alone or
//!   with the others by the `testbed` binary).
#![forbid(unsafe_code)]

pub mod api;
mod config;
pub mod error;
pub mod metrics;
pub mod publisher;
pub mod tracked;
pub mod validate;

use testbed_proto::service_names;
use testbed_server::{CancellationToken, GrpcServer};
use testbed_stream::AnyLog;

pub use api::IngestApi;
pub use config::IngestConfig;
pub use publisher::Publisher;

/// Adds the ingest service to `server`, appending to `log`. Its health
/// follows the log: `NOT_SERVING` while the store is unreachable.
pub async fn register(
    server: &mut GrpcServer,
    config: &IngestConfig,
    log: AnyLog,
    shutdown: CancellationToken,
) {
    let publisher = Publisher::new(log.clone(), config.clone());
    let service = IngestApi::new(publisher, shutdown.clone()).into_server();
    testbed_server::add_limited_service!(server, service);
    // With tokens configured: publishing is a write.
    server.require(service_names::INGEST, testbed_server::Role::Write);
    server.follow_store(service_names::INGEST, &log, shutdown);
}
