//! `testbed sim --serve`: the simulator as a server of
//! `testbed.v1.SimulatorService`, driving runs on request instead of doing
//! one run from its flags.
//!
//! Its settings are a [`ServeConfig`], not the command line: the binary
//! builds one from the flags ([`crate::serve_config`]).
//!
//! - [`config`]: [`ServeConfig`] and the [`config::Limits`] on runs.
//! - [`api`]: the RPC handlers, one method of [`SimulatorApi`] per RPC.
//! - [`spec`]: requests checked, with the contract's defaults and the
//!   per-run caps.
//! - [`runs`]: the runs this server knows, their life cycle and bounds.
//! - [`live`]: a served run's live figures (load clock, achieved rate).
//! - [`error`]: the API's errors and their gRPC status codes.
//! - [`audit`]: the audit line and span of each StartRun, UpdateRun and
//!   StopRun, and the counter of refused calls.
//!
//! Within it, dependencies point down this list, never up: `api` →
//! `audit` → `error`; `api` →
//! `runs` → `spec`, `live`, `error`, `config`; `spec` → `error`,
//! `config`; and any of them → [`crate::load`] (the allow-list of targets
//! is [`crate::load::allow`]).

pub mod api;
pub mod audit;
pub mod config;
pub mod error;
pub mod live;
pub mod runs;
pub mod spec;

use testbed_server::{CancellationToken, GrpcServer, Listeners, ServeError};

pub use api::SimulatorApi;
pub use config::ServeConfig;

use crate::serve::runs::Runs;

/// Adds `testbed.v1.SimulatorService` to `server`. Runs stop when
/// `shutdown` is cancelled; the server then waits for them (within its
/// grace period) to drain their batches in flight.
pub async fn register(server: &mut GrpcServer, config: &ServeConfig, shutdown: CancellationToken) {
    let runs = Runs::new(config.clone(), shutdown.clone());
    testbed_server::add_limited_service!(server, SimulatorApi::new(runs.clone()).into_server());
    // With tokens configured: aiming load (StartRun, UpdateRun, StopRun)
    // is a write, like publishing; watching runs is a read.
    let sim = testbed_proto::service_names::SIMULATOR;
    server.require(sim, testbed_server::Role::Read);
    for write in ["StartRun", "UpdateRun", "StopRun"] {
        server.require_method(sim, write, testbed_server::Role::Write);
    }
    server.spawn_background(async move {
        shutdown.cancelled().await;
        runs.wait_stopped().await;
    });
}

/// Serves the simulator alone on `listeners` until `shutdown`.
pub async fn run(
    config: ServeConfig,
    listeners: Listeners,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let mut server = GrpcServer::for_listeners(&listeners);
    register(&mut server, &config, shutdown.clone()).await;
    server.serve_on(listeners, shutdown).await
}
