//! The stream senders: each lane is the Rust client's
//! [`testbed_client::publisher::lane`] (the one copy of the
//! `PublishStream` send, ack, re-send and idempotent-producer logic),
//! open loop, fed pre-encoded batches; this file only turns what the lane
//! reports into the run's figures and metrics.

use std::time::Instant;

use futures::StreamExt as _;
use prost::bytes::Bytes;
use testbed_client::ErrorDetails;
use testbed_client::publisher::{BatchAck, LaneOptions, Outgoing, PublishError, Resend, Tracker};
use testbed_proto::raw::RawIngestClient;
use testbed_server::auth::client::Bearer;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use crate::load::fleet::Kind;
use crate::load::runner::{Batch, SendOptions, Shared, lock, record_ack, retry_policy};
use crate::load::stats::code_name;

/// The re-send reason of a contract-breaking OK answer.
pub const PROTOCOL_ERROR: &str = "PROTOCOL_ERROR";
/// The re-send reason of batches unacknowledged on a stream that ended.
pub const STREAM_BROKEN: &str = "STREAM_BROKEN";

/// What the figures need of a batch once the lane has taken its events.
#[derive(Debug)]
pub struct Meta {
    /// Its sequence.
    pub seq: u64,
    /// Its events' kinds, by position.
    pub kinds: Vec<Kind>,
    /// Latency is measured from here ([`crate::load::runner::latency_origin`]).
    pub origin: Instant,
    /// Its scenario phase.
    pub phase: usize,
    /// Its client span, ended when the batch settles (this is dropped).
    pub span: tracing::Span,
}

/// The client lane's options for a run: open loop, streams recycled by
/// age, unanswered batches re-sent until the drain timeout (never given
/// up for a broken stream), refusals retried `max_retries` times.
pub fn lane_options(options: &SendOptions) -> LaneOptions {
    LaneOptions {
        producer_id: options.producer_id.clone(),
        retry: retry_policy(options),
        max_unacked: None,
        stream_max_age: options.stream_max_age,
        unanswered_uses_attempts: false,
    }
}

/// The run's figures as the lane reports to them.
#[derive(Debug)]
pub struct RunTracker(pub Shared);

impl Tracker for RunTracker {
    type Handle = Meta;

    fn stream_failed(&mut self, status: &tonic::Status) {
        lock(&self.0).total.count_status(status.code());
    }

    fn refused(&mut self, meta: &Meta, _: u64, details: &ErrorDetails) {
        lock(&self.0).update(meta.phase, |f| f.count_status(details.code));
    }

    fn protocol_error(&mut self, meta: &Meta, sequence: u64, why: &str) {
        let first = {
            let mut f = lock(&self.0);
            f.update(meta.phase, |f| f.protocol_errors += 1);
            f.total.protocol_errors == 1
        };
        if first {
            tracing::warn!(
                sequence,
                why,
                "ingest answered a batch OK against the contract: re-sending it (later ones are counted in the report, not logged)"
            );
        } else {
            tracing::debug!(sequence, why, "protocol error: re-sending");
        }
    }

    fn resending(&mut self, meta: &Meta, events: usize, reason: Resend) {
        let reason = match reason {
            Resend::StreamBroken => STREAM_BROKEN.to_owned(),
            Resend::Refused(code) => code_name(code),
            Resend::ProtocolError => PROTOCOL_ERROR.to_owned(),
        };
        lock(&self.0).update(meta.phase, |f| f.count_resent(&reason, events as u64));
    }

    fn stray_ack(&mut self, sequence: u64) {
        // Not a batch of this stream (or answered twice): nothing to
        // settle, but the server broke the one-answer-per-batch contract.
        // Logged once; later ones are counted in the report.
        let first = {
            let mut f = lock(&self.0);
            f.total.protocol_errors += 1;
            f.total.protocol_errors == 1
        };
        if first {
            tracing::warn!(
                sequence,
                "ingest acknowledged a sequence that is not in flight on this stream (later ones are counted in the report, not logged)"
            );
        }
    }

    fn settled(&mut self, meta: Meta, events: usize, outcome: Result<BatchAck, PublishError>) {
        match outcome {
            Ok(ack) => {
                let rejected: Vec<u32> = ack.rejections.iter().map(|r| r.index).collect();
                let latency = ack.acked_at.saturating_duration_since(meta.origin);
                record_ack(
                    &meta.kinds,
                    meta.phase,
                    latency,
                    ack.accepted_count,
                    ack.duplicate_count,
                    &rejected,
                    &self.0,
                );
            }
            Err(error) => {
                tracing::debug!(sequence = meta.seq, %error, "batch given up");
                lock(&self.0).update(meta.phase, |f| f.count_failed(meta.seq, events as u64));
            }
        }
    }
}

/// One stream lane: the client's lane over `channel` (bearer token and the
/// RPC telemetry layer under it), fed `rx`'s batches, until `rx` closes and
/// every batch is settled.
pub async fn stream_lane(
    channel: Channel,
    rx: mpsc::UnboundedReceiver<Batch>,
    figures: Shared,
    options: SendOptions,
) {
    let client = RawIngestClient::new(tower_layer::Layer::layer(
        &testbed_telemetry::rpc::RpcClientLayer::new(),
        Bearer::new(channel, options.token.clone()),
    ));
    let batches = tokio_stream::wrappers::UnboundedReceiverStream::new(rx).map(|batch| Outgoing {
        sequence: batch.seq,
        payload: batch.events,
        trace_context: batch.trace_context,
        handle: Meta {
            seq: batch.seq,
            kinds: batch.kinds,
            origin: batch.origin,
            phase: batch.phase,
            span: batch.span,
        },
    });
    testbed_client::publisher::lane::run::<_, Vec<Bytes>, _, _>(
        client,
        batches,
        lane_options(&options),
        RunTracker(figures),
    )
    .await;
}
