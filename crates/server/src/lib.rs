//! The one place gRPC servers are built.
//!
//! Every testbed process serves its gRPC services through [`GrpcServer`],
//! which adds what each of them needs and none should write twice:
//! `grpc.health.v1.Health` (the overall status `""` plus one entry per served
//! service, for kubelet gRPC probes), server reflection in both
//! `grpc.reflection.v1` and `grpc.reflection.v1alpha` (grpcurl 1.8 and ghz
//! only speak v1alpha), graceful shutdown bounded by a grace period, and
//! optional bearer-token authentication of every other RPC ([`auth`]).
//!
//! This crate does not own any RPC behaviour; service crates hand it their
//! tonic services.
//!
//! # Layout
//! - [`auth`]: bearer tokens, roles, the per-RPC policy and the tower layer
//!   that applies them; the client side ([`auth::client::Bearer`]).
//! - [`config`]: the listener flags every server subcommand shares (the
//!   token flags flattened in).
//! - [`signal`]: SIGTERM/SIGINT into the one shutdown token.
//! - [`grpc`]: [`GrpcServer`]: reflection, serving and shutdown; uses
//!   [`health`].
//! - [`health`]: [`Health`], the statuses kubelet probes read.
//! - [`dependency`]: health that follows a dependency; uses [`health`].
//! - [`bind`]: binding listeners with errors a user can act on; announces
//!   them through [`addr_file`].
//! - [`addr_file`]: the `--addr-file` format, its one writer and reader.
//! - [`store_status`]: the one mapping of a store failure to a gRPC status.
#![forbid(unsafe_code)]

pub mod addr_file;
pub mod auth;
pub mod bind;
pub mod config;
pub mod dependency;
pub mod grpc;
pub mod health;
pub mod signal;
pub mod store_status;

pub use auth::{Identity, Role};
pub use bind::{BindError, ConnectionAge, Listeners, bind};
pub use config::ListenArgs;
pub use dependency::watch_dependency;
pub use grpc::{GrpcServer, ServeError};
pub use health::Health;
pub use store_status::store_status;
pub use tokio_util::sync::CancellationToken;
