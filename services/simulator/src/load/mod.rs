//! The load itself, whoever asks for it (a CLI run or a served run): the
//! fleet and its events, the schedule, the senders and what they count.
//!
//! Depends on nothing else in the crate; [`crate::cli`] and
//! [`crate::serve`] both build on it.
//!
//! - [`scenario`]: phases (ramp, hold, burst, spike, pause) and the rate
//!   function.
//! - [`fleet`]: seeded devices and their events, encoded through
//!   [`testbed_proto::raw::event_writer`] (the hot path).
//! - [`runner`]: the open-loop scheduler and the unary sender.
//! - [`stream`]: the stream senders: the Rust client's lane
//!   ([`testbed_client::publisher::lane`], the one copy of the stream's
//!   send, ack, re-send and idempotent-producer logic), open loop, fed
//!   pre-encoded batches, reporting into the figures.
//! - [`tls`]: [`tls::ClientTls`], the channels' TLS settings, and their
//!   flags.
//! - [`transport`]: targets checked and turned into channels (by the Rust
//!   client's `connect`, with [`allow`] as the address guard of served
//!   runs); uses [`tls`].
//! - [`allow`]: the allow-list of targets a served run may send to
//!   (`--allow-target`), checked by name and after DNS resolution; here
//!   because the command line (`cli/args.rs`) parses its entries.
//! - [`stats`]: HDR latency histograms and counters.

pub mod allow;
pub mod fleet;
pub mod runner;
pub mod scenario;
pub mod stats;
pub mod stream;
pub mod tls;
pub mod transport;

/// Devices in a run's fleet when the run does not say: `testbed sim
/// --devices` and an unset `RunSpec.devices` alike.
pub const DEFAULT_DEVICES: u32 = 100;

/// Largest batch of a run when it does not say: `testbed sim
/// --batch-size` and an unset `RunSpec.batch_size` alike.
pub const DEFAULT_BATCH_SIZE: u32 = 100;
