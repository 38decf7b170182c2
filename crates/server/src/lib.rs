//! The one place gRPC servers are built.
//!
//! Every testbed process serves its gRPC services through [`GrpcServer`],
//! which adds what each of them needs and none should write twice:
//! `grpc.health.v1.Health` (the overall status `""` plus one entry per served
//! service, for kubelet gRPC probes), server reflection in both
//! `grpc.reflection.v1` and `grpc.reflection.v1alpha` (grpcurl 1.8 and ghz
//! only speak v1alpha), graceful shutdown bounded by a grace period,
//! optional bearer-token authentication of every other RPC ([`auth`]),
//! optional TLS and mTLS with certificates re-read on change ([`tls`]), and the
//! transport defences and request limits every server shares (README
//! "Limits"): an accept loop that backs off when out of descriptors, a
//! connection cap, handshake and idle timeouts, connection age, a ping
//! policy, HTTP/2 settings, message sizes, a request timeout and load
//! shedding.
//!
//! hyper and h2 serve the connections (through tonic); what they do not
//! enforce is done around them, on the socket ([`conn`] follows the HTTP/2
//! frame headers and writes its own GOAWAY) and as tower layers ([`streams`],
//! [`shed`]), not by a fork of either. The crates added for it (`bytes`,
//! `http-body`, `tower-layer`, `opentelemetry`) were already in the build
//! through tonic and the telemetry crate.
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
//! - [`limits`]: [`Limits`], every transport and request limit, from the
//!   flags (the connection cap's default from `RLIMIT_NOFILE`).
//! - [`accept`]: the accept loop: backoff when out of descriptors or
//!   memory, the connection cap; yields [`conn`]s.
//! - [`conn`]: one connection: handshake and idle timeouts, connection age,
//!   the ping policy ([`ping_policy`]), GOAWAY frames of its own; follows
//!   the HTTP/2 frames through [`frames`].
//! - [`frames`]: HTTP/2 frame headers and boundaries in a byte stream.
//! - [`ping_policy`]: grpc-go's ping enforcement policy (too_many_pings).
//! - [`streams`]: a tower layer counting each connection's open calls.
//! - [`shed`]: a tower layer: the process-wide concurrency limit, shedding
//!   with RESOURCE_EXHAUSTED.
//! - [`conn_metrics`]: the `server_connections_*` and
//!   `server_accept_errors_total` instruments.
//! - [`tls`]: TLS and mTLS (rustls): the flags, the files and their
//!   reload, the handshake inside [`conn`]'s socket; the
//!   `--probe-addr` plaintext health listener is served by [`grpc`].
#![forbid(unsafe_code)]

pub mod accept;
pub mod addr_file;
pub mod auth;
pub mod bind;
pub mod config;
pub mod conn;
pub mod conn_metrics;
pub mod dependency;
pub mod frames;
pub mod grpc;
pub mod health;
pub mod limits;
pub mod ping_policy;
pub mod shed;
pub mod signal;
pub mod store_status;
pub mod streams;
pub mod tls;

pub use auth::{Identity, Role};
pub use bind::{BindError, ConnectionAge, Listeners, bind};
pub use config::ListenArgs;
pub use conn::client_subject;
pub use dependency::watch_dependency;
pub use grpc::{GrpcServer, ServeError};
pub use health::Health;
pub use limits::Limits;
pub use store_status::store_status;
pub use tokio_util::sync::CancellationToken;
