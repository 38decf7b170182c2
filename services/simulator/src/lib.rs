//! The load simulator: `testbed sim`, and `testbed.v1.SimulatorService` for
//! `testbed sim --serve`.
//!
//! Owns load generation and its measurement. It talks to the other
//! services only through their public gRPC APIs, like any client.
//!
//! # Layout
//! - [`SimArgs`]: the `testbed sim` flags (the CLI contract).
//! - [`api`]: the `SimulatorService` RPC handlers.
//! - [`run`]: one load run from the command line.
#![forbid(unsafe_code)]

pub mod api;
mod args;

pub use api::SimulatorApi;
pub use args::{OutputFormat, SimArgs};

/// Why a simulator run failed.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The run itself has not landed yet.
    #[error("`testbed sim` load runs are not implemented yet: they land with the simulator work")]
    NotImplementedYet,
}

/// Runs one load run as `args` describe it.
pub async fn run(
    args: SimArgs,
    _shutdown: testbed_server::CancellationToken,
) -> Result<(), SimError> {
    tracing::info!(target_url = %args.target, rate = args.rate, devices = args.devices, "sim requested");
    Err(SimError::NotImplementedYet)
}
