//! The load simulator: `testbed sim`.
//!
//! Drives ingest the way a fleet of GPU nodes and LLM inference servers
//! would, and measures it honestly: the schedule is open-loop (batches go
//! out at their intended times whatever the server does), and each batch's
//! latency is measured from its intended send time, so a stalled server
//! shows up as latency rather than as a silently lower rate (no coordinated
//! omission). `--verify` then checks the delivery ledger: every accepted
//! event processed exactly once, per kind.
//!
//! It talks to the other services only through their public gRPC APIs,
//! like any client.
//!
//! A load generator must stay far below its target's cost per event. Each
//! batch's events are encoded once, into one buffer, and sent as
//! [`testbed_proto::raw`] requests (the same bytes on the wire as the
//! generated messages): a retry resends the same parts, and each device's
//! labels are encoded once for the whole run and spliced into its events.
//! That took the simulator from about 2.6 to 0.9 µs of CPU per event
//! (`bench/README.md`, session 4).
//!
//! # Layout
//! Two modes over one load engine. Dependencies point down this picture,
//! never up or sideways: [`load`] knows neither mode, and [`cli`] and
//! [`serve`] do not know each other; [`thresholds`] knows [`load`]'s
//! figures only (a scenario file's thresholds reach it as text).
//!
//! ```text
//!              lib.rs: run / serve_config (the flags -> ServeConfig)
//!              /                                   \
//!   cli/: one run from the flags         serve/: SimulatorService
//!   args, run, report, verify,           config, api, audit, spec,
//!   progress, timeline, html/            runs, live, error
//!              \                                   /
//!               thresholds/: expr, eval, live (both modes')
//!                                    |
//!               load/: scenario, fleet, runner, stream, transport, allow, stats
//! ```
//!
//! - [`load`]: the load, whoever asks for it.
//!   - [`load::scenario`]: phases (ramp, hold, burst, spike, pause) and
//!     the rate function.
//!   - [`load::fleet`]: seeded devices and their events, encoded with
//!     [`testbed_proto::raw::event_writer`].
//!   - [`load::runner`]: the open-loop scheduler and the unary sender.
//!   - [`load::stream`]: the stream senders, the Rust client's
//!     `PublishStream` lane (`testbed_client::publisher::lane`) reporting
//!     into the run's figures.
//!   - [`load::transport`]: targets checked, channels opened.
//!   - [`load::allow`]: the allow-list of a served run's targets
//!     (`--allow-target`), checked by name and after DNS resolution.
//!   - [`load::stats`]: HDR latency histograms and counters.
//! - [`thresholds`]: pass/fail thresholds of a run, for both modes.
//!   - [`thresholds::expr`]: the grammar (`ack_p99<10ms`, `errors<0.1%`,
//!     `achieved>=99%:abort`), malformed parts named.
//!   - [`thresholds::eval`]: a threshold checked against a run's figures.
//!   - [`thresholds::live`]: `:abort` thresholds checked over a sliding
//!     window while the run goes.
//! - [`cli`]: `testbed sim` without `--serve`.
//!   - [`cli::args`]: every flag of `testbed sim`, both modes ([`SimArgs`]
//!     with [`ServeArgs`] flattened in): the CLI contract.
//!   - [`cli::run`] (re-exported as [`run`]): one run, start to exit
//!     status; the live progress line is `cli/progress.rs`.
//!   - [`cli::report`]: text, JSON and ghz-JSON reports.
//!   - [`cli::timeline`]: the run sampled per `--sample-interval`.
//!   - [`cli::html`]: the report as one self-contained HTML page, its
//!     charts inline SVG drawn by hand (`--output html`).
//!   - [`cli::verify`]: the end-to-end check against
//!     `QueryService.GetRunStats`.
//! - [`serve`]: `testbed sim --serve`; [`serve::run`] and
//!   [`serve::register`] join a [`testbed_server::GrpcServer`].
//!   - [`serve::config`]: [`serve::ServeConfig`], the server's settings,
//!     and the limits on what a run may ask for.
//!   - [`serve::api`]: the RPC handlers, one method of [`SimulatorApi`]
//!     per RPC of `testbed.v1.SimulatorService`: `start_run`,
//!     `update_run`, `stop_run`, `get_run`, `watch_run`. Each checks its
//!     request with [`serve::spec`] and calls the matching method of
//!     [`serve::runs::Runs`] (`start`, `update`, `stop`, `get`, `watch`).
//!   - [`serve::spec`]: run specs and changes checked, with the
//!     contract's defaults and the per-run caps.
//!   - [`serve::runs`]: the runs a server knows, their life cycle and
//!     bounds.
//!   - [`serve::live`]: a served run's live figures (load clock, achieved
//!     rate).
//!   - [`serve::error`]: the API's errors and their gRPC status codes.
//!   - [`serve::audit`]: the audit line and span of each StartRun,
//!     UpdateRun and StopRun (peer, token name, target, rate), and
//!     `sim_requests_refused_total{rpc, reason}`.
//!
//! Why the flags of `--serve` ([`ServeArgs`]) sit in `cli/` and not in
//! `serve/`: `testbed sim` is one command line, in which `--serve`
//! conflicts with the flags of a run and shares `--target` and the
//! connection flags with it, so clap must see all of them as one struct;
//! one file then answers "which flags are there". The server never sees
//! that struct: [`serve_config`], here at the top, turns the flags into a
//! [`serve::ServeConfig`], so `serve/` can be started (and tested) without
//! a command line, and `cli/` and `serve/` stay independent. What both
//! modes need moved down into `load/` (checking a target is
//! [`load::transport::parse_target`]).
//!
//! # Why these crates
//! `hdrhistogram` (the reference HDR histogram port) records latencies with
//! fixed relative precision at constant cost; `indicatif` draws the live
//! progress line; `toml` + `serde` parse scenario files with line and
//! column in errors; `rand`'s `StdRng` makes seeded runs reproducible on
//! every architecture.
#![forbid(unsafe_code)]

pub mod cli;
pub mod load;
pub mod serve;
pub mod thresholds;

pub use cli::{Dedupe, OutputFormat, ServeArgs, SimArgs, SimError, run};
pub use serve::SimulatorApi;

use crate::load::allow::AllowList;
use crate::serve::ServeConfig;
use crate::serve::config::Limits;

/// The settings of `testbed sim --serve` from its flags: `--serve`'s own
/// ([`ServeArgs`]), and those shared with a CLI run (`--target`,
/// `--connections`, `--streams`, `--unary`, `--max-retries`,
/// `--drain-timeout`, `--device-prefix`, `--arch-mix`, `--token`), which become the
/// settings of every run; `--target` and `--query-target` are on the
/// allow-list with `--allow-target`. The flags that describe one run (`--rate`,
/// `--scenario`, ...) conflict with `--serve`: a `RunSpec` carries them
/// instead.
pub fn serve_config(args: &SimArgs) -> ServeConfig {
    let serve = &args.serve;
    ServeConfig {
        target: args.target.clone(),
        connections: args.connections,
        streams: args.streams,
        unary: args.unary,
        max_retries: args.max_retries,
        drain: args.drain_timeout,
        device_prefix: args.device_prefix.clone(),
        arch_mix: args.arch_mix.0.clone(),
        max_runs: serve.max_runs as usize,
        keep_finished: serve.keep_finished as usize,
        limits: Limits {
            max_rate: serve.max_rate,
            max_devices: serve.max_devices,
            max_batch_size: serve.max_batch_size,
            max_run_duration: serve.max_run_duration,
            max_connections: serve.max_run_connections,
            max_total_rate: serve.max_total_rate,
        },
        allow: AllowList::new(
            [Some(args.target.as_str()), args.query_target.as_deref()]
                .into_iter()
                .flatten(),
            serve.allow_target.iter().cloned(),
        ),
        rate_window: serve.rate_window,
        retry_after: serve.retry_after,
        live_thresholds: args.live_thresholds(),
        token: args.token.clone(),
        tls: crate::load::tls::ReloadingTls::new(&args.tls).map(std::sync::Arc::new),
    }
}
