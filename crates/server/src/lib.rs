//! The one place gRPC servers are built.
//!
//! Every testbed process serves its gRPC services through [`GrpcServer`],
//! which adds what each of them needs and none should write twice:
//! `grpc.health.v1.Health` (the overall status `""` plus one entry per served
//! service, for kubelet gRPC probes), server reflection in both
//! `grpc.reflection.v1` and `grpc.reflection.v1alpha` (grpcurl 1.8 and ghz
//! only speak v1alpha), and graceful shutdown bounded by a grace period.
//!
//! This crate does not own any RPC behaviour; service crates hand it their
//! tonic services.
//!
//! # Layout
//! - [`config`]: the listener flags every server subcommand shares.
//! - [`signal`]: SIGTERM/SIGINT into the one shutdown token.
//! - [`grpc`]: [`GrpcServer`], health, reflection, serving and shutdown.
//! - [`bind`]: binding listeners with errors a user can act on.
#![forbid(unsafe_code)]

pub mod bind;
pub mod config;
pub mod dependency;
pub mod grpc;
pub mod signal;

pub use bind::{BindError, Listeners, bind};
pub use config::ListenArgs;
pub use dependency::watch_dependency;
pub use grpc::{GrpcServer, Health, ServeError, not_implemented_yet};
pub use tokio_util::sync::CancellationToken;
