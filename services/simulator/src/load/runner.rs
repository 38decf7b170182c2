//! The open-loop run: a scheduler that emits batches at their intended
//! times whatever the server does, and senders that measure each batch's
//! latency from that intended time (no coordinated omission, as wrk2 does).
//!
//! The generator's own delays are kept out of the figures without hiding
//! the server's: Tokio's timer has millisecond ticks and rounds a deadline
//! up to the next one, so the scheduler wakes up to [`EARLY`] before a
//! batch is due, builds it, and hands it to its lane at once. A batch
//! handed over early is measured from that moment (its true latency); one
//! handed over late (a slow generator, a starved process) is measured from
//! its intended time, so the delay still counts, as it must.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prost::bytes::Bytes;
use testbed_client::RetryPolicy;
use testbed_client::publisher::contract_violation;
use testbed_client::retry::next_delay;
use testbed_proto::raw::{RawIngestClient, RawPublishRequest};
use testbed_server::CancellationToken;
use testbed_server::auth::client::{Bearer, Token};
use tokio::sync::{mpsc, watch};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::load::fleet::{Fleet, Kind};
use crate::load::scenario::Scenario;
use crate::load::stats::{RunFigures, code_name};
use crate::load::stream::{self, PROTOCOL_ERROR};

/// One batch, as scheduled.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Run-wide batch number (the stream sequence).
    pub seq: u64,
    /// The events, encoded (parts of one buffer, shared with retries).
    pub events: Vec<Bytes>,
    /// Their kinds, by position.
    pub kinds: Vec<Kind>,
    /// When the schedule wanted it sent.
    pub intended: Instant,
    /// Latency is measured from here: see [`latency_origin`].
    pub origin: Instant,
    /// The scenario phase it belongs to.
    pub phase: usize,
    /// Attempts so far.
    pub attempts: u32,
    /// The batch's client span (ends when the last clone is dropped: at
    /// its final ack or failure).
    pub span: tracing::Span,
    /// W3C context of `span`, sent with the batch so ingest and the worker
    /// continue the trace.
    pub trace_context: std::collections::HashMap<String, String>,
}

/// How batches are sent.
#[derive(Debug, Clone)]
pub struct SendOptions {
    /// Bidi streams per connection (ignored with `unary`).
    pub streams: u32,
    /// Use unary Publish calls instead of streams.
    pub unary: bool,
    /// Retries of one batch before it counts as failed.
    pub max_retries: u32,
    /// Largest batch.
    pub max_batch: u32,
    /// Producer id sent with every batch.
    pub producer_id: String,
    /// How long to wait for outstanding acks after the schedule ends.
    pub drain: Duration,
    /// Close and reopen each stream after this long (when set), so a
    /// `dns:///` target's new pods receive streams: a long-lived HTTP/2
    /// stream otherwise stays on the pod it was opened to.
    pub stream_max_age: Option<Duration>,
    /// The bearer token sent with every call (`--token`), when ingest
    /// requires one.
    pub token: Option<Token>,
}

/// Shared live figures.
pub type Shared = Arc<Mutex<RunFigures>>;

/// How long before its intended time the scheduler wakes to build a batch:
/// one tick of Tokio's timer, which rounds a deadline up to its next
/// millisecond (without this, every batch left 0-1 ms late, plus the time
/// to build it, and that delay counted as the server's latency).
pub const EARLY: Duration = Duration::from_millis(1);

/// When a batch's latency is measured from: the moment it was handed to
/// its lane if that was before its intended time (its true latency), its
/// intended time otherwise (a late batch's delay counts: no coordinated
/// omission).
pub fn latency_origin(intended: Instant, dispatched: Instant) -> Instant {
    intended.min(dispatched)
}

pub(crate) fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, RunFigures> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the scheduler reports while running (for the progress line).
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Current phase index.
    pub phase: usize,
    /// Current target rate.
    pub target_rate: f64,
}

/// Schedules the scenario and sends it; returns when every batch is
/// acknowledged, failed, or `drain` has passed after the schedule ended.
pub async fn run(
    scenario: &Scenario,
    fleet: Fleet,
    channels: Vec<Channel>,
    options: SendOptions,
    figures: Shared,
    progress: Arc<Mutex<Progress>>,
    shutdown: CancellationToken,
) -> Duration {
    // A fixed scenario is a live one whose sender never sends: kept (not
    // dropped) until the run ends.
    let (_fixed, live) = watch::channel(scenario.clone());
    run_live(live, fleet, channels, options, figures, progress, shutdown).await
}

/// The idempotent-producer id of one run of this process: the run id (cut
/// to fit the 128-character limit) and a random suffix, so a rerun under
/// the same `--run-id` is a new producer whose sequences, starting again at
/// 1, are not taken for retries of the earlier run's batches.
pub fn producer_id(run_id: &str) -> String {
    let run: String = run_id.chars().take(100).collect();
    format!("sim-{run}-{:016x}", rand::random::<u64>())
}

/// As [`run`], but follows `scenario`: when a new scenario is sent
/// (`SimulatorService.UpdateRun`), the schedule switches to it at once,
/// from its first phase, on the same fleet and streams (event ids and
/// stream sequences carry on, so nothing is re-sent or deduplicated).
pub async fn run_live(
    mut scenario: watch::Receiver<Scenario>,
    mut fleet: Fleet,
    channels: Vec<Channel>,
    options: SendOptions,
    figures: Shared,
    progress: Arc<Mutex<Progress>>,
    shutdown: CancellationToken,
) -> Duration {
    let drain = options.drain;
    let lanes = if options.unary {
        channels.len()
    } else {
        channels.len() * options.streams.max(1) as usize
    };
    let mut senders = Vec::with_capacity(lanes);
    let mut tasks = tokio::task::JoinSet::new();
    for lane in 0..lanes {
        // Unbounded on purpose: the schedule never waits for the server.
        // A stalled server shows up as growing latency, not a lower rate.
        let (tx, rx) = mpsc::unbounded_channel::<Batch>();
        let channel = channels[lane % channels.len()].clone();
        let (figures, options) = (figures.clone(), options.clone());
        if options.unary {
            tasks.spawn(unary_lane(channel, rx, tx.clone(), figures, options));
        } else {
            tasks.spawn(stream::stream_lane(channel, rx, figures, options));
        }
        senders.push(tx);
    }

    let mut current = scenario.borrow_and_update().clone();
    let began = Instant::now();
    let mut start = began;
    let mut offset = Duration::ZERO;
    // From 1: sequence 0 means "none" to the idempotent-producer dedupe.
    let mut seq = 1u64;
    // Set when a change arrived while waiting (`changed` marks it seen).
    let mut switched = false;
    loop {
        if std::mem::take(&mut switched) || scenario.has_changed().unwrap_or(false) {
            // The new load starts now, at its first phase.
            current = scenario.borrow_and_update().clone();
            start = Instant::now();
            offset = Duration::ZERO;
        }
        let Some((rate, phase)) = current.rate_at(offset) else {
            break;
        };
        if shutdown.is_cancelled() {
            break;
        }
        if rate <= 0.0 {
            // No load in this instant: step forward in 10 ms slices, in
            // step with the clock, so that a pause lasts its length (a run
            // ending in one does not end early), a long one does not spin,
            // and a change or a stop takes effect during it.
            offset += Duration::from_millis(10);
            tokio::select! {
                () = shutdown.cancelled() => break,
                Ok(()) = scenario.changed() => switched = true,
                () = tokio::time::sleep_until((start + offset).into()) => {}
            }
            continue;
        }
        // About a hundred batches a second, within 1..=max_batch events.
        let size = (rate / 100.0)
            .round()
            .clamp(1.0, f64::from(options.max_batch.max(1))) as usize;
        let intended = start + offset;
        if let Ok(mut p) = progress.lock() {
            *p = Progress {
                phase,
                target_rate: rate,
            };
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            // A change takes effect at once, not after a long gap of a low rate.
            Ok(()) = scenario.changed() => {
                switched = true;
                continue;
            }
            () = tokio::time::sleep_until(intended.checked_sub(EARLY).unwrap_or(intended).into()) => {}
        }
        let now = SystemTime::now();
        // One buffer per batch; each event is a slice of it.
        let mut buf = Vec::with_capacity(size * 192);
        let mut ends = Vec::with_capacity(size);
        let mut kinds = Vec::with_capacity(size);
        for _ in 0..size {
            kinds.push(fleet.next_event_into(now, &mut buf));
            ends.push(buf.len());
        }
        let buf = Bytes::from(buf);
        let events: Vec<Bytes> = ends
            .iter()
            .scan(0, |start, &end| {
                Some(buf.slice(std::mem::replace(start, end)..end))
            })
            .collect();
        lock(&figures).update(phase, |f| {
            f.sent += events.len() as u64;
            f.batches += 1;
            for kind in &kinds {
                f.sent_kinds[*kind as usize] += 1;
            }
        });
        sim_metrics().sent.add(events.len() as u64, &[]);
        let span = tracing::info_span!(
            "sim batch",
            otel.kind = "client",
            batch.sequence = seq,
            batch.events = events.len(),
            sim.phase = phase,
        );
        let (traceparent, tracestate) =
            span.in_scope(testbed_telemetry::propagation::current_to_strings);
        let trace_context = [("traceparent", traceparent), ("tracestate", tracestate)]
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let batch = Batch {
            seq,
            events,
            kinds,
            intended,
            origin: latency_origin(intended, Instant::now()),
            phase,
            attempts: 0,
            span,
            trace_context,
        };
        let lane = (seq as usize) % senders.len();
        let _ = senders[lane].send(batch);
        seq += 1;
        offset += Duration::from_secs_f64(size as f64 / rate);
    }
    // The schedule's span: its planned length (to the end of the last
    // scenario followed), or longer if dispatching fell behind (then the
    // achieved rate shows it); a schedule stopped early (a signal, StopRun,
    // an `:abort` threshold) spans until it stopped.
    let scheduled = if shutdown.is_cancelled() {
        began.elapsed()
    } else {
        (start - began + current.duration()).max(began.elapsed())
    };
    // Lanes hold a sender of their own (for retries): closing ours lets
    // each lane finish once it has nothing in flight or queued.
    drop(senders);
    let drained = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(drain, drained).await.is_err() {
        tracing::warn!(
            ?drain,
            "batches still unacknowledged after the drain timeout"
        );
    }
    scheduled
}

/// The run's re-send policy, one for both transports: the client
/// library's [`RetryPolicy`] (backon's exponential backoff with jitter,
/// `RetryInfo` as a floor), 50 ms doubling to 2 s, `max_retries` re-sends
/// of a refused batch, on RESOURCE_EXHAUSTED, UNAVAILABLE, ABORTED and
/// DEADLINE_EXCEEDED. The stream lanes also wait up to its `max_backoff`
/// before reopening a broken stream.
pub fn retry_policy(options: &SendOptions) -> RetryPolicy {
    RetryPolicy {
        max_attempts: options.max_retries.saturating_add(1) as usize,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        multiplier: 2.0,
        jitter: true,
        max_elapsed: None,
        retry_codes: vec![
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Aborted,
            Code::DeadlineExceeded,
        ],
        attempt_timeout: None,
    }
}

/// Whether a unary refusal should be re-sent, and after how long: as the
/// stream lanes decide it ([`retry_policy`]), for a batch sent `attempts`
/// times before. `None`: not a retried code, or re-sends used up.
fn retry_after(
    options: &SendOptions,
    code: Code,
    hint: Option<Duration>,
    attempts: u32,
) -> Option<Duration> {
    let policy = retry_policy(options);
    if !policy.retries(code) {
        return None;
    }
    next_delay(policy.backoff().nth(attempts as usize), hint)
}

/// Either re-queues `batch` after `delay` (counted as re-sent for
/// `reason`) or, with no delay (not retried, or re-sends used up),
/// records it as failed.
fn retry_or_fail(
    batch: Batch,
    reason: &str,
    delay: Option<Duration>,
    retry_tx: &mpsc::UnboundedSender<Batch>,
    figures: &Shared,
) {
    let phase = batch.phase;
    let n = batch.events.len() as u64;
    match delay {
        Some(delay) => {
            lock(figures).update(phase, |f| f.count_resent(reason, n));
            let tx = retry_tx.clone();
            let mut batch = batch;
            batch.attempts += 1;
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = tx.send(batch);
            });
        }
        _ => {
            tracing::debug!(
                sequence = batch.seq,
                reason,
                attempts = batch.attempts,
                "batch given up"
            );
            lock(figures).update(phase, |f| f.count_failed(batch.seq, n));
        }
    }
}

/// A refused batch: counted under its code, then re-sent if the code is
/// retryable and retries are left, else given up.
fn refused(
    batch: Batch,
    code: Code,
    hint: Option<Duration>,
    retry_tx: &mpsc::UnboundedSender<Batch>,
    figures: &Shared,
    options: &SendOptions,
) {
    lock(figures).update(batch.phase, |f| f.count_status(code));
    let delay = retry_after(options, code, hint, batch.attempts);
    retry_or_fail(batch, &code_name(code), delay, retry_tx, figures);
}

/// An OK answer that broke the contract: counted as a protocol error
/// (the first one of the run logged as a warning, with its sequence) and
/// the batch re-sent; the idempotent producer makes the re-send exact.
fn protocol_error(
    batch: Batch,
    why: &str,
    retry_tx: &mpsc::UnboundedSender<Batch>,
    figures: &Shared,
    options: &SendOptions,
) {
    let first = {
        let mut f = lock(figures);
        f.update(batch.phase, |f| f.protocol_errors += 1);
        f.total.protocol_errors == 1
    };
    if first {
        tracing::warn!(
            sequence = batch.seq,
            why,
            "ingest answered a batch OK against the contract: re-sending it (later ones are counted in the report, not logged)"
        );
    } else {
        tracing::debug!(sequence = batch.seq, why, "protocol error: re-sending");
    }
    let delay = retry_after(options, Code::Unavailable, None, batch.attempts);
    retry_or_fail(batch, PROTOCOL_ERROR, delay, retry_tx, figures);
}

/// The simulator's instruments (`sim_events_sent_total`,
/// `sim_events_acked_total`, `sim_batch_latency_seconds`), made once.
struct SimMetrics {
    sent: opentelemetry::metrics::Counter<u64>,
    acked: opentelemetry::metrics::Counter<u64>,
    latency: opentelemetry::metrics::Histogram<f64>,
}

fn sim_metrics() -> &'static SimMetrics {
    static METRICS: std::sync::OnceLock<SimMetrics> = std::sync::OnceLock::new();
    METRICS.get_or_init(|| {
        let meter = opentelemetry::global::meter("testbed-sim");
        SimMetrics {
            sent: meter
                .u64_counter("sim.events.sent")
                .with_description("Events handed to the transport (first attempts)")
                .build(),
            acked: meter
                .u64_counter("sim.events.acked")
                .with_description("Events acknowledged as accepted")
                .build(),
            latency: meter
                .f64_histogram("sim.batch.latency")
                .with_unit("s")
                .with_description(
                    "Batch-ack latency from the intended send time (no coordinated omission)",
                )
                .with_boundaries(vec![
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ])
                .build(),
        }
    })
}

/// Records an acknowledged batch: its latency, and its events per kind
/// from the positions the answer names (the contract was checked: accepted
/// and rejected add up to the batch).
pub(crate) fn record_ack(
    kinds: &[Kind],
    phase: usize,
    latency: Duration,
    accepted: u32,
    duplicates: u32,
    rejected: &[u32],
    figures: &Shared,
) {
    let metrics = sim_metrics();
    metrics.acked.add(u64::from(accepted), &[]);
    metrics.latency.record(latency.as_secs_f64(), &[]);
    let mut accepted_kinds = [0u64; 3];
    let mut rejected_kinds = [0u64; 3];
    for (i, kind) in kinds.iter().enumerate() {
        if rejected.binary_search(&(i as u32)).is_ok() {
            rejected_kinds[*kind as usize] += 1;
        } else {
            accepted_kinds[*kind as usize] += 1;
        }
    }
    let at = Instant::now();
    lock(figures).update(phase, |f| {
        if accepted > 0 {
            f.note_accepted(at);
        }
        f.record_latency(latency);
        f.count_status(Code::Ok);
        f.accepted += u64::from(accepted);
        f.duplicates += u64::from(duplicates);
        f.rejected += rejected.len() as u64;
        for k in 0..3 {
            f.accepted_kinds[k] += accepted_kinds[k];
            f.rejected_kinds[k] += rejected_kinds[k];
        }
    });
}

/// Whether a lane is done: the schedule is over (only the lane's own
/// retry sender is left, and no retry timer holds one), nothing is queued,
/// nothing is in flight.
fn lane_done(rx: &mpsc::UnboundedReceiver<Batch>, in_flight: usize) -> bool {
    in_flight == 0 && rx.is_empty() && rx.sender_strong_count() <= 1
}

async fn unary_lane(
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    retry_tx: mpsc::UnboundedSender<Batch>,
    figures: Shared,
    options: SendOptions,
) {
    let client = RawIngestClient::new(tower_layer::Layer::layer(
        &testbed_telemetry::rpc::RpcClientLayer::new(),
        Bearer::new(channel, options.token.clone()),
    ));
    let mut calls = tokio::task::JoinSet::new();
    loop {
        if lane_done(&rx, calls.len()) {
            return;
        }
        tokio::select! {
            Some(batch) = rx.recv() => {
                let mut client = client.clone();
                let (figures, options, retry_tx) = (figures.clone(), options.clone(), retry_tx.clone());
                calls.spawn(async move {
                    let mut request = tonic::Request::new(RawPublishRequest {
                        events: batch.events.clone(),
                        producer_id: options.producer_id.clone(),
                        sequence: batch.seq,
                    });
                    for (key, value) in &batch.trace_context {
                        if let (Ok(k), Ok(v)) = (
                            tonic::metadata::MetadataKey::from_bytes(key.as_bytes()),
                            value.parse::<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>(),
                        ) {
                            request.metadata_mut().insert(k, v);
                        }
                    }
                    match client.publish(request).await {
                        Ok(r) => {
                            let r = r.into_inner();
                            let rejected: Vec<u32> = r.rejections.iter().map(|x| x.index).collect();
                            match contract_violation(batch.events.len(), r.accepted_count, r.duplicate_count, &rejected) {
                                None => record_ack(&batch.kinds, batch.phase, batch.origin.elapsed(), r.accepted_count, r.duplicate_count, &rejected, &figures),
                                Some(why) => protocol_error(batch, &why, &retry_tx, &figures, &options),
                            }
                        }
                        Err(status) => {
                            let hint = status.get_details_retry_info().and_then(|i| i.retry_delay);
                            refused(batch, status.code(), hint, &retry_tx, &figures, &options);
                        }
                    }
                });
            }
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch handed to its lane before it was due is measured from then;
    /// one handed over late from when it was due, so the delay counts.
    #[test]
    fn latency_is_measured_from_the_earlier_of_intended_and_dispatched() {
        let intended = Instant::now() + Duration::from_secs(10);
        let early = intended - Duration::from_micros(400);
        let late = intended + Duration::from_millis(30);
        assert_eq!(latency_origin(intended, early), early);
        assert_eq!(latency_origin(intended, late), intended);
        assert_eq!(latency_origin(intended, intended), intended);
    }

    fn options(max_retries: u32) -> SendOptions {
        SendOptions {
            streams: 1,
            unary: true,
            max_retries,
            max_batch: 100,
            producer_id: "p".to_owned(),
            drain: Duration::from_secs(1),
            stream_max_age: None,
            token: None,
        }
    }

    /// Unary refusals are re-sent as the stream lanes re-send them: only
    /// retried codes, within 50 ms..2 s plus jitter, never before the
    /// server's RetryInfo, and `max_retries` times at most.
    #[test]
    fn unary_refusals_follow_the_client_retry_policy() {
        let opts = options(3);
        let ms = Duration::from_millis;
        assert_eq!(retry_after(&opts, Code::InvalidArgument, None, 0), None);
        assert_eq!(retry_after(&opts, Code::PermissionDenied, None, 0), None);
        for code in [
            Code::ResourceExhausted,
            Code::Unavailable,
            Code::Aborted,
            Code::DeadlineExceeded,
        ] {
            let first = retry_after(&opts, code, None, 0).unwrap();
            assert!(first >= ms(50) && first <= ms(100), "{code:?}: {first:?}");
        }
        let hinted = retry_after(&opts, Code::ResourceExhausted, Some(ms(700)), 0).unwrap();
        assert!(hinted >= ms(700), "{hinted:?}");
        assert!(retry_after(&opts, Code::Unavailable, None, 2).is_some());
        assert_eq!(retry_after(&opts, Code::Unavailable, None, 3), None);
        assert_eq!(retry_after(&options(0), Code::Unavailable, None, 0), None);
    }
}
