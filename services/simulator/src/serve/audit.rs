//! The audit trail of the calls that aim load: one structured log line
//! (target `testbed::audit`) and one span per StartRun, UpdateRun and
//! StopRun, with who asked (peer address, token name, and under mutual TLS
//! the client certificate's subject), what for (run, target, rate) and how
//! it ended; and `sim_requests_refused_total`, the refused calls by reason.
//!
//! Calls refused for their token never reach here: the server's auth layer
//! logs and counts them (`auth_requests_refused_total`, see
//! `testbed_server::auth`).

use std::net::SocketAddr;
use std::sync::OnceLock;

use opentelemetry::KeyValue;
use testbed_proto::v1 as pb;
use testbed_server::Identity;
use tracing::field::Empty;

use crate::serve::error::ApiError;

/// Who made a call.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The peer's address, when the transport knows it.
    pub peer: Option<SocketAddr>,
    /// The token's name; `anonymous` when authentication is off.
    pub identity: String,
    /// The client certificate's subject (mutual TLS), empty otherwise.
    pub certificate: String,
}

impl Caller {
    /// The caller of `request` (its identity is put in the extensions by
    /// the auth layer).
    pub fn of<T>(request: &tonic::Request<T>) -> Self {
        Self {
            peer: request.remote_addr(),
            identity: request
                .extensions()
                .get::<Identity>()
                .map_or_else(|| "anonymous".to_owned(), |who| who.name.clone()),
            certificate: testbed_server::client_subject(request.extensions()).unwrap_or_default(),
        }
    }
}

/// What a call asks for, as the audit line shows it.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    /// The run's id, when known.
    pub run_id: String,
    /// The target (empty in a request: the server's default).
    pub target: String,
    /// The highest rate the request names, events/s (0 for StopRun).
    pub rate: f64,
}

impl Asked {
    /// A StartRun's spec.
    pub fn start(spec: Option<&pb::RunSpec>) -> Self {
        use pb::run_spec::Load;
        let Some(spec) = spec else {
            return Self::default();
        };
        let rate = match &spec.load {
            Some(Load::Rate(r)) => r.events_per_second,
            Some(Load::Scenario(s)) => scenario_rate(s),
            None => 0.0,
        };
        Self {
            run_id: spec.run_id.clone(),
            target: spec.target.clone(),
            rate,
        }
    }

    /// An UpdateRun's change.
    pub fn update(run_id: &str, change: Option<&pb::update_run_request::Change>) -> Self {
        use pb::update_run_request::Change;
        Self {
            run_id: run_id.to_owned(),
            target: String::new(),
            rate: match change {
                Some(Change::EventsPerSecond(rate)) => *rate,
                Some(Change::Scenario(s)) => scenario_rate(s),
                None => 0.0,
            },
        }
    }
}

/// The highest rate a scenario's phases name (bursts are checked against
/// the caps elsewhere; the line shows what was written).
fn scenario_rate(s: &pb::Scenario) -> f64 {
    use pb::phase::Kind;
    s.phases
        .iter()
        .filter_map(|p| match &p.kind {
            Some(Kind::Ramp(r)) => Some(r.from_rate.max(r.to_rate)),
            Some(Kind::Hold(h)) => Some(h.rate),
            Some(Kind::Spike(s)) => Some(s.rate),
            _ => None,
        })
        .fold(0.0, f64::max)
}

/// The span of one audited call; the handler runs inside it.
pub fn span(rpc: &'static str, caller: &Caller, asked: &Asked) -> tracing::Span {
    tracing::info_span!(
        target: "testbed::audit",
        "sim.audit",
        rpc,
        peer = caller.peer.map(|p| p.to_string()).unwrap_or_default(),
        identity = %caller.identity,
        certificate = %caller.certificate,
        run_id = %asked.run_id,
        target = %asked.target,
        rate = asked.rate,
        outcome = Empty,
    )
}

/// Logs the one audit line of a call and counts it if refused. `run` is
/// the answer (its id and target fill in what the request left out).
pub fn record(
    rpc: &'static str,
    caller: &Caller,
    asked: &Asked,
    result: Result<&pb::Run, &ApiError>,
) {
    let peer = caller.peer.map(|p| p.to_string()).unwrap_or_default();
    match result {
        Ok(run) => {
            let target = run.spec.as_ref().map_or("", |s| s.target.as_str());
            tracing::Span::current().record("outcome", "ok");
            tracing::info!(
                target: "testbed::audit",
                rpc, peer, identity = %caller.identity, certificate = %caller.certificate,
                run_id = %run.run_id, target, rate = asked.rate, outcome = "ok",
                "sim {rpc} by {} from {peer}", caller.identity
            );
        }
        Err(err) => {
            let reason = err.reason();
            tracing::Span::current().record("outcome", reason);
            tracing::warn!(
                target: "testbed::audit",
                rpc, peer, identity = %caller.identity, certificate = %caller.certificate,
                run_id = %asked.run_id, target = %asked.target, rate = asked.rate, outcome = reason, error = %err,
                "sim {rpc} by {} from {peer} refused: {reason}", caller.identity
            );
            refused().add(
                1,
                &[KeyValue::new("rpc", rpc), KeyValue::new("reason", reason)],
            );
        }
    }
}

/// `sim_requests_refused_total{rpc, reason}`.
fn refused() -> &'static opentelemetry::metrics::Counter<u64> {
    static COUNTER: OnceLock<opentelemetry::metrics::Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        opentelemetry::global::meter("testbed-sim")
            .u64_counter("sim.requests.refused")
            .with_description(
                "StartRun, UpdateRun and StopRun calls refused by the simulator, by reason",
            )
            .build()
    })
}
