//! The worker: consumer-group members folding events into aggregates, and
//! `testbed.v1.WorkerControlService`, the cluster-wide control API.
//!
//! Owns event processing and its steering. It does not accept events
//! (ingest does) nor answer aggregate queries (the query service does).
//!
//! Exactly-once effect: applying the aggregates of a batch of entries and
//! acknowledging them are one atomic step of the log
//! ([`testbed_stream::EventLog::apply`]); if one of them was already
//! acknowledged (because a consumer presumed dead was only slow, or a
//! worker was killed right after applying), nothing of the batch is
//! applied and the worker folds the rest again without it. Client retries
//! are deduplicated by event id when appended.
//!
//! Throughput: entries read together (gathered for a linger that follows the
//! applies' pace: `--apply-linger-factor`, at most `--apply-linger`) are
//! folded into one set of per-key deltas ([`fold::Folder`]) before the
//! apply, so the store's work grows with distinct keys, not events.
//!
//! # Layout
//! - [`WorkerConfig`]: the `testbed worker` flags.
//! - [`consumer`]: read, fold, apply, claim, dead-letter, trim.
//! - [`cpu`]: `--cpu-class`, the scheduling class of the worker's threads.
//! - [`fold`]: events → aggregate writes.
//! - [`indexed`]: the devices whose index memberships this worker wrote
//!   lately, left out of later applies (`--index-cache`).
//! - [`metrics`]: the worker's instruments (`worker_events_processed_total`, ...).
//! - [`control`]: cluster-wide control: the RPC handlers in
//!   [`control::api`] (`GetStatus`, `WatchStatus`, `Pause`, `Resume`,
//!   `SetConcurrency`, `InjectFault`, `ClearFaults`), the desired state in
//!   the store.
//! - [`follower`]: the loop each replica runs to follow the desired state
//!   and publish its heartbeat and backlog gauges; the one module that
//!   uses both [`control`] and [`consumer`].
//! - [`register`]: how the worker joins a [`GrpcServer`] (served alone or
//!   with the others by the `testbed` binary).
#![forbid(unsafe_code)]
// The apply path's future (`consumer::apply::process`) nests deeply enough
// that rustc 1.95 overflows the default query depth (128) computing its
// layout when building `-p testbed` at `opt-level = "s"` or in some
// feature combinations ("queries overflow the depth limit!"); the
// workspace build at opt-level 3 did not. The compiler's own suggestion.
#![recursion_limit = "256"]

mod config;
pub mod consumer;
pub mod control;
pub mod cpu;
pub mod fold;
pub mod follower;
pub mod indexed;
pub mod metrics;

use testbed_proto::service_names;
use testbed_server::{CancellationToken, GrpcServer};
use testbed_stream::AnyLog;

pub use config::{CpuClass, QueueTraceMode, WorkerConfig};
pub use consumer::Consumer;
pub use control::WorkerControlApi;

/// Adds the worker control service to `server`, starts consuming `log`
/// and following the cluster-wide control state, until `shutdown`.
pub async fn register(
    server: &mut GrpcServer,
    config: &WorkerConfig,
    log: AnyLog,
    shutdown: CancellationToken,
) -> Consumer {
    let consumer = Consumer::new(log.clone(), config.clone(), config.consumer());
    let heartbeat_ttl = config.heartbeat_interval * follower::HEARTBEAT_LIVES;
    let api = WorkerControlApi::new(
        log.clone(),
        consumer.local().clone(),
        heartbeat_ttl,
        shutdown.clone(),
    );
    testbed_server::add_limited_service!(server, api.into_server());
    // With tokens configured: reading the status is a read; whatever
    // changes the pipeline (pause, concurrency, faults) needs admin.
    let control = testbed_proto::service_names::WORKER_CONTROL;
    server.require(control, testbed_server::Role::Admin);
    for read in ["GetStatus", "WatchStatus"] {
        server.require_method(control, read, testbed_server::Role::Read);
    }
    server.spawn_background(consumer.clone().run(shutdown.clone()));
    server.spawn_background(
        follower::Follower {
            store: control::store::ControlStore::new(log.clone()),
            consumer: consumer.clone(),
            local: consumer.local().clone(),
            control_interval: config.control_interval,
            heartbeat_interval: config.heartbeat_interval,
        }
        .run(shutdown.clone()),
    );
    server.follow_store(service_names::WORKER_CONTROL, &log, shutdown);
    consumer
}
