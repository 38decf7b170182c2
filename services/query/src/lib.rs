//! The query service: `testbed.v1.QueryService`, reads over the aggregates
//! the worker writes and the pipeline's figures.
//!
//! Owns the read path: validating query requests, reading the per-partition
//! aggregates of every minute in a window, merging them across partitions
//! and minutes, and the latency percentiles of their histograms. It never
//! writes aggregates (the worker does, see `testbed-worker`'s `fold`), and
//! never scans the keyspace: every key it reads is named from the
//! partition, the minute and the device, run or metric. Its reads run on
//! connections of their own, each call within `--query-timeout`, and every
//! Redis command they send is bounded whatever the fleet (see the README's
//! "What each read costs").
//!
//! # Layout
//! - [`QueryConfig`] (`config`): the `testbed query` flags (read batch,
//!   read concurrency, watch buffer, scan budget, ranking depth, call
//!   budget).
//! - [`api`]: the RPC handlers, one per RPC (`GetDeviceStats`,
//!   `ListDevices`, `TopDevices`, `GetTokenUsage`, `GetPipelineStats`,
//!   `WatchPipelineStats`, `GetRunStats`).
//! - `request`: defaults and bounds of request fields (windows, interval,
//!   page size, limit, enums, ids).
//! - `paging`: ListDevices' label filter and page tokens.
//! - `index`: the per-partition device indexes (ids, label postings) read
//!   in id order, a bounded page per partition at a time.
//! - `devices`, `top`, `tokens`, `pipeline`, `runs`: each query, from key
//!   names to response (`top`: TopDevices from the rankings kept at write
//!   time, and when its answer is exact).
//! - `watch`: the WatchPipelineStats producer and its stream.
//! - `store`: batched, bounded reads of hashes and sorted sets.
//! - `aggregate`: parsing and merging the worker's hashes.
//! - `percentiles`: latency histograms and their percentiles.
//! - `time`: windows, minute buckets and protobuf time conversions.
//! - [`error`]: [`QueryError`] and its one mapping to gRPC status codes.
//! - [`register`]: how the service joins a [`GrpcServer`] (served alone or
//!   with the others by the `testbed` binary).
#![forbid(unsafe_code)]

mod aggregate;
pub mod api;
mod config;
mod devices;
pub mod error;
mod index;
mod paging;
mod percentiles;
mod pipeline;
mod request;
mod runs;
mod store;
mod time;
mod tokens;
mod top;
mod watch;

use testbed_proto::service_names;
use testbed_server::{CancellationToken, GrpcServer};
use testbed_stream::AnyLog;

pub use api::QueryApi;
pub use config::QueryConfig;
pub use error::QueryError;

/// Adds the query service to `server`, reading `log`'s aggregates. Its
/// health follows the store.
pub async fn register(
    server: &mut GrpcServer,
    config: &QueryConfig,
    log: AnyLog,
    shutdown: CancellationToken,
) {
    let service = QueryApi::with_config(log.clone(), config, shutdown.clone()).into_server();
    testbed_server::add_limited_service!(server, service);
    // With tokens configured: every query is a read.
    server.require(service_names::QUERY, testbed_server::Role::Read);
    server.follow_store(service_names::QUERY, &log, shutdown);
}
