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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt as _;
use prost::Message as _;
use prost::bytes::Bytes;
use rand::Rng as _;
use testbed_proto::google::rpc;
use testbed_proto::raw::{RawIngestClient, RawPublishRequest, RawPublishStreamRequest};
use testbed_proto::v1::PublishStreamResponse;
use testbed_server::CancellationToken;
use testbed_server::auth::client::{Bearer, Token};
use tokio::sync::{mpsc, watch};
use tonic::Code;
use tonic::transport::Channel;
use tonic_types::StatusExt as _;

use crate::load::fleet::{Fleet, Kind};
use crate::load::scenario::Scenario;
use crate::load::stats::{RunFigures, code_name};

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

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, RunFigures> {
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
        let (figures, options, retry_tx) = (figures.clone(), options.clone(), tx.clone());
        if options.unary {
            tasks.spawn(unary_lane(channel, rx, retry_tx, figures, options));
        } else {
            tasks.spawn(stream_lane(channel, rx, retry_tx, figures, options));
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

/// Whether a refusal should be retried, and after how long.
fn retry_after(code: Code, hint: Option<Duration>, attempts: u32) -> Option<Duration> {
    match code {
        Code::ResourceExhausted | Code::Unavailable | Code::Aborted | Code::DeadlineExceeded => {
            let base =
                hint.unwrap_or_else(|| Duration::from_millis(50 * 2u64.pow(attempts.min(6))));
            // Full jitter on top of the server's hint, so clients spread out.
            let jitter = base.mul_f64(rand::rng().random::<f64>() * 0.5);
            Some(base + jitter)
        }
        _ => None,
    }
}

fn rpc_retry_hint(status: &rpc::Status) -> Option<Duration> {
    status
        .details
        .iter()
        .find(|d| d.type_url.ends_with("google.rpc.RetryInfo"))
        .and_then(|d| {
            let info = rpc::RetryInfo::decode(d.value.as_slice()).ok()?;
            Duration::try_from(info.retry_delay?).ok()
        })
}

/// Either re-queues `batch` after `delay` (counted as re-sent for
/// `reason`) or, with no delay or no retries left, records it as failed.
fn retry_or_fail(
    batch: Batch,
    reason: &str,
    delay: Option<Duration>,
    retry_tx: &mpsc::UnboundedSender<Batch>,
    figures: &Shared,
    options: &SendOptions,
) {
    let phase = batch.phase;
    let n = batch.events.len() as u64;
    match delay {
        Some(delay) if batch.attempts < options.max_retries => {
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
    let delay = retry_after(code, hint, batch.attempts);
    retry_or_fail(batch, &code_name(code), delay, retry_tx, figures, options);
}

/// Why an OK answer for a batch of `events` events breaks the contract of
/// `PublishResponse` / `PublishStreamResponse`, if it does: accepted and
/// rejected events add up to the batch, rejections are in request order
/// and in range, duplicates are among the accepted.
pub fn contract_violation(
    events: usize,
    accepted: u32,
    duplicates: u32,
    rejections: &[u32],
) -> Option<String> {
    if accepted as usize + rejections.len() != events {
        return Some(format!(
            "accepted_count {accepted} + {} rejections != {events} events in the batch",
            rejections.len()
        ));
    }
    if let Some(index) = rejections.iter().find(|&&i| i as usize >= events) {
        return Some(format!(
            "rejection index {index} is out of range for {events} events"
        ));
    }
    if rejections.windows(2).any(|w| w[0] >= w[1]) {
        return Some(format!(
            "rejection indexes {rejections:?} are not in request order"
        ));
    }
    if duplicates > accepted {
        return Some(format!(
            "duplicate_count {duplicates} is over accepted_count {accepted}"
        ));
    }
    None
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
    let delay = retry_after(Code::Unavailable, None, batch.attempts);
    retry_or_fail(batch, PROTOCOL_ERROR, delay, retry_tx, figures, options);
}

/// The re-send reason of a contract-breaking OK answer.
pub const PROTOCOL_ERROR: &str = "PROTOCOL_ERROR";
/// The re-send reason of batches unacknowledged on a stream that ended.
pub const STREAM_BROKEN: &str = "STREAM_BROKEN";

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

fn record_ack(batch: &Batch, accepted: u32, duplicates: u32, rejected: &[u32], figures: &Shared) {
    let latency = batch.origin.elapsed();
    let metrics = sim_metrics();
    metrics.acked.add(u64::from(accepted), &[]);
    metrics.latency.record(latency.as_secs_f64(), &[]);
    // Per kind, from the positions the answer names (the contract was
    // checked: accepted and rejected add up to the batch).
    let mut kinds = [0u64; 3];
    let mut rejected_kinds = [0u64; 3];
    for (i, kind) in batch.kinds.iter().enumerate() {
        if rejected.binary_search(&(i as u32)).is_ok() {
            rejected_kinds[*kind as usize] += 1;
        } else {
            kinds[*kind as usize] += 1;
        }
    }
    let at = Instant::now();
    lock(figures).update(batch.phase, |f| {
        if accepted > 0 {
            f.note_accepted(at);
        }
        f.record_latency(latency);
        f.count_status(Code::Ok);
        f.accepted += u64::from(accepted);
        f.duplicates += u64::from(duplicates);
        f.rejected += rejected.len() as u64;
        for k in 0..3 {
            f.accepted_kinds[k] += kinds[k];
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

async fn stream_lane(
    channel: Channel,
    mut rx: mpsc::UnboundedReceiver<Batch>,
    retry_tx: mpsc::UnboundedSender<Batch>,
    figures: Shared,
    options: SendOptions,
) {
    let mut client = RawIngestClient::new(tower_layer::Layer::layer(
        &testbed_telemetry::rpc::RpcClientLayer::new(),
        Bearer::new(channel, options.token.clone()),
    ));
    let mut backoff = Duration::from_millis(50);
    // Batches to send first on the next stream (unacknowledged on a broken one).
    let mut resend: Vec<Batch> = Vec::new();
    let request = |batch: &Batch| RawPublishStreamRequest {
        sequence: batch.seq,
        events: batch.events.clone(),
        producer_id: options.producer_id.clone(),
        trace_context: batch.trace_context.clone(),
    };
    loop {
        if lane_done(&rx, resend.len()) {
            return;
        }
        let (req_tx, req_rx) = mpsc::channel::<RawPublishStreamRequest>(1024);
        let opened = client
            .publish_stream(tokio_stream::wrappers::ReceiverStream::new(req_rx))
            .await;
        let mut responses = match opened {
            Ok(r) => {
                backoff = Duration::from_millis(50);
                r.into_inner()
            }
            Err(status) => {
                tracing::debug!(%status, "cannot open a publish stream; retrying");
                lock(&figures).total.count_status(status.code());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        let mut in_flight: HashMap<u64, Batch> = HashMap::new();
        for batch in resend.drain(..) {
            if req_tx.send(request(&batch)).await.is_ok() {
                in_flight.insert(batch.seq, batch);
            }
        }
        let opened_at = Instant::now();
        let mut sending = Some(req_tx);
        let mut recycled = false;
        loop {
            if lane_done(&rx, in_flight.len()) {
                return;
            }
            if options
                .stream_max_age
                .is_some_and(|age| opened_at.elapsed() >= age)
            {
                // Half-close: the server acknowledges what it has and ends
                // the stream; new batches wait for the next stream.
                sending = None;
                if in_flight.is_empty() {
                    recycled = true;
                    break;
                }
            }
            tokio::select! {
                Some(batch) = rx.recv(), if sending.is_some() => {
                    let sent = match &sending {
                        Some(tx) => tx.send(request(&batch)).await.is_ok(),
                        None => false,
                    };
                    in_flight.insert(batch.seq, batch);
                    if !sent {
                        break;
                    }
                }
                ack = responses.next() => match ack {
                    Some(Ok(ack)) => handle_stream_ack(ack, &mut in_flight, &retry_tx, &figures, &options),
                    Some(Err(status)) => {
                        lock(&figures).total.count_status(status.code());
                        break;
                    }
                    None => break,
                },
                // Re-check whether the lane is done.
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        if recycled {
            tracing::debug!("publish stream recycled");
            continue;
        }
        // The stream broke: everything unacknowledged is sent again on the
        // next one (same event ids: the server drops what it already has).
        let mut again: Vec<Batch> = in_flight.into_values().collect();
        again.sort_by_key(|b| b.seq);
        for mut batch in again {
            let n = batch.events.len() as u64;
            lock(&figures).update(batch.phase, |f| f.count_resent(STREAM_BROKEN, n));
            batch.attempts += 1;
            resend.push(batch);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn handle_stream_ack(
    ack: PublishStreamResponse,
    in_flight: &mut HashMap<u64, Batch>,
    retry_tx: &mpsc::UnboundedSender<Batch>,
    figures: &Shared,
    options: &SendOptions,
) {
    let Some(batch) = in_flight.remove(&ack.sequence) else {
        // Not a batch of this stream (or answered twice): nothing to
        // settle, but the server broke the one-answer-per-batch contract.
        // Logged once; later ones are counted in the report.
        let first = {
            let mut f = lock(figures);
            f.total.protocol_errors += 1;
            f.total.protocol_errors == 1
        };
        if first {
            tracing::warn!(
                sequence = ack.sequence,
                "ingest acknowledged a sequence that is not in flight on this stream (later ones are counted in the report, not logged)"
            );
        }
        return;
    };
    // An absent status and one with code 0 both mean OK; the contract is
    // checked rather than trusted (a refusal once arrived as code 0).
    match ack.status.as_ref().filter(|s| s.code != 0) {
        None => {
            let rejected: Vec<u32> = ack.rejections.iter().map(|r| r.index).collect();
            match contract_violation(
                batch.events.len(),
                ack.accepted_count,
                ack.duplicate_count,
                &rejected,
            ) {
                None => record_ack(
                    &batch,
                    ack.accepted_count,
                    ack.duplicate_count,
                    &rejected,
                    figures,
                ),
                Some(why) => protocol_error(batch, &why, retry_tx, figures, options),
            }
        }
        Some(status) => {
            let code = Code::from_i32(status.code);
            refused(
                batch,
                code,
                rpc_retry_hint(status),
                retry_tx,
                figures,
                options,
            );
        }
    }
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
                                None => record_ack(&batch, r.accepted_count, r.duplicate_count, &rejected, &figures),
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

    /// An OK answer must account for every event of the batch; a refusal
    /// decoded as OK (no events accepted, none rejected) does not.
    #[test]
    fn ok_answers_are_checked_against_the_contract() {
        assert_eq!(contract_violation(10, 8, 2, &[3, 7]), None);
        assert_eq!(contract_violation(10, 10, 10, &[]), None);
        assert_eq!(
            contract_violation(30, 0, 0, &[]).as_deref(),
            Some("accepted_count 0 + 0 rejections != 30 events in the batch")
        );
        assert_eq!(
            contract_violation(3, 2, 0, &[3]).as_deref(),
            Some("rejection index 3 is out of range for 3 events")
        );
        assert_eq!(
            contract_violation(4, 2, 0, &[2, 1]).as_deref(),
            Some("rejection indexes [2, 1] are not in request order")
        );
        assert_eq!(
            contract_violation(4, 2, 3, &[0, 1]).as_deref(),
            Some("duplicate_count 3 is over accepted_count 2")
        );
    }
}
