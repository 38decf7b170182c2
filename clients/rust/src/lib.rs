//! A Rust client for the Testbed's gRPC services (`testbed.v1`).
//!
//! This crate owns the client-side conveniences and nothing of the
//! contracts: the messages and tonic clients are `testbed-proto`'s,
//! re-exported here ([`v1`], [`raw`], [`google`], [`tonic`], [`prost`]) so a user
//! depends on one crate and gets the exact versions they were built with.
//! It does not own servers, the simulator's load model or any retry policy
//! of the services themselves; it depends on no server or service crate.
//!
//! It mirrors the Python (`clients/python`, `testbed_client`) and
//! TypeScript (`clients/typescript`) helpers, step for step:
//! connect (plain, TLS and mutual TLS with [`ClientTls`], `dns:///`
//! balancing; see [`connect()`]), an optional bearer token, retries of UNAVAILABLE and
//! RESOURCE_EXHAUSTED that wait at least the server's `google.rpc.RetryInfo`
//! delay, decoding of rich errors (`google.rpc.BadRequest` field violations
//! and the rest) and a batching [`Publisher`] on `PublishStream`: events in,
//! batches out, one acknowledgement future per batch, an idempotent
//! producer id and sequence so that re-sending a batch after a broken stream
//! counts it once.
//!
//! Retries use [`backon`]: the most used async retry crate that is still
//! maintained (the `backoff` crate is unmaintained, RUSTSEC-2025-0012), with
//! an `adjust` hook that lets the server's `RetryInfo` lengthen a wait, and
//! already in the workspace (the worker's store calls use it).
//!
//! # Layout
//! - [`connect()`]: URL → tonic `Channel` (keepalive like the simulator's,
//!   `dns:///NAME:PORT` resolved again every [`Options::resolve_every`]);
//!   [`Client`] bundles the three generated clients on one channel.
//! - [`endpoint`]: [`Options`] (with the [`AddressGuard`] of `dns:///`
//!   targets), [`ConnectError`], one address → tonic `Endpoint`.
//! - [`dns`]: the `dns:///` balanced channel and the one loop that follows
//!   the name, checking each new address with the guard (the simulator's
//!   channels are built here too, its allow-list as the guard).
//! - [`tls`]: [`ClientTls`], the CA, client certificate and name a TLS
//!   channel uses (the simulator's `--tls-*` flags build it too).
//! - [`auth`]: [`Token`] and the [`Bearer`] interceptor (`authorization:
//!   Bearer …`).
//! - [`errors`]: [`ErrorDetails`], one decoder for a call's `tonic::Status`
//!   and for a stream acknowledgement's `google.rpc.Status`.
//! - [`retry`]: [`RetryPolicy`] and [`with_retries`] for unary calls.
//! - [`events`]: builders of the three event kinds.
//! - [`query`]: device statistics, the pipeline watch and run ledgers.
//! - [`publisher`]: the batching [`Publisher`] (`publisher/batcher.rs` turns
//!   events into sealed batches) on the one `PublishStream` sender,
//!   [`publisher::lane`], which sends numbered batches, re-sends what a
//!   broken stream left unacknowledged and recycles streams by age; used
//!   directly for pre-encoded batches, an open loop, per-batch timing and
//!   re-send reasons (the simulator's load runs on it), with
//!   [`publisher::wire`]'s batch forms and stream openers.
#![forbid(unsafe_code)]

pub mod auth;
pub mod connect;
pub mod dns;
pub mod endpoint;
pub mod errors;
pub mod events;
pub mod publisher;
pub mod query;
pub mod retry;
pub mod tls;

pub use auth::{Bearer, Token};
pub use connect::{AuthChannel, Client, connect};
pub use endpoint::{AddressGuard, ConnectError, Options};
pub use errors::{ErrorDetails, FieldViolation};
pub use publisher::{
    AckFuture, BatchAck, PublishError, Publisher, PublisherOptions, PublisherStats,
};
pub use retry::{RetryPolicy, with_retries};
pub use tls::ClientTls;

pub use testbed_proto::{google, prost, prost_types, raw, tonic, v1};
