//! Cluster-wide control: the desired state lives in the store, every
//! worker replica follows it, and every replica reports a heartbeat.
//!
//! A control call lands on any replica (they sit behind one Service); it
//! only writes the desired state. Each replica's [`crate::follower`] reads it every
//! `--control-interval` (default 250 ms, so changes apply within a second)
//! and applies it locally: pause, concurrency, faults.
//!
//! - [`api`]: the RPC handlers of `testbed.v1.WorkerControlService`.
//! - [`store`]: desired state, faults and heartbeats in the store.
//! - [`faults`]: validating, matching and sampling injected faults.
//! - [`local`]: the state one replica applies (what the consumer reads).
//! - [`error`]: control errors and their one mapping to gRPC codes.
//!
//! This module uses nothing else of the worker: the consumer reads
//! [`local`], and [`crate::follower`] ties the two together.

pub mod api;
pub mod error;
pub mod faults;
pub mod local;
pub mod store;

pub use api::WorkerControlApi;
pub use local::LocalControl;
